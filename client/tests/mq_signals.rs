//! `mq` stops on SIGTERM while it cannot reach its broker: with a non-zero status and a
//! sentence saying why, not after running out its reconnect timeouts. Time bounds here are
//! generous guards against a hang, never performance claims.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::cli::spawn_mq;
use support::{TestBroker, PATIENCE};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
}

async fn exit_and_stderr(mut child: tokio::process::Child) -> (std::process::ExitStatus, String) {
    let mut stderr = child.stderr.take().unwrap();
    let signalled = std::time::Instant::now();
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("mq exits on SIGTERM")
        .unwrap();
    eprintln!("mq exited {:?} after SIGTERM", signalled.elapsed());
    let mut err = String::new();
    stderr.read_to_string(&mut err).await.unwrap();
    (status, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_against_no_broker_stops_on_sigterm_with_a_reason() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mq"))
        .args(["--broker", &format!("127.0.0.1:{port}")])
        .args(["consume", "t", "--group", "g"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Well inside the client's 5 s of reconnecting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(&child);
    let (status, err) = exit_and_stderr(child).await;
    assert!(!status.success(), "{status:?}: {err}");
    // Exited by itself (a status code), not killed by the signal's default action.
    assert!(status.code().is_some(), "{status:?}: {err}");
    assert!(err.contains("interrupted by SIGTERM"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_whose_broker_went_away_stops_on_sigterm_with_a_reason() {
    let b = TestBroker::start().await;
    b.topic_with("gone", 1, 2).await;
    let mut child = spawn_mq(&b, &["consume", "gone", "--group", "gone-g"]);
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    for _ in 0..2 {
        line.clear();
        tokio::time::timeout(PATIENCE, stdout.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
    }
    // The broker stops; the consumer keeps trying to reach it.
    b.shutdown().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(&child);
    let (status, err) = exit_and_stderr(child).await;
    assert!(status.code().is_some(), "{status:?}: {err}");
    assert!(!status.success(), "{status:?}: {err}");
    assert!(err.starts_with("mq: error: "), "{err}");
}
