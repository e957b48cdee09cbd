//! Model-based test of replication at the log level: two logs, one master and one
//! replica, shipping raw chunks as the HA stream does. Random appends, partial shipping,
//! acks, crashes of either side, a master power loss with failover, clean switchovers and
//! replica truncations. After every step each replica segment is a byte-for-byte prefix of
//! the master's, and every record that was confirmed (held by both) is still on the
//! master at its offset with its bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use commitlog::fault::FaultyStorage;
use commitlog::{consistent_point, CommitLog, Config, FlushPolicy, PhysicalOffset};
use proptest::prelude::*;
use support::*;
use tempfile::TempDir;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<usize>),
    Ship(usize),
    Ack,
    FlushMaster,
    CrashReplica,
    CrashMaster,
    /// The master loses its unflushed bytes; the replica takes over.
    PowerLossMaster,
    Switchover,
    /// The stream breaks; the replica reconnects with a full handshake.
    Reconnect,
    /// Cut the replica at a record boundary at or above everything confirmed.
    TruncateReplica(usize),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(0usize..1500, 1..6).prop_map(Op::Append),
        6 => (1usize..5000).prop_map(Op::Ship),
        3 => Just(Op::Ack),
        1 => Just(Op::FlushMaster),
        1 => Just(Op::CrashReplica),
        1 => Just(Op::CrashMaster),
        1 => Just(Op::PowerLossMaster),
        1 => Just(Op::Switchover),
        1 => Just(Op::Reconnect),
        1 => any::<usize>().prop_map(Op::TruncateReplica),
    ]
}

struct Node {
    id: u64,
    dir: TempDir,
    faults: Arc<FaultyStorage>,
    log: Option<CommitLog>,
}

fn cfg(dir: &Path, faults: &Arc<FaultyStorage>) -> Config {
    let mut c = config(dir);
    c.preallocate = false;
    c.flush = FlushPolicy::Async {
        interval_ms: 3_600_000,
    };
    c.storage = faults.clone();
    c
}

impl Node {
    fn new(id: u64) -> Node {
        let dir = TempDir::new().unwrap();
        let faults = Arc::new(FaultyStorage::new());
        let (log, _) = CommitLog::open(cfg(dir.path(), &faults)).unwrap();
        Node {
            id,
            dir,
            faults,
            log: Some(log),
        }
    }
    fn log(&self) -> &CommitLog {
        self.log.as_ref().unwrap()
    }
    fn reopen(&mut self) {
        self.log = None;
        self.log = Some(
            CommitLog::open(cfg(self.dir.path(), &self.faults))
                .unwrap()
                .0,
        );
    }
    fn power_loss(&mut self) {
        self.log = None;
        let image = TempDir::new().unwrap();
        self.faults
            .write_crash_image(&log_dir(self.dir.path()), &log_dir(image.path()), 0)
            .unwrap();
        self.dir = image;
        self.faults = Arc::new(FaultyStorage::new());
        self.reopen();
    }
}

struct Harness {
    nodes: [Node; 2],
    master: usize,
    next_id: u64,
    /// Confirmed records: offset -> bytes.
    acked: BTreeMap<u64, Vec<u8>>,
    max_epoch: u64,
}

impl Harness {
    fn new() -> Harness {
        let mut h = Harness {
            nodes: [Node::new(1), Node::new(2)],
            master: 0,
            next_id: 0,
            acked: BTreeMap::new(),
            max_epoch: 0,
        };
        h.open_epoch();
        h
    }
    fn m(&self) -> &CommitLog {
        self.nodes[self.master].log()
    }
    fn r(&self) -> &CommitLog {
        self.nodes[1 - self.master].log()
    }
    /// Every start as master opens a new epoch.
    fn open_epoch(&mut self) {
        self.max_epoch += 1;
        let id = self.nodes[self.master].id;
        self.m().begin_epoch(self.max_epoch, id).unwrap();
    }
    /// The replica's handshake: cut at the divergence point.
    fn handshake(&self) {
        let (m, r) = (self.m(), self.r());
        let r_end = r.write_offset().get();
        let point = consistent_point(&r.epochs(), r_end, &m.epochs(), m.write_offset().get());
        let t = point.expect("a divergence point");
        assert!(t >= m.min_offset().get(), "retention is off here");
        if t < r_end {
            r.truncate_to(PhysicalOffset::new(t)).unwrap();
        }
    }
    fn ship(&self, max: usize) {
        let (m, r) = (self.m(), self.r());
        let from = r.write_offset().get();
        if from >= m.write_offset().get() {
            return;
        }
        let epochs = m.epochs();
        let i = epochs.iter().rposition(|e| e.start_offset <= from).unwrap();
        let covering = epochs[i];
        if r.epochs().last() != Some(&covering) {
            assert_eq!(
                covering.start_offset, from,
                "an epoch's first frame starts at its start"
            );
            r.begin_epoch(covering.epoch, covering.master_id).unwrap();
        }
        let until = epochs.get(i + 1).map_or(u64::MAX, |e| e.start_offset);
        let chunk = m
            .raw_chunk(PhysicalOffset::new(from), PhysicalOffset::new(until), max)
            .unwrap();
        let end = r
            .append_raw(PhysicalOffset::new(from), chunk.bytes())
            .unwrap();
        if chunk.seal() {
            r.seal_segment(end).unwrap();
        }
    }
    fn ack(&mut self) {
        let confirm = self.m().write_offset().min(self.r().write_offset());
        let confirm = self.m().advance_confirm(confirm);
        self.r().advance_confirm(confirm);
        let from = self.acked.keys().next_back().map_or(0, |&o| o + 1);
        for rec in self.m().iter_from(self.m().min_offset()) {
            let rec = rec.unwrap();
            let o = rec.offset().get();
            if o >= confirm.get() {
                break;
            }
            if o >= from {
                self.acked.insert(o, rec.bytes().to_vec());
            }
        }
    }
    fn acked_end(&self) -> u64 {
        self.acked
            .iter()
            .next_back()
            .map_or(0, |(o, b)| o + b.len() as u64)
    }
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append(sizes) => {
                let bodies: Vec<Vec<u8>> = sizes
                    .iter()
                    .map(|&len| {
                        self.next_id += 1;
                        body(self.next_id, len)
                    })
                    .collect();
                let recs: Vec<_> = bodies
                    .iter()
                    .enumerate()
                    .map(|(i, b)| rec(self.next_id + i as u64, b))
                    .collect();
                self.m().append_batch(&recs).unwrap();
            }
            Op::Ship(max) => self.ship(*max),
            Op::Ack => self.ack(),
            Op::FlushMaster => self.m().flush().unwrap(),
            Op::CrashReplica => {
                self.nodes[1 - self.master].reopen();
                self.handshake();
            }
            Op::CrashMaster => {
                self.nodes[self.master].reopen();
                self.open_epoch();
                self.handshake();
            }
            // Only a replica holding everything confirmed may take over (a broker that lost
            // power itself is "possibly behind" and not eligible until re-synced).
            Op::PowerLossMaster if self.r().write_offset().get() >= self.acked_end() => {
                self.nodes[self.master].power_loss();
                self.master = 1 - self.master;
                self.open_epoch();
                self.handshake();
            }
            Op::PowerLossMaster => {}
            Op::Reconnect => self.handshake(),
            Op::Switchover => {
                // Lossless: the replica catches up first.
                while self.r().write_offset() < self.m().write_offset() {
                    self.ship(1 << 20);
                }
                self.master = 1 - self.master;
                self.open_epoch();
                self.handshake();
            }
            Op::TruncateReplica(pick) => {
                let floor = self.acked_end();
                let r = self.r();
                let points: Vec<u64> = r
                    .iter_from(r.min_offset())
                    .map(|x| x.unwrap().offset().get())
                    .chain(std::iter::once(r.write_offset().get()))
                    .filter(|&o| o >= floor)
                    .collect();
                if !points.is_empty() {
                    r.truncate_to(PhysicalOffset::new(points[pick % points.len()]))
                        .unwrap();
                }
            }
        }
    }
    fn check(&self) {
        let (m, r) = (&self.nodes[self.master], &self.nodes[1 - self.master]);
        let r_end = r.log().write_offset().get();
        assert!(
            r_end <= m.log().write_offset().get(),
            "replica ahead of its master"
        );
        let size = SMALL_SEGMENT;
        for path in segment_files(&log_dir(r.dir.path())) {
            let start: u64 = path.file_name().unwrap().to_str().unwrap().parse().unwrap();
            if start >= r_end {
                continue;
            }
            let n = (r_end - start).min(size) as usize;
            let mine = std::fs::read(&path).unwrap();
            let theirs =
                std::fs::read(log_dir(m.dir.path()).join(path.file_name().unwrap())).unwrap();
            assert_eq!(
                mine[..n],
                theirs[..n],
                "segment {start} differs below {r_end}"
            );
        }
        for (&o, bytes) in &self.acked {
            let got = m
                .log()
                .read(PhysicalOffset::new(o))
                .expect("confirmed record");
            assert_eq!(got.bytes(), &bytes[..], "confirmed record at {o} changed");
        }
        assert!(r.log().confirm_offset().get() <= r_end);
    }
}

/// 16 cases by default (every step syncs files); `FERRO_REPLICA_CASES=500` for a long run.
fn cases() -> u32 {
    std::env::var("FERRO_REPLICA_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn replica_is_a_byte_prefix_of_its_master(ops in proptest::collection::vec(arb_op(), 1..50)) {
        let mut h = Harness::new();
        for op in &ops {
            h.apply(op);
            h.check();
        }
        // Finally caught up: equal logs.
        h.apply(&Op::Switchover);
        h.check();
        prop_assert_eq!(h.m().write_offset(), h.r().write_offset());
    }
}
