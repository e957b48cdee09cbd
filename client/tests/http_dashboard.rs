//! The dashboard in a real headless browser (Debian's `chromium`, driven by
//! `playwright-core`; both installed by `scripts/test-deps`): against a live broker it
//! shows a topic and the group most behind with the right numbers, resends a group's
//! dead letters through the UI (they really come back to their topic), and saves a
//! screenshot (`FERRO_DASHBOARD_SCREENSHOT=path` keeps a copy, as in docs/).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::{ConsumerOptions, Message, PullConsumer};
use support::{fast_options, TestBroker, PATIENCE};

const TOPIC: &str = "orders";
const SENT: usize = 40;
const DEAD: usize = 3;
const ACKED_BY_BILLING: usize = 8;

fn driver_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard")
}

/// Fails, naming the setup script, when the browser or its driver is missing.
fn require_browser() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing = if !Path::new(&chromium).exists() {
        Some(format!("{chromium} (Debian's chromium)"))
    } else if Command::new("node").arg("--version").output().is_err() {
        Some("node".into())
    } else if !driver_dir().join("node_modules/playwright-core").exists() {
        Some("client/tests/dashboard/node_modules/playwright-core".into())
    } else {
        None
    };
    if let Some(what) = missing {
        panic!("{what} is missing: run scripts/test-deps (it installs the test dependencies) before cargo test");
    }
}

/// Consumes `n` messages of `TOPIC` as `group`, acking them, or nacking them straight into
/// the dead-letter queue.
async fn consume(b: &TestBroker, group: &str, n: usize, nack: bool) -> Vec<String> {
    let opts = ConsumerOptions {
        max_reconsume_times: Some(0),
        ..fast_options()
    };
    let mut c = PullConsumer::connect(&b.addr, group, &[(TOPIC, "*")], opts)
        .await
        .unwrap();
    let mut bodies = Vec::new();
    for _ in 0..n {
        let m = c.recv_timeout(PATIENCE).await.expect("a message");
        bodies.push(String::from_utf8(m.body().to_vec()).unwrap());
        if nack {
            c.nack(&m).await.unwrap();
        } else {
            c.ack(&m);
        }
    }
    c.close().await.unwrap();
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_who_is_behind_and_resends_dead_letters() {
    require_browser();
    let b = TestBroker::start().await;
    b.topic_with(TOPIC, 4, SENT).await;
    consume(&b, "billing", ACKED_BY_BILLING, false).await;
    let dead = consume(&b, "shipping", DEAD, true).await;
    let http = b.broker.as_ref().unwrap().http_addr().unwrap();

    // A trickle of traffic on another topic, so the charts have something to draw.
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let (stop, p) = (Arc::clone(&stop), b.producer().await);
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<Message> =
                    (0..20).map(|k| Message::new(format!("a{i}-{k}"))).collect();
                p.send_batch("audit", &batch).await.unwrap();
                i += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            p.close().await;
        })
    };

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let url = format!("http://{http}/");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .current_dir(driver_dir())
            .args(["drive.js", &url, TOPIC, "shipping", shot.to_str().unwrap()])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    trickle.await.unwrap();
    assert!(
        out.status.success(),
        "the browser run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        seen["errors"],
        serde_json::json!([]),
        "script errors on the page"
    );
    assert_eq!(seen["topic_messages"], SENT);
    assert_eq!(seen["topic_queues"], 4);
    assert_eq!(
        seen["group_lag"],
        SENT - DEAD,
        "shipping acked only its dead letters"
    );
    assert_eq!(seen["group_dlq"], DEAD);
    assert_eq!(
        seen["first_group"], "shipping",
        "the group most behind is on top"
    );
    assert_eq!(seen["resent"], DEAD);
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a real screenshot"
    );
    if let Ok(keep) = std::env::var("FERRO_DASHBOARD_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }

    // The resent messages are back in the topic: a new group reads each of them twice.
    let mut c = PullConsumer::connect(&b.addr, "verify", &[(TOPIC, "*")], fast_options())
        .await
        .unwrap();
    let mut count: HashMap<String, usize> = HashMap::new();
    for _ in 0..SENT + DEAD {
        let m = c
            .recv_timeout(PATIENCE)
            .await
            .expect("every message, resent ones too");
        *count
            .entry(String::from_utf8(m.body().to_vec()).unwrap())
            .or_default() += 1;
        c.ack(&m);
    }
    c.close().await.unwrap();
    for body in &dead {
        assert_eq!(count.get(body), Some(&2), "{body} came back to {TOPIC}");
    }
    b.shutdown().await;
}
