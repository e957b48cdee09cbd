//! Broadcast consumption: every instance of a broadcast group gets every message; each
//! keeps its progress in its own file, so a restarted instance resumes where it was and a
//! new one starts at the latest message; `mq consume --broadcast`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use client::{BroadcastOptions, Message, PullConsumer};
use support::cli::{json_lines, mq};
use support::{fast_options, TestBroker, PATIENCE};
use tokio::time::Instant;

const QUEUES: u32 = 4;

async fn instance(b: &TestBroker, progress: &Path) -> PullConsumer {
    let c = PullConsumer::connect_broadcast(
        &b.addr,
        "caches",
        &[("config", "*")],
        fast_options(),
        BroadcastOptions::new(progress),
    )
    .await
    .unwrap();
    // Started at the latest message: wait until it owns (and started) every queue.
    let deadline = Instant::now() + PATIENCE;
    while c.assignment().len() < QUEUES as usize {
        assert!(
            Instant::now() < deadline,
            "the instance never took every queue"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    c
}

async fn send(b: &TestBroker, from: usize, to: usize) {
    let p = b.producer().await;
    let msgs: Vec<Message> = (from..to).map(|i| Message::new(format!("m{i}"))).collect();
    for m in &msgs {
        p.send("config", m).await.unwrap();
    }
    p.close().await;
}

/// Receives (and acks) until nothing comes for a while; the bodies, in arrival order.
async fn drain(c: &mut PullConsumer) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = c.recv_timeout(Duration::from_millis(700)).await {
        out.push(String::from_utf8(m.body().to_vec()).unwrap());
        c.ack(&m);
    }
    out
}

fn names(from: usize, to: usize) -> BTreeSet<String> {
    (from..to).map(|i| format!("m{i}")).collect()
}

fn set(v: &[String]) -> BTreeSet<String> {
    v.iter().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_gets_every_message_and_a_restarted_one_resumes() {
    let b = TestBroker::start().await;
    b.admin()
        .await
        .create_topic("config", QUEUES)
        .await
        .unwrap();
    send(&b, 0, 10).await;
    let files: Vec<_> = (0..3).map(|i| b.dir.path().join(format!("i{i}"))).collect();
    let mut all = Vec::new();
    for f in &files {
        all.push(instance(&b, f).await);
    }
    send(&b, 10, 70).await;
    for c in &mut all {
        let got = drain(c).await;
        assert_eq!(got.len(), 60, "each message once per instance");
        assert_eq!(
            set(&got),
            names(10, 70),
            "a new instance starts at the latest"
        );
    }
    // Instance 0 stops; messages sent meanwhile reach it when it comes back.
    let stopped = all.remove(0);
    stopped.close().await.unwrap();
    send(&b, 70, 90).await;
    let mut back = instance(&b, &files[0]).await;
    let got = drain(&mut back).await;
    assert_eq!(set(&got), names(70, 90), "resumed from its own progress");
    assert_eq!(got.len(), 20);
    for c in &mut all {
        assert_eq!(set(&drain(c).await), names(70, 90));
    }
    back.close().await.unwrap();
    for c in all {
        c.close().await.unwrap();
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_instance_does_not_nack_and_refuses_another_groups_progress() {
    let b = TestBroker::start().await;
    b.admin()
        .await
        .create_topic("config", QUEUES)
        .await
        .unwrap();
    let file = b.dir.path().join("p");
    let mut c = instance(&b, &file).await;
    send(&b, 0, 1).await;
    let m = c.recv_timeout(PATIENCE).await.unwrap();
    assert!(
        c.nack(&m).await.is_err(),
        "broadcast messages are not retried"
    );
    c.ack(&m);
    c.close().await.unwrap();
    let other = PullConsumer::connect_broadcast(
        &b.addr,
        "someone-else",
        &[("config", "*")],
        fast_options(),
        BroadcastOptions::new(&file),
    )
    .await;
    match other {
        Err(client::Error::ProgressFile { .. }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("another group's progress file was accepted"),
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mq_consume_broadcast_prints_everything_to_each_instance() {
    let b = TestBroker::start().await;
    b.topic_with("config", 2, 6).await;
    for i in 0..2 {
        let file = b.dir.path().join(format!("cli{i}"));
        let out = mq(
            &b,
            &[
                "consume",
                "config",
                "--group",
                "caches",
                "--broadcast",
                "--progress-file",
                file.to_str().unwrap(),
                "--from",
                "earliest",
                "--max",
                "6",
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
        let bodies: BTreeSet<String> = json_lines(&out)
            .iter()
            .map(|v| v["body"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(bodies.len(), 6, "instance {i}");
        assert!(file.exists(), "progress saved");
    }
    b.shutdown().await;
}
