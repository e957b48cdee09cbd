//! Message-store benchmarks: put throughput including dispatch into consume queues, and
//! `get_messages` batches.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// `criterion_main!` generates an undocumented `main`.
#![allow(missing_docs)]

use std::time::Duration;

use broker::store::{GetRequest, MessageStore, PutMessage, QueueOffset, StoreConfig, TagFilter};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tempfile::TempDir;

const BATCH: usize = 32;
const BATCHES_PER_ITER: usize = 100;
const QUEUES: u32 = 4;

fn open(dir: &TempDir) -> MessageStore {
    let mut config = StoreConfig::new(dir.path());
    config.commitlog.segment_size_bytes = 128 << 20;
    MessageStore::open(config).unwrap()
}

fn put_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_put_dispatched");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for size in [100usize, 1024] {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        let body = vec![0x5Au8; size];
        let msgs: Vec<PutMessage<'_>> = (0..BATCH)
            .map(|_| PutMessage {
                properties: &[],
                body: &body,
                born_timestamp_ms: 0,
                reconsume_times: 0,
            })
            .collect();
        group.throughput(Throughput::Elements((BATCH * BATCHES_PER_ITER) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                let mut last = None;
                for i in 0..BATCHES_PER_ITER {
                    let q = i as u32 % QUEUES;
                    let res = store.put_batch("bench", q, &msgs).unwrap();
                    last = res.last().map(|r| (q, r.queue_offset));
                }
                // Throughput includes indexing: wait until the last message is dispatched.
                let (q, off) = last.unwrap();
                assert!(store.wait_for_message("bench", q, off, Duration::from_secs(30)));
            });
        });
        store.close().unwrap();
    }
    group.finish();
}

fn get_throughput(c: &mut Criterion) {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let body = vec![0x5Au8; 100];
    let msgs: Vec<PutMessage<'_>> = (0..1000)
        .map(|_| PutMessage {
            properties: &[],
            body: &body,
            born_timestamp_ms: 0,
            reconsume_times: 0,
        })
        .collect();
    const TOTAL: u64 = 50_000;
    for _ in 0..TOTAL / 1000 {
        store.put_batch("read", 0, &msgs).unwrap();
    }
    assert!(store.wait_for_message(
        "read",
        0,
        QueueOffset::new(TOTAL - 1),
        Duration::from_secs(30)
    ));

    let mut group = c.benchmark_group("store_get_messages");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    for batch in [32usize, 1000] {
        group.throughput(Throughput::Elements(batch as u64));
        let mut from = 0u64;
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter(|| {
                let r = store
                    .get_messages(GetRequest {
                        topic: "read",
                        queue_id: 0,
                        from: QueueOffset::new(from),
                        max_count: batch,
                        max_bytes: usize::MAX,
                        filter: &TagFilter::All,
                    })
                    .unwrap();
                assert_eq!(r.messages.len(), batch);
                from = (from + batch as u64) % (TOTAL - batch as u64);
                r
            });
        });
    }
    group.finish();
    store.close().unwrap();
}

criterion_group!(benches, put_throughput, get_throughput);
criterion_main!(benches);
