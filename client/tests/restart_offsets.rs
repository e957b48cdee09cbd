//! Committed offsets (with exact acks) across a broker restart as a client sees them, and
//! `mq group show` / `mq group reset` against a group with a live member.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod restart_support;

use std::collections::BTreeSet;
use std::process::{Output, Stdio};
use std::time::Duration;

use client::admin::Admin;
use client::{Message, Producer, ProducerOptions, PullConsumer};
use restart_support::Restartable;

const PATIENCE: Duration = Duration::from_secs(10);
const TOPIC: &str = "ledger";
const GROUP: &str = "ledger-g";

fn opts() -> client::ConsumerOptions {
    client::ConsumerOptions {
        heartbeat_interval: Duration::from_millis(100),
        commit_interval: Duration::from_millis(50),
        long_poll_ms: 1_000,
        ..client::ConsumerOptions::default()
    }
}

async fn mq(addr: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_mq"))
        .arg("--broker")
        .arg(addr)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The `COMMITTED MAX_OFFSET LAG` columns of `mq group show` for one queue of `TOPIC`.
fn queue_row(text: &str, queue: u32) -> (String, u64, u64) {
    let row = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        // At least 5: a SKIPPED column follows LAG.
        .find(|f| f.len() >= 5 && f[0] == TOPIC && f[1] == queue.to_string())
        .unwrap_or_else(|| panic!("no row for {TOPIC} {queue} in\n{text}"));
    (
        row[2].to_string(),
        row[3].parse().unwrap(),
        row[4].parse().unwrap(),
    )
}

async fn receive_offsets(c: &mut PullConsumer, n: usize) -> BTreeSet<u64> {
    let mut got = BTreeSet::new();
    while got.len() < n {
        let m = c.recv_timeout(PATIENCE).await.expect("delivered");
        got.insert(m.queue_offset());
        c.ack(&m);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_commits_survive_a_restart_and_reset_is_guarded_by_live_members() {
    let mut b = Restartable::start().await;
    Admin::connect(&b.addr)
        .await
        .unwrap()
        .create_topic(TOPIC, 1)
        .await
        .unwrap();
    let p = Producer::connect(&b.addr, ProducerOptions::default())
        .await
        .unwrap();
    let msgs: Vec<Message> = (0..20).map(|i| Message::new(format!("e{i}"))).collect();
    p.send_batch(TOPIC, &msgs).await.unwrap();
    p.close().await;

    // Ack out of order, with holes; commit and leave.
    let acked: BTreeSet<u64> = [0, 1, 2, 3, 4, 7, 9, 12, 13, 14].into();
    let mut c = PullConsumer::connect(&b.addr, GROUP, &[(TOPIC, "*")], opts())
        .await
        .unwrap();
    for _ in 0..20 {
        let m = c.recv_timeout(PATIENCE).await.expect("delivered");
        if acked.contains(&m.queue_offset()) {
            c.ack(&m);
        }
    }
    c.close().await.unwrap();

    b.restart().await;

    // The next member gets exactly the holes, the same client reconnecting by itself.
    let mut c = PullConsumer::connect(&b.addr, GROUP, &[(TOPIC, "*")], opts())
        .await
        .unwrap();
    let holes: BTreeSet<u64> = (0..20).filter(|o| !acked.contains(o)).collect();
    assert_eq!(receive_offsets(&mut c, holes.len()).await, holes);
    assert!(c.recv_timeout(Duration::from_millis(300)).await.is_none());
    c.commit().await.unwrap();

    // `mq group show`: the live member with its queues, and committed / max / lag.
    let text = stdout(&mq(&b.addr, &["group", "show", GROUP]).await);
    assert_eq!(queue_row(&text, 0), ("20".to_string(), 20, 0), "{text}");
    assert!(text.contains("members (1)"), "{text}");
    let member = text
        .lines()
        .find(|l| l.contains(c.client_id()))
        .unwrap_or_else(|| panic!("member {} not listed in\n{text}", c.client_id()));
    assert!(member.contains(&format!("{TOPIC}:[0]")), "{member}");

    // A reset is refused while the member is live...
    let reset = [
        "group", "reset", GROUP, "--topic", TOPIC, "--to", "earliest",
    ];
    let out = mq(&b.addr, &reset).await;
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("mq: error:") && err.contains("live members"),
        "{err}"
    );
    assert_eq!(
        queue_row(&stdout(&mq(&b.addr, &["group", "show", GROUP]).await), 0).0,
        "20"
    );

    // ...unless forced.
    let forced: Vec<&str> = reset.iter().copied().chain(["--force"]).collect();
    let text = stdout(&mq(&b.addr, &forced).await);
    assert!(text.contains(&format!("{TOPIC} queue 0 -> 0")), "{text}");
    let text = stdout(&mq(&b.addr, &["group", "show", GROUP]).await);
    assert_eq!(queue_row(&text, 0), ("0".to_string(), 20, 20), "{text}");

    // The live member follows the reset: it consumes the queue again from the start, and
    // so does the group after it leaves.
    let all: BTreeSet<u64> = (0..20).collect();
    assert_eq!(receive_offsets(&mut c, 20).await, all);
    c.close().await.unwrap();
    let text = stdout(&mq(&b.addr, &["group", "show", GROUP]).await);
    assert_eq!(queue_row(&text, 0), ("20".to_string(), 20, 0), "{text}");
    b.shutdown().await;
}
