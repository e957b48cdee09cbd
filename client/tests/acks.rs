//! At-least-once and exact acknowledgement across consumer crashes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use client::protocol::messages::OffsetRange;
use client::PullConsumer;
use support::{fast_options, TestBroker, PATIENCE};

async fn consumer(b: &TestBroker, group: &str, topic: &str) -> PullConsumer {
    PullConsumer::connect(&b.addr, group, &[(topic, "*")], fast_options())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_dies_without_committing_gets_its_unacked_messages_again() {
    let b = TestBroker::start().await;
    b.topic_with("jobs", 1, 10).await;
    let mut a = consumer(&b, "workers", "jobs").await;
    for i in 0..10 {
        let m = a.recv_timeout(PATIENCE).await.unwrap();
        if i < 5 {
            a.ack(&m);
        }
    }
    a.commit().await.unwrap();
    a.abandon();

    // The broker drops the silent member after its session timeout; the next one takes over.
    let mut next = consumer(&b, "workers", "jobs").await;
    let mut bodies = Vec::new();
    while bodies.len() < 5 {
        let m = next
            .recv_timeout(PATIENCE)
            .await
            .expect("unacked messages come back");
        bodies.push(String::from_utf8(m.body().to_vec()).unwrap());
        next.ack(&m);
    }
    assert_eq!(bodies, ["m5", "m6", "m7", "m8", "m9"]);
    assert!(next
        .recv_timeout(Duration::from_millis(300))
        .await
        .is_none());
    next.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_acks_commit_the_smallest_unacked_offset_plus_acked_ranges() {
    let b = TestBroker::start().await;
    b.topic_with("ooo", 1, 6).await;
    let mut c = consumer(&b, "g", "ooo").await;
    let mut msgs = Vec::new();
    for _ in 0..6 {
        msgs.push(c.recv_timeout(PATIENCE).await.unwrap());
    }
    for i in [5, 1, 2, 4] {
        c.ack(&msgs[i]);
    }
    c.commit().await.unwrap();
    let committed = b
        .admin()
        .await
        .committed("g", "ooo", 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(committed.offset, 0);
    assert_eq!(
        committed.acked_above,
        vec![
            OffsetRange { start: 1, end: 3 },
            OffsetRange { start: 4, end: 6 }
        ]
    );
    c.ack(&msgs[0]);
    c.commit().await.unwrap();
    let committed = b
        .admin()
        .await
        .committed("g", "ooo", 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((committed.offset, committed.acked_above.len()), (3, 1));
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_ack_after_a_crash_redelivers_only_the_one_unacked_message() {
    let b = TestBroker::start().await;
    b.topic_with("exact", 1, 1000).await;
    let mut a = consumer(&b, "exact-g", "exact").await;
    for _ in 0..1000 {
        let m = a.recv_timeout(PATIENCE).await.unwrap();
        if m.queue_offset() != 10 {
            a.ack(&m);
        }
    }
    a.commit().await.unwrap();
    a.abandon();

    let mut next = consumer(&b, "exact-g", "exact").await;
    let m = next
        .recv_timeout(PATIENCE)
        .await
        .expect("offset 10 comes back");
    assert_eq!((m.queue_offset(), m.body()), (10, &b"m10"[..]));
    next.ack(&m);
    assert!(
        next.recv_timeout(Duration::from_millis(500))
            .await
            .is_none(),
        "nothing but offset 10 is redelivered"
    );
    next.close().await.unwrap();
    let committed = b
        .admin()
        .await
        .committed("exact-g", "exact", 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((committed.offset, committed.acked_above.len()), (1000, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_message_comes_back_under_its_original_topic_and_id() {
    let b = TestBroker::start().await;
    b.topic_with("flaky", 1, 1).await;
    let mut c = consumer(&b, "retry-g", "flaky").await;
    let first = c.recv_timeout(PATIENCE).await.unwrap();
    let id = first.msg_id();
    c.nack(&first).await.unwrap();
    for attempt in 1..=2 {
        let m = c.recv_timeout(PATIENCE).await.expect("retry delivered");
        assert!(m.is_retry());
        assert_eq!(
            (m.topic(), m.msg_id(), m.reconsume_times()),
            ("flaky", id.clone(), attempt)
        );
        assert_eq!(m.body(), b"m0");
        if attempt == 1 {
            c.nack(&m).await.unwrap();
        } else {
            c.ack(&m);
        }
    }
    assert!(c.recv_timeout(Duration::from_millis(500)).await.is_none());
    c.close().await.unwrap();
}
