//! Per-message acknowledgement end to end: receive with leases, ack by receipt handle,
//! change invisibility, reject, lease expiry, max attempts, the push consumer's receive
//! mode, `mq consume --pop`, and reject for offset consumers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::protocol::names::dlq_topic;
use client::protocol::properties;
use client::protocol::Status;
use client::{
    Failure, LeasedMessage, Message, PullConsumer, PushConsumer, ReceiptHandle, ReceivedMessage,
    SimpleConsumer, SimpleConsumerOptions,
};
use support::cli::{json_lines, mq, spawn_mq};
use support::{fast_options, TestBroker, PATIENCE};
use tokio::time::Instant;

fn opts(invisible_ms: u64) -> SimpleConsumerOptions {
    SimpleConsumerOptions {
        invisible: Duration::from_millis(invisible_ms),
        wait: Duration::from_millis(500),
        ..SimpleConsumerOptions::default()
    }
}

async fn simple(b: &TestBroker, group: &str, topic: &str, invisible_ms: u64) -> SimpleConsumer {
    SimpleConsumer::connect(&b.addr, group, topic, opts(invisible_ms))
        .await
        .unwrap()
}

/// Receives until one message comes, within the test's patience.
async fn receive_one(c: &SimpleConsumer) -> LeasedMessage {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut got = c.receive(1).await.unwrap();
        if let Some(m) = got.pop() {
            return m;
        }
        assert!(Instant::now() < deadline, "nothing received");
    }
}

fn body(m: &LeasedMessage) -> String {
    String::from_utf8(m.message.body().to_vec()).unwrap()
}

fn is_invalid_handle(e: &client::Error) -> bool {
    e.status() == Some(Status::InvalidReceiptHandle)
}

/// Everything in a group's dead-letter queue, read by a repair group.
async fn dead_letters(b: &TestBroker, group: &str, n: usize) -> Vec<ReceivedMessage> {
    let dlq = dlq_topic(group);
    let mut c = PullConsumer::connect(&b.addr, "repair", &[(&dlq, "*")], fast_options())
        .await
        .unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        out.push(c.recv_timeout(PATIENCE).await.expect("dead letter arrives"));
    }
    assert!(c.recv_timeout(Duration::from_millis(300)).await.is_none());
    c.close().await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_consumers_share_a_one_queue_topic() {
    let b = TestBroker::start().await;
    b.topic_with("jobs", 1, 100).await;
    let a = Arc::new(simple(&b, "workers", "jobs", 30_000).await);
    let c = Arc::new(simple(&b, "workers", "jobs", 30_000).await);
    // What the first holds is invisible: the second gets other messages of the same queue.
    let first = a.receive(10).await.unwrap();
    let second = c.receive(10).await.unwrap();
    assert_eq!((first.len(), second.len()), (10, 10));
    let mut seen: HashSet<String> = HashSet::new();
    for m in first.iter().chain(&second) {
        assert!(seen.insert(body(m)), "{} delivered twice", body(m));
    }
    // Both drain the rest concurrently; every ack is accepted exactly once.
    let acked = Arc::new(Mutex::new(Vec::new()));
    for m in first.iter().chain(&second) {
        acked.lock().unwrap().push(body(m));
    }
    a.ack_handles(first.iter().map(|m| m.receipt_handle).collect())
        .await
        .unwrap();
    c.ack_handles(second.iter().map(|m| m.receipt_handle).collect())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for consumer in [Arc::clone(&a), Arc::clone(&c)] {
        let acked = Arc::clone(&acked);
        tasks.push(tokio::spawn(async move {
            let mut mine = 0;
            loop {
                let got = consumer.receive(3).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                for m in got {
                    consumer.ack(&m).await.unwrap();
                    acked.lock().unwrap().push(body(&m));
                    mine += 1;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let unique: BTreeSet<&String> = acked.iter().collect();
    assert_eq!(acked.len(), 100, "nothing acked twice");
    assert_eq!(unique.len(), 100, "nothing lost");
    let text = String::from_utf8(mq(&b, &["group", "show", "workers"], "").await.stdout).unwrap();
    assert!(
        text.contains("leases (in flight 0 of at most 100000)"),
        "{text}"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_redelivers_with_one_more_attempt() {
    let b = TestBroker::start().await;
    b.topic_with("t", 2, 1).await;
    let c = simple(&b, "g", "t", 200).await;
    let m1 = receive_one(&c).await;
    assert_eq!(m1.delivery_attempt, 1);
    // Not acked: it comes again after the deadline, as the same message, attempt 2.
    let m2 = receive_one(&c).await;
    assert_eq!(m2.delivery_attempt, 2);
    assert_eq!(m2.message.msg_id(), m1.message.msg_id());
    assert_eq!(body(&m2), "m0");
    assert!(m2.invisible_until_ms >= m1.invisible_until_ms);
    let e = c.ack(&m1).await.unwrap_err();
    assert!(is_invalid_handle(&e), "{e}");
    c.ack(&m2).await.unwrap();
    let e = c.ack(&m2).await.unwrap_err();
    assert!(is_invalid_handle(&e), "acking twice is refused: {e}");
    assert!(c.receive(1).await.unwrap().is_empty());
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_invisibility_extends_and_the_old_handle_is_refused() {
    let b = TestBroker::start().await;
    b.topic_with("t", 1, 1).await;
    let c = simple(&b, "g", "t", 300).await;
    let mut m = receive_one(&c).await;
    let old = m.clone();
    c.change_invisibility(&mut m, Duration::from_secs(60))
        .await
        .unwrap();
    assert_ne!(m.receipt_handle, old.receipt_handle);
    assert!(m.invisible_until_ms > old.invisible_until_ms);
    let e = c.ack(&old).await.unwrap_err();
    assert!(is_invalid_handle(&e), "{e}");
    let e = c
        .change_invisibility(&mut old.clone(), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(is_invalid_handle(&e), "{e}");
    // Past the first deadline the extended lease still holds it.
    let again = c
        .receive_with(1, Duration::from_secs(1), Duration::from_millis(800))
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    c.ack(&m).await.unwrap();
    // Handles this broker never issued: another run's, a queue slot the group lacks.
    let h = m.receipt_handle;
    for forged in [
        ReceiptHandle::new(h.run() ^ 1, h.epoch(), h.slot(), h.offset()),
        ReceiptHandle::new(h.run(), h.epoch(), 9_999, h.offset()),
        ReceiptHandle::new(h.run(), h.epoch() + 1_000, h.slot(), h.offset()),
    ] {
        let mut bogus = m.clone();
        bogus.receipt_handle = forged;
        assert!(is_invalid_handle(&c.reject(&bogus).await.unwrap_err()));
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_message_lands_in_the_dlq_with_its_properties() {
    let b = TestBroker::start().await;
    b.admin().await.create_topic("pay", 1).await.unwrap();
    let p = b.producer().await;
    let sent = p
        .send(
            "pay",
            &Message::new("charge")
                .with_tag("card")
                .with_keys("order-7")
                .with_property("trace", "abc"),
        )
        .await
        .unwrap();
    p.close().await;
    let c = simple(&b, "g", "pay", 30_000).await;
    let m = receive_one(&c).await;
    c.reject(&m).await.unwrap();
    assert!(is_invalid_handle(&c.ack(&m).await.unwrap_err()));
    let dead = dead_letters(&b, "g", 1).await;
    let d = &dead[0];
    assert_eq!(d.body(), b"charge");
    assert_eq!(
        (d.tag(), d.keys(), d.property("trace")),
        (Some("card"), Some("order-7"), Some("abc"))
    );
    assert_eq!(
        d.property(properties::ORIGIN_MSG_ID),
        Some(sent.msg_id.as_str()),
        "the dead letter names the original"
    );
    assert!(
        c.receive(1).await.unwrap().is_empty(),
        "never delivered again"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_attempts_a_message_goes_to_the_dlq_at_once() {
    let b = TestBroker::start_with(|c| c.max_reconsume_times = 2).await;
    b.topic_with("t", 1, 1).await;
    let c = simple(&b, "g", "t", 150).await;
    let mut attempts = Vec::new();
    for _ in 0..3 {
        attempts.push(receive_one(&c).await.delivery_attempt);
    }
    assert_eq!(attempts, [1, 2, 3]);
    // The third lease ends: straight to the DLQ, no fourth delivery, no extra wait.
    let dead = dead_letters(&b, "g", 1).await;
    assert_eq!(dead[0].body(), b"m0");
    assert!(c.receive(1).await.unwrap().is_empty());
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_does_not_mix_offsets_and_receive() {
    let b = TestBroker::start().await;
    b.topic_with("t", 1, 1).await;
    let mut offsets = PullConsumer::connect(&b.addr, "by-offset", &[("t", "*")], fast_options())
        .await
        .unwrap();
    offsets
        .recv_timeout(PATIENCE)
        .await
        .expect("offset consumer works");
    let c = simple(&b, "by-offset", "t", 1_000).await;
    let e = c.receive(1).await.unwrap_err();
    assert_eq!(e.status(), Some(Status::GroupModeConflict), "{e}");
    offsets.close().await.unwrap();

    let r = simple(&b, "by-receive", "t", 30_000).await;
    receive_one(&r).await;
    let e = PullConsumer::connect(&b.addr, "by-receive", &[("t", "*")], fast_options())
        .await
        .err()
        .expect("joining a receiving group is refused");
    assert_eq!(e.status(), Some(Status::GroupModeConflict), "{e}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_push_consumer_in_receive_mode_acks_retries_and_rejects() {
    let b = TestBroker::start().await;
    b.admin().await.create_topic("t", 2).await.unwrap();
    let p = b.producer().await;
    for body in ["fine", "flaky", "poison"] {
        p.send("t", &Message::new(body)).await.unwrap();
    }
    p.close().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let consumer = simple(&b, "g", "t", 30_000).await;
    let push = PushConsumer::start_receiving_with(consumer, 2, vec![100], move |m| {
        let log = Arc::clone(&log);
        async move {
            let body = String::from_utf8(m.message.body().to_vec()).unwrap();
            log.lock().unwrap().push((body.clone(), m.delivery_attempt));
            match (body.as_str(), m.delivery_attempt) {
                ("flaky", 1) => Err(Failure::Retry("not yet")),
                ("poison", _) => Err(Failure::Reject("bad data")),
                _ => Ok(()),
            }
        }
    });
    let deadline = Instant::now() + PATIENCE;
    while seen.lock().unwrap().len() < 4 {
        assert!(Instant::now() < deadline, "{:?}", seen.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    push.close().await.unwrap();
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    assert_eq!(
        got,
        [
            ("fine".to_string(), 1),
            ("flaky".to_string(), 1),
            ("flaky".to_string(), 2),
            ("poison".to_string(), 1)
        ]
    );
    let dead = dead_letters(&b, "g", 1).await;
    assert_eq!(dead[0].body(), b"poison");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mq_consume_pop_processes_share_a_one_queue_topic_and_exit_codes_decide() {
    let b = TestBroker::start().await;
    b.topic_with("jobs", 1, 40).await;
    // Two printing consumers take 20 each: both get work, none the same message.
    let one = spawn_mq(
        &b,
        &["consume", "jobs", "--group", "w", "--pop", "--max", "20"],
    );
    let two = spawn_mq(
        &b,
        &["consume", "jobs", "--group", "w", "--pop", "--max", "20"],
    );
    let (one, two) = (
        one.wait_with_output().await.unwrap(),
        two.wait_with_output().await.unwrap(),
    );
    assert!(one.status.success() && two.status.success());
    let (l1, l2) = (json_lines(&one), json_lines(&two));
    assert_eq!((l1.len(), l2.len()), (20, 20));
    let bodies: BTreeSet<String> = l1
        .iter()
        .chain(&l2)
        .map(|v| v["body"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(bodies.len(), 40);
    assert!(l1
        .iter()
        .all(|v| v["delivery_attempt"] == 1 && v["topic"] == "jobs"));
    let out = mq(
        &b,
        &[
            "consume",
            "jobs",
            "--group",
            "w",
            "--pop",
            "--idle-exit-ms",
            "300",
        ],
        "",
    )
    .await;
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "all were acked"
    );

    // --exec: 65 rejects to the DLQ, 0 acks.
    b.topic_with("bad", 1, 2).await;
    let out = mq(
        &b,
        &[
            "consume",
            "bad",
            "--group",
            "x",
            "--pop",
            "--max",
            "2",
            "--exec",
            r#"test "$(cat)" = m0 && exit 65; exit 0"#,
        ],
        "",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dead = dead_letters(&b, "x", 1).await;
    assert_eq!(dead[0].body(), b"m0");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_consumers_reject_to_the_dlq_too() {
    let b = TestBroker::start().await;
    b.topic_with("t", 1, 3).await;
    let mut c = PullConsumer::connect(&b.addr, "lib", &[("t", "*")], fast_options())
        .await
        .unwrap();
    let m = c.recv_timeout(PATIENCE).await.unwrap();
    c.reject(&m).await.unwrap();
    c.close().await.unwrap();
    let dead = dead_letters(&b, "lib", 1).await;
    assert_eq!(dead[0].body(), m.body());

    // `mq consume --exec` exit 65 rejects as well (here: the message m1).
    let out = mq(
        &b,
        &[
            "consume",
            "t",
            "--group",
            "cli",
            "--max",
            "3",
            "--exec",
            r#"test "$(cat)" = m1 && exit 65; exit 0"#,
        ],
        "",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dead = dead_letters(&b, "cli", 1).await;
    assert_eq!(dead[0].body(), b"m1");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_lease_limit_bounds_a_group() {
    let b = TestBroker::start_with(|c| c.max_in_flight_leases = 5).await;
    b.topic_with("t", 2, 20).await;
    let c = simple(&b, "g", "t", 30_000).await;
    let first = c.receive(10).await.unwrap();
    assert_eq!(first.len(), 5, "no more than the limit in flight");
    assert!(c.receive(10).await.unwrap().is_empty(), "none beyond it");
    c.ack(&first[0]).await.unwrap();
    c.ack(&first[1]).await.unwrap();
    assert_eq!(
        c.receive(10).await.unwrap().len(),
        2,
        "room again after acks"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mq_receive_prints_handles_that_ack_change_and_reject_settle() {
    let b = TestBroker::start().await;
    b.admin().await.create_topic("jobs", 1).await.unwrap();
    let p = b.producer().await;
    for body in ["one", "two", "three"] {
        p.send("jobs", &Message::new(body)).await.unwrap();
    }
    p.close().await;
    let receive = |max: &'static str| {
        let b = &b;
        async move {
            let out = mq(
                b,
                &[
                    "receive",
                    "jobs",
                    "--group",
                    "g",
                    "--max",
                    max,
                    "--wait-ms",
                    "3000",
                ],
                "",
            )
            .await;
            assert!(out.status.success(), "{out:?}");
            json_lines(&out)
        }
    };
    let got = receive("3").await;
    assert_eq!(got.len(), 3, "{got:?}");
    let handle = |i: usize| got[i]["receipt_handle"].as_str().unwrap().to_owned();
    assert!(got.iter().all(|m| m["delivery_attempt"] == 1));
    assert!(got
        .iter()
        .all(|m| m["invisible_until_ms"].as_u64().unwrap() > 0));
    let body = |i: usize| got[i]["body"].as_str().unwrap().to_owned();

    // Ack one: done; the same handle again is refused.
    let (h0, h1, h2) = (handle(0), handle(1), handle(2));
    let out = mq(&b, &["ack", "--group", "g", &h0], "").await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json_lines(&out)[0]["status"], "acked");
    let out = mq(&b, &["ack", "--group", "g", &h0], "").await;
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(json_lines(&out)[0]["status"], "refused");
    let out = mq(&b, &["ack", "--group", "g", "not-a-handle"], "").await;
    assert!(!out.status.success(), "{out:?}");

    // Reject one: straight to the dead-letter queue.
    let out = mq(&b, &["reject", "--group", "g", &h2], "").await;
    assert!(out.status.success(), "{out:?}");
    let dead = dead_letters(&b, "g", 1).await;
    assert_eq!(dead[0].body(), body(2).as_bytes());

    // Nack one (invisible 0): a new handle, and it comes again with attempt 2.
    let out = mq(
        &b,
        &[
            "change-invisibility",
            "--group",
            "g",
            &h1,
            "--invisible-ms",
            "0",
        ],
        "",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let changed = json_lines(&out);
    assert_ne!(changed[0]["receipt_handle"].as_str().unwrap(), h1);
    let again = receive("3").await;
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0]["body"].as_str().unwrap(), body(1));
    assert_eq!(again[0]["delivery_attempt"], 2);
    b.shutdown().await;
}
