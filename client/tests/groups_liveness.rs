//! Group liveness under faults: no queue of a group with live members stays unpulled.
//!
//! Consumers reach the broker through a proxy that drops or delays the responses of
//! chosen requests (heartbeat, commit, send-back, pull), while members are replaced
//! (closed, abandoned, or cut off) and some messages are nacked into the retry topic.
//! Once the faults stop, every message sent must be acked by a live member within a
//! bound far below the session timeout: a queue that stays unpulled (a handoff waiting
//! for a release that never comes, a queue dropped and never reopened) fails the test
//! and names the queue.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use client::protocol::{Frame, FrameDecoder, FrameKind, RequestCode};
use client::{ConnectOptions, Connection, ConsumerOptions, Message, PullConsumer, StartFrom};
use support::TestBroker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "lr";
const GROUP: &str = "G";
const QUEUES: u32 = 4;

/// What the proxy does to the responses of one request code.
#[derive(Clone, Copy, Debug, Default)]
struct Rule {
    /// Per mille of responses dropped.
    drop: u64,
    /// Per mille of responses delayed by up to `delay_ms`.
    delay: u64,
    delay_ms: u64,
}

/// A TCP proxy between consumers and the broker that can drop or delay responses.
struct FaultProxy {
    addr: String,
    rules: Arc<Mutex<HashMap<u16, Rule>>>,
    /// Cancelled to cut every connection open now (a network failure).
    cut: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl FaultProxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let rules = Arc::new(Mutex::new(HashMap::new()));
        let cut = Arc::new(Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let seed = Arc::new(AtomicU64::new(0x9E37_79B9_7F4A_7C15));
        let (r, c, s) = (Arc::clone(&rules), Arc::clone(&cut), stop.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    () = s.cancelled() => return,
                    a = listener.accept() => a.unwrap(),
                };
                let Ok(broker) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let token = c.lock().unwrap().child_token();
                let stop = s.child_token();
                tokio::spawn(relay(
                    client,
                    broker,
                    Arc::clone(&r),
                    Arc::clone(&seed),
                    token,
                    stop,
                ));
            }
        });
        Self {
            addr,
            rules,
            cut,
            stop,
        }
    }

    fn set(&self, code: RequestCode, rule: Rule) {
        self.rules.lock().unwrap().insert(u16::from(code), rule);
    }

    fn heal(&self) {
        self.rules.lock().unwrap().clear();
    }

    fn cut_all(&self) {
        let mut c = self.cut.lock().unwrap();
        c.cancel();
        *c = CancellationToken::new();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A deterministic pseudo-random number below 1000 (splitmix64 over a shared counter).
fn per_mille(seed: &AtomicU64) -> u64 {
    let mut z = seed.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % 1000
}

async fn relay(
    client: TcpStream,
    broker: TcpStream,
    rules: Arc<Mutex<HashMap<u16, Rule>>>,
    seed: Arc<AtomicU64>,
    cut: CancellationToken,
    stop: CancellationToken,
) {
    let (mut c_read, c_write) = client.into_split();
    let (mut b_read, mut b_write) = broker.into_split();
    let codes: Arc<Mutex<HashMap<u64, u16>>> = Arc::default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<bytes::Bytes>();
    let up = {
        let codes = Arc::clone(&codes);
        async move {
            let decoder = FrameDecoder::new(u32::MAX);
            let mut buf = BytesMut::new();
            while c_read.read_buf(&mut buf).await.is_ok_and(|n| n > 0) {
                while let Ok(Some(f)) = decoder.decode(&mut buf) {
                    codes.lock().unwrap().insert(f.request_id, f.code);
                    let mut out = BytesMut::new();
                    Frame::encode(&mut out, f.kind, f.code, f.request_id, &f.header, &f.body)
                        .unwrap();
                    if b_write.write_all(&out).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let down = async move {
        let decoder = FrameDecoder::new(u32::MAX);
        let mut buf = BytesMut::new();
        while b_read.read_buf(&mut buf).await.is_ok_and(|n| n > 0) {
            while let Ok(Some(f)) = decoder.decode(&mut buf) {
                let code = codes.lock().unwrap().remove(&f.request_id).unwrap_or(0);
                let rule = rules
                    .lock()
                    .unwrap()
                    .get(&code)
                    .copied()
                    .unwrap_or_default();
                let mut out = BytesMut::new();
                Frame::encode(
                    &mut out,
                    FrameKind::Response,
                    f.code,
                    f.request_id,
                    &f.header,
                    &f.body,
                )
                .unwrap();
                if per_mille(&seed) < rule.drop {
                    continue;
                }
                let tx = tx.clone();
                if per_mille(&seed) < rule.delay {
                    let ms = per_mille(&seed) * rule.delay_ms / 1000;
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        let _ = tx.send(out.freeze());
                    });
                } else {
                    let _ = tx.send(out.freeze());
                }
            }
        }
    };
    let write = async move {
        let mut c_write = c_write;
        while let Some(b) = rx.recv().await {
            if c_write.write_all(&b).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = cut.cancelled() => {}
        () = stop.cancelled() => {}
        _ = async { tokio::join!(up, down, write) } => {}
    }
}

/// Acked bodies, shared by every member.
type Acked = Arc<Mutex<BTreeSet<String>>>;

/// One member: acks everything except a first delivery of every tenth message, which it
/// nacks (into the retry topic).
fn run_member(
    consumer: PullConsumer,
    acked: Acked,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<PullConsumer> {
    tokio::spawn(async move {
        let mut consumer = consumer;
        loop {
            let msg = tokio::select! {
                () = stop.cancelled() => return consumer,
                m = consumer.recv() => match m {
                    Some(m) => m,
                    None => return consumer,
                },
            };
            let body = String::from_utf8_lossy(msg.body()).to_string();
            let n: u64 = body
                .rsplit('-')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if msg.reconsume_times() == 0 && n.is_multiple_of(10) {
                // A refused or lost nack leaves it unacked; it is delivered again.
                let _ = consumer.nack(&msg).await;
                continue;
            }
            consumer.ack(&msg);
            acked.lock().unwrap().insert(body);
        }
    })
}

async fn join(proxy: &FaultProxy) -> PullConsumer {
    let opts = ConnectOptions {
        request_timeout: Duration::from_millis(800),
        connect_timeout: Duration::from_secs(2),
        ..ConnectOptions::default()
    };
    let consumer_opts = ConsumerOptions {
        start_from: StartFrom::Earliest,
        heartbeat_interval: Duration::from_millis(150),
        commit_interval: Duration::from_millis(50),
        long_poll_ms: 300,
        ..ConsumerOptions::default()
    };
    loop {
        // Joining itself may meet a dropped heartbeat response: try again.
        let Ok(conn) = Connection::connect(&proxy.addr, opts.clone()).await else {
            continue;
        };
        if let Ok(c) =
            PullConsumer::with_connection(conn, GROUP, &[(TOPIC, "*")], consumer_opts.clone()).await
        {
            return c;
        }
    }
}

/// How a replaced member goes.
#[derive(Clone, Copy, Debug)]
enum Exit {
    Close,
    Abandon,
    CutNetwork,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_queue_keeps_being_delivered_under_dropped_and_delayed_responses() {
    // A session timeout far beyond the test's patience: recovery may not rely on it.
    let b = TestBroker::start_with(|c| c.session_timeout_ms = 120_000).await;
    b.admin().await.create_topic(TOPIC, QUEUES).await.unwrap();
    let proxy = FaultProxy::start(b.addr.clone()).await;
    let acked: Acked = Arc::default();
    let sent: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();

    // A producer (straight to the broker) sends to every queue throughout.
    let producing = Arc::new(AtomicBool::new(true));
    let producer = {
        let (p, sent, producing) = (
            b.producer().await,
            Arc::clone(&sent),
            Arc::clone(&producing),
        );
        tokio::spawn(async move {
            let mut n = 0u64;
            while producing.load(Ordering::Acquire) {
                for _ in 0..QUEUES {
                    // Round robin: every queue gets its share.
                    let body = format!("m-{n}");
                    let r = p.send(TOPIC, &Message::new(body.clone())).await.unwrap();
                    sent.lock().unwrap().insert(body, r.queue_id);
                    n += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            p.close().await;
        })
    };

    let faults = [
        RequestCode::Heartbeat,
        RequestCode::CommitOffset,
        RequestCode::SendBack,
        RequestCode::Pull,
        RequestCode::QueryOffset,
    ];
    for code in faults {
        proxy.set(
            code,
            Rule {
                drop: 150,
                delay: 300,
                delay_ms: 1_000,
            },
        );
    }
    let mut members = Vec::new();
    for _ in 0..3 {
        let stop = CancellationToken::new();
        members.push((
            run_member(join(&proxy).await, Arc::clone(&acked), stop.clone()),
            stop,
        ));
    }
    // Replace a member every few hundred ms, each way a member can go.
    for round in 0..9 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (task, stop) = members.remove(0);
        stop.cancel();
        let consumer = task.await.unwrap();
        match [Exit::Close, Exit::Abandon, Exit::CutNetwork][round % 3] {
            Exit::Close => {
                let _ = consumer.close().await;
            }
            Exit::Abandon => consumer.abandon(),
            Exit::CutNetwork => {
                proxy.cut_all();
                consumer.abandon();
            }
        }
        let stop = CancellationToken::new();
        members.push((
            run_member(join(&proxy).await, Arc::clone(&acked), stop.clone()),
            stop,
        ));
    }

    // Faults stop; the members stay. Every message sent must now be acked.
    proxy.heal();
    producing.store(false, Ordering::Release);
    producer.await.unwrap();
    let healed = tokio::time::Instant::now();
    let deadline = healed + Duration::from_secs(30);
    loop {
        let missing: BTreeMap<u32, usize> = {
            let (sent, acked) = (sent.lock().unwrap(), acked.lock().unwrap());
            let mut m = BTreeMap::new();
            for (_, q) in sent.iter().filter(|(b, _)| !acked.contains(*b)) {
                *m.entry(*q).or_default() += 1;
            }
            m
        };
        if missing.is_empty() {
            eprintln!("drained {:?} after the faults stopped", healed.elapsed());
            break;
        }
        // LIVENESS_DEBUG=1 traces the drain, queue by queue.
        if std::env::var("LIVENESS_DEBUG").is_ok() {
            eprintln!("{:?} missing {missing:?}", healed.elapsed());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "queues of {TOPIC} (or their retries) left unconsumed, missing per queue: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (task, stop) in members {
        stop.cancel();
        let _ = task.await.unwrap().close().await;
    }
    b.shutdown().await;
}

/// Regression: a member dropped its retry queue when the group was deleted under it; the
/// queue's final commit was refused (its topic was gone), and the member kept it as
/// "held, commit pending" forever. When the next nack recreated the retry topic, the
/// queue was granted straight back to that member, which skipped opening it while its
/// old commit was pending: the retry queue was never pulled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_whose_final_commit_is_refused_is_released_and_pulled_again() {
    let b = TestBroker::start().await;
    b.admin().await.create_topic(TOPIC, 1).await.unwrap();
    let p = b.producer().await;
    let mut c = PullConsumer::connect(&b.addr, GROUP, &[(TOPIC, "*")], support::fast_options())
        .await
        .unwrap();
    let retry = c.retry_topic();
    let has_retry = |c: &PullConsumer| c.assignment().iter().any(|(t, _)| *t == retry);

    // A first message goes through the retry topic, so this member owns its queue at a
    // position past 0.
    p.send(TOPIC, &Message::new("one")).await.unwrap();
    let m = c
        .recv_timeout(support::PATIENCE)
        .await
        .expect("first delivery");
    c.nack(&m).await.unwrap();
    let again = c
        .recv_timeout(support::PATIENCE)
        .await
        .expect("retried delivery");
    assert_eq!(again.reconsume_times(), 1);
    c.ack(&again);
    c.commit().await.unwrap();
    assert!(has_retry(&c));

    // The group is deleted under the live member: the retry topic goes, and the member
    // drops its queue; the final commit of that queue is refused.
    b.admin().await.delete_group(GROUP, true).await.unwrap();
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    while has_retry(&c) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "retry queue never dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The next nack recreates the retry topic: its message must be delivered again.
    p.send(TOPIC, &Message::new("two")).await.unwrap();
    let m = c
        .recv_timeout(support::PATIENCE)
        .await
        .expect("second delivery");
    assert_eq!(m.body(), b"two");
    c.nack(&m).await.unwrap();
    let again = c
        .recv_timeout(support::PATIENCE)
        .await
        .expect("the retry queue is pulled again");
    assert_eq!((again.body(), again.reconsume_times()), (&b"two"[..], 1));
    c.ack(&again);
    c.close().await.unwrap();
    p.close().await;
    b.shutdown().await;
}
