//! The four workloads of `mq bench`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{new_histogram, Histogram};
use client::admin::Admin;
use client::protocol::batch::{BatchMessage, BatchWriter};
use client::protocol::properties::{PropertiesBuilder, KEYS};
use client::protocol::Status;
use client::{ConsumerOptions, Producer, ProducerOptions, PullConsumer, SendHandle, StartFrom};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{BenchArgs, Figures, Progress};
use crate::CliResult;

/// Topic creations in flight while `--topics N` sets up its topics.
const CREATES_IN_FLIGHT: usize = 64;

pub(crate) async fn ensure_topic(broker: &str, topic: &str, queues: u32) -> CliResult {
    ensure_topics(broker, vec![topic.to_string()], queues).await
}

/// Creates the topics that do not exist yet, a bounded number at a time on one connection.
async fn ensure_topics(broker: &str, topics: Vec<String>, queues: u32) -> CliResult {
    let admin = Arc::new(Admin::connect(broker).await?);
    let mut set = JoinSet::new();
    for topic in topics {
        if set.len() >= CREATES_IN_FLIGHT {
            if let Some(done) = set.join_next().await {
                done??;
            }
        }
        let admin = Arc::clone(&admin);
        set.spawn(async move {
            match admin.create_topic(&topic, queues).await {
                Err(e) if e.status() != Some(Status::TopicExists) => {
                    Err(format!("creating topic {topic}: {e}"))
                }
                _ => Ok(()),
            }
        });
    }
    while let Some(done) = set.join_next().await {
        done??;
    }
    Ok(())
}

/// Where `--topics N` sends: every (topic, queue), topics varying fastest so that
/// consecutive requests land in different topics.
fn spread_targets(args: &BenchArgs) -> Vec<(Arc<str>, u32)> {
    let names: Vec<Arc<str>> = (0..args.topics)
        .map(|i| Arc::from(format!("{}-{i}", args.topic)))
        .collect();
    (0..args.queues)
        .flat_map(|q| names.iter().map(move |t| (Arc::clone(t), q)))
        .collect()
}

/// A batch of `count` messages; with `keys = Some((first, n))` message `m` carries the
/// key `key-<(first + m) mod n>`.
fn encoded(count: u32, size: usize, keys: Option<(u64, u64)>) -> CliResult<BatchWriter> {
    let body = vec![b'x'; size];
    let mut w = BatchWriter::with_capacity(count as usize * (48 + size));
    for m in 0..u64::from(count) {
        let properties = match keys {
            Some((first, n)) => PropertiesBuilder::new()
                .with(KEYS, &super::keys::key_name((first + m) % n))
                .build(),
            None => Vec::new(),
        };
        w.push(&BatchMessage {
            properties: &properties,
            body: &body,
            born_timestamp_ms: 0,
        })?;
    }
    Ok(w)
}

/// The batches a producer sends in turn, encoded once before the clock starts.
struct Batches {
    /// One without keys; with `--keys N`, enough to cycle through the N keys (at most
    /// 16,384 batches: a million keys in batches of 100 take about 100 MB here).
    ring: Vec<BatchWriter>,
    batch: u32,
    size: usize,
    keys: Option<u64>,
}

impl Batches {
    fn new(batch: u32, size: usize, keys: Option<u64>) -> CliResult<Self> {
        let keys = keys.filter(|&n| n > 0);
        let ring = match keys {
            None => vec![encoded(batch, size, None)?],
            Some(n) => {
                let count = n.div_ceil(u64::from(batch)).clamp(1, 16_384);
                (0..count)
                    .map(|j| encoded(batch, size, Some((j * u64::from(batch), n))))
                    .collect::<CliResult<_>>()?
            }
        };
        Ok(Self {
            ring,
            batch,
            size,
            keys,
        })
    }

    /// A last, shorter batch.
    fn tail(&self, count: u32) -> CliResult<BatchWriter> {
        encoded(count, self.size, self.keys.map(|n| (0, n)))
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub(crate) async fn produce(
    broker: &str,
    args: &BenchArgs,
    progress: &Progress,
) -> CliResult<Figures> {
    let targets = if args.topics > 1 {
        let targets = spread_targets(args);
        let names = targets
            .iter()
            .take(args.topics as usize)
            .map(|(t, _)| t.to_string())
            .collect();
        let setup = Instant::now();
        ensure_topics(broker, names, args.queues).await?;
        eprintln!(
            "{} topics x {} queues ready in {:.1} s",
            args.topics,
            args.queues,
            setup.elapsed().as_secs_f64()
        );
        Some(Arc::new(targets))
    } else {
        ensure_topic(broker, &args.topic, args.queues).await?;
        None
    };
    let total = args.messages.unwrap_or(1_000_000);
    let p = args.producers.max(1) as u64;
    let batches = Arc::new(Batches::new(args.batch.max(1), args.size, args.keys)?);
    let start = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..p {
        let n = total / p + u64::from(i < total % p);
        let route = match &targets {
            // Each connection starts at its own place in the rotation.
            Some(t) => Route::Spread {
                targets: Arc::clone(t),
                next: t.len() * usize::try_from(i).unwrap_or(0) / usize::try_from(p).unwrap_or(1),
            },
            None => Route::One(args.topic.clone()),
        };
        let (broker, progress) = (broker.to_string(), progress.clone());
        let (batches, inflight) = (Arc::clone(&batches), args.inflight.max(1));
        set.spawn(
            async move { produce_one(&broker, route, n, &batches, inflight, progress).await },
        );
    }
    let mut latency = new_histogram();
    let mut messages = 0;
    while let Some(done) = set.join_next().await {
        let (n, h) = done??;
        messages += n;
        latency.add(&h).map_err(|e| e.to_string())?;
    }
    let elapsed = start.elapsed();
    Ok(Figures {
        messages,
        bytes: messages * args.size as u64,
        elapsed,
        latency: Some(latency),
    })
}

/// Which queue a producer connection sends each request to.
enum Route {
    /// One topic, its queues in turn (the producer's round robin).
    One(String),
    /// Every (topic, queue) of `--topics N` in turn.
    Spread {
        targets: Arc<Vec<(Arc<str>, u32)>>,
        next: usize,
    },
}

impl Route {
    async fn next(&mut self, producer: &Producer) -> CliResult<(Arc<str>, u32)> {
        match self {
            Self::One(topic) => {
                let queue = producer.select_queue(topic, None).await?;
                Ok((Arc::from(topic.as_str()), queue))
            }
            Self::Spread { targets, next } => {
                let (topic, queue) = &targets[*next % targets.len()];
                *next = (*next + 1) % targets.len();
                Ok((Arc::clone(topic), *queue))
            }
        }
    }
}

async fn produce_one(
    broker: &str,
    mut route: Route,
    n: u64,
    batches: &Batches,
    inflight: usize,
    progress: Progress,
) -> CliResult<(u64, Histogram)> {
    let producer = Producer::connect(
        broker,
        ProducerOptions {
            max_in_flight: inflight,
        },
    )
    .await?;
    let batch = batches.batch;
    let mut turn = 0;
    let (tx, mut rx) = mpsc::channel::<(Instant, SendHandle, u32)>(inflight);
    // Acks are awaited in send order: they come back in about that order on one connection.
    let collector = tokio::spawn(async move {
        let mut h = new_histogram();
        let mut acked = 0u64;
        while let Some((sent_at, handle, count)) = rx.recv().await {
            handle.wait().await?;
            h.saturating_record(micros(sent_at.elapsed()));
            acked += u64::from(count);
            progress.add(u64::from(count));
        }
        Ok::<_, client::Error>((acked, h))
    });
    let mut sent = 0u64;
    while sent < n {
        let count = u32::try_from((n - sent).min(u64::from(batch))).unwrap_or(batch);
        let (topic, queue) = route.next(&producer).await?;
        let full = &batches.ring[turn % batches.ring.len()];
        turn += 1;
        let handle = if count == batch {
            producer.send_encoded(&topic, queue, full).await?
        } else {
            producer
                .send_encoded(&topic, queue, &batches.tail(count)?)
                .await?
        };
        if tx.send((Instant::now(), handle, count)).await.is_err() {
            break; // the collector stopped on an error; it reports it below
        }
        sent += u64::from(count);
    }
    drop(tx);
    let result = collector.await??;
    producer.close().await;
    Ok(result)
}

pub(crate) fn bench_group() -> String {
    format!("bench-{}", client::protocol::time::now_ms())
}

pub(crate) async fn consume(
    broker: &str,
    args: &BenchArgs,
    progress: &Progress,
) -> CliResult<Figures> {
    let admin = Admin::connect(broker).await?;
    let info = admin.get_topic(&args.topic).await?;
    let stored: u64 = info
        .queues
        .iter()
        .map(|q| q.max_offset.saturating_sub(q.min_offset))
        .sum();
    let total = args.messages.unwrap_or(stored).min(stored);
    let opts = ConsumerOptions::high_throughput();
    let start = Instant::now();
    let mut consumer =
        PullConsumer::connect(broker, &bench_group(), &[(&args.topic, "*")], opts).await?;
    let (mut messages, mut bytes) = (0u64, 0u64);
    let mut batch = Vec::with_capacity(4096);
    while messages < total {
        batch.clear();
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            consumer.recv_batch(4096, &mut batch),
        )
        .await;
        if got.is_err() || batch.is_empty() {
            return Err(format!("consume stalled after {messages} of {total} messages").into());
        }
        for m in &batch {
            bytes += m.body().len() as u64;
            consumer.ack(m);
        }
        messages += batch.len() as u64;
        progress.add(batch.len() as u64);
    }
    consumer.close().await?;
    Ok(Figures {
        messages,
        bytes,
        elapsed: start.elapsed(),
        latency: None,
    })
}

pub(crate) async fn sync_latency(
    broker: &str,
    args: &BenchArgs,
    progress: &Progress,
) -> CliResult<Figures> {
    ensure_topic(broker, &args.topic, args.queues).await?;
    let deadline = Instant::now() + Duration::from_secs(args.duration_s);
    let one = Arc::new(encoded(1, args.size, None)?);
    let start = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..args.producers.max(1) {
        let (broker, topic, progress, one) = (
            broker.to_string(),
            args.topic.clone(),
            progress.clone(),
            Arc::clone(&one),
        );
        set.spawn(async move {
            let producer = Producer::connect(&broker, ProducerOptions::default()).await?;
            let mut h = new_histogram();
            while Instant::now() < deadline {
                let queue = producer.select_queue(&topic, None).await?;
                let t = Instant::now();
                producer
                    .send_encoded(&topic, queue, &one)
                    .await?
                    .wait()
                    .await?;
                h.saturating_record(micros(t.elapsed()));
                progress.add(1);
            }
            Ok::<_, client::Error>(h)
        });
    }
    let mut latency = new_histogram();
    while let Some(done) = set.join_next().await {
        latency.add(&done??).map_err(|e| e.to_string())?;
    }
    Ok(Figures {
        messages: latency.len(),
        bytes: latency.len() * args.size as u64,
        elapsed: start.elapsed(),
        latency: Some(latency),
    })
}

pub(crate) async fn e2e(broker: &str, args: &BenchArgs, progress: &Progress) -> CliResult<Figures> {
    ensure_topic(broker, &args.topic, args.queues).await?;
    let total = args.messages.unwrap_or(args.rate * args.duration_s);
    let opts = ConsumerOptions {
        start_from: StartFrom::Latest,
        ..ConsumerOptions::default()
    };
    let mut consumer =
        PullConsumer::connect(broker, &bench_group(), &[(&args.topic, "*")], opts).await?;
    settle(&consumer, &args.topic).await?;
    let base = Instant::now();
    // A group starting at "latest" can still be handed messages sent before it joined
    // whose dispatch was in flight; only this run's messages carry this run's mark.
    let run = run_mark();
    let producer = tokio::spawn(paced_producer(
        broker.to_string(),
        args.topic.clone(),
        total,
        args.rate.max(1),
        args.size.max(16),
        (base, run),
    ));
    let mut latency = new_histogram();
    let mut bytes = 0u64;
    while latency.len() < total {
        let Some(m) = consumer.recv_timeout(Duration::from_secs(10)).await else {
            return Err(format!("e2e stalled after {} of {total} messages", latency.len()).into());
        };
        if m.body().get(8..16) != Some(&run.to_le_bytes()[..]) {
            consumer.ack(&m);
            continue;
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&m.body()[..8]);
        latency.saturating_record(micros(base.elapsed()).saturating_sub(u64::from_le_bytes(ts)));
        bytes += m.body().len() as u64;
        consumer.ack(&m);
        progress.add(1);
    }
    let elapsed = base.elapsed();
    producer.await??;
    consumer.close().await?;
    Ok(Figures {
        messages: latency.len(),
        bytes,
        elapsed,
        latency: Some(latency),
    })
}

/// A number that tells this run's messages from any other run's on the same topic.
pub(crate) fn run_mark() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (nanos as u64) ^ (u64::from(std::process::id()) << 40)
}

/// Sends `total` messages at `rate` per second, each stamped with µs since `base` (bytes
/// 0..8) and with the run's mark (bytes 8..16). Paced
/// one message at a time from a thread of its own (tokio timers tick in whole
/// milliseconds, which would send in bursts and measure the bursts' queueing).
/// Waits until `consumer` owns queues of `topic` and its assignment has been stable for a
/// moment (its first pulls are then out), so that e2e latency is measured in steady state
/// rather than including the group join.
pub(crate) async fn settle(consumer: &PullConsumer, topic: &str) -> CliResult {
    const STABLE_FOR: Duration = Duration::from_millis(300);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = consumer.assignment();
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = consumer.assignment();
        if now != seen {
            seen = now;
            since = Instant::now();
        } else if seen.iter().any(|(t, _)| t == topic) && since.elapsed() >= STABLE_FOR {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("the e2e consumer got no queue of {topic} within 30 s").into());
        }
    }
}

async fn paced_producer(
    broker: String,
    topic: String,
    total: u64,
    rate: u64,
    size: usize,
    (base, run): (Instant, u64),
) -> CliResult {
    let producer = Arc::new(Producer::connect(&broker, ProducerOptions::default()).await?);
    let (tx, mut rx) = mpsc::channel::<SendHandle>(4096);
    let drain = tokio::spawn(async move {
        while let Some(h) = rx.recv().await {
            h.wait().await?;
        }
        Ok::<_, client::Error>(())
    });
    let runtime = tokio::runtime::Handle::current();
    let p = Arc::clone(&producer);
    let paced = tokio::task::spawn_blocking(move || -> Result<(), client::Error> {
        let mut body = vec![b'x'; size];
        body[8..16].copy_from_slice(&run.to_le_bytes());
        let interval_ns = 1_000_000_000 / u128::from(rate);
        let start = Instant::now();
        for sent in 0..total {
            let due = start + Duration::from_nanos((interval_ns * u128::from(sent)) as u64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            body[..8].copy_from_slice(&micros(base.elapsed()).to_le_bytes());
            let mut w = BatchWriter::with_capacity(16 + size);
            w.push(&BatchMessage {
                properties: &[],
                body: &body,
                born_timestamp_ms: 0,
            })?;
            let handle = runtime.block_on(async {
                let queue = p.select_queue(&topic, None).await?;
                p.send_encoded(&topic, queue, &w).await
            })?;
            if tx.blocking_send(handle).is_err() {
                break;
            }
        }
        Ok(())
    });
    paced.await??;
    drain.await??;
    if let Ok(producer) = Arc::try_unwrap(producer) {
        producer.close().await;
    }
    Ok(())
}
