//! Simulated power loss at random moments, through the storage seam.
//!
//! Writers append concurrently while a crasher, at random moments, freezes the "disk"
//! and takes a crash image: only the bytes a completed sync made durable, plus a torn
//! suffix of bytes written after them. Each image is recovered and checked:
//! - every append acknowledged before the crash (returned from `append`/`append_batch`
//!   under `FlushPolicy::Sync`, or covered by a returned `wait_durable` under `Async`) is
//!   there, byte for byte, at its offset;
//! - everything served is a record that was really appended at that offset (CRC-checked,
//!   never a torn or stale one), and the log is contiguous from its start;
//! - the recovered log accepts appends that survive a second crash.
//!
//! Case count: `FERRO_CRASH_CASES` (default 24 runs, 3 crash images each).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use commitlog::fault::FaultyStorage;
use commitlog::storage::Storage;
use commitlog::{CommitLog, Config, FlushPolicy, PhysicalOffset, RecordIn};
use tempfile::TempDir;

const SEGMENT: u64 = 4096;

/// A [`FaultyStorage`] whose durable state can be frozen: syncs and metadata writes hold a
/// read lock, the crash image the write lock, so an image never mixes a newer checkpoint
/// with older segment bytes (a real disk at one instant cannot either).
#[derive(Debug, Default)]
struct FreezableDisk {
    inner: FaultyStorage,
    gate: RwLock<()>,
}

impl FreezableDisk {
    fn crash_image(&self, src: &Path, dst: &Path, torn_bytes: u64) {
        let _frozen = self.gate.write().unwrap();
        self.inner.write_crash_image(src, dst, torn_bytes).unwrap();
    }
}

impl Storage for FreezableDisk {
    fn create_segment(&self, path: &Path, len: u64) -> io::Result<File> {
        let _g = self.gate.read().unwrap();
        self.inner.create_segment(path, len)
    }
    fn open_segment(&self, path: &Path) -> io::Result<File> {
        self.inner.open_segment(path)
    }
    fn allocate(&self, path: &Path, file: &File, len: u64) -> io::Result<()> {
        let _g = self.gate.read().unwrap();
        self.inner.allocate(path, file, len)
    }
    fn sync_mapped(
        &self,
        path: &Path,
        offset: u64,
        data: &[u8],
        sync: &mut dyn FnMut() -> io::Result<()>,
    ) -> io::Result<()> {
        let _g = self.gate.read().unwrap();
        self.inner.sync_mapped(path, offset, data, sync)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let _g = self.gate.read().unwrap();
        self.inner.remove(path)
    }
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let _g = self.gate.read().unwrap();
        self.inner.write_atomic(path, bytes)
    }
}

/// xorshift64*: deterministic per seed, no dependency.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What a writer put at one offset: the whole encoded record is derived from these.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    queue_id: u32,
    queue_offset: u64,
    properties: Vec<u8>,
    body: Vec<u8>,
}

#[derive(Default)]
struct Ledger {
    /// Every record whose append returned, by offset, with its end.
    appended: BTreeMap<u64, (u64, Written)>,
    /// End offsets acknowledged as durable, in acknowledgement order.
    acked: Vec<u64>,
}

fn config(dir: &Path, flush: FlushPolicy, storage: Arc<dyn Storage>) -> Config {
    let mut cfg = Config::new(dir);
    cfg.segment_size_bytes = SEGMENT;
    cfg.flush = flush;
    cfg.storage = storage;
    cfg
}

fn record_in(w: &Written) -> RecordIn<'_> {
    RecordIn {
        topic: "power",
        queue_id: w.queue_id,
        queue_offset: w.queue_offset,
        tag_hash: w.queue_offset ^ 0xA5,
        born_timestamp_ms: 7,
        store_timestamp_ms: 8,
        reconsume_times: 0,
        properties: &w.properties,
        body: &w.body,
    }
}

fn random_record(rng: &mut Rng, writer: u32, n: u64) -> Written {
    let len = rng.below(900) as usize;
    let fill = rng.next();
    Written {
        queue_id: writer,
        queue_offset: n,
        properties: format!("w{writer}n{n}").into_bytes(),
        body: (0..len).map(|j| (fill as usize + j * 13) as u8).collect(),
    }
}

/// One writer thread: appends single records or batches; records acknowledgements.
fn run_writer(
    log: &CommitLog,
    policy: FlushPolicy,
    ledger: &Mutex<Ledger>,
    (writer, seed, count): (u32, u64, u64),
) {
    let mut rng = Rng::new(seed);
    let mut n = 0;
    while n < count {
        let batch = 1 + rng.below(4);
        let recs: Vec<Written> = (0..batch)
            .map(|i| random_record(&mut rng, writer, n + i))
            .collect();
        n += batch;
        let ins: Vec<RecordIn<'_>> = recs.iter().map(record_in).collect();
        let appended = if ins.len() == 1 {
            vec![log.append(&ins[0]).unwrap()]
        } else {
            log.append_batch(&ins).unwrap()
        };
        let end = appended
            .iter()
            .map(|a| a.offset.get() + u64::from(a.size))
            .max()
            .unwrap();
        {
            let mut l = ledger.lock().unwrap();
            for (a, w) in appended.iter().zip(recs) {
                l.appended
                    .insert(a.offset.get(), (a.offset.get() + u64::from(a.size), w));
            }
        }
        let durable = match policy {
            FlushPolicy::Sync => true,
            // Async: only what a returned wait_durable covers is promised.
            FlushPolicy::Async { .. } => {
                if rng.below(3) == 0 {
                    log.wait_durable(PhysicalOffset::new(end)).unwrap();
                    true
                } else {
                    false
                }
            }
        };
        if durable {
            ledger.lock().unwrap().acked.push(end);
        }
    }
}

/// Recovers `image` and checks it against the ledger; returns the recovered end.
fn check_image(image: &Path, acked_end: u64, appended: &BTreeMap<u64, (u64, Written)>) -> u64 {
    let cfg = config(
        image,
        FlushPolicy::Sync,
        Arc::new(commitlog::storage::RealFs),
    );
    let (log, report) = CommitLog::open(cfg).unwrap();
    assert!(
        report.recovered_end.get() >= acked_end,
        "acknowledged data lost: acked up to {acked_end}, {report:?}"
    );
    let mut expect_at = log.min_offset().get();
    for r in log.iter_from(log.min_offset()) {
        let r = r.unwrap_or_else(|e| panic!("corrupt record served after recovery: {e}"));
        let at = r.offset().get();
        // Contiguous, except a jump to the next segment start past an end-of-segment marker.
        assert!(
            at == expect_at || (at > expect_at && at % SEGMENT == 0 && at - expect_at < SEGMENT),
            "gap in the recovered log: expected {expect_at}, got {at}"
        );
        let (end, w) = appended
            .get(&at)
            .unwrap_or_else(|| panic!("record at {at} was never appended there"));
        let v = r.view();
        assert_eq!(at + u64::from(v.total_len()), *end);
        assert_eq!(
            (v.queue_id(), v.queue_offset(), v.properties(), v.body()),
            (
                w.queue_id,
                w.queue_offset,
                w.properties.as_slice(),
                w.body.as_slice()
            ),
            "record at {at} differs from what was appended"
        );
        expect_at = *end;
    }
    assert!(
        expect_at >= acked_end,
        "served up to {expect_at} < {acked_end}"
    );
    // Appends resume right after the last record, or at the next segment when the last
    // one was sealed by an end-of-segment marker.
    let w = log.write_offset().get();
    assert!(
        w == expect_at || (w > expect_at && w % SEGMENT == 0 && w - expect_at < SEGMENT),
        "write offset {w} after last record end {expect_at}"
    );
    // Every acknowledged record is readable directly too.
    for (&at, (end, _)) in appended.range(..acked_end) {
        if *end <= acked_end {
            log.read(PhysicalOffset::new(at)).unwrap();
        }
    }
    log.close().unwrap();
    expect_at
}

fn one_run(seed: u64, root: &Path) {
    let mut rng = Rng::new(seed);
    let policy = if rng.below(2) == 0 {
        FlushPolicy::Sync
    } else {
        FlushPolicy::Async {
            interval_ms: 1 + rng.below(30),
        }
    };
    let dir = root.join(format!("run{seed}"));
    let disk = Arc::new(FreezableDisk::default());
    let mut cfg = config(&dir.join("commitlog"), policy, disk.clone());
    cfg.preallocate = rng.below(2) == 0;
    cfg.flush_dirty_bytes = 1 + rng.below(16 << 10);
    let (log, _) = CommitLog::open(cfg).unwrap();
    let log = Arc::new(log);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let writers = 1 + rng.below(4) as u32;
    let per_writer = 20 + rng.below(60);
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (log, ledger) = (Arc::clone(&log), Arc::clone(&ledger));
            let wseed = rng.next();
            std::thread::spawn(move || run_writer(&log, policy, &ledger, (w, wseed, per_writer)))
        })
        .collect();
    // Crash points: at random numbers of acknowledged appends while writers run.
    let mut images = Vec::new();
    for k in 0..3 {
        let target = rng.below(u64::from(writers) * per_writer / 3 + 1) as usize;
        loop {
            let done = handles.iter().all(std::thread::JoinHandle::is_finished);
            let acked = ledger.lock().unwrap().acked.len();
            if acked >= target || done {
                break;
            }
            std::thread::yield_now();
        }
        // Acknowledged before the freeze, hence durable in the image.
        let acked_end = ledger
            .lock()
            .unwrap()
            .acked
            .iter()
            .copied()
            .max()
            .unwrap_or(0);
        let image = dir.join(format!("image{k}"));
        let torn = [0, 1, 7, 100, 1000, 5000][rng.below(6) as usize];
        disk.crash_image(&dir.join("commitlog"), &image.join("commitlog"), torn);
        images.push((image, acked_end));
    }
    for h in handles {
        h.join().unwrap();
    }
    drop(log);
    let appended = std::mem::take(&mut ledger.lock().unwrap().appended);
    for (image, acked_end) in &images {
        check_image(&image.join("commitlog"), *acked_end, &appended);
    }
    second_crash(
        &images[images.len() - 1].0.join("commitlog"),
        appended,
        seed,
    );
}

/// Appends to a recovered image under `Sync`, crashes again, and checks both generations.
fn second_crash(image: &Path, mut appended: BTreeMap<u64, (u64, Written)>, seed: u64) {
    let disk = Arc::new(FreezableDisk::default());
    let (log, report) = CommitLog::open(config(image, FlushPolicy::Sync, disk.clone())).unwrap();
    let base_end = report.recovered_end.get();
    // Whatever recovery dropped may be overwritten now.
    appended.retain(|&at, _| at < base_end);
    let mut rng = Rng::new(seed ^ 0xDEAD);
    let mut acked_end = base_end;
    for n in 0..(5 + rng.below(20)) {
        let w = random_record(&mut rng, 9, n);
        let a = log.append(&record_in(&w)).unwrap();
        let end = a.offset.get() + u64::from(a.size);
        appended.insert(a.offset.get(), (end, w));
        acked_end = end;
    }
    // Written but not synced: must not corrupt anything on recovery.
    let torn = rng.below(3000);
    let dst = image.parent().unwrap().join("second");
    disk.crash_image(image, &dst.join("commitlog"), torn);
    drop(log);
    let end = check_image(&dst.join("commitlog"), acked_end, &appended);
    assert_eq!(end, acked_end, "sync log recovered more than was written");
}

fn cases() -> u64 {
    std::env::var("FERRO_CRASH_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24)
}

#[test]
fn acknowledged_appends_survive_power_loss_at_random_moments() {
    let tmp = TempDir::new().unwrap();
    let base = std::env::var("FERRO_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_u64);
    for i in 0..cases() {
        let seed = base + i;
        let outcome = std::panic::catch_unwind(|| one_run(seed, tmp.path()));
        if let Err(e) = outcome {
            eprintln!("power-loss case failed: FERRO_CRASH_SEED={seed} FERRO_CRASH_CASES=1");
            std::panic::resume_unwind(e);
        }
        let _ = std::fs::remove_dir_all(tmp.path().join(format!("run{seed}")));
    }
}

/// A crash image with every byte of the unsynced tail kept (a lucky power loss) must
/// recover everything written, and one that tears the tail anywhere must cut it cleanly.
#[test]
fn every_torn_length_of_the_unsynced_tail_recovers_a_prefix() {
    let tmp = TempDir::new().unwrap();
    let disk = Arc::new(FreezableDisk::default());
    let dir = tmp.path().join("commitlog");
    let policy = FlushPolicy::Async {
        interval_ms: 3_600_000,
    };
    let mut cfg = config(&dir, policy, disk.clone());
    cfg.preallocate = false;
    cfg.flush_dirty_bytes = u64::MAX;
    let (log, _) = CommitLog::open(cfg).unwrap();
    let mut rng = Rng::new(1);
    let mut appended = BTreeMap::new();
    for n in 0..6 {
        let w = random_record(&mut rng, 0, n);
        let a = log.append(&record_in(&w)).unwrap();
        appended.insert(a.offset.get(), (a.offset.get() + u64::from(a.size), w));
    }
    log.flush().unwrap();
    let durable = log.flushed_offset().get();
    for n in 6..10 {
        let w = random_record(&mut rng, 0, n);
        let a = log.append(&record_in(&w)).unwrap();
        appended.insert(a.offset.get(), (a.offset.get() + u64::from(a.size), w));
    }
    let written = log.write_offset().get();
    // The tail may cross into the next segment; a torn length applies to every file.
    let tail = written - durable;
    let images: PathBuf = tmp.path().join("images");
    let mut torns: Vec<u64> = (0..=tail + 8).step_by(37).collect();
    torns.push(tail);
    torns.sort_unstable();
    let mut recovered = Vec::new();
    for torn in torns {
        let image = images.join(format!("t{torn}"));
        disk.crash_image(&dir, &image, torn);
        recovered.push(check_image(&image, durable, &appended));
    }
    // More surviving bytes never recover less; all of them recover every whole record.
    assert!(recovered.windows(2).all(|w| w[0] <= w[1]), "{recovered:?}");
    assert_eq!(*recovered.last().unwrap(), written);
    assert!(recovered[0] == durable, "{recovered:?}");
    drop(log);
}
