//! Model-based property test: random appends, truncations, retention and reopens checked
//! against a plain `Vec` model.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use consumequeue::{Config, ConsumeQueue, Entry, QueueOffset};
use proptest::prelude::*;
use tempfile::TempDir;

#[derive(Clone, Debug)]
enum Op {
    Append(u8),
    TruncateTo(u16),
    TruncatePhysical(u16),
    DeleteBelow(u16),
    Reopen,
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..40).prop_map(Op::Append),
        1 => any::<u16>().prop_map(Op::TruncateTo),
        1 => any::<u16>().prop_map(Op::TruncatePhysical),
        1 => any::<u16>().prop_map(Op::DeleteBelow),
        1 => Just(Op::Reopen),
        1 => Just(Op::Flush),
    ]
}

fn cases() -> u32 {
    std::env::var("FERRO_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

/// Entry i of the model points at physical offset 10 * i with size 10.
fn entry(i: u64) -> Entry {
    Entry {
        physical_offset: i * 10,
        size: 10,
        tag_hash: i.wrapping_mul(0x9E37_79B9),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn queue_matches_model(ops in prop::collection::vec(op(), 1..40), eps in 1u64..12) {
        let dir = TempDir::new().unwrap();
        let config = Config { entries_per_segment: eps };
        let mut q = ConsumeQueue::open(dir.path(), config.clone()).unwrap();
        // Model: retained range [min, max) of entries `entry(i)`.
        let (mut min, mut max) = (0u64, 0u64);
        for op in ops {
            match op {
                Op::Append(n) => {
                    let batch: Vec<Entry> = (max..max + u64::from(n)).map(entry).collect();
                    q.append_batch(QueueOffset::new(max), &batch).unwrap();
                    max += u64::from(n);
                }
                Op::TruncateTo(t) => {
                    let t = min + u64::from(t) % (max - min + 1);
                    q.truncate_to(QueueOffset::new(t)).unwrap();
                    max = t;
                }
                Op::TruncatePhysical(p) => {
                    let log_end = u64::from(p) % (max * 10 + 20);
                    let new_max = q.truncate_physical(log_end).unwrap().get();
                    max = (log_end / 10).clamp(min, max);
                    prop_assert_eq!(new_max, max);
                }
                Op::DeleteBelow(p) => {
                    let min_phys = u64::from(p) % (max * 10 + 20);
                    let new_min = q.delete_below_physical(min_phys).unwrap().get();
                    min = min_phys.div_ceil(10).clamp(min, max);
                    prop_assert_eq!(new_min, min);
                }
                Op::Reopen => {
                    drop(q);
                    q = ConsumeQueue::open(dir.path(), config.clone()).unwrap();
                    // Retention progress is in memory only: the store reapplies it after
                    // open, so the model does the same.
                    q.delete_below_physical(min * 10).unwrap();
                }
                Op::Flush => q.flush().unwrap(),
            }
            prop_assert_eq!(q.max_offset().get(), max);
            prop_assert_eq!(q.min_offset().get(), min);
            let mut out = Vec::new();
            q.read(QueueOffset::new(min), usize::MAX, &mut out).unwrap();
            let expected: Vec<Entry> = (min..max).map(entry).collect();
            prop_assert_eq!(out, expected);
        }
    }
}
