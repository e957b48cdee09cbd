//! The consume-queue store's decoders: arbitrary bytes as entries, journal frames, a
//! snapshot and an arena that a crash or damage left behind. Opening must never panic, and
//! whatever it accepts must be readable.
#![no_main]

use std::sync::Arc;

use commitlog::storage::RealFs;
use consumequeue::format::{self, Entry, ENTRY_SIZE};
use consumequeue::{Config, QueueOffset, QueueStore};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for chunk in data.chunks_exact(ENTRY_SIZE) {
        let bytes: &[u8; ENTRY_SIZE] = chunk.try_into().expect("exact chunk");
        assert_eq!(&Entry::decode(bytes).encode(), bytes);
    }
    let _ = format::Snapshot::decode(data);
    let _ = format::ArenaHeader::decode(data);
    // First byte: where the rest splits into a journal and a snapshot.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = (usize::from(split) * rest.len() / 256).min(rest.len());
    let (journal, snapshot) = rest.split_at(at);
    let dir = tempfile::TempDir::new().expect("temp dir");
    let config = Config {
        arena_size_bytes: 8 << 10,
        block_size_bytes: 256,
        snapshot_journal_bytes: 1 << 20,
    };
    std::fs::create_dir_all(dir.path().join("journal")).expect("mkdir");
    std::fs::write(dir.path().join("journal").join(format::journal_file_name(0)), journal)
        .expect("write");
    if split % 2 == 1 {
        std::fs::write(dir.path().join("snapshot"), snapshot).expect("write");
    }
    let Ok((store, _)) = QueueStore::open(dir.path(), config, Arc::new(RealFs)) else {
        return;
    };
    for q in store.all() {
        let (min, max) = (q.min_offset().get(), q.max_offset().get());
        assert!(min <= max);
        let mut out = Vec::new();
        let _ = q.read(QueueOffset::new(min), 4096, &mut out);
        let _ = q.truncate_physical(u64::from(split));
    }
    let _ = store.checkpoint(1);
});
