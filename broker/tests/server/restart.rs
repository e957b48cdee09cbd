//! Restarts: committed offsets and messages survive a broker restart, in-process and as a
//! real process stopped with SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::server::{records, start, RawClient};
use protocol::messages::{
    CommitOffsetRequest, CreateTopicRequest, PullRequest, PullStatus, QueryOffsetRequest,
    QueueCommit,
};
use tempfile::TempDir;

fn commit(offset: u64) -> CommitOffsetRequest {
    CommitOffsetRequest {
        group: "g".into(),
        commits: vec![QueueCommit {
            topic: "t".into(),
            queue_id: 0,
            offset,
            acked_above: vec![],
        }],
        reset_epoch: None,
    }
}

fn query() -> QueryOffsetRequest {
    QueryOffsetRequest {
        group: "g".into(),
        topic: "t".into(),
        queue_id: 0,
    }
}

fn pull_all() -> PullRequest {
    PullRequest {
        topic: "t".into(),
        queue_id: 0,
        group: "g".into(),
        offset: 0,
        max_messages: 100,
        max_bytes: 0,
        tag_expr: "*".into(),
        max_wait_ms: 0,
    }
}

async fn produce_and_commit(addr: SocketAddr) {
    let mut c = RawClient::connect(addr).await;
    let create = CreateTopicRequest {
        topic: "t".into(),
        queue_count: 1,
        perm: 0,
    };
    c.call(&create, &[]).await;
    c.send_batch("t", 0, &[b"one", b"two", b"three"], None)
        .await;
    c.wait_dispatched("t", 0, 3).await;
    c.call(&commit(2), &[]).await;
}

async fn assert_reopened_state(addr: SocketAddr) {
    let mut c = RawClient::connect(addr).await;
    let (resp, _) = c.call(&query(), &[]).await;
    assert_eq!(resp.committed.unwrap().offset, 2);
    let (resp, body) = c.call(&pull_all(), &[]).await;
    assert_eq!(resp.status, PullStatus::Found);
    let bodies: Vec<Vec<u8>> = records(&body).into_iter().map(|(_, b)| b).collect();
    assert_eq!(
        bodies,
        [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_restart() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    produce_and_commit(broker.local_addr()).await;
    broker.shutdown().await.unwrap();
    let broker = start(dir.path(), |_| {}).await;
    assert_reopened_state(broker.local_addr()).await;
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_written_periodically_while_running() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |c| c.offsets_persist_interval_ms = 50).await;
    produce_and_commit(broker.local_addr()).await;
    let file = dir.path().join("config").join("offsets");
    let mut written = false;
    for _ in 0..200 {
        if std::fs::read_to_string(&file).is_ok_and(|s| s.contains("\"g\"")) {
            written = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(written, "offsets file not written while running");
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_broker_on_the_same_data_dir_refuses_to_start() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let second = broker::Broker::start(broker::Config::ephemeral(dir.path())).await;
    assert!(second.is_err());
    broker.shutdown().await.unwrap();
}

/// The real binary: prints where it listens, stops on SIGTERM with exit status 0, and
/// leaves data that the next broker reopens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_shuts_down_cleanly_on_sigterm() {
    let dir = TempDir::new().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--segment-size",
            "1M",
            "--max-message-size",
            "64K",
            // The host's free space must not matter (a full-disk warning would come first).
            "--disk-reserve",
            "0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let line = tokio::task::spawn_blocking(move || {
        let line = lines.next().unwrap().unwrap();
        // Keep draining so the broker never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        line
    })
    .await
    .unwrap();
    assert!(
        line.contains("listening on") && line.contains(&dir.path().display().to_string()),
        "{line}"
    );
    let addr: SocketAddr = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .parse()
        .unwrap();
    produce_and_commit(addr).await;

    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: sending a signal to a child process this test started and still owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let broker = start(dir.path(), |_| {}).await;
    assert_reopened_state(broker.local_addr()).await;
    broker.shutdown().await.unwrap();
}
