//! Clients that try to stop the broker from serving everyone else, against the real
//! broker binary: pipelines of heavy requests abandoned mid-way, pipelines never read,
//! silent connections by the thousand, idle connections, and a low open-file limit.
//! Each test asserts that the broker keeps serving a well-behaved client, stays within a
//! memory bound, stops working for clients that left, and exits on SIGTERM by itself.
//! Every time bound below is a generous guard against a hang, never a performance claim.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use crate::support::process::BrokerProcess;
use bytes::BytesMut;
use client::admin::Admin;
use client::{Message, Producer, ProducerOptions};
use protocol::messages::{HelloRequest, ListTopicsRequest, PullRequest};
use protocol::{header, Frame, FrameDecoder, FrameKind, Request, Status};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Topics and queues that make every `ListTopics` answer large (about 100k queues).
const TOPICS: u32 = 100;
const QUEUES: u32 = 1024;
/// Requests each abusive connection pipelines: the default in-flight limit.
const PIPELINE: u64 = 1024;
/// Growth of the broker's resident memory allowed while abusive clients come and go.
const RSS_GROWTH_BOUND_KIB: u64 = 256 << 10;
/// Failure guard for anything that must happen "soon".
const GUARD: Duration = Duration::from_secs(60);

fn frame<R: Request>(req: &R, request_id: u64) -> BytesMut {
    let mut buf = BytesMut::new();
    let h = header::encode(req).unwrap();
    Frame::encode(
        &mut buf,
        FrameKind::Request,
        u16::from(R::CODE),
        request_id,
        &h,
        b"",
    )
    .unwrap();
    buf
}

fn hello() -> HelloRequest {
    HelloRequest {
        protocol_version: protocol::PROTOCOL_VERSION,
        client_id: "hostile-test".into(),
    }
}

/// `PIPELINE` ListTopics requests back to back, as one write.
fn list_topics_pipeline() -> Vec<u8> {
    let mut all = Vec::new();
    for id in 1..=PIPELINE {
        all.extend_from_slice(&frame(&ListTopicsRequest::default(), id));
    }
    all
}

async fn broker_with_many_queues(tmp: &TempDir, args: &[&str]) -> BrokerProcess {
    let broker = BrokerProcess::start(&tmp.path().join("data"), &tmp.path().join("logs"), args);
    let admin = Admin::connect(&broker.addr).await.unwrap();
    for t in 0..TOPICS {
        admin
            .create_topic(&format!("wide-{t}"), QUEUES)
            .await
            .unwrap();
    }
    broker
}

/// Reads until the broker closes the connection (EOF or reset); false if it is still
/// open after `within`. Whatever the broker sends first (a refusal) is skipped.
async fn closed_by_broker(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let until_closed = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, until_closed).await.is_ok()
}

/// Waits until the broker's CPU use over a one-second window falls below a quarter of a
/// core; the largest VmRSS seen meanwhile. Panics if it never settles within `GUARD`.
fn wait_until_quiet(broker: &BrokerProcess) -> (Duration, u64) {
    let start = Instant::now();
    let mut peak = broker.rss_kib();
    loop {
        let before = broker.cpu_time();
        std::thread::sleep(Duration::from_secs(1));
        let used = broker.cpu_time() - before;
        peak = peak.max(broker.rss_kib());
        if used < Duration::from_millis(250) {
            return (start.elapsed(), peak);
        }
        assert!(
            start.elapsed() < GUARD,
            "broker still busy ({used:?} CPU per second) {:?} after its clients left",
            start.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_pipelines_of_heavy_requests_stop_costing_memory_and_cpu() {
    let tmp = TempDir::new().unwrap();
    let mut broker = broker_with_many_queues(&tmp, &["--segment-size", "8M"]).await;
    let good = Admin::connect(&broker.addr).await.unwrap();
    good.stats().await.unwrap();
    let rss_before = broker.rss_kib();

    // Four connections pipeline 1,024 large ListTopics each, then go away together while
    // the broker is still working on them.
    let pipeline = list_topics_pipeline();
    let mut abusers = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(&broker.addr).await.unwrap();
        s.write_all(&pipeline).await.unwrap();
        abusers.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(abusers);

    // Another client is served meanwhile (within the client's own request timeout).
    let asked = Instant::now();
    let stats = good.stats().await;
    let stats_took = asked.elapsed();
    assert!(
        stats.is_ok(),
        "stats refused after the abusers left: {stats:?}"
    );

    let (settled_after, rss_peak) = wait_until_quiet(&broker);
    let rss_after = broker.rss_kib();
    let stopping = Instant::now();
    let status = broker.terminate_and_wait(GUARD);
    let stop_took = stopping.elapsed();
    eprintln!(
        "VmRSS before {rss_before} KiB, peak {rss_peak} KiB, after {rss_after} KiB; \
         stats answered in {stats_took:?}; CPU quiet {settled_after:?} after the close; \
         SIGTERM exit in {stop_took:?}"
    );
    assert!(
        rss_peak.saturating_sub(rss_before) < RSS_GROWTH_BOUND_KIB,
        "memory grew from {rss_before} KiB to {rss_peak} KiB for clients that left"
    );
    let status = status.unwrap_or_else(|| panic!("no exit on SIGTERM:\n{}", broker.log()));
    assert!(status.success(), "unclean exit {status}:\n{}", broker.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_within_the_deadline_while_pipelines_are_never_read() {
    let tmp = TempDir::new().unwrap();
    let mut broker = broker_with_many_queues(
        &tmp,
        &[
            "--segment-size",
            "8M",
            "--shutdown-timeout-ms",
            "3000",
            "--max-pending-bytes-per-connection",
            "4M",
        ],
    )
    .await;
    let rss_before = broker.rss_kib();
    // Connections that ask for far more than they read, and stay open: each is held to
    // its byte budget (4 MiB of answers) instead of building all 1,024 answers.
    let pipeline = list_topics_pipeline();
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(&broker.addr).await.unwrap();
        s.write_all(&pipeline).await.unwrap();
        held.push(s);
    }
    let (_, rss_peak) = wait_until_quiet(&broker);
    eprintln!("VmRSS before {rss_before} KiB, with unread pipelines {rss_peak} KiB");
    assert!(
        rss_peak.saturating_sub(rss_before) < RSS_GROWTH_BOUND_KIB,
        "memory grew from {rss_before} KiB to {rss_peak} KiB for answers nobody reads"
    );
    let stopping = Instant::now();
    let status = broker.terminate_and_wait(GUARD);
    eprintln!(
        "SIGTERM exit with pending heavy work in {:?}",
        stopping.elapsed()
    );
    let status = status.unwrap_or_else(|| panic!("no exit on SIGTERM:\n{}", broker.log()));
    let log = broker.log();
    assert!(status.success(), "unclean exit {status}:\n{log}");
    // The store was closed, not abandoned.
    assert!(log.contains("broker stopped cleanly"), "{log}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_far_beyond_the_byte_budget_is_answered_whole_once_read() {
    let tmp = TempDir::new().unwrap();
    let broker = BrokerProcess::start(
        &tmp.path().join("data"),
        &tmp.path().join("logs"),
        &[
            "--segment-size",
            "8M",
            "--max-pending-bytes-per-connection",
            "64K",
        ],
    );
    let admin = Admin::connect(&broker.addr).await.unwrap();
    for t in 0..10 {
        admin
            .create_topic(&format!("wide-{t}"), QUEUES)
            .await
            .unwrap();
    }
    // About 30 MB of answers owed at once against a 64 KiB budget: the broker stops
    // reading and resumes as this client reads, and every request is answered in full.
    let mut s = TcpStream::connect(&broker.addr).await.unwrap();
    s.write_all(&list_topics_pipeline()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let decoder = FrameDecoder::new(64 << 20);
    let mut buf = BytesMut::new();
    let mut answered = std::collections::BTreeSet::new();
    while answered.len() < PIPELINE as usize {
        if let Some(f) = decoder.decode(&mut buf).unwrap() {
            assert_eq!(Status::try_from(f.code).unwrap(), Status::Ok);
            let list: protocol::messages::ListTopicsResponse = header::decode(&f.header).unwrap();
            assert_eq!(list.topics.len(), 10);
            assert!(answered.insert(f.request_id), "answered twice");
            continue;
        }
        let n = tokio::time::timeout(GUARD, s.read_buf(&mut buf))
            .await
            .expect("answers keep coming while the client reads")
            .unwrap();
        assert!(n > 0, "closed after {} answers", answered.len());
    }
    assert_eq!(answered, (1..=PIPELINE).collect());
}

/// Raises this test process's own open-file limit so it can hold `n` sockets; false if
/// the hard limit does not allow it.
fn allow_fds(n: u64) -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid, exclusive `rlimit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return false;
        }
        if lim.rlim_cur >= n {
            return true;
        }
        if lim.rlim_max < n {
            return false;
        }
        lim.rlim_cur = n;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_after_the_hello_timeout_and_real_clients_get_in() {
    const SILENT: usize = 1_100;
    if !allow_fds(4_096) {
        eprintln!("skipped: this process cannot hold {SILENT} sockets (hard open-file limit)");
        return;
    }
    let tmp = TempDir::new().unwrap();
    let broker = BrokerProcess::start(
        &tmp.path().join("data"),
        &tmp.path().join("logs"),
        &["--segment-size", "8M", "--hello-timeout-ms", "500"],
    );
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(TcpStream::connect(&broker.addr).await.unwrap());
    }
    // Every silent connection is closed by the broker: those over the limit at once, the
    // others at their hello deadline.
    for s in &mut silent {
        assert!(
            closed_by_broker(s, GUARD).await,
            "a connection that never said hello is still open"
        );
    }
    // A real client gets in and is served.
    let producer = Producer::connect(&broker.addr, ProducerOptions::default())
        .await
        .unwrap();
    producer
        .send("after-silence", &Message::new("hello"))
        .await
        .unwrap();
    let stats = Admin::connect(&broker.addr)
        .await
        .unwrap()
        .stats()
        .await
        .unwrap();
    // The producer and this admin connection; the silent ones are gone.
    assert!(stats.connections <= 2, "{} connections", stats.connections);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_but_not_while_a_pull_is_held() {
    let tmp = TempDir::new().unwrap();
    let broker = BrokerProcess::start(
        &tmp.path().join("data"),
        &tmp.path().join("logs"),
        &["--segment-size", "8M", "--idle-timeout-ms", "300"],
    );
    Admin::connect(&broker.addr)
        .await
        .unwrap()
        .create_topic("held", 1)
        .await
        .unwrap();

    // Greets, then says nothing more: closed once idle.
    let mut idle = TcpStream::connect(&broker.addr).await.unwrap();
    idle.write_all(&frame(&hello(), 1)).await.unwrap();
    assert!(closed_by_broker(&mut idle, GUARD).await);

    // Greets, then holds a pull for much longer than the idle timeout: the pull is
    // answered (no message) rather than the connection closed under it.
    let mut polling = TcpStream::connect(&broker.addr).await.unwrap();
    polling.write_all(&frame(&hello(), 1)).await.unwrap();
    let pull = PullRequest {
        topic: "held".into(),
        queue_id: 0,
        group: "g".into(),
        offset: 0,
        max_messages: 1,
        max_bytes: 0,
        tag_expr: "*".into(),
        max_wait_ms: 1_500,
    };
    polling.write_all(&frame(&pull, 2)).await.unwrap();
    let decoder = FrameDecoder::new(1 << 20);
    let mut buf = BytesMut::new();
    let mut answered = Vec::new();
    while answered.len() < 2 {
        if let Some(f) = decoder.decode(&mut buf).unwrap() {
            answered.push((f.request_id, Status::try_from(f.code).unwrap()));
            continue;
        }
        let n = tokio::time::timeout(GUARD, polling.read_buf(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "closed with a pull held; answered so far: {answered:?}"
        );
    }
    assert_eq!(answered, [(1, Status::Ok), (2, Status::Ok)]);
    // Then idle: closed.
    assert!(closed_by_broker(&mut polling, GUARD).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_open_file_limit_is_raised_and_connections_leave_room_for_files() {
    let tmp = TempDir::new().unwrap();
    let broker = BrokerProcess::start_with_fd_limit(
        &tmp.path().join("data"),
        &tmp.path().join("logs"),
        &["--segment-size", "8M", "--max-connections", "1024"],
        256,
        400,
    );
    // The soft limit was raised to the hard one, and the budget logged once.
    assert_eq!(broker.fd_limits(), (400, 400));
    let log = broker.log();
    assert!(log.contains("fd budget 400 (connections ≤ 272)"), "{log}");
    assert!(log.contains("max_connections lowered to 272"), "{log}");
    assert!(log.contains("mappings "), "{log}");

    // Every connection slot taken by clients that completed their hello...
    let mut held = Vec::new();
    for _ in 0..272 {
        let mut s = TcpStream::connect(&broker.addr).await.unwrap();
        s.write_all(&frame(&hello(), 1)).await.unwrap();
        held.push(s);
    }
    let mut over = TcpStream::connect(&broker.addr).await.unwrap();
    let mut buf = BytesMut::new();
    let decoder = FrameDecoder::new(1 << 20);
    let refusal = loop {
        if let Some(f) = decoder.decode(&mut buf).unwrap() {
            break f;
        }
        let n = tokio::time::timeout(GUARD, over.read_buf(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed without a refusal");
    };
    assert_eq!(Status::try_from(refusal.code).unwrap(), Status::Busy);
    // ...still leaves descriptors for new topics' files: one slot freed for a producer,
    // which creates topics and stores messages in them.
    drop(held.pop());
    let producer = loop {
        match Producer::connect(&broker.addr, ProducerOptions::default()).await {
            Ok(p) => break p,
            Err(e) => {
                eprintln!("waiting for the freed slot: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    for t in 0..10 {
        let topic = format!("new-{t}");
        for q in 0..4 {
            producer
                .send(&topic, &Message::new(format!("m{q}")))
                .await
                .unwrap();
        }
    }
    // Read back through a connection freed by one of the held ones.
    drop(held.pop());
    let admin = loop {
        match Admin::connect(&broker.addr).await {
            Ok(a) => break a,
            Err(e) => {
                eprintln!("waiting for the freed slot: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let start = Instant::now();
    for t in 0..10 {
        // Indexing follows the acknowledgement by a moment.
        loop {
            let info = admin.get_topic(&format!("new-{t}")).await.unwrap();
            let indexed: u64 = info.queues.iter().map(|q| q.max_offset).sum();
            if indexed == 4 {
                break;
            }
            assert!(
                start.elapsed() < GUARD,
                "topic new-{t}: {indexed} of 4 indexed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
