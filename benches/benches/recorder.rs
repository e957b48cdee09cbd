//! What the metrics recorder costs on the hot path: the recording done for one send
//! request and for one pull, measured alone. Multiplied by the request rate of a workload
//! this bounds the metrics' share of its CPU time (BENCHMARKS.md, issue 17).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// `criterion_main!` generates an undocumented `main`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use broker::http::Recorder;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use protocol::RequestCode;

fn per_request(c: &mut Criterion) {
    let recorder = Recorder::new();
    // A broker with a few hundred topics: the topic lookup is a read-locked map probe.
    for t in 0..300 {
        recorder.messages_in(&format!("topic-{t}"), 1, 100);
    }
    let mut group = c.benchmark_group("recorder");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    group.bench_function("send_request_batch_100", |b| {
        b.iter(|| {
            // What the connection and the appender record for one send request.
            let started = Instant::now();
            recorder.append.record(started.elapsed());
            recorder.messages_in(black_box("topic-117"), 100, 10_000);
            recorder.request(RequestCode::Send, started.elapsed());
        });
    });
    group.bench_function("pull_request", |b| {
        b.iter(|| {
            let started = Instant::now();
            recorder.messages_out(black_box("topic-117"), 32, 3_200);
            recorder.request(RequestCode::Pull, started.elapsed());
        });
    });
    group.finish();
}

criterion_group!(benches, per_request);
criterion_main!(benches);
