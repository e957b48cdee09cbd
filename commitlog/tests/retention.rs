//! Retention: the byte budget and the age limit remove the oldest sealed segments only,
//! never the active one, and records still held by readers survive a removal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use commitlog::{Error, PhysicalOffset, Retention};
use support::*;
use tempfile::TempDir;

fn fill(log: &commitlog::CommitLog, n: u64) -> Vec<PhysicalOffset> {
    let b = body(0, 1000);
    (0..n)
        .map(|i| log.append(&rec(i, &b)).unwrap().offset)
        .collect()
}

#[test]
fn byte_budget_removes_oldest_sealed_segments_only() {
    let tmp = TempDir::new().unwrap();
    let mut cfg = config(tmp.path());
    cfg.preallocate = false;
    cfg.retention = Retention {
        max_age_ms: None,
        max_total_bytes: Some(3 * SMALL_SEGMENT),
    };
    let (log, _) = open(cfg);
    let offs = fill(&log, 40);
    log.flush().unwrap();
    let report = log.apply_retention(0).unwrap();
    assert!(!report.removed_segments.is_empty());
    assert_eq!(segment_files(&log_dir(tmp.path())).len(), 3);
    assert_eq!(log.min_offset(), report.min_offset);
    let err = log.read(offs[0]).unwrap_err();
    assert!(matches!(err, Error::OffsetUnavailable { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "offset 0 no longer available, minimum is {}",
            log.min_offset()
        )
    );
    // Everything from the minimum on still reads.
    assert!(contents(&log)
        .iter()
        .all(|(o, _, _)| *o >= log.min_offset()));
    assert!(log.read(*offs.last().unwrap()).is_ok());
}

#[test]
fn age_limit_never_removes_the_active_segment() {
    let tmp = TempDir::new().unwrap();
    let mut cfg = config(tmp.path());
    cfg.retention = Retention {
        max_age_ms: Some(1),
        max_total_bytes: None,
    };
    let (log, _) = open(cfg.clone());
    fill(&log, 20);
    log.flush().unwrap();
    let far_future = u64::MAX / 2;
    log.apply_retention(far_future).unwrap();
    let active_start =
        PhysicalOffset::new(log.write_offset().get() / SMALL_SEGMENT * SMALL_SEGMENT);
    assert_eq!(log.min_offset(), active_start);
    // The log still works and reopens with the new minimum.
    fill(&log, 2);
    drop(log);
    let (log, report) = open(cfg);
    assert_eq!(report.dropped, None);
    assert_eq!(log.min_offset(), active_start);
    assert!(contents(&log).len() >= 2);
}

#[test]
fn records_held_by_readers_survive_retention() {
    let tmp = TempDir::new().unwrap();
    let mut cfg = config(tmp.path());
    cfg.retention = Retention {
        max_age_ms: None,
        max_total_bytes: Some(SMALL_SEGMENT),
    };
    let (log, _) = open(cfg);
    let offs = fill(&log, 20);
    let held = log.read(offs[0]).unwrap();
    log.flush().unwrap();
    log.apply_retention(0).unwrap();
    assert!(log.read(offs[0]).is_err());
    assert_eq!(held.view().queue_offset(), 0);
}
