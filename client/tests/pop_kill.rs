//! Per-message acknowledgement against crashes: a receiver SIGKILLed while holding leases,
//! and a broker SIGKILLed and restarted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod restart_support;
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use client::admin::Admin;
use client::protocol::Status;
use client::{
    LeasedMessage, Message, Producer, ProducerOptions, SimpleConsumer, SimpleConsumerOptions,
};
use restart_support::Hosted;
use support::cli::spawn_mq;
use support::{TestBroker, PATIENCE};
use tokio::time::Instant;

fn opts(invisible_ms: u64) -> SimpleConsumerOptions {
    SimpleConsumerOptions {
        invisible: Duration::from_millis(invisible_ms),
        wait: Duration::from_millis(500),
        ..SimpleConsumerOptions::default()
    }
}

fn body(m: &LeasedMessage) -> String {
    String::from_utf8(m.message.body().to_vec()).unwrap()
}

/// Receives until `n` messages came or nothing more comes within a receive's wait.
async fn receive_all(c: &SimpleConsumer, n: usize) -> Vec<LeasedMessage> {
    let deadline = Instant::now() + PATIENCE;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        out.extend(c.receive(32).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_receivers_messages_go_to_another_after_the_deadline() {
    let b = TestBroker::start().await;
    b.topic_with("jobs", 1, 1).await;
    let pid_file = b.dir.path().join("handler.pid");
    // The handler records its pid and hangs: mq holds the lease while it runs.
    let cmd = format!("echo $$ > {}; exec sleep 60", pid_file.display());
    let mut holder = spawn_mq(
        &b,
        &[
            "consume",
            "jobs",
            "--group",
            "g",
            "--pop",
            "--invisible-ms",
            "500",
            "--exec",
            &cmd,
        ],
    );
    let deadline = Instant::now() + PATIENCE;
    let handler_pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "the handler never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    holder.kill().await.unwrap();
    // SAFETY: kill(2) on the handler this test started (its own process group).
    unsafe {
        libc::kill(handler_pid, libc::SIGKILL);
    }
    let other = SimpleConsumer::connect(&b.addr, "g", "jobs", opts(30_000))
        .await
        .unwrap();
    let got = receive_all(&other, 1).await;
    assert_eq!(
        got.len(),
        1,
        "the killed receiver's message comes to another"
    );
    assert_eq!((body(&got[0]).as_str(), got[0].delivery_attempt), ("m0", 2));
    other.ack(&got[0]).await.unwrap();
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_redelivers_every_unacked_message_and_no_acked_one() {
    let dir = tempfile::TempDir::new().unwrap();
    let host = Hosted::spawn("broker_host", dir.path(), None);
    let addr = host.addr.clone();
    Admin::connect(&addr)
        .await
        .unwrap()
        .create_topic("t", 3)
        .await
        .unwrap();
    let p = Producer::connect(&addr, ProducerOptions::default())
        .await
        .unwrap();
    let msgs: Vec<Message> = (0..60).map(|i| Message::new(format!("m{i}"))).collect();
    p.send_batch("t", &msgs).await.unwrap();
    p.close().await;

    let c = SimpleConsumer::connect(&addr, "g", "t", opts(60_000))
        .await
        .unwrap();
    let got = receive_all(&c, 60).await;
    assert_eq!(got.len(), 60);
    // Ack a scattered two thirds; answered acks are on disk.
    let (acked, unacked): (Vec<_>, Vec<_>) = got.iter().enumerate().partition(|(i, _)| i % 3 != 0);
    let refused = c
        .ack_handles(acked.iter().map(|(_, m)| m.receipt_handle).collect())
        .await
        .unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    c.close();
    host.kill();

    let host = Hosted::spawn("broker_host", dir.path(), Some(&addr));
    let c = SimpleConsumer::connect(&host.addr, "g", "t", opts(60_000))
        .await
        .unwrap();
    let mut again = receive_all(&c, unacked.len()).await;
    again.extend(c.receive(32).await.unwrap());
    let again_bodies: BTreeSet<String> = again.iter().map(body).collect();
    let expected: BTreeSet<String> = unacked.iter().map(|(_, m)| body(m)).collect();
    assert_eq!(again.len(), again_bodies.len(), "nothing twice");
    assert_eq!(
        again_bodies, expected,
        "exactly the unacked ones come again"
    );
    // A handle from before the crash is refused.
    let e = c.ack(unacked[0].1).await.unwrap_err();
    assert_eq!(e.status(), Some(Status::InvalidReceiptHandle), "{e}");
    host.kill();
}

/// The broker of the kill test, run in a child process; does nothing otherwise.
#[test]
#[ignore = "the broker host of the kill test, started by it as a child process"]
fn broker_host() {
    restart_support::host_main();
}
