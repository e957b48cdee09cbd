//! Flush policies, group commit, the storage seam's failures and crash images.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use commitlog::fault::FaultyStorage;
use commitlog::{CommitLog, Error, FlushPolicy, PhysicalOffset};
use support::*;
use tempfile::TempDir;

#[test]
fn sync_appends_are_durable_on_return_and_share_flushes() {
    let tmp = TempDir::new().unwrap();
    let faults = Arc::new(FaultyStorage::new());
    let mut cfg = config(tmp.path());
    cfg.segment_size_bytes = 1 << 20;
    cfg.flush = FlushPolicy::Sync;
    cfg.storage = faults.clone();
    let (log, _) = open(cfg.clone());
    let log = Arc::new(log);
    let threads = 8;
    let per_thread = 200u64;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let b = body(t * 1000 + i, 64);
                    let a = log.append(&rec(t * 1000 + i, &b)).unwrap();
                    let end = a.offset.get() + u64::from(a.size);
                    assert!(
                        log.flushed_offset().get() >= end,
                        "append returned before durable"
                    );
                    assert!(log.visible_offset().get() >= end);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let stats = log.stats();
    assert_eq!(stats.appends, threads * per_thread);
    assert!(
        stats.flushes * 2 < stats.appends,
        "no group commit: {stats:?}"
    );
    // Only synced bytes survive a power loss: all of them must be there.
    drop(log);
    let image = tmp.path().join("image");
    faults
        .write_crash_image(&log_dir(tmp.path()), &image.join("commitlog"), 0)
        .unwrap();
    let mut cfg2 = config(&image);
    cfg2.segment_size_bytes = 1 << 20;
    let (log, report) = open(cfg2);
    assert_eq!(report.dropped, None);
    assert_eq!(contents(&log).len() as u64, threads * per_thread);
}

#[test]
fn disk_full_at_segment_creation_is_reported_and_appends_resume() {
    let tmp = TempDir::new().unwrap();
    let faults = Arc::new(FaultyStorage::new());
    let mut cfg = config(tmp.path());
    cfg.preallocate = false;
    cfg.storage = faults.clone();
    let (log, _) = open(cfg);
    let b = body(0, 1000);
    for i in 0..3 {
        log.append(&rec(i, &b)).unwrap();
    }
    faults.disk_full(true);
    let before = log.write_offset();
    // The fourth record needs a new segment; a batch crossing it must leave nothing behind.
    let err = log.append_batch(&[rec(3, &b), rec(4, &b)]).unwrap_err();
    assert!(matches!(err, Error::DiskFull { .. }), "{err}");
    assert!(err.to_string().contains("disk full"));
    assert_eq!(log.write_offset(), before);
    assert_eq!(contents(&log).len(), 3);
    faults.disk_full(false);
    log.append_batch(&[rec(3, &b), rec(4, &b)]).unwrap();
    assert_eq!(contents(&log).len(), 5);
}

#[test]
fn failed_sync_poisons_the_writer_until_reopen() {
    let tmp = TempDir::new().unwrap();
    let faults = Arc::new(FaultyStorage::new());
    let mut cfg = config(tmp.path());
    cfg.flush = FlushPolicy::Sync;
    cfg.storage = faults.clone();
    let (log, _) = open(cfg.clone());
    let b = body(0, 10);
    log.append(&rec(0, &b)).unwrap();
    faults.fail_syncs(true);
    assert!(log.append(&rec(1, &b)).is_err());
    faults.fail_syncs(false);
    // No silent retry: still refused although syncs work again.
    assert!(matches!(
        log.append(&rec(2, &b)),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(log.flush(), Err(Error::Poisoned { .. })));
    drop(log);
    let (log, _) = open(cfg);
    log.append(&rec(3, &b)).unwrap();
}

#[test]
fn crash_image_keeps_only_flushed_records_plus_torn_suffix_is_cut() {
    let tmp = TempDir::new().unwrap();
    let faults = Arc::new(FaultyStorage::new());
    let mut cfg = config(tmp.path());
    cfg.flush = FlushPolicy::Async {
        interval_ms: 3_600_000,
    };
    cfg.storage = faults.clone();
    let (log, _) = open(cfg);
    let b = body(0, 200);
    for i in 0..10 {
        log.append(&rec(i, &b)).unwrap();
    }
    log.flush().unwrap();
    let durable = log.flushed_offset();
    for i in 10..14 {
        log.append(&rec(i, &b)).unwrap();
    }
    drop(log);
    for torn in [0u64, 1, 100, 300, 10_000] {
        let image = tmp.path().join(format!("image{torn}"));
        faults
            .write_crash_image(&log_dir(tmp.path()), &image.join("commitlog"), torn)
            .unwrap();
        let (log, report) = open(config(&image));
        assert!(
            report.recovered_end >= durable,
            "lost durable data: {report:?}"
        );
        let got = contents(&log);
        assert!(got.len() >= 10);
        for (i, (_, qo, body)) in got.iter().enumerate() {
            assert_eq!(*qo, i as u64);
            assert_eq!(body, &b);
        }
        assert!(!report.corruption_followed_by_valid_records, "{report:?}");
    }
}

#[test]
fn recovery_cuts_a_torn_tail() {
    let tmp = TempDir::new().unwrap();
    let (log, _) = open(config(tmp.path()));
    let b = body(0, 300);
    let offs: Vec<PhysicalOffset> = (0..5)
        .map(|i| log.append(&rec(i, &b)).unwrap().offset)
        .collect();
    drop(log);
    // Zero the last record's second half, as a torn page write would.
    let seg = &segment_files(&log_dir(tmp.path()))[0];
    let mut bytes = std::fs::read(seg).unwrap();
    let last = offs[4].get() as usize;
    bytes[last + 200..last + 400].fill(0);
    std::fs::write(seg, &bytes).unwrap();
    let _ = std::fs::remove_file(log_dir(tmp.path()).join("checkpoint"));
    let (log, report) = open(config(tmp.path()));
    let dropped = report.dropped.clone().expect("dropped");
    assert_eq!(dropped.from, offs[4]);
    assert!(!report.corruption_followed_by_valid_records);
    assert_eq!(report.recovered_end, offs[4]);
    assert_eq!(contents(&log).len(), 4);
    // Appends resume at the cut and survive another reopen.
    log.append(&rec(9, &b)).unwrap();
    drop(log);
    let (log, report) = open(config(tmp.path()));
    assert_eq!(report.dropped, None, "{report:?}");
    assert_eq!(contents(&log).len(), 5);
}

#[test]
fn recovery_reports_corruption_followed_by_valid_records() {
    let tmp = TempDir::new().unwrap();
    let (log, _) = open(config(tmp.path()));
    let b = body(0, 300);
    let offs: Vec<PhysicalOffset> = (0..6)
        .map(|i| log.append(&rec(i, &b)).unwrap().offset)
        .collect();
    drop(log);
    let seg = &segment_files(&log_dir(tmp.path()))[0];
    let mut bytes = std::fs::read(seg).unwrap();
    bytes[offs[2].get() as usize + 100] ^= 0xFF;
    std::fs::write(seg, &bytes).unwrap();
    let _ = std::fs::remove_file(log_dir(tmp.path()).join("checkpoint"));
    let (log, report) = open(config(tmp.path()));
    assert!(report.corruption_followed_by_valid_records, "{report:?}");
    let dropped = report.dropped.expect("dropped");
    assert_eq!(dropped.from, offs[2]);
    assert!(matches!(dropped.reason, commitlog::DropReason::Corrupt(_)));
    assert_eq!(contents(&log).len(), 2);
}

#[test]
fn flipped_byte_below_checkpoint_is_never_served() {
    let tmp = TempDir::new().unwrap();
    let (log, _) = open(config(tmp.path()));
    let b = body(0, 300);
    let offs: Vec<PhysicalOffset> = (0..3)
        .map(|i| log.append(&rec(i, &b)).unwrap().offset)
        .collect();
    log.close().unwrap();
    let seg = &segment_files(&log_dir(tmp.path()))[0];
    let mut bytes = std::fs::read(seg).unwrap();
    bytes[offs[1].get() as usize + 150] ^= 1;
    std::fs::write(seg, &bytes).unwrap();
    let (log, _) = open(config(tmp.path()));
    assert!(matches!(
        log.read(offs[1]),
        Err(Error::ChecksumMismatch { .. })
    ));
    assert!(log.read(offs[2]).is_ok());
}

#[test]
fn lock_is_released_by_close() {
    let tmp = TempDir::new().unwrap();
    let (log, _) = open(config(tmp.path()));
    log.close().unwrap();
    let (_log, report) = CommitLog::open(config(tmp.path())).unwrap();
    assert!(report.clean_shutdown);
}

#[test]
fn disk_full_with_background_preallocation_resumes() {
    let tmp = TempDir::new().unwrap();
    let faults = Arc::new(FaultyStorage::new());
    faults.disk_full(true);
    let mut cfg = config(tmp.path());
    cfg.storage = faults.clone();
    // The first segment cannot be created either: open reports it.
    assert!(matches!(
        CommitLog::open(cfg.clone()),
        Err(Error::DiskFull { .. })
    ));
    faults.disk_full(false);
    let (log, _) = open(cfg);
    faults.disk_full(true);
    let b = body(0, 1000);
    let mut failed = false;
    for i in 0..20 {
        match log.append(&rec(i, &b)) {
            Ok(_) => {}
            Err(Error::DiskFull { .. }) => {
                failed = true;
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(failed, "appends never ran out of space");
    let n = contents(&log).len();
    faults.disk_full(false);
    for i in 0..10 {
        log.append(&rec(100 + i, &b)).unwrap();
    }
    assert_eq!(contents(&log).len(), n + 10);
}
