//! Commit-log benchmarks: append (single and batch, 100 B / 1 KiB / 16 KiB bodies),
//! read and iterate, recovery of a large log, and the raw memcpy-into-mmap rate that
//! bounds appends.
//!
//! Env: `FERRO_BENCH_RECOVERY_MB` (default 256) sizes the recovery log (1024 for 1 GiB);
//! `FERRO_BENCH_DIR` picks the folder for bench data (default: a temp dir).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// `criterion_main!` generates an undocumented `main`.
#![allow(missing_docs)]

use std::fs::OpenOptions;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use commitlog::{CommitLog, Config, FlushPolicy, PhysicalOffset, RecordIn, Retention};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tempfile::TempDir;

const SIZES: [usize; 3] = [100, 1024, 16 * 1024];
const TOPIC: &str = "bench-topic";
const PROPS: &[u8] = b"TAGS\x01a";

fn tempdir() -> TempDir {
    match std::env::var_os("FERRO_BENCH_DIR") {
        Some(d) => TempDir::new_in(d).unwrap(),
        None => TempDir::new().unwrap(),
    }
}

fn record(body: &[u8], i: u64) -> RecordIn<'_> {
    RecordIn {
        topic: TOPIC,
        queue_id: (i % 8) as u32,
        queue_offset: i,
        tag_hash: 0,
        born_timestamp_ms: 1,
        store_timestamp_ms: 2,
        reconsume_times: 0,
        properties: PROPS,
        body,
    }
}

fn encoded(body_len: usize) -> usize {
    commitlog::format::HEADER_LEN + TOPIC.len() + PROPS.len() + body_len
}

/// A log for append benches: 256 MiB segments, async flush, and a 2 GiB budget so long
/// runs do not fill the disk.
fn append_log(dir: &Path) -> CommitLog {
    let mut cfg = Config::new(dir.join("commitlog"));
    cfg.segment_size_bytes = 256 << 20;
    cfg.flush = FlushPolicy::Async { interval_ms: 500 };
    cfg.retention = Retention {
        max_age_ms: None,
        max_total_bytes: Some(2 << 30),
    };
    cfg.retention_check_interval_ms = 200;
    CommitLog::open(cfg).unwrap().0
}

fn batch_len(size: usize) -> usize {
    ((128 << 10) / size).max(16)
}

fn bench_append(c: &mut Criterion) {
    let tmp = tempdir();
    let log = append_log(tmp.path());
    for size in SIZES {
        println!(
            "body {size} B -> encoded record {} B (MB/s = records/s x this)",
            encoded(size)
        );
    }
    let mut g = c.benchmark_group("commitlog_append");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for size in SIZES {
        let body = vec![0x5Au8; size];
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("single", size), &size, |b, _| {
            let mut i = 0;
            b.iter(|| {
                i += 1;
                log.append(&record(&body, i)).unwrap()
            });
        });
        let n = batch_len(size);
        let recs: Vec<RecordIn<'_>> = (0..n as u64).map(|i| record(&body, i)).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(
            BenchmarkId::new(format!("batch{n}"), size),
            &size,
            |b, _| {
                b.iter(|| log.append_batch(black_box(&recs)).unwrap());
            },
        );
    }
    g.finish();
    println!("append log stats: {:?}", log.stats());
    drop(log);
}

/// A fresh, fully allocated (like a segment) file mapping of `len` bytes.
fn fresh_mapping(dir: &Path, name: &str, len: usize) -> memmap2::MmapMut {
    use std::os::fd::AsRawFd;
    let path = dir.join(name);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    // SAFETY: plain syscall on an open descriptor.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    assert_eq!(rc, 0, "posix_fallocate");
    // SAFETY: the file was just created in a private temp dir; nobody else maps or
    // truncates it while the mapping lives.
    unsafe { memmap2::MmapMut::map_mut(&file).unwrap() }
}

fn copy_all(map: &mut memmap2::MmapMut, chunk: &[u8]) -> f64 {
    let t = Instant::now();
    for dst in map.chunks_exact_mut(chunk.len()) {
        dst.copy_from_slice(black_box(chunk));
    }
    map.len() as f64 / t.elapsed().as_secs_f64() / 1e6
}

/// The raw memcpy-into-mmap rates appends are compared with: into fresh file pages (the
/// same kernel work an append into a new segment needs: page allocation and zeroing)
/// and into already-faulted pages (the pure memcpy ceiling).
fn bench_raw_memcpy(c: &mut Criterion) {
    let tmp = tempdir();
    let len = 512usize << 20;
    let chunk = vec![0x5Au8; 16 * 1024];
    let mut map = fresh_mapping(tmp.path(), "raw", len);
    let cold = copy_all(&mut map, &chunk);
    let hot = copy_all(&mut map, &chunk);
    println!("raw memcpy into mmap, 16 KiB chunks: fresh file pages {cold:.0} MB/s, pre-faulted pages {hot:.0} MB/s");
    let mut pos = 0usize;
    let mut g = c.benchmark_group("raw_memcpy_mmap");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    g.bench_function("prefaulted_16384", |b| {
        b.iter(|| {
            if pos + chunk.len() > len {
                pos = 0;
            }
            map[pos..pos + chunk.len()].copy_from_slice(black_box(&chunk));
            pos += chunk.len();
        });
    });
    g.finish();
}

/// Encoding alone into a hot buffer: the CPU cost per record, without page-cache effects.
fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("commitlog_encode");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for size in SIZES {
        let body = vec![0x5Au8; size];
        let mut buf = vec![0u8; encoded(size)];
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                commitlog::format::encode_into(&record(&body, 1), 4096, black_box(&mut buf))
                    .unwrap()
            });
        });
    }
    g.finish();
}

fn fill(log: &CommitLog, total_bytes: u64, size: usize) {
    let body = vec![0xA5u8; size];
    let n = batch_len(size);
    let mut i = 0u64;
    while log.write_offset().get() < total_bytes {
        let recs: Vec<RecordIn<'_>> = (0..n as u64).map(|k| record(&body, i + k)).collect();
        log.append_batch(&recs).unwrap();
        i += n as u64;
    }
}

fn bench_read(c: &mut Criterion) {
    let tmp = tempdir();
    let mut cfg = Config::new(tmp.path().join("commitlog"));
    cfg.segment_size_bytes = 64 << 20;
    let log = CommitLog::open(cfg).unwrap().0;
    fill(&log, 128 << 20, 1024);
    let offsets: Vec<PhysicalOffset> = log
        .iter_from(log.min_offset())
        .step_by(97)
        .map(|r| r.unwrap().offset())
        .collect();
    let total = log.write_offset().get();
    let mut g = c.benchmark_group("commitlog_read");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Bytes(total));
    g.bench_function("iterate_1KiB_records", |b| {
        b.iter(|| {
            log.iter_from(log.min_offset())
                .map(|r| r.unwrap().bytes().len())
                .sum::<usize>()
        });
    });
    g.throughput(Throughput::Elements(1));
    let mut k = 0;
    g.bench_function("read_by_offset_1KiB", |b| {
        b.iter(|| {
            k = (k + 1) % offsets.len();
            log.read(offsets[k]).unwrap().view().body().len()
        });
    });
    g.finish();
}

fn bench_recovery(c: &mut Criterion) {
    let mb: u64 = std::env::var("FERRO_BENCH_RECOVERY_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let tmp = tempdir();
    let dir = tmp.path().join("commitlog");
    let mut cfg = Config::new(&dir);
    cfg.preallocate = false;
    let (log, _) = CommitLog::open(cfg.clone()).unwrap();
    fill(&log, mb << 20, 1024);
    log.close().unwrap();
    let mut g = c.benchmark_group("commitlog_recovery");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Bytes(mb << 20));
    g.bench_function(
        BenchmarkId::new("full_scan_no_checkpoint", format!("{mb}MiB")),
        |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    // Worst case: crash with no checkpoint, so every record is CRC-checked.
                    let _ = std::fs::remove_file(dir.join("checkpoint"));
                    let _ = std::fs::remove_file(dir.join("clean_shutdown"));
                    let t = Instant::now();
                    let (log, report) = CommitLog::open(cfg.clone()).unwrap();
                    spent += t.elapsed();
                    assert!(report.records_scanned > 0 && report.dropped.is_none());
                    drop(log);
                }
                spent
            });
        },
    );
    // The scan bench left the log dropped without close; close it once so a marker exists.
    CommitLog::open(cfg.clone()).unwrap().0.close().unwrap();
    g.bench_function(
        BenchmarkId::new("clean_shutdown", format!("{mb}MiB")),
        |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let (log, report) = CommitLog::open(cfg.clone()).unwrap();
                    spent += t.elapsed();
                    assert!(report.clean_shutdown);
                    log.close().unwrap();
                }
                spent
            });
        },
    );
    g.finish();
}

criterion_group!(
    benches,
    bench_raw_memcpy,
    bench_encode,
    bench_append,
    bench_read,
    bench_recovery
);
criterion_main!(benches);
