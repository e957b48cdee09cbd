//! A full disk under the real broker binary, on a small tmpfs the test mounts (root only;
//! skipped with a message otherwise): producing until full gets a clear "disk full"
//! error, nothing acknowledged is lost, and once the filesystem grows producing resumes
//! without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use client::protocol::messages::{PullRequest, PullStatus};
use client::{ConnectOptions, Connection, Message, Producer, ProducerOptions};
use commitlog::format::RecordView;
use support::process::BrokerProcess;
use tempfile::TempDir;

const TOPIC: &str = "full";

/// A tmpfs mounted for the test, unmounted when dropped (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: succeeds even if something still has a file open in it.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

async fn pull_queue(conn: &Connection, queue: u32) -> BTreeMap<u64, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut offset = 0;
    loop {
        let req = PullRequest {
            topic: TOPIC.into(),
            queue_id: queue,
            group: "full-verify".into(),
            offset,
            max_messages: 64,
            max_bytes: 4 << 20,
            tag_expr: "*".into(),
            max_wait_ms: 0,
        };
        let (resp, body) = conn.call(&req, &[]).await.unwrap();
        if resp.status != PullStatus::Found {
            assert_eq!(resp.status, PullStatus::NoNewMessage, "{resp:?}");
            return out;
        }
        let mut rest: &[u8] = &body;
        for _ in 0..resp.count {
            let v = RecordView::decode(rest).unwrap();
            assert_eq!(v.queue_offset(), offset, "gap in queue {queue}");
            out.insert(offset, v.body().to_vec());
            offset += 1;
            rest = &rest[v.total_len() as usize..];
        }
    }
}

async fn assert_all_present(addr: &str, acked: &BTreeMap<(u32, u64), Vec<u8>>) {
    let conn = Connection::connect(addr, ConnectOptions::default())
        .await
        .unwrap();
    for q in 0..2 {
        let stored = pull_queue(&conn, q).await;
        for ((_, off), body) in acked.range((q, 0)..(q + 1, 0)) {
            assert_eq!(stored.get(off), Some(body), "acknowledged {q}/{off} lost");
        }
    }
}

/// Sends 32 KiB messages until one fails; returns the error text.
async fn fill(producer: &Producer, acked: &mut BTreeMap<(u32, u64), Vec<u8>>) -> String {
    for n in 0..2000 {
        let body = vec![(n % 251) as u8; 32 << 10];
        match producer.send(TOPIC, &Message::new(body.clone())).await {
            Ok(r) => {
                acked.insert((r.queue_id, r.queue_offset), body);
            }
            Err(e) => return e.to_string(),
        }
    }
    panic!("64 MiB accepted on an 8 MiB filesystem");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_is_reported_loses_nothing_and_producing_resumes_after_growth() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED disk_full test: needs root to mount a tmpfs");
        return;
    }
    let tmp = TempDir::new().unwrap();
    let fs = match Tmpfs::mount(&tmp.path().join("mnt"), "8m") {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("SKIPPED disk_full test: cannot mount a tmpfs: {e}");
            return;
        }
    };
    let mut broker = BrokerProcess::start(
        &fs.0.join("data"),
        &tmp.path().join("logs"),
        &[
            "--flush",
            "sync",
            "--segment-size",
            "1M",
            "--max-message-size",
            "64K",
        ],
    );
    let admin = client::admin::Admin::connect(&broker.addr).await.unwrap();
    admin.create_topic(TOPIC, 2).await.unwrap();
    let producer = Producer::connect(&broker.addr, ProducerOptions::default())
        .await
        .unwrap();
    let mut acked = BTreeMap::new();
    let err = fill(&producer, &mut acked).await;
    eprintln!("full after {} messages: {err}", acked.len());
    assert!(
        err.to_lowercase().contains("disk full"),
        "error does not say the disk is full: {err}"
    );
    assert!(
        broker.is_running(),
        "broker died on a full disk:\n{}",
        broker.log()
    );
    assert_all_present(&broker.addr, &acked).await;

    // Grow the filesystem: producing resumes without a restart.
    fs.resize("32m");
    let mut resumed = false;
    for _ in 0..50 {
        let body = b"after growth".to_vec();
        if let Ok(r) = producer.send(TOPIC, &Message::new(body.clone())).await {
            acked.insert((r.queue_id, r.queue_offset), body);
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resumed, "producing did not resume after space was freed");
    for n in 0..40 {
        let body = format!("more-{n}").into_bytes();
        let r = producer
            .send(TOPIC, &Message::new(body.clone()))
            .await
            .unwrap();
        acked.insert((r.queue_id, r.queue_offset), body);
    }
    assert_all_present(&broker.addr, &acked).await;
    assert!(broker.is_running());
    broker.kill();
    drop(broker);
}
