//! The key index inside a real store: keys found by each, collisions, rolling, retention,
//! crashes, damage, a full disk, and switched off.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use commitlog::fault::FaultyStorage;
use protocol::properties::{PropertiesBuilder, KEYS};

use super::format;
use crate::store::{MessageStore, PutMessage, StoreConfig, StoreError};

fn open(dir: &Path, tune: impl FnOnce(&mut StoreConfig)) -> MessageStore {
    let mut c = StoreConfig::new(dir);
    c.commitlog.segment_size_bytes = 64 << 10;
    // Small files: a test that rolls many keeps its disk use small.
    c.key_index.slot_count = 1024;
    tune(&mut c);
    MessageStore::open(c).unwrap()
}

/// Stores one message with `keys` (space separated, as `with_keys` writes them).
fn put(store: &MessageStore, topic: &str, keys: &str, body: &str) {
    let props = if keys.is_empty() {
        Vec::new()
    } else {
        PropertiesBuilder::new().with(KEYS, keys).build()
    };
    let msg = PutMessage {
        properties: &props,
        body: body.as_bytes(),
        born_timestamp_ms: 0,
        reconsume_times: 0,
    };
    store.put(topic, 0, &msg).unwrap();
}

fn find(store: &MessageStore, topic: &str, key: &str) -> Vec<String> {
    store.shared.dispatch_all().unwrap();
    let found = store
        .query_by_key(topic, key, 0, u64::MAX, 1_000_000)
        .unwrap();
    assert!(!found.more);
    bodies(&found.records)
}

fn bodies(records: &[commitlog::RecordRef]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.view().body().to_vec()).unwrap())
        .collect()
}

fn index_files(data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data.join("index"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "kix"));
    v.sort();
    v
}

#[test]
fn each_key_of_a_message_finds_it_and_nothing_exists_before_the_first_key() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = open(dir.path(), |_| {});
    put(&store, "t", "", "no keys");
    store.flush().unwrap();
    assert!(!dir.path().join("index").exists(), "an index without keys");
    put(&store, "t", "a b", "m1");
    put(&store, "t", "b", "m2");
    put(&store, "u", "a", "u1");
    // The same key twice in one message is still one match.
    put(&store, "t", "c c", "m3");
    assert_eq!(find(&store, "t", "a"), ["m1"]);
    assert_eq!(find(&store, "t", "b"), ["m1", "m2"]);
    assert_eq!(find(&store, "u", "a"), ["u1"]);
    assert_eq!(find(&store, "t", "c"), ["m3"]);
    assert!(find(&store, "t", "d").is_empty());
    assert!(matches!(
        store.query_by_key("t", "", 0, u64::MAX, 1),
        Err(StoreError::InvalidKeyQuery(_))
    ));
    assert!(matches!(
        store.query_by_key("nope", "a", 0, u64::MAX, 1),
        Err(StoreError::TopicNotFound(_))
    ));
    store.close().unwrap();
}

#[test]
fn forced_hash_collisions_never_return_another_keys_messages() {
    let dir = tempfile::TempDir::new().unwrap();
    // Two slots and no hash bits: every key of every topic shares one chain.
    let store = open(dir.path(), |c| {
        c.key_index.slot_count = 2;
        c.key_index.hash_bits = 0;
    });
    for i in 0..300 {
        put(&store, "t", &format!("k{}", i % 30), &format!("t{i}"));
        put(&store, "v", &format!("k{}", i % 30), &format!("v{i}"));
    }
    for k in 0..30 {
        let want: Vec<String> = (0..300)
            .filter(|i| i % 30 == k)
            .map(|i| format!("t{i}"))
            .collect();
        assert_eq!(find(&store, "t", &format!("k{k}")), want);
    }
    store.close().unwrap();
}

#[test]
fn a_key_with_thousands_of_messages_is_found_whole_and_capped_newest_first() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = open(dir.path(), |c| c.commitlog.segment_size_bytes = 1 << 20);
    for i in 0..5_000 {
        put(&store, "t", "hot", &format!("h{i}"));
        if i % 10 == 0 {
            put(&store, "t", "cold", &format!("c{i}"));
        }
    }
    let all = find(&store, "t", "hot");
    assert_eq!(all, (0..5_000).map(|i| format!("h{i}")).collect::<Vec<_>>());
    let capped = store.query_by_key("t", "hot", 0, u64::MAX, 10).unwrap();
    assert!(capped.more);
    assert_eq!(bodies(&capped.records), all[4_990..]);
    // A time range returns exactly the messages stored within it.
    let full = store.query_by_key("t", "hot", 0, u64::MAX, 10_000).unwrap();
    let ts: Vec<u64> = full
        .records
        .iter()
        .map(|r| r.view().store_timestamp_ms())
        .collect();
    let (from, to) = (ts[1_000], ts[3_000]);
    let ranged = store.query_by_key("t", "hot", from, to, 10_000).unwrap();
    let want: Vec<String> = all
        .iter()
        .zip(&ts)
        .filter(|(_, t)| (from..=to).contains(*t))
        .map(|(b, _)| b.clone())
        .collect();
    assert_eq!(bodies(&ranged.records), want);
    store.close().unwrap();
}

#[test]
fn files_roll_and_go_with_the_log_segments_retention_removes() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = open(dir.path(), |c| {
        c.key_index.max_entries_per_file = 100;
        c.commitlog.retention.max_total_bytes = Some(256 << 10);
    });
    for i in 0..3_000 {
        put(
            &store,
            "t",
            &format!("k{} all", i % 7),
            &format!("m{i:04}{}", "x".repeat(200)),
        );
    }
    store.flush().unwrap();
    let before = index_files(dir.path()).len();
    assert!(before > 10, "{before} files");
    store.apply_retention(u64::MAX).unwrap();
    let min = store.commit_log().min_offset().get();
    assert!(min > 0, "retention removed nothing");
    let after = index_files(dir.path()).len();
    assert!(after < before, "{after} of {before} files left");
    // What is left is found; what retention removed is not, and nothing else appears.
    let left = find(&store, "t", "all");
    assert!(!left.is_empty() && left.len() < 3_000);
    assert!(left.last().unwrap().starts_with("m2999"));
    let first: usize = left[0][1..5].parse().unwrap();
    let want: Vec<usize> = (first..3_000).collect();
    let got: Vec<usize> = left.iter().map(|b| b[1..5].parse().unwrap()).collect();
    assert_eq!(got, want);
    store.close().unwrap();
    let store = open(dir.path(), |c| c.key_index.max_entries_per_file = 100);
    assert_eq!(find(&store, "t", "all").len(), left.len());
    store.close().unwrap();
}

#[test]
fn one_dispatch_round_that_fills_several_files_indexes_every_key() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = open(dir.path(), |c| c.key_index.max_entries_per_file = 100);
    // One batch, one dispatch round: entries are queued and the files roll inside it.
    let props: Vec<Vec<u8>> = (0..1_000)
        .map(|i| {
            PropertiesBuilder::new()
                .with(KEYS, &format!("k{} all", i % 7))
                .build()
        })
        .collect();
    let bodies_in: Vec<String> = (0..1_000).map(|i| format!("m{i:04}")).collect();
    let msgs: Vec<PutMessage<'_>> = props
        .iter()
        .zip(&bodies_in)
        .map(|(p, b)| PutMessage {
            properties: p,
            body: b.as_bytes(),
            born_timestamp_ms: 0,
            reconsume_times: 0,
        })
        .collect();
    store.put_batch("t", 0, &msgs).unwrap();
    assert_eq!(find(&store, "t", "all"), bodies_in);
    assert!(index_files(dir.path()).len() >= 20);
    let k3: Vec<String> = bodies_in.iter().skip(3).step_by(7).cloned().collect();
    assert_eq!(find(&store, "t", "k3"), k3);
    store.close().unwrap();
    let store = open(dir.path(), |c| c.key_index.max_entries_per_file = 100);
    assert_eq!(find(&store, "t", "k3"), k3);
    store.close().unwrap();
}

#[test]
fn entries_past_the_checkpoint_are_dropped_and_indexed_again_after_a_crash() {
    let dir = tempfile::TempDir::new().unwrap();
    let tune = |c: &mut StoreConfig| {
        c.key_index.max_entries_per_file = 1_000;
        // No periodic checkpoint: the one below is the last before the crash.
        c.flush_interval_ms = 3_600_000;
    };
    let store = open(dir.path(), tune);
    for i in 0..100 {
        put(&store, "t", "k", &format!("a{i}"));
    }
    store.flush().unwrap();
    for i in 0..100 {
        put(&store, "t", "k", &format!("b{i}"));
    }
    store.shared.dispatch_all().unwrap();
    // A crash: no close, so no checkpoint after the one above.
    drop(store);
    // Garbage where the entries after the checkpoint were written: never read again.
    let newest = index_files(dir.path()).pop().unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap();
    let h = super::format::Header::decode(&std::fs::read(&newest).unwrap()).unwrap();
    let tail = format::entry_at(h.slot_count, h.entry_count.saturating_sub(5));
    file.write_all_at(&[0xEE; 24 * 5], tail).unwrap();
    let store = open(dir.path(), tune);
    let want: Vec<String> = (0..100)
        .map(|i| format!("a{i}"))
        .chain((0..100).map(|i| format!("b{i}")))
        .collect();
    assert_eq!(find(&store, "t", "k"), want);
    store.close().unwrap();
}

#[test]
fn a_truncated_or_damaged_file_is_rebuilt_and_never_serves_wrong_messages() {
    let dir = tempfile::TempDir::new().unwrap();
    let tune = |c: &mut StoreConfig| c.key_index.max_entries_per_file = 50;
    let store = open(dir.path(), tune);
    for i in 0..400 {
        put(
            &store,
            "t",
            if i % 2 == 0 { "even" } else { "odd" },
            &format!("m{i}"),
        );
    }
    let evens: Vec<String> = (0..400).step_by(2).map(|i| format!("m{i}")).collect();
    assert_eq!(find(&store, "t", "even"), evens);
    store.close().unwrap();

    // Truncated: found at open, rebuilt before the store serves.
    let files = index_files(dir.path());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&files[1])
        .unwrap()
        .set_len(100)
        .unwrap();
    let store = open(dir.path(), tune);
    assert_eq!(find(&store, "t", "even"), evens);
    store.close().unwrap();

    // Links of a sealed file broken: found by a lookup, which refuses, then rebuilt.
    let files = index_files(dir.path());
    let raw = std::fs::read(&files[0]).unwrap();
    let h = format::Header::decode(&raw).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&files[0])
        .unwrap();
    for i in 0..h.entry_count {
        f.write_all_at(
            &(h.entry_count + 7).to_le_bytes(),
            format::entry_at(h.slot_count, i) + 4,
        )
        .unwrap();
    }
    drop(f);
    let store = open(dir.path(), tune);
    store.shared.dispatch_all().unwrap();
    match store.query_by_key("t", "even", 0, u64::MAX, 1_000) {
        Err(StoreError::KeyIndexDamaged { .. }) => {}
        other => panic!("expected KeyIndexDamaged, got {other:?}"),
    }
    // Until rebuilt, lookups refuse rather than answer from a partial index.
    assert!(matches!(
        store.query_by_key("t", "even", 0, u64::MAX, 1_000),
        Err(StoreError::KeyIndexBehind { .. })
    ));
    store.shared.catch_up_keys(None);
    assert_eq!(find(&store, "t", "even"), evens);
    store.close().unwrap();

    // Entries pointing at other messages (their hash and chain intact) are filtered out.
    let files = index_files(dir.path());
    let raw = std::fs::read(&files[0]).unwrap();
    let h = format::Header::decode(&raw).unwrap();
    let odd_at = store_offset_of_first_odd(dir.path(), tune);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&files[0])
        .unwrap();
    for i in 0..h.entry_count {
        f.write_all_at(&odd_at.to_le_bytes(), format::entry_at(h.slot_count, i) + 8)
            .unwrap();
    }
    drop(f);
    let store = open(dir.path(), tune);
    let found = find(&store, "t", "even");
    assert!(found.iter().all(|b| evens.contains(b)), "{found:?}");
    store.close().unwrap();
}

fn store_offset_of_first_odd(dir: &Path, tune: impl FnOnce(&mut StoreConfig)) -> u64 {
    let store = open(dir, tune);
    let odd = store.query_by_key("t", "odd", 0, u64::MAX, 10_000).unwrap();
    let at = odd.records[0].offset().get();
    store.close().unwrap();
    at
}

#[test]
fn a_full_disk_refuses_lookups_until_the_index_caught_up() {
    let dir = tempfile::TempDir::new().unwrap();
    let faulty = Arc::new(FaultyStorage::new());
    let storage = Arc::clone(&faulty);
    let store = open(dir.path(), move |c| {
        c.commitlog.storage = storage;
        c.commitlog.segment_size_bytes = 4 << 20;
        // No periodic retry while the disk is full: it would also refuse the sends.
        c.flush_interval_ms = 3_600_000;
    });
    put(&store, "t", "k", "m0");
    assert_eq!(find(&store, "t", "k"), ["m0"]);
    faulty.disk_full(true);
    // The first file holds one 1 MiB allocation step of entries: 20 keys a message
    // need more after about 2,200 messages.
    let keys = std::iter::once("k".to_string())
        .chain((1..20).map(|i| format!("x{i}")))
        .collect::<Vec<_>>()
        .join(" ");
    for i in 1..=3_000 {
        put(&store, "t", &keys, &format!("m{i}"));
    }
    store.shared.dispatch_all().unwrap();
    match store.query_by_key("t", "k", 0, u64::MAX, 10) {
        Err(StoreError::KeyIndexBehind { reason, .. }) => {
            assert!(reason.contains("No space left"), "{reason}");
        }
        other => panic!("expected KeyIndexBehind, got {other:?}"),
    }
    faulty.disk_full(false);
    store.shared.catch_up_keys(None);
    let all = find(&store, "t", "k");
    assert_eq!(all.len(), 3_001);
    assert_eq!(all.last().unwrap(), "m3000");
    store.close().unwrap();
}

#[test]
fn switched_off_it_keeps_no_files_and_refuses_lookups() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = open(dir.path(), |c| c.key_index.enabled = false);
    put(&store, "t", "k", "m");
    store.flush().unwrap();
    assert!(!dir.path().join("index").exists());
    assert!(matches!(
        store.query_by_key("t", "k", 0, u64::MAX, 1),
        Err(StoreError::KeyIndexOff)
    ));
    store.close().unwrap();
}

mod file_model {
    use commitlog::storage::RealFs;
    use proptest::prelude::*;

    use super::super::file::{IndexFile, Queued};

    /// `(key hash, store time)` per entry; entry `i` points at log offset `i`.
    fn walk(f: &IndexFile, hash: u32, from: u64, to: u64) -> Vec<u64> {
        let mut out = Vec::new();
        f.walk(hash, from, to, |e| {
            out.push(e.phys);
            true
        })
        .unwrap();
        out
    }

    fn model(entries: &[(u32, u64)], hash: u32, from: u64, to: u64) -> Vec<u64> {
        (0..entries.len() as u64)
            .rev()
            .filter(|&i| {
                let (h, ts) = entries[i as usize];
                h == hash && (from..=to).contains(&ts)
            })
            .collect()
    }

    proptest! {
        /// Chains hold exactly the entries of their hash, newest first, through any
        /// number of slot collisions, and cutting a file back to a prefix (a crash after
        /// a checkpoint) leaves exactly the prefix.
        #[test]
        fn chains_match_a_plain_list(
            entries in prop::collection::vec((0u32..12, 0u64..50), 1..300),
            chunk in 1usize..64,
            slots in 1u32..8,
            cut in 0usize..300,
            range in (0u64..50, 0u64..50),
        ) {
            let dir = tempfile::TempDir::new().unwrap();
            let fs = RealFs;
            let max = entries.len() as u32;
            let mut f = IndexFile::create(&fs, dir.path(), 0, slots, max).unwrap();
            // Appended in batches, as dispatch rounds do, and one by one: the same file.
            let queued: Vec<Queued> = entries
                .iter()
                .enumerate()
                .map(|(i, &(key_hash, ts))| Queued { key_hash, phys: i as u64, ts })
                .collect();
            for batch in queued.chunks(chunk) {
                if batch.len() == 1 {
                    prop_assert!(f.reserve(&fs, 1).unwrap());
                    f.append(batch[0].key_hash, batch[0].phys, batch[0].ts);
                } else {
                    prop_assert!(f.reserve(&fs, batch.len() as u32).unwrap());
                    f.append_batch(batch);
                }
            }
            prop_assert!(!f.reserve(&fs, 1).unwrap(), "a full file takes no more");
            let (from, to) = (range.0.min(range.1), range.0.max(range.1));
            for h in 0..12 {
                prop_assert_eq!(walk(&f, h, from, to), model(&entries, h, from, to));
            }
            f.set_end(entries.len() as u64);
            if let Some(job) = f.sync_job() {
                job.run(&fs).unwrap();
            }
            let path = f.path().to_path_buf();
            drop(f);
            let cut = cut.min(entries.len());
            let mut f = IndexFile::open(&fs, &path, 0, Some(cut as u32)).unwrap().unwrap();
            f.rebuild_slots(cut as u64).unwrap();
            for h in 0..12 {
                prop_assert_eq!(walk(&f, h, 0, u64::MAX), model(&entries[..cut], h, 0, u64::MAX));
            }
        }
    }
}
