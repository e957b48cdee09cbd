#![allow(clippy::unwrap_used, clippy::expect_used)]

use consumequeue::{Config, ConsumeQueue, Entry, Error, QueueOffset};
use tempfile::TempDir;

fn entry(i: u64) -> Entry {
    Entry {
        physical_offset: i * 100,
        size: 100,
        tag_hash: i % 3,
    }
}

fn small() -> Config {
    Config {
        entries_per_segment: 8,
    }
}

fn fill(q: &ConsumeQueue, from: u64, to: u64) {
    let batch: Vec<Entry> = (from..to).map(entry).collect();
    q.append_batch(QueueOffset::new(from), &batch).unwrap();
}

fn all(q: &ConsumeQueue) -> Vec<Entry> {
    let mut out = Vec::new();
    q.read(q.min_offset(), usize::MAX, &mut out).unwrap();
    out
}

#[test]
fn append_read_across_segments_and_reopen() {
    let dir = TempDir::new().unwrap();
    let q = ConsumeQueue::open(dir.path(), small()).unwrap();
    fill(&q, 0, 20);
    q.append(QueueOffset::new(20), entry(20)).unwrap();
    assert_eq!(q.max_offset().get(), 21);
    let mut out = Vec::new();
    assert_eq!(q.read(QueueOffset::new(5), 6, &mut out).unwrap(), 6);
    assert_eq!(out, (5..11).map(entry).collect::<Vec<_>>());
    assert_eq!(q.get(QueueOffset::new(17)), Some(entry(17)));
    assert_eq!(q.get(QueueOffset::new(21)), None);
    q.close().unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.contains(&"00000000000000000016.cq1".to_string()));

    let q = ConsumeQueue::open(dir.path(), small()).unwrap();
    assert_eq!((q.min_offset().get(), q.max_offset().get()), (0, 21));
    assert_eq!(all(&q), (0..21).map(entry).collect::<Vec<_>>());
}

#[test]
fn append_rejects_gaps_and_empty_entries() {
    let dir = TempDir::new().unwrap();
    let q = ConsumeQueue::open(dir.path(), small()).unwrap();
    assert!(matches!(
        q.append(QueueOffset::new(1), entry(1)),
        Err(Error::NotContiguous {
            expected: 0,
            got: 1
        })
    ));
    let empty = Entry::default();
    assert!(matches!(
        q.append(QueueOffset::new(0), empty),
        Err(Error::InvalidEntry { .. })
    ));
    assert_eq!(q.max_offset().get(), 0);
    let mut out = Vec::new();
    assert!(matches!(
        q.read(QueueOffset::new(3), 1, &mut out),
        Err(Error::OutOfRange { .. })
    ));
    assert_eq!(q.read(QueueOffset::new(0), 1, &mut out).unwrap(), 0);
}

#[test]
fn truncate_physical_drops_entries_past_log_end() {
    let dir = TempDir::new().unwrap();
    let q = ConsumeQueue::open(dir.path(), small()).unwrap();
    fill(&q, 0, 20);
    // Entry 12 spans [1200, 1300): a log ending at 1250 keeps 0..12.
    assert_eq!(q.truncate_physical(1250).unwrap().get(), 12);
    assert_eq!(all(&q), (0..12).map(entry).collect::<Vec<_>>());
    fill(&q, 12, 14);
    drop(q);
    let q = ConsumeQueue::open(dir.path(), small()).unwrap();
    assert_eq!(q.max_offset().get(), 14);
    assert_eq!(q.truncate_physical(0).unwrap().get(), 0);
    drop(q);
    let q = ConsumeQueue::open(dir.path(), small()).unwrap();
    assert_eq!(q.max_offset().get(), 0);
}

#[test]
fn truncate_to_segment_boundary_survives_reopen() {
    let dir = TempDir::new().unwrap();
    let q = ConsumeQueue::open(dir.path(), small()).unwrap();
    fill(&q, 0, 20);
    q.truncate_to(QueueOffset::new(16)).unwrap();
    q.truncate_to(QueueOffset::new(30)).unwrap();
    assert_eq!(q.max_offset().get(), 16);
    drop(q);
    let q = ConsumeQueue::open(dir.path(), small()).unwrap();
    assert_eq!(q.max_offset().get(), 16);
    q.truncate_to(QueueOffset::new(8)).unwrap();
    drop(q);
    let q = ConsumeQueue::open(dir.path(), small()).unwrap();
    assert_eq!(q.max_offset().get(), 8);
    assert_eq!(all(&q).len(), 8);
}

#[test]
fn delete_below_physical_keeps_last_segment_and_end() {
    let dir = TempDir::new().unwrap();
    let q = ConsumeQueue::open(dir.path(), small()).unwrap();
    fill(&q, 0, 20);
    // Records below 1000 are gone: segment [0, 8) goes, min moves to entry 10.
    assert_eq!(q.delete_below_physical(1000).unwrap().get(), 10);
    assert_eq!(q.min_offset().get(), 10);
    assert_eq!(q.get(QueueOffset::new(9)), None);
    let mut out = Vec::new();
    assert!(q.read(QueueOffset::new(5), 1, &mut out).is_err());
    // Everything gone: the last segment stays so the end is remembered.
    assert_eq!(q.delete_below_physical(u64::MAX).unwrap().get(), 20);
    drop(q);
    let q = ConsumeQueue::open(dir.path(), small()).unwrap();
    assert_eq!(q.max_offset().get(), 20);
    assert_eq!(q.min_offset().get(), 16);
    assert_eq!(q.delete_below_physical(u64::MAX).unwrap().get(), 20);
    fill(&q, 20, 22);
    assert_eq!(all(&q), vec![entry(20), entry(21)]);
}

#[test]
fn reset_restarts_at_offset() {
    let dir = TempDir::new().unwrap();
    let q = ConsumeQueue::open(dir.path(), small()).unwrap();
    fill(&q, 0, 3);
    q.reset(QueueOffset::new(57)).unwrap();
    assert_eq!((q.min_offset().get(), q.max_offset().get()), (57, 57));
    fill(&q, 57, 70);
    drop(q);
    let q = ConsumeQueue::open(dir.path(), small()).unwrap();
    assert_eq!((q.min_offset().get(), q.max_offset().get()), (57, 70));
    assert_eq!(all(&q), (57..70).map(entry).collect::<Vec<_>>());
}

#[test]
fn recovery_stops_at_a_hole_and_clears_after_it() {
    let dir = TempDir::new().unwrap();
    let q = ConsumeQueue::open(dir.path(), small()).unwrap();
    fill(&q, 0, 12);
    q.close().unwrap();
    // Simulate a page lost in a power failure: entry 10 reads back as zeros.
    let path = dir.path().join("00000000000000000008.cq1");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[40..60].fill(0);
    std::fs::write(&path, bytes).unwrap();
    let q = ConsumeQueue::open(dir.path(), small()).unwrap();
    assert_eq!(q.max_offset().get(), 10);
    fill(&q, 10, 12);
    assert_eq!(all(&q), (0..12).map(entry).collect::<Vec<_>>());
}

#[test]
fn unknown_version_is_refused() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("00000000000000000000.cq9"), [0u8; 20]).unwrap();
    assert!(matches!(
        ConsumeQueue::open(dir.path(), small()),
        Err(Error::Corrupted { .. })
    ));
    assert!(matches!(
        ConsumeQueue::open(
            dir.path(),
            Config {
                entries_per_segment: 0
            }
        ),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn search_time_finds_first_at_or_after() {
    let dir = TempDir::new().unwrap();
    let q = ConsumeQueue::open(dir.path(), small()).unwrap();
    fill(&q, 0, 20);
    // Store time = physical offset / 10 -> entry i stored at 10 * i.
    let ts = |e: &Entry| Some(e.physical_offset / 10);
    assert_eq!(q.search_time(0, ts).get(), 0);
    assert_eq!(q.search_time(55, ts).get(), 6);
    assert_eq!(q.search_time(60, ts).get(), 6);
    assert_eq!(q.search_time(10_000, ts).get(), 20);
    // Records that can no longer be read count as older.
    let gone = |e: &Entry| (e.physical_offset >= 500).then_some(e.physical_offset / 10);
    assert_eq!(q.search_time(0, gone).get(), 5);
}

#[test]
fn destroy_removes_folder() {
    let dir = TempDir::new().unwrap();
    let qdir = dir.path().join("t").join("0");
    let q = ConsumeQueue::open(&qdir, small()).unwrap();
    fill(&q, 0, 3);
    q.destroy().unwrap();
    assert!(!qdir.exists());
}
