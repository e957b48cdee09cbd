//! The consume-queue entry reader: arbitrary bytes as entries, and as segment files a
//! crash or damage left behind, opened, read, searched, truncated and appended to.
#![no_main]

use consumequeue::format::{Entry, ENTRY_SIZE};
use consumequeue::{Config, ConsumeQueue, QueueOffset};
use libfuzzer_sys::fuzz_target;

const ENTRIES_PER_SEGMENT: u64 = 8;

fuzz_target!(|data: &[u8]| {
    for chunk in data.chunks_exact(ENTRY_SIZE) {
        let bytes: &[u8; ENTRY_SIZE] = chunk.try_into().expect("exact chunk");
        let e = Entry::decode(bytes);
        if !Entry::is_empty_slot(bytes) {
            assert_eq!(&e.encode(), bytes);
        }
        let _ = e.physical_end();
    }
    // First byte: how the rest is split over up to three segment files.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let dir = tempfile::TempDir::new().expect("temp dir");
    let seg_bytes = (ENTRIES_PER_SEGMENT as usize) * ENTRY_SIZE;
    let mut cut = usize::from(split % 4);
    for (i, part) in rest.chunks(seg_bytes).take(3).enumerate() {
        // Sometimes the file is shorter than a full segment (torn, or cut mid-entry).
        let len = if cut == i { part.len() / 2 + 1 } else { part.len() };
        cut = usize::MAX;
        let name = consumequeue::format::segment_file_name(i as u64 * ENTRIES_PER_SEGMENT);
        std::fs::write(dir.path().join(name), &part[..len.min(part.len())]).expect("write");
    }
    let config = Config {
        entries_per_segment: ENTRIES_PER_SEGMENT,
    };
    let Ok(q) = ConsumeQueue::open(dir.path(), config) else {
        return;
    };
    let (min, max) = (q.min_offset().get(), q.max_offset().get());
    assert!(min <= max);
    let mut out = Vec::new();
    if q.read(QueueOffset::new(min), usize::MAX, &mut out).is_ok() {
        assert!(out.len() as u64 <= max - min);
        // Every entry below the end is present (a queue is gap-free).
        for o in min..max {
            assert!(q.get(QueueOffset::new(o)).is_some(), "hole at {o} below {max}");
        }
    }
    let _ = q.search_time(u64::from(split) << 8, |e| Some(e.physical_offset));
    let end = out.iter().map(Entry::physical_end).max().unwrap_or(0);
    let _ = q.truncate_physical(end / 2);
    let next = q.max_offset();
    let entry = Entry {
        physical_offset: end,
        size: 1,
        tag_hash: 0,
    };
    if q.append(next, entry).is_ok() {
        assert_eq!(q.get(next), Some(entry));
    }
});
