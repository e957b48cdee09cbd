//! Timer messages end to end: delivered in due order and never before due, across a
//! restart; recall before and after due (twice after delivery, by the library and by
//! `mq recall`); the maximum delay; pending counts; and the
//! `%SCHEDULE%` messages an older broker left still delivered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod restart_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use client::admin::Admin;
use client::protocol::properties::{
    PropertiesBuilder, DELAY_LEVEL, DELIVER_AT_MS, DUE_AT_MS, ORIGIN_MSG_ID, REAL_QUEUE_ID,
    REAL_TOPIC,
};
use client::protocol::Status;
use client::{
    DeliverAt, Error, Message, Producer, ProducerOptions, PullConsumer, RecallStatus,
    ReceivedMessage,
};
use restart_support::Restartable;

const PATIENCE: Duration = Duration::from_secs(20);

fn opts() -> client::ConsumerOptions {
    client::ConsumerOptions {
        heartbeat_interval: Duration::from_millis(100),
        commit_interval: Duration::from_millis(50),
        long_poll_ms: 1_000,
        ..client::ConsumerOptions::default()
    }
}

/// A fixed pseudo-random sequence (no seed to vary: the test must be repeatable).
fn delays(n: usize, max_ms: u64) -> Vec<u64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            200 + x % max_ms
        })
        .collect()
}

async fn one_queue_topic(addr: &str, topic: &str) {
    Admin::connect(addr)
        .await
        .unwrap()
        .create_topic(topic, 1)
        .await
        .unwrap();
}

/// Receives until `n` messages came; checks none arrived before its due time.
async fn receive(c: &mut PullConsumer, n: usize) -> Vec<ReceivedMessage> {
    let mut got = Vec::new();
    while got.len() < n {
        let m = c.recv_timeout(PATIENCE).await.expect("a due timer arrives");
        c.ack(&m);
        let due: u64 = m.property(DELIVER_AT_MS).unwrap().parse().unwrap();
        assert!(
            m.store_timestamp_ms() >= due,
            "delivered {} ms early",
            due - m.store_timestamp_ms()
        );
        got.push(m);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_arrive_in_due_order_never_early_across_a_restart() {
    let mut b = Restartable::start().await;
    one_queue_topic(&b.addr, "later").await;
    let p = Producer::connect(&b.addr, ProducerOptions::default())
        .await
        .unwrap();
    let mut due_of: HashMap<String, u64> = HashMap::new();
    for (i, d) in delays(60, 2_500).into_iter().enumerate() {
        let r = p
            .send_timer(
                "later",
                &Message::new(format!("m{i}")),
                DeliverAt::DelayMs(d),
            )
            .await
            .unwrap();
        due_of.insert(r.msg_id, r.deliver_at_ms);
    }
    p.close().await;
    // Restart while most are pending.
    b.restart().await;
    let mut c = PullConsumer::connect(&b.addr, "g", &[("later", "*")], opts())
        .await
        .unwrap();
    let got = receive(&mut c, due_of.len()).await;
    let mut last = 0;
    for m in &got {
        let due = due_of
            .remove(&m.msg_id())
            .expect("delivered once, under the id its send was answered with");
        assert_eq!(m.property(ORIGIN_MSG_ID), Some(m.msg_id().as_str()));
        assert!(due >= last, "out of due order");
        last = due;
        assert_eq!(m.topic(), "later");
    }
    c.close().await.unwrap();
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_before_due_removes_it_and_after_delivery_says_so() {
    let b = Restartable::start().await;
    one_queue_topic(&b.addr, "r").await;
    let p = Producer::connect(&b.addr, ProducerOptions::default())
        .await
        .unwrap();
    let soon = p
        .send_timer("r", &Message::new("soon"), DeliverAt::DelayMs(100))
        .await
        .unwrap();
    let recalled = p
        .send_timer("r", &Message::new("recalled"), DeliverAt::DelayMs(1_500))
        .await
        .unwrap();
    // Due after the recalled one: once it arrives, the recalled one would have too.
    let last = p
        .send_timer("r", &Message::new("last"), DeliverAt::DelayMs(2_500))
        .await
        .unwrap();
    assert_eq!(
        p.recall("r", &recalled.recall_handle).await.unwrap(),
        RecallStatus::Recalled
    );
    assert_eq!(
        p.recall("r", &recalled.recall_handle).await.unwrap(),
        RecallStatus::AlreadyRecalled
    );
    let mut c = PullConsumer::connect(&b.addr, "g", &[("r", "*")], opts())
        .await
        .unwrap();
    let got = receive(&mut c, 2).await;
    let ids: Vec<String> = got.iter().map(ReceivedMessage::msg_id).collect();
    assert_eq!(ids, vec![soon.msg_id.clone(), last.msg_id.clone()]);
    assert_eq!(
        p.recall("r", &soon.recall_handle).await.unwrap(),
        RecallStatus::AlreadyDelivered
    );
    // A handle of another topic, and one that is no handle at all.
    let err = p.recall("other", &last.recall_handle).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Broker {
                status: Status::NotFound,
                ..
            }
        ),
        "{err}"
    );
    let err = p.recall("r", "nonsense").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Broker {
                status: Status::BadRequest,
                ..
            }
        ),
        "{err}"
    );
    c.close().await.unwrap();
    p.close().await;
    b.shutdown().await;
}

/// `mq recall TOPIC HANDLE` against `addr`: its stdout, after checking it succeeded.
async fn mq_recall(addr: &str, topic: &str, handle: &str) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mq"))
        .args(["--broker", addr, "recall", topic, handle])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_timer_recalled_twice_answers_already_delivered_both_times() {
    let b = Restartable::start().await;
    one_queue_topic(&b.addr, "d").await;
    let p = Producer::connect(&b.addr, ProducerOptions::default())
        .await
        .unwrap();
    let sent = p
        .send_timer("d", &Message::new("due soon"), DeliverAt::DelayMs(200))
        .await
        .unwrap();
    let mut c = PullConsumer::connect(&b.addr, "g", &[("d", "*")], opts())
        .await
        .unwrap();
    assert_eq!(receive(&mut c, 1).await[0].msg_id(), sent.msg_id);
    for _ in 0..2 {
        assert_eq!(
            p.recall("d", &sent.recall_handle).await.unwrap(),
            RecallStatus::AlreadyDelivered
        );
    }
    // And `mq recall` says so, each time, as the documented JSON line.
    for _ in 0..2 {
        assert_eq!(
            mq_recall(&b.addr, "d", &sent.recall_handle).await,
            "{\"status\":\"already_delivered\"}\n"
        );
    }
    c.close().await.unwrap();
    p.close().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_past_the_maximum_is_refused_and_a_past_time_means_now() {
    let b = Restartable::start().await;
    let p = Producer::connect(&b.addr, ProducerOptions::default())
        .await
        .unwrap();
    let week = 7 * 24 * 3600 * 1000;
    let err = p
        .send_timer("t", &Message::new("x"), DeliverAt::DelayMs(week + 60_000))
        .await
        .unwrap_err();
    match err {
        Error::Broker { status, message } => {
            assert_eq!(status, Status::BadRequest);
            assert!(message.contains("--max-timer-delay-ms"), "{message}");
        }
        other => panic!("{other}"),
    }
    let r = p
        .send_timer("t", &Message::new("now"), DeliverAt::TimestampMs(1))
        .await
        .unwrap();
    assert!(r.deliver_at_ms > 1);
    let mut c = PullConsumer::connect(&b.addr, "g", &[("t", "*")], opts())
        .await
        .unwrap();
    let got = receive(&mut c, 1).await;
    assert_eq!(got[0].msg_id(), r.msg_id);
    c.close().await.unwrap();
    p.close().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_timers_are_counted_per_topic_and_in_stats() {
    let mut b = Restartable::start().await;
    let p = Producer::connect(&b.addr, ProducerOptions::default())
        .await
        .unwrap();
    let msgs: Vec<Message> = (0..3).map(|i| Message::new(format!("{i}"))).collect();
    let r = p
        .send_batch_timer("hourly", &msgs, DeliverAt::DelayMs(3_600_000))
        .await
        .unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(
        p.recall("hourly", &r[1].recall_handle).await.unwrap(),
        RecallStatus::Recalled
    );
    p.close().await;
    let admin = Admin::connect(&b.addr).await.unwrap();
    assert_eq!(admin.get_topic("hourly").await.unwrap().timers_pending, 2);
    assert_eq!(admin.stats().await.unwrap().timers_pending, 2);
    // Counted again from the slot files after a restart.
    b.restart().await;
    let admin = Admin::connect(&b.addr).await.unwrap();
    assert_eq!(admin.get_topic("hourly").await.unwrap().timers_pending, 2);
    b.shutdown().await;
}

/// A data dir of a broker from before the timer, with a retry parked in `%SCHEDULE%1`:
/// it is still delivered to the group's retry topic.
#[test]
fn a_retry_parked_by_an_older_broker_is_still_delivered() {
    use broker::retry::{RetryConfig, RetryService};
    use broker::store::{
        MessageStore, PutMessage, QueueOffset, StoreConfig, TagFilter, TopicConfig, TopicScope,
    };

    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.commitlog.segment_size_bytes = 4 << 20;
    let store = Arc::new(MessageStore::open(config).unwrap());
    for t in ["%SCHEDULE%1", "%RETRY%g"] {
        store
            .create_topic_scoped(TopicScope::Internal, TopicConfig::new(t, 1))
            .unwrap();
    }
    let props = PropertiesBuilder::new()
        .with(ORIGIN_MSG_ID, "00000000000000000000002A")
        .with(REAL_TOPIC, "%RETRY%g")
        .with(REAL_QUEUE_ID, "0")
        .with(DUE_AT_MS, "1")
        .with(DELAY_LEVEL, "1")
        .build();
    store
        .put_batch_scoped(
            TopicScope::Internal,
            "%SCHEDULE%1",
            0,
            &[PutMessage {
                properties: &props,
                body: b"old",
                born_timestamp_ms: 1,
                reconsume_times: 1,
            }],
        )
        .unwrap();
    let service = RetryService::start(Arc::clone(&store), RetryConfig::default()).unwrap();
    assert!(store.wait_for_message("%RETRY%g", 0, QueueOffset::new(0), PATIENCE));
    let got = store
        .get_messages(broker::store::GetRequest {
            topic: "%RETRY%g",
            queue_id: 0,
            from: QueueOffset::new(0),
            max_count: 1,
            max_bytes: 1 << 20,
            filter: &TagFilter::All,
        })
        .unwrap();
    assert_eq!(got.messages[0].view().body(), b"old");
    service.try_close().unwrap();
    Arc::try_unwrap(store).unwrap().close().unwrap();
}
