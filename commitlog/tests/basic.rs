//! The commit log through its public API: append, batch, read and iterate across segment
//! rolls, reopen with and without a clean close, the directory lock, typed read errors,
//! visibility waits and the background flusher and preallocator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use commitlog::{CommitLog, Error, FlushPolicy, PhysicalOffset};
use support::*;
use tempfile::TempDir;

#[test]
fn append_read_iterate_across_segment_rolls() {
    let tmp = TempDir::new().unwrap();
    let (log, report) = open(config(tmp.path()));
    assert!(!report.clean_shutdown);
    let mut offsets = Vec::new();
    for i in 0..200u64 {
        let b = body(i, (i as usize * 13) % 900);
        let a = log.append(&rec(i, &b)).unwrap();
        offsets.push(a.offset);
    }
    for (i, off) in offsets.iter().enumerate() {
        let r = log.read(*off).unwrap();
        assert_eq!(r.view().queue_offset(), i as u64);
        assert_eq!(r.view().body(), &body(i as u64, (i * 13) % 900)[..]);
        assert_eq!(r.view().physical_offset(), off.get());
    }
    let all = contents(&log);
    assert_eq!(all.len(), 200);
    assert!(segment_files(&log_dir(tmp.path())).len() > 5, "rolled");
    // Records never straddle segments.
    for o in &offsets {
        let r = log.read(*o).unwrap();
        assert_eq!(
            o.get() / SMALL_SEGMENT,
            (o.get() + u64::from(r.size()) - 1) / SMALL_SEGMENT
        );
    }
}

#[test]
fn batch_is_contiguous_and_reopen_after_close_skips_scan() {
    let tmp = TempDir::new().unwrap();
    let (log, _) = open(config(tmp.path()));
    let bodies: Vec<Vec<u8>> = (0..50).map(|i| body(i, 300)).collect();
    let recs: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| rec(i as u64, b))
        .collect();
    let out = log.append_batch(&recs).unwrap();
    assert_eq!(out.len(), 50);
    let end = log.write_offset();
    log.close().unwrap();
    let (log, report) = open(config(tmp.path()));
    assert!(report.clean_shutdown);
    assert_eq!(report.recovered_end, end);
    assert_eq!(report.dropped, None);
    assert_eq!(contents(&log).len(), 50);
    let b = body(99, 10);
    let a = log.append(&rec(99, &b)).unwrap();
    assert_eq!(a.offset, end.max(a.offset));
    assert_eq!(contents(&log).len(), 51);
}

#[test]
fn reopen_after_drop_scans_and_keeps_everything() {
    let tmp = TempDir::new().unwrap();
    let (log, _) = open(config(tmp.path()));
    for i in 0..100 {
        let b = body(i, 100);
        log.append(&rec(i, &b)).unwrap();
    }
    let end = log.write_offset();
    drop(log);
    let (log, report) = open(config(tmp.path()));
    assert!(!report.clean_shutdown);
    assert_eq!(report.recovered_end, end);
    assert_eq!(report.dropped, None, "{report:?}");
    assert_eq!(contents(&log).len(), 100);
}

#[test]
fn second_open_is_locked() {
    let tmp = TempDir::new().unwrap();
    let (_log, _) = open(config(tmp.path()));
    match CommitLog::open(config(tmp.path())) {
        Err(Error::Locked { .. }) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn oversized_record_is_rejected_and_log_untouched() {
    let tmp = TempDir::new().unwrap();
    let (log, _) = open(config(tmp.path()));
    let big = vec![0u8; SMALL_SEGMENT as usize];
    let small = body(1, 10);
    let err = log
        .append_batch(&[rec(0, &small), rec(1, &big)])
        .unwrap_err();
    assert!(matches!(err, Error::RecordTooLarge { .. }), "{err}");
    assert_eq!(log.write_offset(), PhysicalOffset::new(0));
    assert!(contents(&log).is_empty());
}

#[test]
fn read_errors_are_typed() {
    let tmp = TempDir::new().unwrap();
    let (log, _) = open(config(tmp.path()));
    let b = body(0, 10);
    let a = log.append(&rec(0, &b)).unwrap();
    assert!(matches!(
        log.read(log.write_offset()),
        Err(Error::OffsetNotWritten { .. })
    ));
    assert!(log.read(PhysicalOffset::new(a.offset.get() + 1)).is_err());
}

#[test]
fn wait_visible_wakes_on_append_and_times_out() {
    let tmp = TempDir::new().unwrap();
    let (log, _) = open(config(tmp.path()));
    let log = Arc::new(log);
    let t0 = Instant::now();
    assert_eq!(
        log.wait_visible(PhysicalOffset::new(0), Duration::from_millis(50)),
        PhysicalOffset::new(0)
    );
    assert!(t0.elapsed() >= Duration::from_millis(45));
    let l2 = Arc::clone(&log);
    let h = std::thread::spawn(move || {
        l2.wait_visible(PhysicalOffset::new(0), Duration::from_secs(10))
    });
    std::thread::sleep(Duration::from_millis(50));
    let b = body(0, 10);
    log.append(&rec(0, &b)).unwrap();
    assert!(h.join().unwrap() > PhysicalOffset::new(0));
}

#[test]
fn async_flusher_makes_data_durable_in_the_background() {
    let tmp = TempDir::new().unwrap();
    let mut cfg = config(tmp.path());
    cfg.flush = FlushPolicy::Async { interval_ms: 10 };
    let (log, _) = open(cfg);
    let b = body(0, 10);
    log.append(&rec(0, &b)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.flushed_offset() < log.write_offset() {
        assert!(Instant::now() < deadline, "background flush never happened");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(log.stats().flushes >= 1);
}

#[test]
fn background_thread_precreates_next_segment() {
    let tmp = TempDir::new().unwrap();
    let (log, _) = open(config(tmp.path()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.stats().segments_precreated == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    for i in 0..10 {
        let b = body(i, 1000);
        log.append(&rec(i, &b)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = log.stats();
    assert!(s.segments_precreated >= 2, "{s:?}");
}

#[test]
fn wait_durable_beyond_the_end_does_not_hang() {
    let tmp = TempDir::new().unwrap();
    let (log, _) = open(config(tmp.path()));
    let b = body(0, 10);
    log.append(&rec(0, &b)).unwrap();
    log.wait_durable(PhysicalOffset::new(u64::MAX)).unwrap();
    assert_eq!(log.flushed_offset(), log.write_offset());
}

#[test]
fn dirty_bytes_trigger_flushes_before_the_interval() {
    let tmp = TempDir::new().unwrap();
    let mut cfg = config(tmp.path());
    cfg.flush = FlushPolicy::Async {
        interval_ms: 3_600_000,
    };
    cfg.flush_dirty_bytes = 2048;
    let (log, _) = open(cfg);
    let b = body(0, 1000);
    for i in 0..3 {
        log.append(&rec(i, &b)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.flushed_offset().get() < 2048 {
        assert!(
            Instant::now() < deadline,
            "dirty-bytes trigger never flushed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
