//! Model-based test: random appends, batches, reads, rolls, clean and crash reopens, files
//! truncated at a random byte and random byte flips, checked against a `Vec` model. After
//! every reopen the log must be a prefix of what was appended, no undamaged record may be
//! lost, and every record read back is intact (a damaged one fails, it is never served).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::path::Path;

use commitlog::{CommitLog, Config, FlushPolicy, PhysicalOffset};
use proptest::prelude::*;
use support::*;
use tempfile::TempDir;

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Batch(Vec<usize>),
    /// A record big enough to force a roll.
    Big,
    Read(usize),
    Flush,
    Reopen {
        clean: bool,
    },
    TruncateFile {
        file: usize,
        at: u64,
    },
    FlipByte {
        file: usize,
        at: u64,
        bit: u8,
    },
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..600).prop_map(Op::Append),
        3 => proptest::collection::vec(0usize..400, 1..12).prop_map(Op::Batch),
        1 => Just(Op::Big),
        3 => any::<usize>().prop_map(Op::Read),
        1 => Just(Op::Flush),
        2 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        1 => (any::<usize>(), any::<u64>()).prop_map(|(file, at)| Op::TruncateFile { file, at }),
        2 => (any::<usize>(), any::<u64>(), 0u8..8).prop_map(|(file, at, bit)| Op::FlipByte { file, at, bit }),
    ]
}

#[derive(Debug, Clone)]
struct Rec {
    offset: u64,
    end: u64,
    id: u64,
    len: usize,
}

struct Harness {
    tmp: TempDir,
    log: Option<CommitLog>,
    model: Vec<Rec>,
    /// Offsets of records hit by a flip that recovery did not cut (below the scan).
    damaged: HashSet<u64>,
    /// Flipped bytes below the end outside any record (an end-of-segment marker): reads
    /// by offset still work, iteration may stop there with an error.
    gap_damage: HashSet<u64>,
    next_id: u64,
}

fn cfg(dir: &Path) -> Config {
    let mut c = config(dir);
    c.preallocate = false;
    c.flush = FlushPolicy::Async {
        interval_ms: 3_600_000,
    };
    c
}

impl Harness {
    fn log(&self) -> &CommitLog {
        self.log.as_ref().unwrap()
    }

    fn append(&mut self, lens: &[usize]) {
        let bodies: Vec<(u64, Vec<u8>)> = lens
            .iter()
            .map(|&l| {
                self.next_id += 1;
                (self.next_id, body(self.next_id, l))
            })
            .collect();
        let recs: Vec<_> = bodies.iter().map(|(id, b)| rec(*id, b)).collect();
        let out = self.log().append_batch(&recs).unwrap();
        for ((id, b), a) in bodies.iter().zip(out) {
            let end = a.offset.get() + u64::from(a.size);
            self.model.push(Rec {
                offset: a.offset.get(),
                end,
                id: *id,
                len: b.len(),
            });
        }
    }

    fn check_record(&self, r: &Rec) {
        match self.log().read(PhysicalOffset::new(r.offset)) {
            Ok(got) => {
                let v = got.view();
                assert_eq!(v.queue_offset(), r.id, "wrong record at {}", r.offset);
                assert_eq!(
                    v.body(),
                    &body(r.id, r.len)[..],
                    "record {} not intact",
                    r.offset
                );
            }
            Err(e) => assert!(
                self.damaged.contains(&r.offset),
                "undamaged record {} unreadable: {e}",
                r.offset
            ),
        }
    }

    fn files(&self) -> Vec<std::path::PathBuf> {
        segment_files(&log_dir(self.tmp.path()))
    }

    /// Crash, damage a file with `mutate`, reopen, verify. `damage_at` is the absolute
    /// offset of the first changed byte.
    fn damage(&mut self, file: usize, mutate: impl FnOnce(&Path) -> Option<u64>) {
        drop(self.log.take());
        let files = self.files();
        let path = &files[file % files.len()];
        let start: u64 = path.file_name().unwrap().to_str().unwrap().parse().unwrap();
        let damage_at = mutate(path).map(|p| start + p);
        self.reopen_and_verify(damage_at, false);
    }

    fn reopen_and_verify(&mut self, damage_at: Option<u64>, clean: bool) {
        let (log, report) = CommitLog::open(cfg(self.tmp.path())).unwrap();
        self.log = Some(log);
        let end = report.recovered_end.get();
        assert_eq!(report.clean_shutdown, clean, "{report:?}");
        // Prefix: the recovered end is a record boundary of the model.
        let kept = self.model.iter().take_while(|r| r.end <= end).count();
        assert!(
            self.model.iter().all(|r| r.end <= end || r.offset >= end),
            "end {end} inside a record: {report:?}"
        );
        // Nothing undamaged is lost: records ending before the first damage survive.
        let first_bad = self
            .model
            .iter()
            .filter(|r| self.damaged.contains(&r.offset))
            .map(|r| r.offset)
            .min();
        let limit = [damage_at, first_bad].into_iter().flatten().min();
        let must_keep = self
            .model
            .iter()
            .filter(|r| limit.is_none_or(|l| r.end <= l))
            .count();
        assert!(
            kept >= must_keep,
            "lost undamaged records: kept {kept} < {must_keep}; {report:?}"
        );
        self.model.truncate(kept);
        self.damaged.retain(|o| *o < end);
        self.gap_damage.retain(|o| *o < end);
        if let Some(at) = damage_at.filter(|&at| at < end) {
            match self.model.iter().find(|r| r.offset <= at && at < r.end) {
                Some(r) => self.damaged.insert(r.offset),
                None => self.gap_damage.insert(at),
            };
        }
        for r in &self.model {
            self.check_record(r);
        }
        if self.damaged.is_empty() && self.gap_damage.is_empty() {
            let n = self
                .log()
                .iter_from(self.log().min_offset())
                .inspect(|r| assert!(r.is_ok(), "{r:?}"))
                .count();
            assert_eq!(n, self.model.len());
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Append(len) => self.append(&[len]),
            Op::Batch(lens) => self.append(&lens),
            Op::Big => self.append(&[3000]),
            Op::Read(i) if !self.model.is_empty() => {
                let r = self.model[i % self.model.len()].clone();
                self.check_record(&r);
            }
            Op::Read(_) => {}
            Op::Flush => self.log().flush().unwrap(),
            Op::Reopen { clean } => {
                let log = self.log.take().unwrap();
                if clean {
                    log.close().unwrap();
                } else {
                    drop(log);
                }
                self.reopen_and_verify(None, clean);
            }
            Op::TruncateFile { file, at } => self.damage(file, |p| {
                let len = std::fs::metadata(p).unwrap().len();
                let at = at % (len + 1);
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(p)
                    .unwrap()
                    .set_len(at)
                    .unwrap();
                Some(at)
            }),
            Op::FlipByte { file, at, bit } => self.damage(file, |p| {
                let mut bytes = std::fs::read(p).unwrap();
                let at = (at % bytes.len() as u64) as usize;
                bytes[at] ^= 1 << bit;
                std::fs::write(p, &bytes).unwrap();
                Some(at as u64)
            }),
        }
    }
}

fn cases() -> u32 {
    std::env::var("FERRO_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in proptest::collection::vec(arb_op(), 1..40)) {
        let tmp = TempDir::new().unwrap();
        let (log, _) = CommitLog::open(cfg(tmp.path())).unwrap();
        let mut h = Harness { tmp, log: Some(log), model: Vec::new(), damaged: HashSet::new(), gap_damage: HashSet::new(), next_id: 0 };
        for op in ops {
            h.apply(op);
        }
        let log = h.log.take().unwrap();
        log.close().unwrap();
        h.reopen_and_verify(None, true);
    }
}
