//! End-to-end benchmarks: an in-process broker on loopback and the client library.
//! Produce batched (100 per send) and unbatched (one per send, 1000 in flight), and
//! consume (a fresh consumer group draining a filled topic).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// `criterion_main!` generates an undocumented `main`.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use broker::{Broker, Config, RunningBroker};
use client::admin::Admin;
use client::protocol::batch::{BatchMessage, BatchWriter};
use client::{ConsumerOptions, Producer, ProducerOptions, PullConsumer};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tempfile::TempDir;
use tokio::runtime::Runtime;

const SIZE: usize = 100;
const QUEUES: u32 = 8;
/// Messages one produce iteration sends.
const PRODUCE_PER_ITER: u64 = 20_000;
/// Messages one consume iteration drains.
const CONSUME_PER_ITER: u64 = 100_000;

struct Setup {
    rt: Runtime,
    broker: Option<RunningBroker>,
    addr: String,
    _dir: TempDir,
}

impl Setup {
    fn new(topic: &str) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = TempDir::new().unwrap();
        let mut config = Config::ephemeral(dir.path());
        config.segment_size = "256M".parse().unwrap();
        config.retention_bytes = Some("1G".parse().unwrap());
        let broker = rt.block_on(Broker::start(config)).unwrap();
        let addr = broker.local_addr().to_string();
        rt.block_on(async {
            Admin::connect(&addr)
                .await
                .unwrap()
                .create_topic(topic, QUEUES)
                .await
                .unwrap();
        });
        Self {
            rt,
            broker: Some(broker),
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(b) = self.broker.take() {
            self.rt.block_on(b.shutdown()).unwrap();
        }
    }
}

fn encoded(count: u32) -> BatchWriter {
    let body = vec![b'x'; SIZE];
    let mut w = BatchWriter::with_capacity(count as usize * (16 + SIZE));
    for _ in 0..count {
        w.push(&BatchMessage {
            properties: &[],
            body: &body,
            born_timestamp_ms: 0,
        })
        .unwrap();
    }
    w
}

/// Sends `total` messages in sends of `batch`, at most `inflight` unacknowledged.
async fn produce(producer: &Producer, topic: &str, total: u64, batch: u32, inflight: usize) {
    let w = encoded(batch);
    let mut pending = std::collections::VecDeque::with_capacity(inflight);
    let mut sent = 0;
    while sent < total {
        let queue = producer.select_queue(topic, None).await.unwrap();
        pending.push_back(producer.send_encoded(topic, queue, &w).await.unwrap());
        sent += u64::from(batch);
        if pending.len() >= inflight {
            pending.pop_front().unwrap().wait().await.unwrap();
        }
    }
    for h in pending {
        h.wait().await.unwrap();
    }
}

fn produce_benches(c: &mut Criterion) {
    let setup = Setup::new("produce");
    let producer = setup
        .rt
        .block_on(Producer::connect(
            &setup.addr,
            ProducerOptions {
                max_in_flight: 1000,
            },
        ))
        .unwrap();
    let mut group = c.benchmark_group("e2e_produce");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(PRODUCE_PER_ITER));
    for (name, batch, inflight) in [("batch100", 100u32, 64usize), ("single", 1, 1000)] {
        group.bench_function(BenchmarkId::new(name, SIZE), |b| {
            b.iter(|| {
                setup.rt.block_on(produce(
                    &producer,
                    "produce",
                    PRODUCE_PER_ITER,
                    batch,
                    inflight,
                ));
            });
        });
    }
    group.finish();
    setup.rt.block_on(producer.close());
}

fn consume_bench(c: &mut Criterion) {
    let setup = Setup::new("consume");
    let filled = 400_000;
    setup.rt.block_on(async {
        let producer = Producer::connect(&setup.addr, ProducerOptions::default())
            .await
            .unwrap();
        produce(&producer, "consume", filled, 1000, 64).await;
        producer.close().await;
    });
    let mut group = c.benchmark_group("e2e_consume");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(CONSUME_PER_ITER));
    let mut round = 0u64;
    group.bench_function(BenchmarkId::new("drain", SIZE), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let group_name = format!("bench-{round}");
                total += setup.rt.block_on(drain(&setup.addr, &group_name));
            }
            total
        });
    });
    group.finish();
}

/// A new group drains `CONSUME_PER_ITER` messages, acking each; returns the time taken.
async fn drain(addr: &str, group: &str) -> Duration {
    let opts = ConsumerOptions::high_throughput();
    let start = Instant::now();
    let mut consumer = PullConsumer::connect(addr, group, &[("consume", "*")], opts)
        .await
        .unwrap();
    let mut batch = Vec::with_capacity(4096);
    let mut got = 0;
    while got < CONSUME_PER_ITER {
        batch.clear();
        consumer.recv_batch(4096, &mut batch).await;
        for m in &batch {
            consumer.ack(m);
        }
        got += batch.len() as u64;
    }
    let elapsed = start.elapsed();
    consumer.close().await.unwrap();
    elapsed
}

criterion_group!(benches, produce_benches, consume_bench);
criterion_main!(benches);
