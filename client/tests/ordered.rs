//! Ordered consumption: the broker's queue locks, and per key the handled order equals the
//! send order with a handler that sleeps and fails at random, across a rebalance (a second
//! member joins, then leaves) and across a SIGKILLed `mq consume --ordered`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::protocol::messages::QueueAssignment;
use client::protocol::ordered::{LockBatchRequest, UnlockBatchRequest};
use client::{
    ConnectOptions, Connection, Failure, Message, OrderedOptions, PullConsumer, PushConsumer,
};
use support::cli::{json_lines, mq, spawn_mq};
use support::{fast_options, TestBroker, PATIENCE};
use tokio::time::Instant;

const KEYS: usize = 12;
const PER_KEY: usize = 25;

/// Sends messages "k<key> <seq>\n" for each key and each seq in `seqs`, keyed (one key,
/// one queue), interleaving the keys; pipelined on one connection, which keeps each
/// queue's order.
async fn send_keyed(b: &TestBroker, topic: &str, seqs: std::ops::Range<usize>) {
    let p = b.producer().await;
    let mut acks = Vec::new();
    for seq in seqs {
        for k in 0..KEYS {
            let m = Message::new(format!("k{k} {seq}\n")).with_keys(&format!("k{k}"));
            acks.push(p.send_async(topic, &m).await.unwrap());
        }
    }
    for a in acks {
        a.wait().await.unwrap();
    }
    p.close().await;
}

fn parse(line: &str) -> (usize, usize) {
    let (k, seq) = line.trim().split_once(' ').unwrap();
    (k[1..].parse().unwrap(), seq.parse().unwrap())
}

/// Per key, the sequence numbers in handled order.
fn per_key(lines: &[(usize, usize)]) -> BTreeMap<usize, Vec<usize>> {
    let mut out: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (k, s) in lines {
        out.entry(*k).or_default().push(*s);
    }
    out
}

/// A cheap random source shared by handlers (no timing depends on its quality).
struct Dice(AtomicU64);

impl Dice {
    fn roll(&self, n: u64) -> u64 {
        let mut x = self.0.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x % n
    }
}

/// What an ordered handler returns.
type Handled =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Failure<String>>> + Send>>;

/// An ordered handler that sleeps 0-3 ms, fails one time in six, and on success hands
/// the message's line to `record`.
fn flaky_member(
    dice: Arc<Dice>,
    record: impl Fn(&str) + Send + Sync + 'static,
) -> impl Fn(client::ReceivedMessage) -> Handled + Send + Sync + 'static {
    let record = Arc::new(record);
    move |m| {
        let (dice, record) = (Arc::clone(&dice), Arc::clone(&record));
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(dice.roll(4))).await;
            if dice.roll(6) == 0 {
                return Err(Failure::Retry("unlucky".to_string()));
            }
            record(std::str::from_utf8(m.body()).unwrap());
            Ok(())
        })
    }
}

fn retry_fast() -> OrderedOptions {
    OrderedOptions {
        retry_delays_ms: vec![5],
        max_reconsume_times: 1_000,
    }
}

/// An ordered member of `group` running a flaky handler; with `wait_for_queues`, started
/// only once it owns queues (the other member released them).
async fn ordered_member(
    b: &TestBroker,
    group: &str,
    topic: &str,
    dice: &Arc<Dice>,
    wait_for_queues: bool,
    record: impl Fn(&str) + Send + Sync + 'static,
) -> PushConsumer {
    let c = PullConsumer::connect_ordered(&b.addr, group, &[(topic, "*")], fast_options())
        .await
        .unwrap();
    if wait_for_queues {
        let deadline = Instant::now() + PATIENCE;
        while !c.assignment().iter().any(|(t, _)| t == topic) {
            assert!(
                Instant::now() < deadline,
                "the new member never got a queue"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    PushConsumer::start_ordered(c, retry_fast(), flaky_member(Arc::clone(dice), record)).unwrap()
}

async fn wait_for(what: &str, patience: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_holds_through_failures_and_a_member_joining_and_leaving() {
    let b = TestBroker::start().await;
    b.admin().await.create_topic("orders", 4).await.unwrap();
    send_keyed(&b, "orders", 0..PER_KEY / 2).await;
    let dice = Arc::new(Dice(AtomicU64::new(7)));
    let log: Arc<Mutex<Vec<(usize, usize)>>> = Arc::default();
    let handled_by_b = Arc::new(AtomicU64::new(0));
    let record = |log: &Arc<Mutex<Vec<(usize, usize)>>>| {
        let log = Arc::clone(log);
        move |line: &str| log.lock().unwrap().push(parse(line))
    };
    let a = ordered_member(&b, "billing", "orders", &dice, false, record(&log)).await;
    let len = || log.lock().unwrap().len();
    wait_for("the first member to start", PATIENCE, || len() >= 40).await;
    let (log_b, count_b) = (record(&log), Arc::clone(&handled_by_b));
    let second = ordered_member(&b, "billing", "orders", &dice, true, move |line| {
        count_b.fetch_add(1, Ordering::Relaxed);
        log_b(line);
    })
    .await;
    // Sent once the second member owns queues, so that it gets some of them.
    send_keyed(&b, "orders", PER_KEY / 2..PER_KEY).await;
    wait_for("the second member to handle messages", PATIENCE, || {
        handled_by_b.load(Ordering::Relaxed) >= 10
    })
    .await;
    second.close().await.unwrap();
    wait_for("every message", PATIENCE * 3, || len() >= KEYS * PER_KEY).await;
    a.close().await.unwrap();
    let lines = log.lock().unwrap().clone();
    assert_eq!(
        lines.len(),
        KEYS * PER_KEY,
        "each message handled exactly once"
    );
    let expected: Vec<usize> = (0..PER_KEY).collect();
    for (k, seqs) in per_key(&lines) {
        assert_eq!(seqs, expected, "key k{k} handled out of send order");
    }
    b.shutdown().await;
}

fn append_line(path: &Path, line: &str) {
    // One write of the whole line on an O_APPEND file: lines of concurrent writers
    // (this test and the killed mq's handlers) never interleave.
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(line.as_bytes()).unwrap();
}

fn read_lines(path: &Path) -> Vec<(usize, usize)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(parse)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_holds_when_an_ordered_mq_consume_is_killed() {
    let b = TestBroker::start().await;
    b.admin().await.create_topic("orders", 4).await.unwrap();
    send_keyed(&b, "orders", 0..PER_KEY / 2).await;
    let log = b.dir.path().join("handled.log");
    let cmd = format!("cat >> '{}'", log.display());
    let mut killed = spawn_mq(
        &b,
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--ordered",
            "--exec",
            &cmd,
        ],
    );
    wait_for("mq consume --ordered to handle messages", PATIENCE, || {
        read_lines(&log).len() >= 30
    })
    .await;
    let dice = Arc::new(Dice(AtomicU64::new(11)));
    let path = log.clone();
    let survivor = ordered_member(&b, "billing", "orders", &dice, true, move |line| {
        append_line(&path, line);
    })
    .await;
    send_keyed(&b, "orders", PER_KEY / 2..PER_KEY).await;
    let before = read_lines(&log).len();
    wait_for("both members at work", PATIENCE, || {
        read_lines(&log).len() >= before + 20
    })
    .await;
    killed.start_kill().unwrap();
    killed.wait().await.unwrap();
    wait_for("every message after the kill", PATIENCE * 3, || {
        let got: std::collections::BTreeSet<_> = read_lines(&log).into_iter().collect();
        got.len() >= KEYS * PER_KEY
    })
    .await;
    survivor.close().await.unwrap();
    // The killed member's uncommitted messages come again (at-least-once), so a key's
    // sequence may step back to its last commit; it never skips ahead.
    for (k, seqs) in per_key(&read_lines(&log)) {
        assert_eq!(seqs[0], 0, "key k{k} started at {}", seqs[0]);
        for w in seqs.windows(2) {
            assert!(
                w[1] <= w[0] + 1,
                "key k{k} jumped from {} to {}: {seqs:?}",
                w[0],
                w[1]
            );
        }
        assert_eq!(
            *seqs.iter().max().unwrap(),
            PER_KEY - 1,
            "key k{k} unfinished"
        );
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mq_consume_ordered_prints_each_queue_in_send_order() {
    let b = TestBroker::start().await;
    b.topic_with("events", 1, 10).await;
    let out = mq(
        &b,
        &[
            "consume",
            "events",
            "--group",
            "g",
            "--ordered",
            "--max",
            "10",
            "--idle-exit-ms",
            "3000",
        ],
        "",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offsets: Vec<u64> = json_lines(&out)
        .iter()
        .map(|v| v["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (0..10).collect::<Vec<u64>>());
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_message_failing_past_its_attempts_goes_to_the_dead_letter_queue() {
    let b = TestBroker::start().await;
    b.topic_with("jobs", 1, 3).await;
    let handled: Arc<Mutex<Vec<String>>> = Arc::default();
    let h = Arc::clone(&handled);
    let c = PullConsumer::connect_ordered(&b.addr, "workers", &[("jobs", "*")], fast_options())
        .await
        .unwrap();
    let opts = OrderedOptions {
        retry_delays_ms: vec![1],
        max_reconsume_times: 2,
    };
    let push = PushConsumer::start_ordered(c, opts, move |m| {
        let body = String::from_utf8(m.body().to_vec()).unwrap();
        h.lock().unwrap().push(body.clone());
        async move {
            if body == "m1" {
                Err(Failure::Retry("poison".to_string()))
            } else {
                Ok(())
            }
        }
    })
    .unwrap();
    wait_for(
        "the queue to move past the poison message",
        PATIENCE,
        || handled.lock().unwrap().last().map(String::as_str) == Some("m2"),
    )
    .await;
    push.close().await.unwrap();
    // Handled in place three times (one try, two retries), never overtaken by m2.
    assert_eq!(*handled.lock().unwrap(), ["m0", "m1", "m1", "m1", "m2"]);
    let dlq = client::protocol::names::dlq_topic("workers");
    let info = b.admin().await.get_topic(&dlq).await.unwrap();
    let stored: u64 = info.queues.iter().map(|q| q.max_offset).sum();
    assert_eq!(stored, 1, "the poison message is in the dead-letter queue");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_lock_goes_to_one_member_at_a_time() {
    let b = TestBroker::start().await;
    b.topic_with("t", 2, 0).await;
    let conn = Connection::connect(&b.addr, ConnectOptions::default())
        .await
        .unwrap();
    let queues = vec![QueueAssignment {
        topic: "t".into(),
        queue_ids: vec![0, 1],
    }];
    let lock = |client: &str, queues: &Vec<QueueAssignment>| LockBatchRequest {
        group: "g".into(),
        client_id: client.into(),
        queues: queues.clone(),
    };
    let (a, _) = conn.call(&lock("a", &queues), &[]).await.unwrap();
    assert_eq!(a.locked, queues);
    assert_eq!(a.lease_ms, 1_000, "the lease is the session timeout");
    let (b_got, _) = conn.call(&lock("b", &queues), &[]).await.unwrap();
    assert!(b_got.locked.is_empty(), "{:?}", b_got.locked);
    let one = vec![QueueAssignment {
        topic: "t".into(),
        queue_ids: vec![1],
    }];
    let unlock = UnlockBatchRequest {
        group: "g".into(),
        client_id: "a".into(),
        queues: one.clone(),
    };
    assert_eq!(conn.call(&unlock, &[]).await.unwrap().0.released, 1);
    let (b_got, _) = conn.call(&lock("b", &queues), &[]).await.unwrap();
    assert_eq!(b_got.locked, one, "only the released queue");
    // A renewal by the holder keeps it; a bad group name is refused.
    assert_eq!(
        conn.call(&lock("a", &queues), &[]).await.unwrap().0.locked[0].queue_ids,
        [0]
    );
    let mut bad = lock("a", &queues);
    bad.group = "%bad".into();
    assert!(conn.call(&bad, &[]).await.is_err());
    b.shutdown().await;
}
