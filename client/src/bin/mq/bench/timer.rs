//! `mq bench timer`: schedules N timer messages spread over S seconds in pipelined batches
//! (each batch due at one time, its bodies carrying that due time), then a consumer group
//! receives them as they fall due. Measures the scheduling throughput, the delivery
//! lateness (delivered minus due, wall clock, ms) and, with `--broker-pid`, the broker's
//! resident memory while the timers are pending.

use std::time::{Duration, Instant};

use client::protocol::batch::{BatchMessage, BatchWriter};
use client::protocol::time::now_ms;
use client::{
    ConsumerOptions, DeliverAt, Producer, ProducerOptions, PullConsumer, StartFrom, TimerHandle,
};
use tokio::sync::mpsc;

use super::workloads::{bench_group, ensure_topic, settle};
use super::{new_histogram, BenchArgs, Histogram, Progress};
use crate::CliResult;

/// How long the consumer waits past the last due time for the last timers.
const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// What the timer bench measured.
pub(crate) struct TimerFigures {
    scheduled: u64,
    schedule_elapsed: Duration,
    /// Lateness in ms (recorded as µs in the shared histogram type).
    lateness: Histogram,
    /// Delivered before their due time (the timer promises none).
    early: u64,
    /// Highest broker RSS seen while timers were pending, in KiB: all of it, and its
    /// anonymous part (the rest is mapped commit-log pages, which the kernel may drop).
    broker_rss_kib: Option<Rss>,
}

pub(crate) async fn timer(
    broker: &str,
    args: &BenchArgs,
    progress: &Progress,
) -> CliResult<TimerFigures> {
    if args.size < 8 {
        return Err(
            "timer needs --size of at least 8 bytes (the body carries the due time)".into(),
        );
    }
    ensure_topic(broker, &args.topic, args.queues).await?;
    let total = args.messages.unwrap_or(1_000_000);
    let opts = ConsumerOptions {
        start_from: StartFrom::Latest,
        ..ConsumerOptions::high_throughput()
    };
    let mut consumer =
        PullConsumer::connect(broker, &bench_group(), &[(&args.topic, "*")], opts).await?;
    settle(&consumer, &args.topic).await?;

    let spread_ms = args.spread_s.saturating_mul(1000);
    let start_ms = now_ms();
    let start = Instant::now();
    let scheduler = tokio::spawn(schedule(
        broker.to_string(),
        args.clone(),
        total,
        start_ms,
        spread_ms,
        progress.clone(),
    ));
    let mut lateness = new_histogram();
    let mut early = 0u64;
    let mut rss_max = None;
    let mut schedule_elapsed = None;
    let mut scheduler = Some(scheduler);
    let mut batch = Vec::with_capacity(4096);
    let mut last_rss = Instant::now() - Duration::from_secs(1);
    let last_due = start_ms + spread_ms;
    while lateness.len() < total {
        if let Some(pid) = args.broker_pid {
            if last_rss.elapsed() >= Duration::from_millis(500) {
                last_rss = Instant::now();
                let rss = broker_rss_kib(pid)?;
                rss_max = Some(rss_max.map_or(rss, |m: Rss| Rss {
                    total: m.total.max(rss.total),
                    anon: m.anon.max(rss.anon),
                }));
            }
        }
        if scheduler
            .as_ref()
            .is_some_and(tokio::task::JoinHandle::is_finished)
        {
            if let Some(s) = scheduler.take() {
                s.await??;
                schedule_elapsed = Some(start.elapsed());
            }
        }
        // Still scheduling means still due to arrive, however late the schedule runs.
        if scheduler.is_none() && now_ms() > last_due + DRAIN_GRACE.as_secs() * 1000 {
            return Err(format!(
                "timer: {} of {total} delivered {} s after the last due time",
                lateness.len(),
                DRAIN_GRACE.as_secs()
            )
            .into());
        }
        batch.clear();
        let _ = tokio::time::timeout(
            Duration::from_millis(200),
            consumer.recv_batch(4096, &mut batch),
        )
        .await;
        let now = now_ms();
        for m in &batch {
            let mut due = [0u8; 8];
            due.copy_from_slice(&m.body()[..8]);
            let due = u64::from_le_bytes(due);
            if now < due {
                early += 1;
            }
            // Ms of lateness, kept as µs so the histogram's lower bound (1) holds for 0.
            lateness.saturating_record(now.saturating_sub(due).saturating_mul(1000).max(1));
            consumer.ack(m);
        }
    }
    let schedule_elapsed = match (scheduler, schedule_elapsed) {
        (Some(s), _) => {
            s.await??;
            start.elapsed()
        }
        (None, Some(e)) => e,
        (None, None) => start.elapsed(),
    };
    consumer.close().await?;
    Ok(TimerFigures {
        scheduled: total,
        schedule_elapsed,
        lateness,
        early,
        broker_rss_kib: rss_max,
    })
}

/// Sends `total` timers in batches of `--batch`, batch k due at `start_ms + spread_ms * k /
/// batches`, with up to `--inflight` requests unanswered. Returns once all are acked.
async fn schedule(
    broker: String,
    args: BenchArgs,
    total: u64,
    start_ms: u64,
    spread_ms: u64,
    progress: Progress,
) -> CliResult {
    let producer = Producer::connect(
        &broker,
        ProducerOptions {
            max_in_flight: args.inflight.max(1),
        },
    )
    .await?;
    let batch = u64::from(args.batch.max(1));
    let batches = total.div_ceil(batch).max(1);
    let (tx, mut rx) = mpsc::channel::<(TimerHandle, u64)>(args.inflight.max(1));
    let collector = tokio::spawn(async move {
        while let Some((handle, count)) = rx.recv().await {
            handle.wait().await?;
            progress.add(count);
        }
        Ok::<_, client::Error>(())
    });
    let mut body = vec![b'x'; args.size];
    for k in 0..batches {
        let count = (total - k * batch).min(batch);
        let due = start_ms + spread_ms * k / batches;
        body[..8].copy_from_slice(&due.to_le_bytes());
        let mut w = BatchWriter::with_capacity(count as usize * (16 + args.size));
        for _ in 0..count {
            w.push(&BatchMessage {
                properties: &[],
                body: &body,
                born_timestamp_ms: 0,
            })?;
        }
        let queue = producer.select_queue(&args.topic, None).await?;
        let handle = producer
            .send_timer_encoded(&args.topic, queue, &w, DeliverAt::TimestampMs(due))
            .await?;
        if tx.send((handle, count)).await.is_err() {
            break; // the collector stopped on an error; it reports it below
        }
    }
    drop(tx);
    collector.await??;
    producer.close().await;
    Ok(())
}

/// Resident memory in KiB.
#[derive(Clone, Copy)]
struct Rss {
    total: u64,
    anon: u64,
}

/// The `VmRSS` and `RssAnon` lines of `/proc/<pid>/status`.
fn broker_rss_kib(pid: u32) -> CliResult<Rss> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    let field = |name: &str| -> CliResult<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("no {name} line in {path}").into())
    };
    Ok(Rss {
        total: field("VmRSS:")?,
        anon: field("RssAnon:")?,
    })
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

pub(crate) fn report(args: &BenchArgs, f: &TimerFigures) {
    let secs = f.schedule_elapsed.as_secs_f64().max(1e-9);
    let ms = |q: f64| f.lateness.value_at_quantile(q) / 1000;
    let mut v = serde_json::json!({
        "workload": "timer",
        "messages": f.scheduled,
        "spread_s": args.spread_s,
        "schedule_secs": (secs * 1000.0).round() / 1000.0,
        "schedule_msgs_per_s": (f.scheduled as f64 / secs).round(),
        "delivered": f.lateness.len(),
        "early": f.early,
        "lateness_p50_ms": ms(0.5),
        "lateness_p99_ms": ms(0.99),
        "lateness_max_ms": f.lateness.max() / 1000,
    });
    if let Some(rss) = f.broker_rss_kib {
        v["broker_rss_max_mib"] = mib(rss.total).into();
        v["broker_rss_anon_max_mib"] = mib(rss.anon).into();
    }
    if args.json {
        println!("{v}");
        return;
    }
    println!(
        "timer: {} scheduled in {secs:.2} s: {} msgs/s; delivered {} ({} early)",
        f.scheduled,
        v["schedule_msgs_per_s"],
        f.lateness.len(),
        f.early
    );
    println!(
        "lateness ms: p50 {} p99 {} max {}",
        ms(0.5),
        ms(0.99),
        f.lateness.max() / 1000
    );
    if let Some(rss) = f.broker_rss_kib {
        println!(
            "broker rss while pending: max {} MiB, of it anonymous {} MiB",
            mib(rss.total),
            mib(rss.anon)
        );
    }
}
