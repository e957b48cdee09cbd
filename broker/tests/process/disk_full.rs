//! A full disk never takes the broker down.
//!
//! Under the real broker binary, on a small tmpfs the test mounts (root only; skipped with
//! a message otherwise):
//! - the commit log itself fills the disk: with the reserve disabled, producing until full
//!   gets a clear "disk full" error and resumes once the filesystem grows; with the
//!   default reserve, sends are refused before the disk is full while consumers (and a
//!   group joining meanwhile) keep consuming;
//! - another process fills the disk while traffic goes to 32 topics: sends get
//!   `DiskFull`, the broker stays up, existing messages stay consumable, a new group joins
//!   and consumes, and sends resume by themselves once the filler is deleted.
//!
//! Without root, a full disk is injected through the storage seam (`FaultyStorage`):
//! offsets, checkpoint and metadata writes fail with `ENOSPC`, the broker refuses sends
//! but keeps serving reads, joins and commits, and recovers when the writes succeed again.
//!
//! In every case each acknowledged message is consumable at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::process::BrokerProcess;
use client::admin::Admin;
use client::protocol::messages::{DiskState, PullRequest, PullStatus};
use client::protocol::Status;
use client::{
    ConnectOptions, Connection, ConsumerOptions, Message, Producer, ProducerOptions, PullConsumer,
};
use commitlog::fault::FaultyStorage;
use commitlog::format::RecordView;
use tempfile::TempDir;

const TOPIC: &str = "full";
const DISK_FULL_LINE: &str = "disk full: sends refused until space is freed";
const DISK_BACK_LINE: &str = "disk space back: accepting sends";
/// Generous bound on each wait below; never a performance assertion.
const PATIENCE: Duration = Duration::from_secs(30);

/// Acknowledged messages by (topic, queue, offset).
type Acked = BTreeMap<(String, u32, u64), Vec<u8>>;

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

/// A tmpfs of `size` under `tmp`, or `None` (with a message) when not root.
fn tmpfs_or_skip(tmp: &TempDir, size: &str, test: &str) -> Option<Tmpfs> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED {test}: needs root to mount a tmpfs");
        return None;
    }
    match Tmpfs::mount(&tmp.path().join("mnt"), size) {
        Ok(fs) => Some(fs),
        Err(e) => {
            eprintln!("SKIPPED {test}: cannot mount a tmpfs: {e}");
            None
        }
    }
}

/// Every message of one queue, by offset, read with raw pulls.
async fn pull_queue(conn: &Connection, topic: &str, queue: u32) -> BTreeMap<u64, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut offset = 0;
    loop {
        let req = PullRequest {
            topic: topic.into(),
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
            assert_eq!(v.queue_offset(), offset, "gap in {topic}/{queue}");
            out.insert(offset, v.body().to_vec());
            offset += 1;
            rest = &rest[v.total_len() as usize..];
        }
    }
}

/// Reads back every queue holding an acknowledged message and checks each one is there.
async fn assert_all_present(addr: &str, acked: &Acked) {
    let conn = Connection::connect(addr, ConnectOptions::default())
        .await
        .unwrap();
    let mut queues: Vec<(&str, u32)> = acked.keys().map(|(t, q, _)| (t.as_str(), *q)).collect();
    queues.dedup();
    for (topic, q) in queues {
        let stored = pull_queue(&conn, topic, q).await;
        let key = |o| (topic.to_string(), q, o);
        for ((_, _, off), body) in acked.range(key(0)..=key(u64::MAX)) {
            assert_eq!(
                stored.get(off),
                Some(body),
                "acknowledged {topic}/{q}/{off} lost"
            );
        }
    }
}

async fn send(
    producer: &Producer,
    topic: &str,
    body: Vec<u8>,
    acked: &mut Acked,
) -> Result<(), client::Error> {
    let r = producer.send(topic, &Message::new(body.clone())).await?;
    acked.insert((topic.to_string(), r.queue_id, r.queue_offset), body);
    Ok(())
}

/// Sends until a send succeeds (space came back), waiting between refusals.
async fn send_until_accepted(producer: &Producer, topic: &str, acked: &mut Acked) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match send(producer, topic, b"after space came back".to_vec(), acked).await {
            Ok(()) => return,
            Err(e) => {
                assert_eq!(e.status(), Some(Status::DiskFull), "{e}");
                assert!(Instant::now() < deadline, "sends did not resume: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn quick_polls() -> ConsumerOptions {
    ConsumerOptions {
        long_poll_ms: 200,
        ..ConsumerOptions::default()
    }
}

/// Joins `group` on `topic` and receives `want` messages, acking each (the acks commit).
async fn join_and_consume(addr: &str, group: &str, topic: &str, want: usize) {
    let mut consumer = PullConsumer::connect(addr, group, &[(topic, "*")], quick_polls())
        .await
        .unwrap_or_else(|e| panic!("group {group} could not join on a full disk: {e}"));
    let mut got = 0;
    let deadline = Instant::now() + PATIENCE;
    while got < want {
        assert!(
            Instant::now() < deadline,
            "group {group} received {got} of {want} existing messages"
        );
        if let Some(m) = consumer.recv_timeout(Duration::from_millis(500)).await {
            consumer.ack(&m);
            got += 1;
        }
    }
    consumer.commit().await.unwrap();
    consumer.close().await.unwrap();
}

fn count(log: &str, line: &str) -> usize {
    log.matches(line).count()
}

/// Sends 32 KiB messages until one fails; returns the error text.
async fn fill(producer: &Producer, acked: &mut Acked) -> String {
    for n in 0..2000 {
        let body = vec![(n % 251) as u8; 32 << 10];
        if let Err(e) = send(producer, TOPIC, body, acked).await {
            return e.to_string();
        }
    }
    panic!("64 MiB accepted on an 8 MiB filesystem");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_is_reported_loses_nothing_and_producing_resumes_after_growth() {
    let tmp = TempDir::new().unwrap();
    let Some(fs) = tmpfs_or_skip(&tmp, "8m", "disk_full test") else {
        return;
    };
    // No reserve: the commit log itself runs into ENOSPC.
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
            "--disk-reserve",
            "0",
        ],
    );
    let admin = Admin::connect(&broker.addr).await.unwrap();
    admin.create_topic(TOPIC, 2).await.unwrap();
    let producer = Producer::connect(&broker.addr, ProducerOptions::default())
        .await
        .unwrap();
    let mut acked = Acked::new();
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
    send_until_accepted(&producer, TOPIC, &mut acked).await;
    for n in 0..40 {
        let body = format!("more-{n}").into_bytes();
        send(&producer, TOPIC, body, &mut acked).await.unwrap();
    }
    assert_all_present(&broker.addr, &acked).await;
    assert!(broker.is_running());
    let log = broker.log();
    assert_eq!(count(&log, DISK_FULL_LINE), 1, "{log}");
    assert_eq!(count(&log, DISK_BACK_LINE), 1, "{log}");
    broker.kill();
    drop(broker);
}

/// Sends 16 KiB messages round-robin over `topics` until one is refused; returns its error.
async fn produce_until_refused(
    producer: &Producer,
    topics: &[String],
    acked: &mut Acked,
) -> client::Error {
    let deadline = Instant::now() + PATIENCE * 4;
    for n in 0usize.. {
        assert!(
            Instant::now() < deadline,
            "sends never refused on a full disk"
        );
        let topic = &topics[n % topics.len()];
        let body = format!("{topic}-{n:08}-").into_bytes().repeat(1260);
        if let Err(e) = send(producer, topic, body, acked).await {
            return e;
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commit_log_is_stopped_at_the_reserve_and_consumers_and_new_groups_go_on() {
    let tmp = TempDir::new().unwrap();
    let Some(fs) = tmpfs_or_skip(&tmp, "96m", "disk reserve test") else {
        return;
    };
    // The default reserve: 1% of 96 MiB, raised to 16 MiB.
    let mut broker = BrokerProcess::start(
        &fs.0.join("data"),
        &tmp.path().join("logs"),
        &[
            "--segment-size",
            "4M",
            "--max-message-size",
            "64K",
            "--disk-reserve",
            "1%",
        ],
    );
    let admin = Admin::connect(&broker.addr).await.unwrap();
    let topics: Vec<String> = (0..32).map(|i| format!("t{i:02}")).collect();
    for t in &topics {
        admin.create_topic(t, 4).await.unwrap();
    }
    let producer = Producer::connect(&broker.addr, ProducerOptions::default())
        .await
        .unwrap();
    let mut acked = Acked::new();
    let err = produce_until_refused(&producer, &topics, &mut acked).await;
    eprintln!("refused after {} messages: {err}", acked.len());
    assert_eq!(err.status(), Some(Status::DiskFull), "{err}");
    assert!(err.to_string().contains(DISK_FULL_LINE), "{err}");
    let stats = admin.stats().await.unwrap();
    assert_eq!(stats.disk_state, DiskState::Full);
    assert!(stats.sends_refused_disk_full >= 1);

    // Full: reads and a group joining go on.
    assert_all_present(&broker.addr, &acked).await;
    let in_t00 = acked.keys().filter(|(t, _, _)| t == "t00").count();
    join_and_consume(&broker.addr, "joined-while-full", "t00", in_t00).await;
    assert!(broker.is_running(), "{}", broker.log());

    // More room: sends resume without a restart.
    fs.resize("160m");
    send_until_accepted(&producer, "t01", &mut acked).await;
    for n in 0..320 {
        let topic = &topics[n % topics.len()];
        send(
            &producer,
            topic,
            format!("after-{n}").into_bytes(),
            &mut acked,
        )
        .await
        .unwrap();
    }
    assert_all_present(&broker.addr, &acked).await;
    assert_eq!(admin.stats().await.unwrap().disk_state, DiskState::Ok);
    let log = broker.log();
    assert_eq!(count(&log, DISK_FULL_LINE), 1, "{log}");
    assert_eq!(count(&log, DISK_BACK_LINE), 1, "{log}");
    broker.kill();
}

/// Writes zeros into `path` until the filesystem is full, in its own process.
fn fill_with_another_process(path: &Path) {
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", path.display()))
        .arg("bs=1M")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("No space left on device"),
        "the filler stopped before the disk was full: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_filling_the_disk_stops_sends_not_reads_and_sends_resume_when_it_is_freed()
{
    let tmp = TempDir::new().unwrap();
    let Some(fs) = tmpfs_or_skip(&tmp, "96m", "filler test") else {
        return;
    };
    let mut broker = BrokerProcess::start(
        &fs.0.join("data"),
        &tmp.path().join("logs"),
        &[
            "--segment-size",
            "4M",
            "--max-message-size",
            "64K",
            "--disk-reserve",
            "1%",
        ],
    );
    let admin = Admin::connect(&broker.addr).await.unwrap();
    let topics: Vec<String> = (0..32).map(|i| format!("t{i:02}")).collect();
    for t in &topics {
        admin.create_topic(t, 4).await.unwrap();
    }
    let producer = Producer::connect(&broker.addr, ProducerOptions::default())
        .await
        .unwrap();
    let mut acked = Acked::new();
    for n in 0..640 {
        let topic = &topics[n % topics.len()];
        let body = format!("before-{n}").into_bytes();
        send(&producer, topic, body, &mut acked).await.unwrap();
    }

    // Another process fills the disk while the commit log still has room in its segment.
    let filler = fs.0.join("filler");
    fill_with_another_process(&filler);
    let err = produce_until_refused(&producer, &topics, &mut acked).await;
    eprintln!("refused after {} messages: {err}", acked.len());
    assert_eq!(err.status(), Some(Status::DiskFull), "{err}");
    assert!(
        broker.is_running(),
        "broker died on a full disk (signal {:?}):\n{}",
        broker.exit_signal(),
        broker.log()
    );
    let stats = admin.stats().await.unwrap();
    assert_eq!(stats.disk_state, DiskState::Full);
    assert!(stats.sends_refused_disk_full >= 1);

    // Full: existing messages stay consumable, and a new group joins and consumes.
    assert_all_present(&broker.addr, &acked).await;
    let in_t05 = acked.keys().filter(|(t, _, _)| t == "t05").count();
    join_and_consume(&broker.addr, "joined-while-full", "t05", in_t05).await;
    // Periodic writers fail soft: each logs its first failure; the rounds after it,
    // retried with back-off, are not logged. (The consume-queue checkpoint writes into
    // journal space allocated ahead, so it may not fail at all.)
    wait_for_log(&broker, "writing consumer offsets failed").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_all_present(&broker.addr, &acked).await;

    // The filler goes: sends resume by themselves.
    std::fs::remove_file(&filler).unwrap();
    send_until_accepted(&producer, "t07", &mut acked).await;
    for n in 0..320 {
        let topic = &topics[n % topics.len()];
        send(
            &producer,
            topic,
            format!("after-{n}").into_bytes(),
            &mut acked,
        )
        .await
        .unwrap();
    }
    assert_all_present(&broker.addr, &acked).await;
    assert!(broker.is_running(), "{}", broker.log());
    let log = broker.log();
    assert_eq!(count(&log, DISK_FULL_LINE), 1, "{log}");
    assert_eq!(count(&log, DISK_BACK_LINE), 1, "{log}");
    // Periodic writers log a failure streak once, not every second, and its end.
    assert_eq!(count(&log, "writing consumer offsets failed"), 1, "{log}");
    assert!(count(&log, "consume-queue checkpoint failed") <= 1, "{log}");
    wait_for_log(&broker, "writing consumer offsets succeeded again").await;
    broker.kill();
}

/// Waits until the broker's log holds `line`.
async fn wait_for_log(broker: &BrokerProcess, line: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !broker.log().contains(line) {
        assert!(
            Instant::now() < deadline,
            "never logged {line:?}:\n{}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the broker's stats report `state`.
async fn wait_for_disk_state(admin: &Admin, state: DiskState) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if admin.stats().await.unwrap().disk_state == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "disk state never became {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_offset_writes_failing_with_enospc_refuse_sends_but_keep_serving() {
    let tmp = TempDir::new().unwrap();
    let faults = Arc::new(FaultyStorage::new());
    let mut config = broker::Config::ephemeral(tmp.path());
    config.segment_size = broker::config::ByteSize(1 << 20);
    config.max_message_size = broker::config::ByteSize(64 << 10);
    config.offsets_persist_interval_ms = 50;
    config.retry_delays_ms = vec![200];
    // The host's free space must not matter: only the injected failures do.
    config.disk_reserve = broker::config::DiskReserve::Bytes(0);
    let running = broker::Broker::start_on(config, faults.clone())
        .await
        .unwrap();
    let addr = running.local_addr().to_string();
    let admin = Admin::connect(&addr).await.unwrap();
    admin.create_topic(TOPIC, 4).await.unwrap();
    let producer = Producer::connect(&addr, ProducerOptions::default())
        .await
        .unwrap();
    let mut acked = Acked::new();
    for n in 0..200 {
        send(
            &producer,
            TOPIC,
            format!("before-{n}").into_bytes(),
            &mut acked,
        )
        .await
        .unwrap();
    }
    join_and_consume(&addr, "early", TOPIC, 100).await;

    // The disk fills: the next offsets write fails with ENOSPC and the broker goes Full.
    faults.disk_full(true);
    join_and_consume(&addr, "early", TOPIC, 50).await;
    wait_for_disk_state(&admin, DiskState::Full).await;
    let err = send(&producer, TOPIC, b"refused".to_vec(), &mut acked)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(Status::DiskFull), "{err}");
    assert!(err.to_string().contains(DISK_FULL_LINE), "{err}");
    let refused = admin.stats().await.unwrap().sends_refused_disk_full;
    assert!(refused >= 1);

    // A nack is refused too; the consumer keeps the message and sends it back later.
    let mut nacker = PullConsumer::connect(&addr, "nacker", &[(TOPIC, "*")], quick_polls())
        .await
        .unwrap();
    let nacked = nacker
        .recv_timeout(PATIENCE)
        .await
        .expect("a message to nack");
    nacker.nack(&nacked).await.unwrap();
    let stats = admin.stats().await.unwrap();
    assert!(
        stats.sends_refused_disk_full > refused,
        "the send-back was not refused"
    );

    // Still serving: reads, joins, commits (held in memory) and admin reads.
    assert_all_present(&addr, &acked).await;
    join_and_consume(&addr, "joined-while-full", TOPIC, 200).await;
    let committed: u64 = committed_sum(&admin, "early").await;
    assert_eq!(committed, 150, "commits made while full were not kept");
    assert_eq!(admin.list_topics(false).await.unwrap().len(), 1);
    // A long wait on the same state: the broker must not leave Full while writes fail.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(admin.stats().await.unwrap().disk_state, DiskState::Full);

    // Space comes back: sends resume and the offsets reach the disk.
    faults.disk_full(false);
    send_until_accepted(&producer, TOPIC, &mut acked).await;
    assert_eq!(admin.stats().await.unwrap().disk_state, DiskState::Ok);
    for n in 0..50 {
        send(
            &producer,
            TOPIC,
            format!("after-{n}").into_bytes(),
            &mut acked,
        )
        .await
        .unwrap();
    }
    assert_all_present(&addr, &acked).await;
    // The nacked message comes back through the group's retry topic.
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(
            Instant::now() < deadline,
            "the nacked message never came back"
        );
        let Some(m) = nacker.recv_timeout(Duration::from_millis(200)).await else {
            continue;
        };
        nacker.ack(&m);
        if m.is_retry() {
            assert_eq!(m.body(), nacked.body());
            assert_eq!(m.reconsume_times(), 1);
            break;
        }
    }
    nacker.close().await.unwrap();
    running.shutdown().await.unwrap();
    let offsets = broker::groups::ConsumerOffsets::open(tmp.path()).unwrap();
    let on_disk: u64 = offsets.queues_of("early").iter().map(|c| c.offset).sum();
    assert_eq!(
        on_disk, 150,
        "offsets committed while full never reached the disk"
    );
}

/// The group's committed offsets summed over the topic's 4 queues.
async fn committed_sum(admin: &Admin, group: &str) -> u64 {
    let mut sum = 0;
    for q in 0..4 {
        if let Some(c) = admin.committed(group, TOPIC, q).await.unwrap() {
            sum += c.offset;
        }
    }
    sum
}
