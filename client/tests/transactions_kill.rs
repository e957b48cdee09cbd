//! Transactions across crashes: the broker SIGKILLed at random points of many concurrent
//! transactions (each checked against a model after restart: all or nothing, sends and
//! acks together), and a producer SIGKILLed mid-transaction (resolved by check-back from
//! another live producer of its group).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod restart_support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::config::ByteSize;
use broker::{Broker, Config};
use client::admin::Admin;
use client::protocol::tx::{TX_ID, TX_INDEX};
use client::{
    ConsumerOptions, Message, Producer, ProducerOptions, PullConsumer, StartFrom,
    TransactionalProducer, TxAdmin, TxResolution,
};
use restart_support::Hosted;

const PATIENCE: Duration = Duration::from_secs(30);
const CYCLES: usize = 3;
const WORKERS: usize = 6;
/// Messages per transaction.
const K: usize = 3;
/// Transactions in all (each acks input offset i, so the input holds this many).
const MAX_TXS: u64 = 2_400;

fn tx_settings(c: &mut Config) {
    c.tx_timeout_ms = 400;
    c.tx_check_interval_ms = 200;
    c.tx_max_checks = 20;
    c.segment_size = ByteSize(16 << 20);
}

/// What the test did in one transaction, as far as it knows.
#[derive(Debug, Clone, Default)]
struct Model {
    input_offset: u64,
    commit: bool,
    send_attempted: bool,
    send_acked: bool,
}

type Models = Arc<Mutex<HashMap<String, Model>>>;

/// The "local database": a transaction's fate is the test's intent; one the test never
/// heard of (its begin answer was lost in the crash) is rolled back.
fn checker(models: Models) -> impl client::TransactionChecker {
    move |id: &str, _check: u32| match models.lock().unwrap().get(id) {
        Some(m) if m.commit => TxResolution::Commit,
        _ => TxResolution::Rollback("unknown to the application".into()),
    }
}

async fn worker(
    p: Arc<TransactionalProducer>,
    models: Models,
    next: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Acquire) {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= MAX_TXS {
            return;
        }
        let Ok(tx) = p.begin_with_timeout(Duration::from_millis(400)).await else {
            return;
        };
        let id = tx.id().to_string();
        let mut m = Model {
            input_offset: i,
            commit: !i.is_multiple_of(3),
            ..Model::default()
        };
        models.lock().unwrap().insert(id.clone(), m.clone());
        if tx.ack_offsets("ctp", "in", 0, &[i]).await.is_err() {
            return;
        }
        m.send_attempted = true;
        models.lock().unwrap().insert(id.clone(), m.clone());
        let msgs: Vec<Message> = (0..K).map(|j| Message::new(format!("{i}-{j}"))).collect();
        let sent = tx.send_to("out", (i % 2) as u32, &msgs).await;
        if sent.is_err() {
            return;
        }
        m.send_acked = true;
        models.lock().unwrap().insert(id, m.clone());
        let ended = if m.commit {
            tx.commit().await.map(drop)
        } else {
            tx.rollback().await
        };
        if ended.is_err() {
            return;
        }
    }
}

fn kill_delay_ms(cycle: usize) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    100 + (u64::from(nanos) + cycle as u64 * 311) % 400
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_many_concurrent_transactions_leaves_each_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let models: Models = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    let mut addr: Option<String> = None;
    for cycle in 0..CYCLES {
        let host = Hosted::spawn("tx_broker_host", dir.path(), addr.as_deref());
        addr = Some(host.addr.clone());
        if cycle == 0 {
            let admin = Admin::connect(&host.addr).await.unwrap();
            admin.create_topic("in", 1).await.unwrap();
            admin.create_topic("out", 2).await.unwrap();
            let p = Producer::connect(&host.addr, ProducerOptions::default())
                .await
                .unwrap();
            let input: Vec<Message> = (0..MAX_TXS)
                .map(|i| Message::new(format!("in{i}")))
                .collect();
            for chunk in input.chunks(400) {
                p.send_batch("in", chunk).await.unwrap();
            }
            p.close().await;
        }
        let p = Arc::new(
            TransactionalProducer::connect(&host.addr, "pg", checker(Arc::clone(&models)))
                .await
                .unwrap(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                tokio::spawn(worker(
                    Arc::clone(&p),
                    Arc::clone(&models),
                    Arc::clone(&next),
                    Arc::clone(&stop),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(kill_delay_ms(cycle))).await;
        host.kill();
        stop.store(true, Ordering::Release);
        p.close();
        for w in workers {
            w.await.unwrap();
        }
    }
    let host = Hosted::spawn("tx_broker_host", dir.path(), addr.as_deref());
    let _resolver = TransactionalProducer::connect(&host.addr, "pg", checker(Arc::clone(&models)))
        .await
        .unwrap();
    let txs = TxAdmin::new(
        Admin::connect(&host.addr)
            .await
            .unwrap()
            .connection()
            .clone(),
    );
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let open = txs.list().await.unwrap();
        if open.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} transactions never resolved",
            open.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = read_outputs(&host.addr).await;
    let admin = Admin::connect(&host.addr).await.unwrap();
    let acked = admin.committed("ctp", "in", 0).await.unwrap();
    let is_acked = |o: u64| {
        acked.as_ref().is_some_and(|c| {
            o < c.offset || c.acked_above.iter().any(|r| r.start <= o && o < r.end)
        })
    };
    let models = models.lock().unwrap().clone();
    assert!(
        models.len() > WORKERS,
        "too few transactions to judge: {}",
        models.len()
    );
    for id in seen.keys() {
        assert!(
            models.contains_key(id),
            "output of a transaction nobody began: {id}"
        );
    }
    let mut committed = 0;
    for (id, m) in &models {
        let out = seen.get(id).cloned().unwrap_or_default();
        let acked = is_acked(m.input_offset);
        assert!(
            out.is_empty() || out.len() == K,
            "{id}: {} of {K} messages visible: {m:?}",
            out.len()
        );
        if !out.is_empty() {
            let indexes: Vec<usize> = out.iter().map(|(_, ix)| *ix).collect();
            assert_eq!(
                indexes,
                (0..K).collect::<Vec<_>>(),
                "{id}: order or duplicates"
            );
            assert!(acked, "{id}: messages visible without the ack: {m:?}");
            committed += 1;
        }
        if !m.commit {
            assert!(
                out.is_empty() && !acked,
                "{id}: a rolled-back transaction took effect: {m:?}"
            );
        } else if m.send_acked {
            assert!(
                out.len() == K && acked,
                "{id}: a transaction to commit was lost: {m:?}"
            );
        }
        if !m.send_attempted {
            assert!(out.is_empty(), "{id}");
        }
    }
    assert!(committed > 0, "no transaction committed");
    eprintln!(
        "{} transactions over {CYCLES} kills, {committed} committed",
        models.len()
    );
    host.kill();
}

/// Every committed output message, per transaction id: (queue offset, tx index), in
/// queue order.
async fn read_outputs(addr: &str) -> HashMap<String, Vec<(u64, usize)>> {
    let admin = Admin::connect(addr).await.unwrap();
    let total: u64 = admin
        .get_topic("out")
        .await
        .unwrap()
        .queues
        .iter()
        .map(|q| q.max_offset - q.min_offset)
        .sum();
    let opts = ConsumerOptions {
        start_from: StartFrom::Earliest,
        heartbeat_interval: Duration::from_millis(100),
        long_poll_ms: 1_000,
        ..ConsumerOptions::default()
    };
    let mut c = PullConsumer::connect(addr, "verify", &[("out", "*")], opts)
        .await
        .unwrap();
    let mut seen: HashMap<String, Vec<(u64, usize)>> = HashMap::new();
    for _ in 0..total {
        let m = c
            .recv_timeout(PATIENCE)
            .await
            .expect("a stored output message");
        c.ack(&m);
        let id = m
            .property(TX_ID)
            .expect("outputs carry their transaction")
            .to_string();
        let ix: usize = m.property(TX_INDEX).unwrap().parse().unwrap();
        seen.entry(id).or_default().push((m.queue_offset(), ix));
    }
    for v in seen.values_mut() {
        v.sort_unstable();
    }
    c.close().await.unwrap();
    seen
}

const PRODUCER_ADDR_ENV: &str = "FERRO_TEST_TX_PRODUCER_ADDR";
const TX_LINE: &str = "FERRO_TEST_TX_ID=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_killed_mid_transaction_is_resolved_by_check_back_to_another_producer() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::ephemeral(dir.path());
    tx_settings(&mut config);
    let b = Broker::start(config).await.unwrap();
    let addr = b.local_addr().to_string();
    Admin::connect(&addr)
        .await
        .unwrap()
        .create_topic("kp", 1)
        .await
        .unwrap();
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
    let a = Arc::clone(&asked);
    // The survivor knows (from the "database") that the dead producer's work was done.
    let _survivor = TransactionalProducer::connect(&addr, "pg", move |id: &str, _n: u32| {
        a.lock().unwrap().push(id.to_string());
        TxResolution::Commit
    })
    .await
    .unwrap();

    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["tx_producer_host", "--exact", "--ignored", "--nocapture"])
        .env(PRODUCER_ADDR_ENV, &addr)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let tx_id = loop {
        let line = lines
            .next()
            .expect("the producer printed its transaction")
            .unwrap();
        if let Some(id) = line.strip_prefix(TX_LINE) {
            break id.to_string();
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();

    let admin = Admin::connect(&addr).await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while admin.get_topic("kp").await.unwrap().queues[0].max_offset < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never resolved by check-back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(asked.lock().unwrap().contains(&tx_id));
    b.shutdown().await.unwrap();
}

/// The broker of the kill test, run in a child process; does nothing otherwise.
#[test]
#[ignore = "the broker host of the kill test, started by it as a child process"]
fn tx_broker_host() {
    restart_support::host_main_with(tx_settings);
}

/// The producer killed mid-transaction, run in a child process; does nothing otherwise.
#[test]
#[ignore = "the producer of the producer-kill test, started by it as a child process"]
fn tx_producer_host() {
    let Ok(addr) = std::env::var(PRODUCER_ADDR_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let p =
            TransactionalProducer::connect(&addr, "pg", |_: &str, _: u32| TxResolution::Unknown)
                .await
                .unwrap();
        let tx = p
            .begin_with_timeout(Duration::from_millis(300))
            .await
            .unwrap();
        tx.send_to("kp", 0, &[Message::new("a"), Message::new("b")])
            .await
            .unwrap();
        println!("{TX_LINE}{}", tx.id());
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
}
