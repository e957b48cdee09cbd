//! Producing and consuming through the library against an in-process broker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use client::{Message, Producer, ProducerOptions, PullConsumer};
use support::{fast_options, TestBroker, PATIENCE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_through_the_library() {
    let b = TestBroker::start().await;
    b.admin().await.create_topic("orders", 4).await.unwrap();
    let p = b.producer().await;
    let one = p
        .send(
            "orders",
            &Message::new("single").with_tag("red").with_keys("k1"),
        )
        .await
        .unwrap();
    assert_eq!(one.msg_id.len(), 24);
    let batch: Vec<Message> = (0..99).map(|i| Message::new(format!("b{i}"))).collect();
    let results = p.send_batch("orders", &batch).await.unwrap();
    assert_eq!(results.len(), 99);
    assert!(results.iter().all(|r| r.queue_id == results[0].queue_id));

    let mut c = PullConsumer::connect(&b.addr, "billing", &[("orders", "*")], fast_options())
        .await
        .unwrap();
    let mut bodies = BTreeSet::new();
    while bodies.len() < 100 {
        let m = c.recv_timeout(PATIENCE).await.expect("all 100 arrive");
        assert_eq!(m.topic(), "orders");
        if m.body() == b"single" {
            assert_eq!((m.tag(), m.keys()), (Some("red"), Some("k1")));
            assert_eq!(m.msg_id(), one.msg_id);
        }
        bodies.insert(String::from_utf8(m.body().to_vec()).unwrap());
        c.ack(&m);
    }
    c.close().await.unwrap();
    let info = b.admin().await.group_info("billing").await.unwrap();
    let lag: u64 = info
        .queues
        .iter()
        .filter(|q| q.topic == "orders")
        .map(|q| q.lag)
        .sum();
    assert_eq!(lag, 0, "everything acked is committed on close: {info:?}");
    let got = b.admin().await.get_message(&one.msg_id).await.unwrap();
    assert_eq!(got.body(), b"single");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_are_all_acked_with_distinct_offsets() {
    let b = TestBroker::start().await;
    b.admin().await.create_topic("pipe", 2).await.unwrap();
    let p = Producer::connect(&b.addr, ProducerOptions { max_in_flight: 32 })
        .await
        .unwrap();
    // A handle holds an in-flight slot until its ack is awaited, so acks are awaited on
    // other tasks while sending goes on.
    let mut acks = tokio::task::JoinSet::new();
    for i in 0..2000 {
        let h = p
            .send_async("pipe", &Message::new(format!("p{i}")))
            .await
            .unwrap();
        acks.spawn(h.wait());
    }
    let mut per_queue: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    while let Some(r) = acks.join_next().await {
        let r = r.unwrap().unwrap().pop().unwrap();
        per_queue
            .entry(r.queue_id)
            .or_default()
            .push(r.queue_offset);
    }
    for (q, mut offsets) in per_queue {
        let n = offsets.len() as u64;
        offsets.sort_unstable();
        assert_eq!(offsets, (0..n).collect::<Vec<_>>(), "queue {q}");
        assert_eq!(n, 1000, "round robin splits evenly");
    }
    p.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_with_one_key_go_to_one_queue() {
    let b = TestBroker::start().await;
    b.admin().await.create_topic("keyed", 8).await.unwrap();
    let p = b.producer().await;
    let mut queues = BTreeSet::new();
    for i in 0..20 {
        let r = p
            .send(
                "keyed",
                &Message::new(format!("{i}")).with_keys("customer-7"),
            )
            .await
            .unwrap();
        queues.insert(r.queue_id);
    }
    assert_eq!(queues.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_pull_wakes_up_when_a_message_arrives() {
    let b = TestBroker::start().await;
    b.admin().await.create_topic("quiet", 1).await.unwrap();
    let mut opts = fast_options();
    opts.long_poll_ms = 20_000;
    let mut c = PullConsumer::connect(&b.addr, "waiter", &[("quiet", "*")], opts)
        .await
        .unwrap();
    // Let the pull reach the broker and be held.
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.producer()
        .await
        .send("quiet", &Message::new("wake"))
        .await
        .unwrap();
    // Without a wake-up the message would come only after the 20 s hold.
    let m = c
        .recv_timeout(Duration::from_secs(5))
        .await
        .expect("held pull answered on arrival");
    assert_eq!(m.body(), b"wake");
    c.ack(&m);
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_filter_and_start_from_latest() {
    let b = TestBroker::start().await;
    b.topic_with("tags", 1, 5).await;
    let mut opts = fast_options();
    opts.start_from = client::StartFrom::Latest;
    let mut c = PullConsumer::connect(&b.addr, "late", &[("tags", "blue || green")], opts)
        .await
        .unwrap();
    let p = b.producer().await;
    for tag in ["red", "blue", "red", "green"] {
        p.send("tags", &Message::new(tag).with_tag(tag))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let m = c.recv_timeout(PATIENCE).await.unwrap();
        seen.push(m.tag().unwrap().to_string());
        c.ack(&m);
    }
    assert_eq!(seen, ["blue", "green"]);
    assert!(c.recv_timeout(Duration::from_millis(300)).await.is_none());
    c.close().await.unwrap();
}

/// Frames leave a connection in the order their requests were started, whether a request
/// went straight to the socket (alone in flight) or through the writer queue (pipelined, or
/// after a short write of a large frame): one queue's offsets follow the call order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_and_pipelined_sends_keep_their_order_on_one_connection() {
    let b = TestBroker::start().await;
    b.admin().await.create_topic("ordered", 1).await.unwrap();
    let p = Producer::connect(&b.addr, ProducerOptions { max_in_flight: 64 })
        .await
        .unwrap();
    // Bodies up to 512 KiB overflow the socket buffer, so some writes come up short.
    let body = |i: usize| -> Message {
        let size = if i.is_multiple_of(7) { 512 << 10 } else { 16 };
        let mut b = format!("{i:08}").into_bytes();
        b.resize(size, b'.');
        Message::new(b)
    };
    let mut expected = 0u64;
    let mut i = 0usize;
    for round in 0..40 {
        // One send on its own, awaited: the direct path.
        let r = p.send("ordered", &body(i)).await.unwrap();
        assert_eq!(r.queue_offset, expected, "lone send {i}");
        expected += 1;
        i += 1;
        // A burst started back to back: queued behind one another.
        let mut handles = Vec::new();
        for _ in 0..(round % 9 + 1) {
            handles.push(p.send_async("ordered", &body(i)).await.unwrap());
            i += 1;
        }
        for h in handles {
            let r = h.wait().await.unwrap().pop().unwrap();
            assert_eq!(r.queue_offset, expected, "pipelined send");
            expected += 1;
        }
    }
    p.close().await;
}
