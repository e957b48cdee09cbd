//! SIGKILL of the real broker process at random moments while producers run.
//!
//! Producers (the client library) record every acknowledged message: queue, queue offset,
//! body, tag and key. The broker is killed at a random moment and restarted, many times;
//! then every queue is pulled from offset 0 and checked: queue offsets gap-free, every
//! record passing its CRC, every acknowledged message present exactly as sent at its
//! offset. With `--flush sync` and with `--flush async` (a killed process leaves its
//! writes in the page cache, so async must lose nothing either).
//!
//! Cycles: `FERRO_KILL_CYCLES` (default 20 per flush mode).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::process::BrokerProcess;
use crate::support::{env_u64, Rng};
use client::protocol::messages::{PullRequest, PullStatus};
use client::protocol::properties::{Properties, KEYS, TAGS};
use client::{ConnectOptions, Connection, Message, Producer, ProducerOptions};
use commitlog::format::RecordView;
use tempfile::TempDir;

const TOPIC: &str = "kill-test";
const QUEUES: u32 = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    body: Vec<u8>,
    tag: String,
    key: String,
}

/// Acknowledged messages by (queue, queue offset).
type Acked = Arc<Mutex<BTreeMap<(u32, u64), Sent>>>;

fn broker_args(flush: &str) -> Vec<&str> {
    vec![
        "--flush",
        flush,
        "--flush-interval-ms",
        "200",
        "--segment-size",
        "256K",
        "--max-message-size",
        "64K",
        "--default-queues",
        "4",
    ]
}

fn quick_connect() -> ConnectOptions {
    ConnectOptions {
        request_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_millis(500),
        ..ConnectOptions::default()
    }
}

/// Sends until the broker goes away; records what was acknowledged.
async fn produce(addr: String, id: u64, cycle: u64, acked: Acked) {
    let Ok(conn) = Connection::connect(&addr, quick_connect()).await else {
        return;
    };
    let producer = Producer::with_connection(conn, ProducerOptions::default());
    let mut rng = Rng::new(id * 7919 + cycle);
    for n in 0u64.. {
        let batch = 1 + rng.below(8) as usize;
        let sent: Vec<Sent> = (0..batch)
            .map(|i| {
                let mut body = format!("p{id}-c{cycle}-n{n}-{i}|").into_bytes();
                let len = rng.below(600) as usize;
                body.extend(rng.bytes(len));
                Sent {
                    body,
                    tag: format!("tag{}", rng.below(3)),
                    key: format!("key-{id}-{cycle}-{n}-{i}"),
                }
            })
            .collect();
        let msgs: Vec<Message> = sent
            .iter()
            .map(|s| {
                Message::new(s.body.clone())
                    .with_tag(&s.tag)
                    .with_keys(&s.key)
            })
            .collect();
        let result = if batch == 1 {
            producer.send(TOPIC, &msgs[0]).await.map(|r| vec![r])
        } else {
            producer.send_batch(TOPIC, &msgs).await
        };
        let Ok(results) = result else {
            return; // the broker was killed; outcome of this send unknown
        };
        let mut a = acked.lock().unwrap();
        for (r, s) in results.into_iter().zip(sent) {
            let prev = a.insert((r.queue_id, r.queue_offset), s);
            assert!(
                prev.is_none(),
                "two acknowledged messages at {}/{}",
                r.queue_id,
                r.queue_offset
            );
        }
    }
}

/// Pulls a whole queue from 0; checks CRC, order and gap-free offsets.
async fn pull_all(conn: &Connection, queue: u32) -> Vec<(u64, Sent)> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let req = PullRequest {
            topic: TOPIC.into(),
            queue_id: queue,
            group: "kill-verify".into(),
            offset,
            max_messages: 256,
            max_bytes: 1 << 20,
            tag_expr: "*".into(),
            max_wait_ms: 0,
        };
        let (resp, body) = conn.call(&req, &[]).await.unwrap();
        match resp.status {
            PullStatus::Found => {}
            PullStatus::NoNewMessage => return out,
            other => panic!("queue {queue} at {offset}: {other:?} {resp:?}"),
        }
        let mut rest: &[u8] = &body;
        for _ in 0..resp.count {
            let v = RecordView::decode(rest)
                .unwrap_or_else(|e| panic!("record failing decode/CRC served: {e}"));
            assert_eq!((v.topic(), v.queue_id()), (TOPIC, queue));
            assert_eq!(v.queue_offset(), offset, "queue {queue}: gap or disorder");
            let props = Properties::new(v.properties());
            out.push((
                offset,
                Sent {
                    body: v.body().to_vec(),
                    tag: props.get(TAGS).unwrap_or_default().to_owned(),
                    key: props.get(KEYS).unwrap_or_default().to_owned(),
                },
            ));
            offset += 1;
            rest = &rest[v.total_len() as usize..];
        }
        assert!(rest.is_empty(), "trailing bytes in pull body");
        assert_eq!(resp.next_offset, offset);
    }
}

async fn verify(addr: &str, acked: &BTreeMap<(u32, u64), Sent>) -> u64 {
    let conn = Connection::connect(addr, ConnectOptions::default())
        .await
        .unwrap();
    let mut stored = 0;
    for q in 0..QUEUES {
        let got = pull_all(&conn, q).await;
        stored += got.len() as u64;
        let by_offset: BTreeMap<u64, &Sent> = got.iter().map(|(o, s)| (*o, s)).collect();
        for ((_, offset), sent) in acked.range((q, 0)..(q + 1, 0)) {
            let found = by_offset
                .get(offset)
                .unwrap_or_else(|| panic!("acknowledged message {q}/{offset} lost"));
            assert!(*found == sent, "{q}/{offset} differs from what was sent");
        }
    }
    stored
}

async fn kill_cycles(flush: &str) {
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    let logs = tmp.path().join("logs");
    let cycles = env_u64("FERRO_KILL_CYCLES", 20);
    let acked: Acked = Arc::default();
    let mut rng = Rng::new(env_u64("FERRO_KILL_SEED", 42));
    let args = broker_args(flush);
    for cycle in 0..cycles {
        let mut broker = BrokerProcess::start(&data, &logs, &args);
        let producers: Vec<_> = (0..3)
            .map(|id| tokio::spawn(produce(broker.addr.clone(), id, cycle, Arc::clone(&acked))))
            .collect();
        tokio::time::sleep(Duration::from_millis(150 + rng.below(600))).await;
        assert!(
            broker.is_running(),
            "broker died on its own:\n{}",
            broker.log()
        );
        broker.kill();
        for p in producers {
            p.await.unwrap();
        }
    }
    let broker = BrokerProcess::start(&data, &logs, &args);
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() as u64 > cycles * 10,
        "too little produced: {}",
        acked.len()
    );
    let stored = verify(&broker.addr, &acked).await;
    eprintln!(
        "flush {flush}: {cycles} kills, {} acknowledged, {stored} stored, all present",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_acknowledged_with_sync_flush() {
    kill_cycles("sync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_acknowledged_with_async_flush() {
    kill_cycles("async").await;
}
