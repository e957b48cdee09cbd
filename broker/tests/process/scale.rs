//! Many queues under the real broker binary: N queues (topics of 10) with 3 messages each
//! survive SIGKILL and a clean restart with every queue's content and offsets intact, while
//! the queue store's disk and the broker's open fds stay bounded. Prints time to serving,
//! VmRSS, stop time and disk for the benchmark notes.
//!
//! `FERRO_SCALE_QUEUES` (default 2,000); the long run in the README uses 100,000.
//!
//! Also: under `ulimit -n 1024`, 1,100 topics are all delivered and the broker restarts
//! under the same limit (no fd per queue).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::env_u64;
use crate::support::process::{free_port, BrokerProcess};
use client::protocol::messages::{PullRequest, PullStatus};
use client::{ConnectOptions, Connection, Message, Producer, ProducerOptions};
use commitlog::format::RecordView;
use tempfile::TempDir;

const QUEUES_PER_TOPIC: u32 = 10;

/// Ten queues per topic, and a topic cap above the run's topic count (the default cap,
/// 10,000 topics, is what 100,000 queues would reach).
fn args() -> Vec<&'static str> {
    vec!["--default-queues", "10", "--max-topics", "1000000"]
}

fn topic(t: u64) -> String {
    format!("scale-{t}")
}

/// Allocated bytes of every file under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            disk_bytes(&e.path())
        } else {
            m.blocks() * 512
        };
    }
    total
}

fn proc_field(pid: i32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .map(|l| l[field.len()..].trim().to_owned())
        .unwrap_or_default()
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

async fn produce(addr: &str, topics: u64) {
    let producer = Producer::connect(addr, ProducerOptions::default())
        .await
        .unwrap();
    for t in 0..topics {
        // Ten batches of three, spread over the topic's queues by the producer.
        for b in 0..QUEUES_PER_TOPIC {
            let msgs: Vec<Message> = (0..3)
                .map(|i| Message::new(format!("{}-{b}-{i}", topic(t))))
                .collect();
            producer.send_batch(&topic(t), &msgs).await.unwrap();
        }
    }
}

/// Pulls every queue of every topic: offsets are gap-free from 0 in each queue, and together
/// the queues hold exactly what was sent to the topic.
async fn verify(addr: &str, topics: u64) {
    let conn = Connection::connect(addr, ConnectOptions::default())
        .await
        .unwrap();
    for t in 0..topics {
        let mut bodies = Vec::new();
        for q in 0..QUEUES_PER_TOPIC {
            let req = PullRequest {
                topic: topic(t),
                queue_id: q,
                group: "scale-verify".into(),
                offset: 0,
                max_messages: 64,
                max_bytes: 1 << 20,
                tag_expr: "*".into(),
                max_wait_ms: 0,
            };
            let (resp, body) = conn.call(&req, &[]).await.unwrap();
            if resp.status == PullStatus::NoNewMessage {
                continue;
            }
            assert_eq!(resp.status, PullStatus::Found, "{}/{q}", topic(t));
            let mut rest: &[u8] = &body;
            for offset in 0..u64::from(resp.count) {
                let v = RecordView::decode(rest).unwrap();
                assert_eq!(
                    (v.queue_id(), v.queue_offset()),
                    (q, offset),
                    "{}",
                    topic(t)
                );
                bodies.push(String::from_utf8(v.body().to_vec()).unwrap());
                rest = &rest[v.total_len() as usize..];
            }
        }
        bodies.sort();
        let mut want: Vec<String> = (0..QUEUES_PER_TOPIC)
            .flat_map(|b| (0..3).map(move |i| format!("{}-{b}-{i}", topic(t))))
            .collect();
        want.sort();
        assert_eq!(bodies, want, "{}", topic(t));
    }
}

fn report(what: &str, broker: &BrokerProcess, started: Instant, data: &Path, queues: u64) {
    let pid = broker.pid();
    let disk = disk_bytes(&data.join("queues"));
    let fds = open_fds(pid);
    eprintln!(
        "scale {queues} queues, {what}: serving after {:?}, VmRSS {}, queue store disk {} KiB, fds {fds}",
        started.elapsed(),
        proc_field(pid, "VmRSS:"),
        disk >> 10
    );
    assert!(
        disk <= 64 * 1024 * queues.max(1_100),
        "queue store uses {disk} bytes for {queues} queues"
    );
    // A handful of connections at most are open during the checks.
    assert!(fds <= 64 + 8, "broker holds {fds} fds with {queues} queues");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_queues_survive_sigkill_and_clean_restart_within_bounds() {
    let queues = env_u64("FERRO_SCALE_QUEUES", 2_000);
    let topics = queues.div_ceil(u64::from(QUEUES_PER_TOPIC));
    let queues = topics * u64::from(QUEUES_PER_TOPIC);
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    let logs = tmp.path().join("logs");
    let mut broker = BrokerProcess::start(&data, &logs, &args());
    produce(&broker.addr, topics).await;
    verify(&broker.addr, topics).await;
    broker.kill();

    let started = Instant::now();
    let mut broker = BrokerProcess::start(&data, &logs, &args());
    report("after SIGKILL", &broker, started, &data, queues);
    verify(&broker.addr, topics).await;
    let stopping = Instant::now();
    broker.terminate(Duration::from_secs(60));
    eprintln!(
        "scale {queues} queues: clean stop took {:?}",
        stopping.elapsed()
    );

    let started = Instant::now();
    let mut broker = BrokerProcess::start(&data, &logs, &args());
    report("after clean stop", &broker, started, &data, queues);
    verify(&broker.addr, topics).await;
    broker.terminate(Duration::from_secs(60));
}

/// The broker binary started through `sh` with `ulimit -n 1024`; returns it once it serves.
fn start_limited(data: &Path, log: &Path) -> (Child, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let script = format!(
        "ulimit -n 1024 && exec '{}' --listen {addr} --data-dir '{}' --default-queues 4 --grpc-listen 127.0.0.1:0",
        env!("CARGO_BIN_EXE_broker"),
        data.display()
    );
    let out = std::fs::File::create(log).unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        assert!(
            child.try_wait().unwrap().is_none(),
            "broker exited under ulimit -n 1024:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        let banner = std::fs::read_to_string(log).unwrap_or_default();
        if banner.contains("listening on") && std::net::TcpStream::connect(&addr).is_ok() {
            return (child, addr);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("broker did not come up under ulimit -n 1024");
}

fn stop(child: &mut Child) {
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: plain syscall on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    child.wait().unwrap();
}

/// Every body of the topic's four queues.
async fn pull_one(conn: &Connection, topic: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for queue_id in 0..4 {
        let req = PullRequest {
            topic: topic.into(),
            queue_id,
            group: "fd-verify".into(),
            offset: 0,
            max_messages: 16,
            max_bytes: 1 << 20,
            tag_expr: "*".into(),
            max_wait_ms: 0,
        };
        let (resp, body) = conn.call(&req, &[]).await.unwrap();
        if resp.status == PullStatus::NoNewMessage {
            continue;
        }
        assert_eq!(resp.status, PullStatus::Found, "{topic}/{queue_id}");
        let mut rest: &[u8] = &body;
        for _ in 0..resp.count {
            let v = RecordView::decode(rest).unwrap();
            out.push(v.body().to_vec());
            rest = &rest[v.total_len() as usize..];
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eleven_hundred_topics_are_delivered_and_restart_under_a_1024_fd_limit() {
    const TOPICS: usize = 1_100;
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    let (mut broker, addr) = start_limited(&data, &tmp.path().join("broker-0.log"));
    let producer = Producer::connect(&addr, ProducerOptions::default())
        .await
        .unwrap();
    for t in 0..TOPICS {
        producer
            .send(&format!("fd-{t}"), &Message::new(format!("body-{t}")))
            .await
            .unwrap();
    }
    let conn = Connection::connect(&addr, ConnectOptions::default())
        .await
        .unwrap();
    for t in 0..TOPICS {
        assert_eq!(
            pull_one(&conn, &format!("fd-{t}")).await,
            vec![format!("body-{t}").into_bytes()]
        );
    }
    drop((conn, producer));
    stop(&mut broker);

    let (mut broker, addr) = start_limited(&data, &tmp.path().join("broker-1.log"));
    let conn = Connection::connect(&addr, ConnectOptions::default())
        .await
        .unwrap();
    for t in 0..TOPICS {
        assert_eq!(
            pull_one(&conn, &format!("fd-{t}")).await,
            vec![format!("body-{t}").into_bytes()]
        );
    }
    let fds = open_fds(i32::try_from(broker.id()).unwrap());
    eprintln!("{TOPICS} topics under ulimit -n 1024: broker holds {fds} fds");
    assert!(fds <= 64 + 8, "{fds} fds");
    drop(conn);
    stop(&mut broker);
}
