//! Transactions against an in-process broker: commit, rollback, check-back (commit,
//! rollback, never answered), consume-transform-produce, bad ids, size limits, `mq tx`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::protocol::tx::{TX_ID, TX_INDEX};
use client::protocol::Status;
use client::{
    Message, PullConsumer, ReceiptHandle, SimpleConsumer, SimpleConsumerOptions,
    TransactionalProducer, TxResolution,
};
use support::cli::{json_lines, mq};
use support::{fast_options, TestBroker, PATIENCE};

/// A checker that gives one answer and records every check-back it gets.
#[derive(Clone)]
struct Scripted {
    answer: TxResolution,
    asked: Arc<Mutex<Vec<(String, u32)>>>,
}

impl Scripted {
    fn new(answer: TxResolution) -> Self {
        Self {
            answer,
            asked: Arc::default(),
        }
    }

    fn asked(&self) -> Vec<(String, u32)> {
        self.asked.lock().unwrap().clone()
    }
}

impl client::TransactionChecker for Scripted {
    fn check(&self, tx_id: &str, check: u32) -> TxResolution {
        self.asked.lock().unwrap().push((tx_id.to_string(), check));
        self.answer.clone()
    }
}

/// A broker that checks back fast: timeout 200 ms, a check every 150 ms, at most 3.
async fn fast_broker() -> TestBroker {
    TestBroker::start_with(|c| {
        c.tx_timeout_ms = 200;
        c.tx_check_interval_ms = 150;
        c.tx_max_checks = 3;
    })
    .await
}

async fn queue_end(b: &TestBroker, topic: &str, queue_id: u32) -> u64 {
    let t = b.admin().await.get_topic(topic).await.unwrap();
    t.queues[queue_id as usize].max_offset
}

/// Waits until `f` holds, within the test's patience.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn open_count(b: &TestBroker) -> usize {
    let conn = b.admin().await.connection().clone();
    client::TxAdmin::new(conn).list().await.unwrap().len()
}

fn bodies(n: usize, tag: &str) -> Vec<Message> {
    (0..n).map(|i| Message::new(format!("{tag}{i}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_makes_every_message_visible_at_once_in_send_order() {
    let b = TestBroker::start().await;
    b.admin().await.create_topic("t", 1).await.unwrap();
    let p = TransactionalProducer::connect(&b.addr, "pg", Scripted::new(TxResolution::Unknown))
        .await
        .unwrap();
    let tx = p.begin().await.unwrap();
    tx.send_batch("t", &bodies(3, "a")).await.unwrap();
    tx.send_batch("t", &bodies(2, "b")).await.unwrap();
    assert_eq!(
        queue_end(&b, "t", 0).await,
        0,
        "nothing visible before commit"
    );
    let id = tx.id().to_string();
    let done = tx.commit().await.unwrap();
    assert_eq!(done.receipts.len(), 5);
    assert_eq!(queue_end(&b, "t", 0).await, 5);

    let mut c = PullConsumer::connect(&b.addr, "g", &[("t", "*")], fast_options())
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let m = c.recv_timeout(PATIENCE).await.expect("committed message");
        assert_eq!(m.property(TX_ID), Some(id.as_str()));
        assert_eq!(m.property(TX_INDEX), Some(seen.len().to_string().as_str()));
        seen.push(String::from_utf8(m.body().to_vec()).unwrap());
        c.ack(&m);
    }
    assert_eq!(seen, ["a0", "a1", "a2", "b0", "b1"]);
    c.close().await.unwrap();
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_transaction_is_never_visible_and_cannot_be_committed() {
    let b = TestBroker::start().await;
    b.admin().await.create_topic("t", 1).await.unwrap();
    let p = TransactionalProducer::connect(&b.addr, "pg", Scripted::new(TxResolution::Unknown))
        .await
        .unwrap();
    let tx = p.begin().await.unwrap();
    let id = tx.id().to_string();
    tx.send_batch("t", &bodies(4, "r")).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(queue_end(&b, "t", 0).await, 0);
    let e = p.resume(&id).commit().await.unwrap_err();
    assert_eq!(e.status(), Some(Status::TxFinished), "{e}");
    assert!(e.to_string().contains("rolled back"), "{e}");
    assert_eq!(open_count(&b).await, 0);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_holds_back_no_other_producers_messages() {
    let b = TestBroker::start().await;
    b.admin().await.create_topic("t", 1).await.unwrap();
    let p = TransactionalProducer::connect(&b.addr, "pg", Scripted::new(TxResolution::Unknown))
        .await
        .unwrap();
    let tx = p.begin().await.unwrap();
    tx.send_to("t", 0, &bodies(2, "tx")).await.unwrap();
    let plain = b.producer().await;
    plain.send("t", &Message::new("plain")).await.unwrap();
    let mut c = PullConsumer::connect(&b.addr, "g", &[("t", "*")], fast_options())
        .await
        .unwrap();
    let m = c.recv_timeout(PATIENCE).await.expect("the plain message");
    assert_eq!(m.body(), b"plain");
    c.ack(&m);
    tx.commit().await.unwrap();
    for want in ["tx0", "tx1"] {
        let m = c.recv_timeout(PATIENCE).await.expect("committed message");
        assert_eq!(m.body(), want.as_bytes());
        c.ack(&m);
    }
    c.close().await.unwrap();
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_transaction_is_committed_by_check_back() {
    let b = fast_broker().await;
    b.admin().await.create_topic("t", 1).await.unwrap();
    let checker = Scripted::new(TxResolution::Commit);
    let p = TransactionalProducer::connect(&b.addr, "pg", checker.clone())
        .await
        .unwrap();
    let tx = p.begin().await.unwrap();
    let id = tx.id().to_string();
    tx.send_to("t", 0, &bodies(3, "c")).await.unwrap();
    drop(tx); // the producer "forgets" to end it
    eventually("check-back commits", || async {
        queue_end(&b, "t", 0).await == 3
    })
    .await;
    assert!(
        checker.asked().iter().any(|(t, _)| *t == id),
        "{:?}",
        checker.asked()
    );
    assert_eq!(open_count(&b).await, 0);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_transaction_is_rolled_back_by_check_back_with_its_reason() {
    let b = fast_broker().await;
    b.admin().await.create_topic("t", 1).await.unwrap();
    let checker = Scripted::new(TxResolution::Rollback("order 7 was cancelled".into()));
    let p = TransactionalProducer::connect(&b.addr, "pg", checker.clone())
        .await
        .unwrap();
    let tx = p.begin().await.unwrap();
    let id = tx.id().to_string();
    tx.send_to("t", 0, &bodies(3, "c")).await.unwrap();
    drop(tx);
    eventually("check-back rolls back", || async {
        open_count(&b).await == 0
    })
    .await;
    assert_eq!(queue_end(&b, "t", 0).await, 0);
    let e = p.resume(&id).commit().await.unwrap_err();
    assert_eq!(e.status(), Some(Status::TxFinished));
    assert!(e.to_string().contains("order 7 was cancelled"), "{e}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checker_that_never_answers_is_rolled_back_after_the_check_limit_with_the_reason() {
    let b = fast_broker().await;
    b.admin().await.create_topic("t", 1).await.unwrap();
    let checker = Scripted::new(TxResolution::Unknown);
    let p = TransactionalProducer::connect(&b.addr, "pg", checker.clone())
        .await
        .unwrap();
    let tx = p.begin().await.unwrap();
    let id = tx.id().to_string();
    tx.send_to("t", 0, &bodies(1, "u")).await.unwrap();
    drop(tx);
    eventually("rolled back after the limit", || async {
        open_count(&b).await == 0
    })
    .await;
    let checks: Vec<u32> = checker
        .asked()
        .into_iter()
        .filter(|(t, _)| *t == id)
        .map(|(_, n)| n)
        .collect();
    assert_eq!(checks, [1, 2, 3], "asked once per check, up to the limit");
    let e = p.resume(&id).commit().await.unwrap_err();
    assert_eq!(e.status(), Some(Status::TxFinished));
    assert!(
        e.to_string().contains("unresolved after 3 check-backs"),
        "{e}"
    );
    assert_eq!(queue_end(&b, "t", 0).await, 0);
    b.shutdown().await;
}

/// Consumes `n` messages of `input` as group `g` without acking them.
async fn consume(
    b: &TestBroker,
    input: &str,
    n: usize,
) -> (PullConsumer, Vec<client::ReceivedMessage>) {
    let c = PullConsumer::connect(&b.addr, "g", &[(input, "*")], fast_options())
        .await
        .unwrap();
    let mut c = c;
    let mut got = Vec::new();
    while got.len() < n {
        got.push(c.recv_timeout(PATIENCE).await.expect("an input message"));
    }
    (c, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_transform_produce_commit_acks_the_inputs_and_shows_the_outputs_together() {
    let b = TestBroker::start().await;
    b.topic_with("in", 1, 3).await;
    b.admin().await.create_topic("out", 1).await.unwrap();
    let p = TransactionalProducer::connect(&b.addr, "pg", Scripted::new(TxResolution::Unknown))
        .await
        .unwrap();
    let (c, inputs) = consume(&b, "in", 3).await;
    let tx = p.begin().await.unwrap();
    for m in &inputs {
        tx.ack_delivered("g", m).await.unwrap();
        let upper = String::from_utf8(m.body().to_vec()).unwrap().to_uppercase();
        tx.send_to("out", 0, &[Message::new(upper)]).await.unwrap();
    }
    assert_eq!(
        b.admin()
            .await
            .committed("g", "in", 0)
            .await
            .unwrap()
            .map(|q| q.offset)
            .unwrap_or(0),
        0
    );
    let done = tx.commit().await.unwrap();
    assert_eq!((done.receipts.len(), done.acks), (3, 3));
    let committed = b
        .admin()
        .await
        .committed("g", "in", 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(committed.offset, 3, "{committed:?}");
    assert_eq!(queue_end(&b, "out", 0).await, 3);
    // The consumer counts them as acked too: its own commit keeps them done.
    c.close().await.unwrap();
    let committed = b
        .admin()
        .await
        .committed("g", "in", 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(committed.offset, 3);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_transform_produce_rollback_delivers_the_inputs_again_and_no_output() {
    let b = TestBroker::start().await;
    b.topic_with("in", 1, 3).await;
    b.admin().await.create_topic("out", 1).await.unwrap();
    let p = TransactionalProducer::connect(&b.addr, "pg", Scripted::new(TxResolution::Unknown))
        .await
        .unwrap();
    let (c, inputs) = consume(&b, "in", 3).await;
    let tx = p.begin().await.unwrap();
    for m in &inputs {
        tx.ack_delivered("g", m).await.unwrap();
        tx.send_to("out", 0, &[Message::new("x")]).await.unwrap();
    }
    tx.rollback().await.unwrap();
    c.close().await.unwrap();
    assert_eq!(queue_end(&b, "out", 0).await, 0);
    let (c, again) = consume(&b, "in", 3).await;
    let offsets: Vec<u64> = again
        .iter()
        .map(client::ReceivedMessage::queue_offset)
        .collect();
    assert_eq!(offsets, [0, 1, 2]);
    c.close().await.unwrap();
    b.shutdown().await;
}

async fn receive_all(s: &SimpleConsumer, n: usize) -> Vec<client::LeasedMessage> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} received",
            got.len()
        );
        got.extend(s.receive(2).await.unwrap());
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_transform_produce_with_receipt_handles_commits_and_rolls_back() {
    let b = TestBroker::start().await;
    b.topic_with("in", 1, 2).await;
    b.admin().await.create_topic("out", 1).await.unwrap();
    let p = TransactionalProducer::connect(&b.addr, "pg", Scripted::new(TxResolution::Unknown))
        .await
        .unwrap();
    let opts = SimpleConsumerOptions {
        invisible: Duration::from_millis(500),
        wait: Duration::from_millis(300),
        ..SimpleConsumerOptions::default()
    };
    let s = SimpleConsumer::connect(&b.addr, "rg", "in", opts)
        .await
        .unwrap();
    let got = receive_all(&s, 2).await;
    // Rolled back: the messages are visible again at once, not after their lease.
    let tx = p.begin().await.unwrap();
    tx.ack_leased("rg", &got).await.unwrap();
    tx.send_to("out", 0, &[Message::new("y")]).await.unwrap();
    tx.rollback().await.unwrap();
    let again = receive_all(&s, 2).await;
    // Committed: acked for good, even though the original lease was short.
    let tx = p.begin().await.unwrap();
    tx.ack_leased("rg", &again).await.unwrap();
    tx.send_to("out", 0, &[Message::new("z")]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    tx.commit().await.unwrap();
    assert!(
        s.receive(2).await.unwrap().is_empty(),
        "acked by the commit"
    );
    assert_eq!(queue_end(&b, "out", 0).await, 1);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_malformed_and_finished_ids_are_typed_errors() {
    let b = TestBroker::start().await;
    let p = TransactionalProducer::connect(&b.addr, "pg", Scripted::new(TxResolution::Unknown))
        .await
        .unwrap();
    let e = p.resume("00000000deadbeef").commit().await.unwrap_err();
    assert_eq!(e.status(), Some(Status::TxNotFound), "{e}");
    let e = p.resume("not-an-id").rollback().await.unwrap_err();
    assert_eq!(e.status(), Some(Status::BadRequest), "{e}");
    let tx = p.begin().await.unwrap();
    let id = tx.id().to_string();
    tx.send("t", &Message::new("once")).await.unwrap();
    tx.commit().await.unwrap();
    for r in [
        p.resume(&id).commit().await.map(drop),
        p.resume(&id).rollback().await,
        p.resume(&id)
            .send("t", &Message::new("late"))
            .await
            .map(drop),
    ] {
        let e = r.unwrap_err();
        assert_eq!(e.status(), Some(Status::TxFinished), "{e}");
        assert!(e.to_string().contains("committed"), "{e}");
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_past_its_size_limit_is_refused_and_stays_open() {
    let b = TestBroker::start_with(|c| {
        c.tx_max_messages = 5;
        c.tx_max_bytes = broker::config::ByteSize(1024);
    })
    .await;
    b.admin().await.create_topic("t", 1).await.unwrap();
    let p = TransactionalProducer::connect(&b.addr, "pg", Scripted::new(TxResolution::Unknown))
        .await
        .unwrap();
    let tx = p.begin().await.unwrap();
    tx.send_to("t", 0, &bodies(4, "s")).await.unwrap();
    let e = tx.send_to("t", 0, &bodies(2, "s")).await.unwrap_err();
    assert_eq!(e.status(), Some(Status::TxTooLarge), "{e}");
    assert!(e.to_string().contains("messages"), "{e}");
    let e = tx
        .send_to("t", 0, &[Message::new(vec![b'x'; 2048])])
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(Status::TxTooLarge), "{e}");
    assert!(e.to_string().contains("bytes"), "{e}");
    assert_eq!(tx.commit().await.unwrap().receipts.len(), 4);
    assert_eq!(queue_end(&b, "t", 0).await, 4);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mq_tx_opens_fills_lists_commits_and_rolls_back_from_a_shell() {
    let b = TestBroker::start().await;
    b.topic_with("in", 1, 2).await;
    b.admin().await.create_topic("out", 1).await.unwrap();
    let out = mq(&b, &["tx", "begin", "--producer-group", "shell"], "").await;
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(id.len(), 16, "{id}");
    let out = mq(&b, &["tx", "send", &id, "--topic", "out", "one", "two"], "").await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json_lines(&out)[0]["messages"], 2);
    let out = mq(&b, &["tx", "send", &id, "--topic", "out"], "three\n").await;
    assert_eq!(json_lines(&out)[0]["messages"], 3, "{out:?}");
    let out = mq(
        &b,
        &[
            "tx", "ack", &id, "--group", "g", "--topic", "in", "--queue", "0", "0", "1",
        ],
        "",
    )
    .await;
    assert_eq!(json_lines(&out)[0]["acks"], 2, "{out:?}");
    let out = mq(&b, &["tx", "list"], "").await;
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(listing.starts_with("ID"), "{listing}");
    let row = listing.lines().nth(1).unwrap();
    assert!(row.starts_with(&id) && row.contains("shell"), "{row}");
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[3..], ["0", "3", "2"], "checks, messages, acks: {row}");
    let out = mq(&b, &["tx", "commit", &id], "").await;
    assert!(out.status.success(), "{out:?}");
    let line = &json_lines(&out)[0];
    assert_eq!(
        (line["status"].as_str(), line["messages"].as_u64()),
        (Some("committed"), Some(3))
    );
    assert_eq!(queue_end(&b, "out", 0).await, 3);
    assert_eq!(
        b.admin()
            .await
            .committed("g", "in", 0)
            .await
            .unwrap()
            .unwrap()
            .offset,
        2
    );

    let out = mq(&b, &["tx", "begin", "--producer-group", "shell"], "").await;
    let id2 = String::from_utf8(out.stdout).unwrap().trim().to_string();
    mq(&b, &["tx", "send", &id2, "--topic", "out", "never"], "").await;
    let out = mq(
        &b,
        &["tx", "rollback", &id2, "--reason", "changed my mind"],
        "",
    )
    .await;
    assert_eq!(json_lines(&out)[0]["status"], "rolled_back", "{out:?}");
    assert_eq!(queue_end(&b, "out", 0).await, 3);
    let out = mq(&b, &["tx", "commit", &id2], "").await;
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("rolled back (changed my mind)"), "{err}");
    let out = mq(&b, &["tx", "list"], "").await;
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "no open transactions"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_backs_go_to_a_live_producer_of_the_group_only() {
    let b = fast_broker().await;
    b.admin().await.create_topic("t", 1).await.unwrap();
    let other = Scripted::new(TxResolution::Commit);
    let _other = TransactionalProducer::connect(&b.addr, "other-group", other.clone())
        .await
        .unwrap();
    let mine = Scripted::new(TxResolution::Commit);
    let p = TransactionalProducer::connect(&b.addr, "pg", mine.clone())
        .await
        .unwrap();
    let tx = p.begin().await.unwrap();
    tx.send_to("t", 0, &bodies(1, "m")).await.unwrap();
    drop(tx);
    eventually("committed by check-back", || async {
        queue_end(&b, "t", 0).await == 1
    })
    .await;
    assert!(!mine.asked().is_empty());
    assert!(
        other.asked().is_empty(),
        "another group's producer was asked"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mq_tx_ack_takes_receipt_handles_of_a_receive_mode_group() {
    let b = TestBroker::start().await;
    b.topic_with("in", 1, 2).await;
    let opts = SimpleConsumerOptions {
        invisible: Duration::from_millis(500),
        wait: Duration::from_millis(300),
        ..SimpleConsumerOptions::default()
    };
    let s = SimpleConsumer::connect(&b.addr, "rg", "in", opts)
        .await
        .unwrap();
    let got = receive_all(&s, 2).await;
    let out = mq(&b, &["tx", "begin", "--producer-group", "shell"], "").await;
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let texts: Vec<String> = got.iter().map(|m| m.receipt_handle.to_string()).collect();
    let mut args = vec!["tx", "ack", &id, "--group", "rg"];
    for t in &texts {
        args.extend(["--receipt", t.as_str()]);
    }
    let out = mq(&b, &args, "").await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json_lines(&out)[0]["acks"], 2, "{out:?}");
    // Offsets and handles do not mix in one call, and a handle nobody holds is refused.
    let out = mq(
        &b,
        &[
            "tx",
            "ack",
            &id,
            "--group",
            "rg",
            "--topic",
            "in",
            "--queue",
            "0",
            "--receipt",
            "x",
            "0",
        ],
        "",
    )
    .await;
    assert!(!out.status.success(), "{out:?}");
    let h = got[0].receipt_handle;
    let forged = ReceiptHandle::new(h.run(), h.epoch() + 1_000, h.slot(), h.offset()).to_string();
    for bad in ["bogus", forged.as_str()] {
        let out = mq(
            &b,
            &["tx", "ack", &id, "--group", "rg", "--receipt", bad],
            "",
        )
        .await;
        assert!(!out.status.success(), "{bad}: {out:?}");
    }
    // Held past their own lease by the transaction, then acked for good by its commit.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let out = mq(&b, &["tx", "commit", &id], "").await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json_lines(&out)[0]["acks"], 2, "{out:?}");
    assert!(
        s.receive(2).await.unwrap().is_empty(),
        "acked by the commit"
    );
    b.shutdown().await;
}
