//! Property test: random puts over many topics and queues, clean and unclean reopens, and
//! damage to the commit-log tail and to the consume queues. After every reopen each queue
//! must be gap-free, agree with the commit log and return exactly what survived, in order;
//! new puts continue at the right queue offset.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::store::{corrupt_byte, msg, open, read_all, zero_tail};
use broker::store::{MessageStore, PutMessage};
use proptest::prelude::*;
use tempfile::TempDir;

#[derive(Clone, Debug)]
enum Damage {
    None,
    /// Flip one byte near the log's end.
    FlipByte(u16),
    /// Zero the log from near its end (torn write).
    ZeroTail(u16),
    /// Lose the consume-queue journal and snapshot (the store is rebuilt from the log).
    DropCheckpoint,
    /// Lose every block of one queue (zeroed in its arena).
    DropQueue(u8, u8),
    /// Lose the newest block of a queue (its page never reached the disk).
    ZeroQueueSegment(u8, u8),
}

#[derive(Clone, Debug)]
enum Op {
    Put {
        topic: u8,
        queue: u8,
        n: u8,
        len: u8,
    },
    Reopen {
        clean: bool,
        damage: Damage,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let damage = prop_oneof![
        3 => Just(Damage::None),
        2 => any::<u16>().prop_map(Damage::FlipByte),
        2 => any::<u16>().prop_map(Damage::ZeroTail),
        1 => Just(Damage::DropCheckpoint),
        1 => (0u8..3, 0u8..3).prop_map(|(t, q)| Damage::DropQueue(t, q)),
        1 => (0u8..3, 0u8..3).prop_map(|(t, q)| Damage::ZeroQueueSegment(t, q)),
    ];
    prop_oneof![
        4 => (0u8..3, 0u8..3, 1u8..6, any::<u8>()).prop_map(|(topic, queue, n, len)| Op::Put { topic, queue, n, len }),
        1 => (any::<bool>(), damage).prop_map(|(clean, damage)| Op::Reopen { clean, damage }),
    ]
}

fn cases() -> u32 {
    std::env::var("FERRO_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

/// What the model remembers per message: body and where the log put it.
#[derive(Clone, Debug)]
struct Stored {
    body: Vec<u8>,
    end: u64,
}

type Model = BTreeMap<(String, u32), Vec<Stored>>;

fn topic_name(t: u8) -> String {
    format!("t{t}")
}

/// Drops every message whose record does not end at or before `cut` (recovery keeps only
/// records wholly before the first damaged one).
fn cut_model(model: &mut Model, cut: u64) {
    for msgs in model.values_mut() {
        msgs.retain(|m| m.end <= cut);
    }
}

fn remove_log_meta(data: &Path) {
    // Without a checkpoint or clean-shutdown marker the log rescans everything, so damage
    // anywhere is found (a crash image where those files never reached the disk).
    for f in ["checkpoint", "clean_shutdown"] {
        let _ = std::fs::remove_file(data.join("commitlog").join(f));
    }
}

/// Zeroes whole blocks (header included) in their arena files.
fn zero_blocks(blocks: &[(std::path::PathBuf, u64)]) {
    use std::os::unix::fs::FileExt;
    for (path, at) in blocks {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(&[0u8; 256], *at).unwrap();
    }
}

fn verify(store: &MessageStore, model: &Model) {
    for ((topic, queue), msgs) in model {
        let bodies = read_all(store, topic, *queue, msgs.len() as u64);
        let expected: Vec<Vec<u8>> = msgs.iter().map(|m| m.body.clone()).collect();
        assert_eq!(bodies, expected, "{topic}/{queue}");
        if store.topic(topic).is_some() {
            let (min, max) = store.queue_range(topic, *queue).unwrap();
            assert_eq!(
                (min.get(), max.get()),
                (0, msgs.len() as u64),
                "{topic}/{queue} range"
            );
        }
    }
}

proptest! {
    // The regression seeds sit beside this file (proptest's default would look in
    // tests/proptest-regressions/ because this folder has a main.rs).
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::with_cases(cases())
    })]

    #[test]
    fn queues_agree_with_the_log_after_any_reopen(ops in prop::collection::vec(op(), 1..14)) {
        let dir = TempDir::new().unwrap();
        let data = dir.path();
        let mut store = Some(open(data));
        let mut model: Model = BTreeMap::new();
        let mut serial = 0u32;
        // Physical start of every record, to know what damage at an offset removes.
        let mut starts: Vec<(u64, u64)> = Vec::new();
        for op in ops {
            let s = store.as_ref().unwrap();
            match op {
                Op::Put { topic, queue, n, len } => {
                    let (name, queue) = (topic_name(topic), u32::from(queue));
                    let bodies: Vec<Vec<u8>> = (0..n)
                        .map(|_| {
                            serial += 1;
                            let mut b = serial.to_le_bytes().to_vec();
                            b.resize(4 + usize::from(len), serial as u8);
                            b
                        })
                        .collect();
                    let msgs: Vec<PutMessage<'_>> = bodies.iter().map(|b| msg(&[], b)).collect();
                    let res = s.put_batch(&name, queue, &msgs).unwrap();
                    let q = model.entry((name, queue)).or_default();
                    for (r, body) in res.iter().zip(bodies) {
                        prop_assert_eq!(r.queue_offset.get(), q.len() as u64);
                        let end = r.physical_offset.get() + u64::from(r.msg_id.size());
                        starts.push((r.physical_offset.get(), end));
                        q.push(Stored { body, end });
                    }
                }
                Op::Reopen { clean, damage } => {
                    let end = s.commit_log().write_offset().get();
                    // Blocks are found through the store, not the file layout.
                    let blocks = match damage {
                        Damage::DropQueue(t, q) | Damage::ZeroQueueSegment(t, q) => {
                            s.debug_queue_blocks(&topic_name(t), u32::from(q))
                        }
                        _ => Vec::new(),
                    };
                    let s = store.take().unwrap();
                    if clean { s.close().unwrap() } else { drop(s) }
                    match damage {
                        Damage::None => {}
                        Damage::FlipByte(back) | Damage::ZeroTail(back) if end > 0 => {
                            let at = end - 1 - u64::from(back) % end.min(4000);
                            if matches!(damage, Damage::FlipByte(_)) { corrupt_byte(data, at) } else { zero_tail(data, at) }
                            remove_log_meta(data);
                            let cut = starts.iter().find(|(s, e)| *s <= at && at < *e).map_or(at, |(s, _)| *s);
                            starts.retain(|(_, e)| *e <= cut);
                            cut_model(&mut model, cut);
                        }
                        Damage::FlipByte(_) | Damage::ZeroTail(_) => {}
                        Damage::DropCheckpoint => {
                            let _ = std::fs::remove_dir_all(data.join("queues").join("journal"));
                            let _ = std::fs::remove_file(data.join("queues").join("snapshot"));
                        }
                        Damage::DropQueue(..) => zero_blocks(&blocks),
                        Damage::ZeroQueueSegment(..) => zero_blocks(&blocks[blocks.len().saturating_sub(1)..]),
                    }
                    let reopened = open(data);
                    verify(&reopened, &model);
                    store = Some(reopened);
                }
            }
        }
        let s = store.take().unwrap();
        verify(&s, &model);
        s.close().unwrap();
    }
}
