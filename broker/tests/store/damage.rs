//! Torn and corrupt files at the message-store level, many random cases.
//!
//! Not covered by `recovery.rs` (tail flips/zeroing, lost checkpoint, lost or zeroed
//! queue blocks): commit-log segments cut short at any byte (any segment, not only the
//! last), consume-queue arenas and journals cut at any byte, bytes flipped anywhere in the
//! last log segment, and several kinds of damage at once. After each reopen the store must
//! serve exactly the valid prefix: every queue gap-free from 0, agreeing with the log,
//! nothing failing its CRC; new puts continue at the right queue offset.
//!
//! Case count: `FERRO_DAMAGE_CASES` (default 40); replay one with `FERRO_DAMAGE_SEED`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::Path;

use crate::support::{
    env_u64, log_segments, queue_store_files, read_queue, small_store_config, Rng,
};
use broker::store::{MessageStore, PutMessage};
use tempfile::TempDir;

const TOPICS: [&str; 2] = ["damage-a", "damage-b"];
const QUEUES: u32 = 3;

/// One record of the log before damage.
#[derive(Clone, Debug)]
struct Rec {
    start: u64,
    end: u64,
    topic: String,
    queue: u32,
    body: Vec<u8>,
}

/// Where damage may make the log end.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Records ending after this offset are lost; those before survive.
    At(u64),
    /// Either the same as `At`, or nothing is lost if recovery went past this offset.
    Unless(u64),
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    /// Cut a commit-log segment file to some length.
    CutLog,
    /// Flip a byte of the last commit-log segment; the log's checkpoint and clean-shutdown
    /// marker are lost too (as after a crash before they were written), so recovery scans.
    FlipLastSegment,
    /// Cut a consume-queue arena or journal file at any byte.
    CutQueue,
}

fn fill(store: &MessageStore, rng: &mut Rng) {
    let batches = 10 + rng.below(30);
    for _ in 0..batches {
        let topic = TOPICS[rng.below(2) as usize];
        let queue = rng.below(u64::from(QUEUES)) as u32;
        let bodies: Vec<Vec<u8>> = (0..1 + rng.below(5))
            .map(|_| {
                let len = rng.below(700) as usize;
                rng.bytes(len)
            })
            .collect();
        let msgs: Vec<PutMessage<'_>> = bodies
            .iter()
            .map(|b| PutMessage {
                properties: &[],
                body: b,
                born_timestamp_ms: 1,
                reconsume_times: 0,
            })
            .collect();
        store.put_batch(topic, queue, &msgs).unwrap();
    }
}

fn log_records(store: &MessageStore) -> Vec<Rec> {
    let log = store.commit_log();
    log.iter_from(log.min_offset())
        .map(|r| {
            let r = r.unwrap();
            let v = r.view();
            Rec {
                start: r.offset().get(),
                end: r.offset().get() + u64::from(r.size()),
                topic: v.topic().to_owned(),
                queue: v.queue_id(),
                body: v.body().to_vec(),
            }
        })
        .collect()
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn segment_start(path: &Path) -> u64 {
    path.file_name().unwrap().to_str().unwrap().parse().unwrap()
}

/// Applies `damage`; returns the physical offset from which records may be lost (records
/// ending at or before it must all survive, and only those).
fn apply(damage: Damage, data: &Path, recs: &[Rec], rng: &mut Rng) -> Option<Cut> {
    match damage {
        Damage::CutLog => {
            let segs = log_segments(data);
            let seg = &segs[rng.below(segs.len() as u64) as usize];
            let start = segment_start(seg);
            let file_len = std::fs::metadata(seg).unwrap().len();
            // Mostly inside the written data, sometimes in the zero padding after it.
            let data_end = recs
                .iter()
                .filter(|r| r.start >= start && r.start < start + file_len)
                .map(|r| r.end - start)
                .max()
                .unwrap_or(0);
            let cut = if rng.below(4) == 0 {
                data_end + rng.below(file_len - data_end + 1)
            } else {
                rng.below(data_end + 1)
            };
            set_len(seg, cut);
            // Cutting into the records loses them and every later segment. Cutting only the
            // padding of the last segment loses nothing. Cutting only the end-of-segment
            // marker or padding of an earlier segment loses nothing valid: recovery may
            // continue into the next segment (when no record could fit in what is left)
            // or end the log there; `Cut::Unless` lets the recovered end decide.
            let is_last = segs.last() == Some(seg);
            if cut < data_end {
                Some(Cut::At(start + cut))
            } else if is_last {
                None
            } else {
                Some(Cut::Unless(start + cut))
            }
        }
        Damage::FlipLastSegment => {
            let seg = log_segments(data).pop().unwrap();
            let start = segment_start(&seg);
            let data_end = recs.last().map_or(start, |r| r.end).max(start) - start;
            let mut bytes = std::fs::read(&seg).unwrap();
            if bytes.is_empty() {
                return None;
            }
            let pos = rng.below(data_end + 64).min(bytes.len() as u64 - 1);
            bytes[pos as usize] ^= 1 << rng.below(8);
            std::fs::write(&seg, &bytes).unwrap();
            for meta in ["checkpoint", "clean_shutdown"] {
                let _ = std::fs::remove_file(data.join("commitlog").join(meta));
            }
            // The record holding the flipped byte and everything after it are dropped; a
            // flip in the zero padding after the data drops nothing that was written.
            recs.iter()
                .find(|r| r.start <= start + pos && start + pos < r.end)
                .map(|r| Cut::At(r.start))
        }
        Damage::CutQueue => {
            let files = queue_store_files(data);
            if let Some(seg) = files.get(rng.below(files.len() as u64) as usize) {
                let len = std::fs::metadata(seg).unwrap().len();
                set_len(seg, rng.below(len + 1));
            }
            None
        }
    }
}

fn expected_queues(recs: &[Rec], lost_from: Option<u64>) -> BTreeMap<(String, u32), Vec<Vec<u8>>> {
    let mut out: BTreeMap<(String, u32), Vec<Vec<u8>>> = BTreeMap::new();
    for t in TOPICS {
        for q in 0..QUEUES {
            out.insert((t.to_owned(), q), Vec::new());
        }
    }
    for r in recs {
        if lost_from.is_none_or(|cut| r.end <= cut) {
            out.get_mut(&(r.topic.clone(), r.queue))
                .unwrap()
                .push(r.body.clone());
        }
    }
    out
}

fn verify(store: &MessageStore, expected: &BTreeMap<(String, u32), Vec<Vec<u8>>>) {
    for ((topic, queue), bodies) in expected {
        let got = read_queue(store, topic, *queue);
        let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
        let want: Vec<u64> = (0..bodies.len() as u64).collect();
        assert_eq!(
            offsets, want,
            "{topic}/{queue}: queue offsets not the gap-free prefix"
        );
        let got: Vec<&Vec<u8>> = got.iter().map(|(_, b)| b).collect();
        let want: Vec<&Vec<u8>> = bodies.iter().collect();
        assert!(
            got == want,
            "{topic}/{queue}: bodies differ from the valid prefix"
        );
        let (_, max) = store.queue_range(topic, *queue).unwrap();
        assert_eq!(
            max.get(),
            bodies.len() as u64,
            "{topic}/{queue}: max offset"
        );
    }
}

fn one_case(seed: u64, root: &Path) {
    let mut rng = Rng::new(seed);
    let data = root.join(format!("case{seed}"));
    let store = MessageStore::open(small_store_config(&data)).unwrap();
    fill(&store, &mut rng);
    store.flush().unwrap();
    let recs = log_records(&store);
    if rng.below(2) == 0 {
        store.close().unwrap();
    } else {
        // Unclean: no clean-shutdown marker; the page cache still holds every write.
        drop(store);
    }
    let mut cuts: Vec<Cut> = Vec::new();
    let damages = [Damage::CutLog, Damage::FlipLastSegment, Damage::CutQueue];
    for _ in 0..1 + rng.below(2) {
        let d = damages[rng.below(3) as usize];
        // Later damage sees the files as the earlier damage left them.
        let earliest = cuts
            .iter()
            .map(|c| match c {
                Cut::At(o) | Cut::Unless(o) => *o,
            })
            .min();
        let live: Vec<Rec> = recs
            .iter()
            .filter(|r| earliest.is_none_or(|c| r.end <= c))
            .cloned()
            .collect();
        let cut = apply(d, &data, &live, &mut rng);
        eprintln!("case {seed}: {d:?} -> {cut:?}");
        cuts.extend(cut);
    }
    let store = MessageStore::open(small_store_config(&data)).unwrap();
    let report = store.recovery_report().clone();
    eprintln!("case {seed}: {report:?}");
    let lost_from = cuts
        .iter()
        .filter_map(|c| match *c {
            Cut::At(o) => Some(o),
            Cut::Unless(o) => (report.recovered_end.get() <= o).then_some(o),
        })
        .min();
    let expected = expected_queues(&recs, lost_from);
    if lost_from.is_some_and(|cut| recs.iter().any(|r| r.end > cut)) {
        assert!(
            report.dropped.is_some() || !report.removed_segments.is_empty(),
            "records lost but recovery reports no drop: {:?}",
            store.recovery_report()
        );
    }
    verify(&store, &expected);
    // Producing continues where each queue's valid prefix ends, and survives a reopen.
    let mut expected = expected;
    for ((topic, queue), bodies) in &mut expected {
        let body = format!("after {topic}/{queue}").into_bytes();
        let r = store
            .put(
                topic,
                *queue,
                &PutMessage {
                    properties: &[],
                    body: &body,
                    born_timestamp_ms: 2,
                    reconsume_times: 0,
                },
            )
            .unwrap();
        assert_eq!(r.queue_offset.get(), bodies.len() as u64, "{topic}/{queue}");
        bodies.push(body);
    }
    store.flush().unwrap();
    for ((topic, queue), bodies) in &expected {
        assert!(store.wait_for_message(
            topic,
            *queue,
            broker::store::QueueOffset::new(bodies.len() as u64 - 1),
            std::time::Duration::from_secs(5)
        ));
    }
    verify(&store, &expected);
    drop(store);
    let store = MessageStore::open(small_store_config(&data)).unwrap();
    verify(&store, &expected);
    store.close().unwrap();
}

#[test]
fn store_serves_exactly_the_valid_prefix_after_cut_and_flipped_files() {
    let tmp = TempDir::new().unwrap();
    let base = env_u64("FERRO_DAMAGE_SEED", 0xDA4A_6E00);
    let cases = if std::env::var("FERRO_DAMAGE_SEED").is_ok() {
        env_u64("FERRO_DAMAGE_CASES", 1)
    } else {
        env_u64("FERRO_DAMAGE_CASES", 40)
    };
    for seed in base..base + cases {
        let outcome = std::panic::catch_unwind(|| one_case(seed, tmp.path()));
        if let Err(e) = outcome {
            eprintln!("damage case failed; replay with FERRO_DAMAGE_SEED={seed}");
            std::panic::resume_unwind(e);
        }
        let _ = std::fs::remove_dir_all(tmp.path().join(format!("case{seed}")));
    }
}
