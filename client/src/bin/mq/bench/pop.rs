//! `mq bench pop`: per-message acknowledgement throughput. `--consumers` receivers in one
//! fresh group drain the messages already in the topic, receiving batches of
//! `--receive-batch` and acking each batch in one request, with acks pipelined behind the
//! next receives (an ack is answered once written, so waiting for each would measure the
//! disk, not the broker). A message counts once its ack is answered.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::admin::Admin;
use client::{SimpleConsumer, SimpleConsumerOptions};
use tokio::task::JoinSet;

use super::{BenchArgs, Figures, Progress};
use crate::CliResult;

/// Receives each receiver keeps in flight on its connection (a loop each), as a pull
/// consumer keeps pulls in flight: one at a time would measure the round trip.
const RECEIVES_IN_FLIGHT: usize = 8;
/// Ack requests each loop leaves unanswered before it waits for the oldest.
const ACKS_IN_FLIGHT: usize = 32;
/// An ack answer that takes longer than this means the broker is stuck.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) async fn pop(broker: &str, args: &BenchArgs, progress: &Progress) -> CliResult<Figures> {
    let info = Admin::connect(broker).await?.get_topic(&args.topic).await?;
    let stored: u64 = info
        .queues
        .iter()
        .map(|q| q.max_offset.saturating_sub(q.min_offset))
        .sum();
    let total = args.messages.unwrap_or(stored).min(stored);
    let group = super::workloads::bench_group();
    let received = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..args.consumers.max(1) {
        let opts = SimpleConsumerOptions {
            invisible: Duration::from_secs(60),
            wait: Duration::from_millis(500),
            ..SimpleConsumerOptions::default()
        };
        let c = Arc::new(SimpleConsumer::connect(broker, &group, &args.topic, opts).await?);
        for _ in 0..RECEIVES_IN_FLIGHT {
            let (c, received, bytes, progress) = (
                Arc::clone(&c),
                Arc::clone(&received),
                Arc::clone(&bytes),
                progress.clone(),
            );
            set.spawn(receive_loop(
                c,
                args.receive_batch,
                args.ack_batch as usize,
                total,
                received,
                bytes,
                progress,
            ));
        }
    }
    while let Some(done) = set.join_next().await {
        done.map_err(|e| format!("a receiver failed: {e}"))??;
    }
    Ok(Figures {
        messages: received.load(Ordering::Relaxed),
        bytes: bytes.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
        latency: None,
    })
}

/// One receive loop: receive a batch, start its ack, wait for the oldest ack past the
/// in-flight bound; a message counts once its ack is answered.
async fn receive_loop(
    c: Arc<SimpleConsumer>,
    batch: u32,
    ack_batch: usize,
    total: u64,
    received: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    progress: Progress,
) -> client::Result<()> {
    let mut acks = VecDeque::new();
    let mut pending: Vec<client::ReceiptHandle> = Vec::with_capacity(ack_batch);
    loop {
        let done = received.load(Ordering::Relaxed) >= total;
        if !pending.is_empty() && (done || pending.len() >= ack_batch) {
            let n = pending.len() as u64;
            let handles = std::mem::replace(&mut pending, Vec::with_capacity(ack_batch));
            acks.push_back((n, c.start_ack(handles).await?));
            if acks.len() >= ACKS_IN_FLIGHT {
                if let Some((n, a)) = acks.pop_front() {
                    a.wait(ACK_TIMEOUT).await?;
                    progress.add(n);
                }
            }
        }
        if done {
            break;
        }
        let got = c.receive(batch).await?;
        if got.is_empty() {
            continue;
        }
        received.fetch_add(got.len() as u64, Ordering::Relaxed);
        let size: u64 = got.iter().map(|m| m.message.body().len() as u64).sum();
        bytes.fetch_add(size, Ordering::Relaxed);
        pending.extend(got.into_iter().map(|m| m.receipt_handle));
    }
    for (n, a) in acks {
        a.wait(ACK_TIMEOUT).await?;
        progress.add(n);
    }
    Ok(())
}
