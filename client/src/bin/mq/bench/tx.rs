//! `mq bench tx`: committed transactions of `--tx-messages` messages each (one send of
//! them all, then a commit), `--producers` transaction loops in parallel, each on its own
//! connection, for `--duration-s` seconds. Throughput counts committed messages; the
//! latency is that of the commit call (from its request to its answer).

use std::time::{Duration, Instant};

use client::{Message, TransactionalProducer, TxResolution};
use tokio::task::JoinSet;

use super::workloads::ensure_topic;
use super::{new_histogram, BenchArgs, Figures, Progress};
use crate::CliResult;

pub(crate) async fn tx(broker: &str, args: &BenchArgs, progress: &Progress) -> CliResult<Figures> {
    ensure_topic(broker, &args.topic, args.queues).await?;
    let deadline = Instant::now() + Duration::from_secs(args.duration_s);
    let msgs: Vec<Message> = (0..args.tx_messages.max(1))
        .map(|_| Message::new(vec![b'x'; args.size]))
        .collect();
    let start = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..args.producers.max(1) {
        let (broker, topic, progress, msgs) = (
            broker.to_string(),
            args.topic.clone(),
            progress.clone(),
            msgs.clone(),
        );
        set.spawn(async move {
            // The bench commits everything it begins; a check-back finds nothing to decide.
            let p = TransactionalProducer::connect(&broker, "bench-tx", |_: &str, _: u32| {
                TxResolution::Unknown
            })
            .await?;
            let mut h = new_histogram();
            let mut sent = 0u64;
            while Instant::now() < deadline {
                let tx = p.begin().await?;
                tx.send_batch(&topic, &msgs).await?;
                let t = Instant::now();
                tx.commit().await?;
                h.saturating_record(t.elapsed().as_micros() as u64);
                sent += msgs.len() as u64;
                progress.add(msgs.len() as u64);
            }
            p.close();
            Ok::<_, client::Error>((h, sent))
        });
    }
    let mut latency = new_histogram();
    let mut messages = 0;
    while let Some(done) = set.join_next().await {
        let (h, sent) = done??;
        latency.add(&h).map_err(|e| e.to_string())?;
        messages += sent;
    }
    Ok(Figures {
        messages,
        bytes: messages * args.size as u64,
        elapsed: start.elapsed(),
        latency: Some(latency),
    })
}
