//! The queue store against a plain `Vec` model across checkpoints, crashes and reopens, and
//! the journal's torn tail told apart from corruption.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use commitlog::storage::RealFs;
use consumequeue::{format, Config, Entry, QueueOffset, QueueStore};
use proptest::prelude::*;
use tempfile::TempDir;

fn config() -> Config {
    Config {
        arena_size_bytes: 8 << 10,
        block_size_bytes: 256,
        snapshot_journal_bytes: 2 << 10,
    }
}

fn open(dir: &Path) -> (QueueStore, Option<u64>) {
    QueueStore::open(dir, config(), Arc::new(RealFs)).unwrap()
}

fn entry(q: u32, i: u64) -> Entry {
    Entry {
        physical_offset: i * 100 + u64::from(q),
        size: 10,
        tag_hash: i ^ u64::from(q),
    }
}

/// Model of one queue: retained range `[min, max)` of `entry(q, i)`.
type Model = BTreeMap<u32, (u64, u64)>;

#[derive(Clone, Debug)]
enum Op {
    Append(u32, u8),
    Truncate(u32, u16),
    Trim(u32, u16),
    Checkpoint,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u32..6, 1u8..40).prop_map(|(q, n)| Op::Append(q, n)),
        1 => (0u32..6, any::<u16>()).prop_map(|(q, t)| Op::Truncate(q, t)),
        1 => (0u32..6, any::<u16>()).prop_map(|(q, t)| Op::Trim(q, t)),
        2 => Just(Op::Checkpoint),
        1 => Just(Op::Crash),
    ]
}

fn check(store: &QueueStore, model: &Model) -> Result<(), TestCaseError> {
    for (q, (min, max)) in model {
        let cq = store.get("t", *q).unwrap();
        prop_assert_eq!(
            (cq.min_offset().get(), cq.max_offset().get()),
            (*min, *max),
            "queue {}",
            q
        );
        let mut out = Vec::new();
        cq.read(QueueOffset::new(*min), usize::MAX, &mut out)
            .unwrap();
        let want: Vec<Entry> = (*min..*max).map(|i| entry(*q, i)).collect();
        prop_assert_eq!(out, want, "queue {}", q);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// After a crash, every queue is exactly as the last checkpoint left it, and blocks
    /// freed or allocated since are never handed to two queues.
    #[test]
    fn queues_match_the_model_at_the_last_checkpoint(ops in prop::collection::vec(op(), 1..60)) {
        let dir = TempDir::new().unwrap();
        let (mut store, _) = open(dir.path());
        let mut model: Model = BTreeMap::new();
        let mut committed: Model = BTreeMap::new();
        let mut d = 0u64;
        for op in ops {
            match op {
                Op::Append(q, n) => {
                    let cq = store.get_or_create("t", q).unwrap();
                    let (_, max) = model.entry(q).or_insert((0, 0));
                    let batch: Vec<Entry> = (*max..*max + u64::from(n)).map(|i| entry(q, i)).collect();
                    cq.append_batch(QueueOffset::new(*max), &batch).unwrap();
                    *max += u64::from(n);
                }
                Op::Truncate(q, t) => {
                    if let Some((min, max)) = model.get_mut(&q) {
                        let to = *min + u64::from(t) % (*max - *min + 1);
                        store.get("t", q).unwrap().truncate_to(QueueOffset::new(to)).unwrap();
                        *max = to;
                    }
                }
                Op::Trim(q, t) => {
                    if let Some((min, max)) = model.get_mut(&q) {
                        let keep = *min + u64::from(t) % (*max - *min + 1);
                        let cq = store.get("t", q).unwrap();
                        // entry(q, i) sits at 100 i + q: trimming below 100 keep keeps `keep..`.
                        let got = cq.delete_below_physical(keep * 100).unwrap().get();
                        *min = keep.max(*min);
                        prop_assert_eq!(got, *min);
                    }
                }
                Op::Checkpoint => {
                    d += 1;
                    store.checkpoint(d).unwrap();
                    committed = model.clone();
                }
                Op::Crash => {
                    drop(store);
                    let (s, dispatched) = open(dir.path());
                    store = s;
                    prop_assert_eq!(dispatched, (d > 0).then_some(d));
                    model = committed.clone();
                    // A trimmed minimum reached by a checkpoint survives; the rest of
                    // the model is exactly the committed state.
                    check(&store, &model)?;
                }
            }
            check(&store, &model)?;
        }
    }
}

#[test]
fn an_idle_checkpoint_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let (store, _) = open(dir.path());
    let q = store.get_or_create("t", 0).unwrap();
    q.append(QueueOffset::new(0), entry(0, 0)).unwrap();
    assert!(store.checkpoint(7).unwrap());
    let bytes = store.journal_bytes();
    assert!(!store.checkpoint(7).unwrap());
    assert_eq!(store.journal_bytes(), bytes);
}

fn journal_file(dir: &Path) -> std::path::PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.pop().unwrap()
}

/// Two committed batches; returns the journal length after the first.
fn two_batches(dir: &Path) -> u64 {
    let (store, _) = open(dir);
    let q = store.get_or_create("t", 0).unwrap();
    q.append_batch(QueueOffset::new(0), &[entry(0, 0), entry(0, 1)])
        .unwrap();
    store.checkpoint(10).unwrap();
    let first = store.journal_bytes();
    q.append(QueueOffset::new(2), entry(0, 2)).unwrap();
    store.checkpoint(20).unwrap();
    first
}

#[test]
fn a_torn_journal_tail_ends_the_journal_at_the_last_whole_commit() {
    let dir = TempDir::new().unwrap();
    let first = two_batches(dir.path());
    let path = journal_file(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    // The second batch half written, zeros after it.
    let mut torn = bytes.clone();
    let end = torn.iter().rposition(|b| *b != 0).unwrap();
    for b in &mut torn[(first as usize + end) / 2..] {
        *b = 0;
    }
    std::fs::write(&path, &torn).unwrap();
    let (store, dispatched) = open(dir.path());
    assert_eq!(dispatched, Some(10));
    assert_eq!(store.get("t", 0).unwrap().max_offset().get(), 2);
}

#[test]
fn a_corrupted_journal_batch_before_a_valid_commit_rebuilds_the_store() {
    let dir = TempDir::new().unwrap();
    let first = two_batches(dir.path());
    let path = journal_file(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[first as usize / 2] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let (store, dispatched) = open(dir.path());
    assert_eq!(
        dispatched, None,
        "corruption must make the caller rebuild from the log"
    );
    assert!(store.is_empty());
}

#[test]
fn a_cut_arena_rebuilds_the_store_and_it_serves_again() {
    let dir = TempDir::new().unwrap();
    two_batches(dir.path());
    let arena = dir.path().join("arena").join(format::arena_file_name(0));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&arena)
        .unwrap()
        .set_len(100)
        .unwrap();
    let (store, dispatched) = open(dir.path());
    assert_eq!(
        dispatched, None,
        "a cut arena must make the caller rebuild from the log"
    );
    assert!(store.is_empty());
    let q = store.get_or_create("t", 0).unwrap();
    q.append(QueueOffset::new(0), entry(0, 0)).unwrap();
    assert_eq!(q.get(QueueOffset::new(0)), Some(entry(0, 0)));
    assert!(store.checkpoint(1).unwrap());
}
