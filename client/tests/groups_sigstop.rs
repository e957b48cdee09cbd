//! A consumer paused with SIGSTOP keeps its connection open but stops heartbeating,
//! acking and releasing queues. Its queues must not stay unpulled: once its session times
//! out, the group's other member gets them (without waiting for a release the paused member
//! cannot send) and consumes every message. Time bounds are generous guards against a
//! stall, never performance claims.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::cli::{json_lines, mq, spawn_mq};
use support::{TestBroker, PATIENCE};

fn signal(child: &tokio::process::Child, sig: &str) {
    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {sig} {pid}");
}

/// Waits until `mq group show` lists `n` live members of `group`.
async fn wait_for_members(b: &TestBroker, group: &str, n: usize) {
    let want = format!("members ({n})");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let out = mq(b, &["group", "show", group], "").await;
        if String::from_utf8_lossy(&out.stdout).contains(&want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "group {group} never had {n} members:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_paused_with_sigstop_loses_its_queues_and_every_message_is_consumed() {
    // Session timeout 1 s (TestBroker's default): a paused member expires quickly.
    let b = TestBroker::start().await;
    b.topic_with("paused", 4, 0).await;

    // The first member owns every queue, and holds long polls on them, until the second
    // joins and the queues are split between them.
    let first = spawn_mq(&b, &["consume", "paused", "--group", "g"]);
    wait_for_members(&b, "g", 1).await;
    let second = spawn_mq(&b, &["consume", "paused", "--group", "g", "--max", "200"]);
    wait_for_members(&b, "g", 2).await;
    // Give the split time to settle so that the first member holds queues when paused.
    tokio::time::sleep(Duration::from_secs(2)).await;

    signal(&first, "-STOP");
    let lines: String = (0..200).map(|i| format!("p{i}\n")).collect();
    let produced = mq(&b, &["produce", "paused"], &lines).await;
    assert!(produced.status.success(), "{produced:?}");

    // Everything, including what went to the paused member's held pulls, reaches the
    // second member once the paused one's session has run out.
    let out = tokio::time::timeout(3 * PATIENCE, second.wait_with_output())
        .await
        .expect("the live member consumed every message: no queue stayed with the paused one")
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let bodies: BTreeSet<String> = json_lines(&out)
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect();
    let want: BTreeSet<String> = (0..200).map(|i| format!("p{i}")).collect();
    assert_eq!(bodies, want);

    // Resumed, the paused member finds itself expired, rejoins and is served again.
    signal(&first, "-CONT");
    wait_for_members(&b, "g", 1).await;
    signal(&first, "-TERM");
    let status = tokio::time::timeout(PATIENCE, first.wait_with_output())
        .await
        .expect("the resumed member stops on SIGTERM")
        .unwrap()
        .status;
    assert!(status.code().is_some(), "exited by itself: {status:?}");
    b.shutdown().await;
}
