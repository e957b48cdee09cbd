//! Replica mode of the log: raw appends at given offsets, segment seals, the epoch file,
//! crash-safe truncation and the confirm watermark.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use commitlog::fault::FaultyStorage;
use commitlog::format::{Meta, MetaKind};
use commitlog::{CommitLog, DropReason, Error, PhysicalOffset};
use support::*;
use tempfile::TempDir;

fn append_n(log: &CommitLog, from: u64, n: u64, len: usize) -> Vec<u64> {
    (from..from + n)
        .map(|i| {
            let b = body(i, len);
            log.append(&rec(i, &b)).unwrap().offset.get()
        })
        .collect()
}

/// Ships everything the master has to the replica, chunk by chunk, as the HA stream does.
fn ship(master: &CommitLog, replica: &CommitLog, max: usize) {
    loop {
        let from = replica.write_offset();
        if from >= master.write_offset() {
            return;
        }
        let chunk = master
            .raw_chunk(from, PhysicalOffset::new(u64::MAX), max)
            .unwrap();
        let end = replica.append_raw(from, chunk.bytes()).unwrap();
        if chunk.seal() {
            replica.seal_segment(end).unwrap();
        } else if chunk.bytes().is_empty() {
            return;
        }
    }
}

fn file_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    segment_files(dir)
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn replicated_segments_equal_the_masters_byte_for_byte() {
    let (m_dir, r_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let (master, _) = open(config(m_dir.path()));
    let (replica, _) = open(config(r_dir.path()));
    append_n(&master, 0, 60, 150);
    ship(&master, &replica, 700);
    append_n(&master, 60, 7, 4000 - 200);
    ship(&master, &replica, 1 << 20);
    assert_eq!(replica.write_offset(), master.write_offset());
    assert_eq!(contents(&replica), contents(&master));
    drop(master);
    drop(replica);
    let m = file_bytes(&log_dir(m_dir.path()));
    let r = file_bytes(&log_dir(r_dir.path()));
    assert!(m.len() > 3, "the test must cross segments");
    assert_eq!(m, r);
}

#[test]
fn bad_raw_appends_are_refused_and_write_nothing() {
    let (m_dir, r_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let (master, _) = open(config(m_dir.path()));
    let (replica, _) = open(config(r_dir.path()));
    append_n(&master, 0, 5, 100);
    let all = master
        .raw_chunk(
            PhysicalOffset::new(0),
            PhysicalOffset::new(u64::MAX),
            1 << 20,
        )
        .unwrap();
    let bytes = all.bytes().to_vec();
    let zero = PhysicalOffset::new(0);
    // Wrong offset.
    let e = replica
        .append_raw(PhysicalOffset::new(8), &bytes)
        .unwrap_err();
    assert!(matches!(e, Error::ReplicaOffsetMismatch { .. }), "{e}");
    // Bad CRC in the last record: all or nothing.
    let mut bad = bytes.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let e = replica.append_raw(zero, &bad).unwrap_err();
    assert!(matches!(e, Error::ChecksumMismatch { .. }), "{e}");
    // A record that belongs elsewhere (its stored offset is not where it would land).
    let second = contents(&master)[1].0.get() as usize;
    let e = replica.append_raw(zero, &bytes[second..]).unwrap_err();
    assert!(matches!(e, Error::Corrupted { .. }), "{e}");
    // A cut record.
    let e = replica
        .append_raw(zero, &bytes[..bytes.len() - 3])
        .unwrap_err();
    assert!(matches!(e, Error::Corrupted { .. }), "{e}");
    assert_eq!(replica.write_offset(), zero);
    assert!(contents(&replica).is_empty());
    // The good bytes still go in afterwards.
    ship(&master, &replica, 1 << 20);
    assert_eq!(contents(&replica), contents(&master));
}

#[test]
fn a_record_crossing_the_segment_end_is_refused() {
    let (m_dir, r_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let mut small = config(m_dir.path());
    small.segment_size_bytes = 8192;
    let (master, _) = open(small);
    let (replica, _) = open(config(r_dir.path()));
    append_n(&master, 0, 3, 2000);
    let chunk = master
        .raw_chunk(
            PhysicalOffset::new(0),
            PhysicalOffset::new(u64::MAX),
            1 << 20,
        )
        .unwrap();
    assert!(chunk.bytes().len() > SMALL_SEGMENT as usize);
    let e = replica
        .append_raw(PhysicalOffset::new(0), chunk.bytes())
        .unwrap_err();
    assert!(matches!(e, Error::RecordStraddlesSegment { .. }), "{e}");
    assert_eq!(replica.write_offset().get(), 0);
}

#[test]
fn truncation_cuts_the_tail_and_later_segments_for_good() {
    let dir = TempDir::new().unwrap();
    let (log, _) = open(config(dir.path()));
    let offsets = append_n(&log, 0, 80, 120);
    let held = log.read(PhysicalOffset::new(offsets[70])).unwrap();
    let held_bytes = held.bytes().to_vec();
    let t = offsets[30];
    log.flush().unwrap();
    log.truncate_to(PhysicalOffset::new(t)).unwrap();
    assert_eq!(log.write_offset().get(), t);
    assert!(log.flushed_offset().get() <= t);
    // A record read before the cut stays intact for its holder.
    assert_eq!(held.bytes(), &held_bytes[..]);
    assert!(log.read(PhysicalOffset::new(offsets[30])).is_err());
    assert_eq!(contents(&log).len(), 30);
    // Appends continue at the cut.
    let again = append_n(&log, 1000, 3, 50);
    assert_eq!(again[0], t);
    drop(log);
    let (log, report) = open(config(dir.path()));
    let c = contents(&log);
    assert_eq!(c.len(), 33);
    assert_eq!(c[30].1, 1000);
    assert_eq!(report.dropped, None);
}

#[test]
fn truncation_refuses_a_point_inside_a_record() {
    let dir = TempDir::new().unwrap();
    let (log, _) = open(config(dir.path()));
    let offsets = append_n(&log, 0, 5, 120);
    let e = log
        .truncate_to(PhysicalOffset::new(offsets[2] + 1))
        .unwrap_err();
    assert!(matches!(e, Error::NotRecordBoundary { .. }), "{e}");
    let e = log.truncate_to(PhysicalOffset::new(1 << 30)).unwrap_err();
    assert!(matches!(e, Error::OffsetNotWritten { .. }), "{e}");
    assert_eq!(contents(&log).len(), 5);
}

/// RocketMQ #10666: cut bytes are valid records; a scan (here starting from a checkpoint
/// above the cut) must never take them back.
#[test]
fn truncated_tail_is_not_resurrected_by_recovery() {
    let dir = TempDir::new().unwrap();
    let (log, _) = open(config(dir.path()));
    let offsets = append_n(&log, 0, 60, 100);
    log.flush().unwrap();
    log.close().unwrap();
    // An interrupted truncation: the intent is durable, nothing else happened, and the
    // checkpoint lies above the cut.
    let (log, _) = open(config(dir.path()));
    log.flush().unwrap();
    drop(log);
    let t = offsets[20];
    let intent = Meta {
        kind: MetaKind::Truncate,
        offset: t,
    };
    std::fs::write(log_dir(dir.path()).join("truncate"), intent.encode()).unwrap();
    let (log, report) = open(config(dir.path()));
    assert_eq!(report.recovered_end.get(), t);
    assert!(matches!(
        report.dropped.as_ref().map(|d| &d.reason),
        Some(DropReason::Truncated)
    ));
    assert!(!log_dir(dir.path()).join("truncate").exists());
    assert_eq!(contents(&log).len(), 20);
    append_n(&log, 500, 2, 100);
    drop(log);
    // A second crash-recover round stays clean, with the old tail gone for good.
    let (log, report) = open(config(dir.path()));
    assert_eq!(report.dropped, None);
    let c = contents(&log);
    assert_eq!(c.len(), 22);
    assert_eq!(c[20].1, 500);
}

/// Power loss right after a truncation: only synced bytes survive, and they end at T.
#[test]
fn truncation_survives_a_power_loss() {
    for torn in [0, 300] {
        let dir = TempDir::new().unwrap();
        let faults = Arc::new(FaultyStorage::new());
        let mut cfg = config(dir.path());
        cfg.storage = faults.clone();
        let (log, _) = open(cfg);
        let offsets = append_n(&log, 0, 90, 100);
        log.flush().unwrap();
        let t = offsets[45];
        log.truncate_to(PhysicalOffset::new(t)).unwrap();
        drop(log);
        let image = TempDir::new().unwrap();
        faults
            .write_crash_image(&log_dir(dir.path()), &log_dir(image.path()), torn)
            .unwrap();
        let (log, report) = open(config(image.path()));
        assert_eq!(report.recovered_end.get(), t, "torn {torn}");
        assert_eq!(contents(&log).len(), 45);
    }
}

#[test]
fn epochs_are_durable_and_cut_with_the_log() {
    let dir = TempDir::new().unwrap();
    let (log, _) = open(config(dir.path()));
    let e1 = log.begin_epoch(1, 7).unwrap();
    assert_eq!(e1.start_offset, 0);
    let offsets = append_n(&log, 0, 10, 100);
    let e2 = log.begin_epoch(2, 8).unwrap();
    assert_eq!(e2.start_offset, log.write_offset().get());
    assert!(matches!(
        log.begin_epoch(2, 8),
        Err(Error::EpochOutOfOrder { .. })
    ));
    append_n(&log, 10, 10, 100);
    // An epoch that wrote nothing is replaced by the next one.
    let e3 = log.begin_epoch(3, 9).unwrap();
    let e4 = log.begin_epoch(4, 9).unwrap();
    assert_eq!(log.epochs(), vec![e1, e2, e4]);
    assert_eq!(e3.start_offset, e4.start_offset);
    drop(log);
    let (log, _) = open(config(dir.path()));
    assert_eq!(log.epochs(), vec![e1, e2, e4]);
    log.truncate_to(PhysicalOffset::new(offsets[5])).unwrap();
    assert_eq!(log.epochs(), vec![e1]);
    drop(log);
    let (log, _) = open(config(dir.path()));
    assert_eq!(log.epochs(), vec![e1]);
}

#[test]
fn confirm_moves_up_wakes_waiters_and_is_lowered_by_truncation() {
    let dir = TempDir::new().unwrap();
    let (log, _) = open(config(dir.path()));
    let log = Arc::new(log);
    let offsets = append_n(&log, 0, 10, 100);
    assert_eq!(log.confirm_offset().get(), 0);
    let waiter = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            log.wait_confirmed(PhysicalOffset::new(0), Duration::from_secs(60))
        })
    };
    let end = log.write_offset();
    // Clamped to what is written.
    assert_eq!(log.advance_confirm(PhysicalOffset::new(u64::MAX)), end);
    assert_eq!(waiter.join().unwrap(), end);
    assert_eq!(
        log.advance_confirm(PhysicalOffset::new(5)),
        end,
        "never moves down"
    );
    log.truncate_to(PhysicalOffset::new(offsets[4])).unwrap();
    assert_eq!(log.confirm_offset().get(), offsets[4]);
    let timed_out = log.wait_confirmed(PhysicalOffset::new(offsets[4]), Duration::from_millis(1));
    assert_eq!(timed_out.get(), offsets[4]);
}
