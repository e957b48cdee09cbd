//! The consume-queue store: open and recover from snapshot + journal, the queue table,
//! block reservations, and checkpoints.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use commitlog::storage::Storage;

use crate::format::{self, ArenaHeader, Mark, Record, SnapQueue, Snapshot};
use crate::journal::{self, Journal};
use crate::mmap::ArenaMap;
use crate::queue::{ConsumeQueue, Dir, Parts};
use crate::space::{lock, Geometry, Space};
use crate::{Error, Result};

/// Consume-queue store configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Bytes per arena file (its address space). Its blocks are allocated on disk with
    /// `posix_fallocate` in 1 MiB steps as queues need them, never written before.
    /// Default 64 MiB.
    pub arena_size_bytes: u64,
    /// Bytes per block: a 16-byte header and `(size - 16) / 20` entries. A power of two
    /// from 256 B to 64 KiB; default 4 KiB (204 entries).
    pub block_size_bytes: u32,
    /// The journal is folded into a new snapshot once it exceeds this size (and twice the
    /// last snapshot). Default 64 MiB.
    pub snapshot_journal_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            arena_size_bytes: 64 << 20,
            block_size_bytes: 4096,
            snapshot_journal_bytes: 64 << 20,
        }
    }
}

impl Config {
    fn validate(&self) -> Result<Geometry> {
        let bs = self.block_size_bytes;
        if !bs.is_power_of_two() || !(format::MIN_BLOCK_SIZE..=format::MAX_BLOCK_SIZE).contains(&bs)
        {
            return Err(Error::InvalidConfig(format!(
                "block_size_bytes must be a power of two in {}..={}, got {bs}",
                format::MIN_BLOCK_SIZE,
                format::MAX_BLOCK_SIZE
            )));
        }
        let blocks = self.arena_size_bytes / u64::from(bs);
        if !self.arena_size_bytes.is_multiple_of(u64::from(bs)) || !(2..=1 << 20).contains(&blocks)
        {
            return Err(Error::InvalidConfig(format!(
                "arena_size_bytes must be a multiple of the block size holding 2..=1048576 blocks, got {}",
                self.arena_size_bytes
            )));
        }
        Ok(Geometry {
            block_size: bs,
            blocks_per_arena: u32::try_from(blocks).unwrap_or(u32::MAX),
            k: format::entries_per_block(bs),
        })
    }
}

type ByName = HashMap<Arc<str>, Vec<Option<Arc<ConsumeQueue>>>>;

#[derive(Debug, Default)]
struct Tables {
    by_name: ByName,
    by_handle: HashMap<u32, Arc<ConsumeQueue>>,
    next_handle: u32,
}

/// Every consume queue of a data directory, packed into shared arena files.
///
/// Cost follows the data: no file or fd per queue; a constant number of open files; start-up
/// reads the snapshot and journal, never the queues' blocks.
#[derive(Debug)]
pub struct QueueStore {
    dir: PathBuf,
    space: Arc<Space>,
    tables: RwLock<Tables>,
    journal: Mutex<Journal>,
    seq: AtomicU64,
    committed_dispatched: AtomicU64,
    snapshot_bytes: AtomicU64,
    config: Config,
}

/// A queue as the journal describes it while loading.
#[derive(Debug, Clone)]
struct Loaded {
    epoch: u32,
    queue_id: u32,
    topic: String,
    min: u64,
    max: u64,
    last_phys_end: u64,
    first_block: u64,
    blocks: Vec<u32>,
}

#[derive(Debug, Default)]
struct State {
    queues: HashMap<u32, Loaded>,
    seq: u64,
    dispatched: Option<u64>,
    next_handle: u32,
}

/// The journal does not describe a consistent store.
struct Inconsistent(String);

impl State {
    fn apply(&mut self, rec: Record, k: u64) -> std::result::Result<(), Inconsistent> {
        let missing = |h: u32| Inconsistent(format!("record for unknown queue {h}"));
        match rec {
            Record::QueueCreate {
                handle,
                epoch,
                queue_id,
                topic,
            } => {
                self.next_handle = self.next_handle.max(handle.saturating_add(1));
                self.queues.insert(
                    handle,
                    Loaded {
                        epoch,
                        queue_id,
                        topic,
                        min: 0,
                        max: 0,
                        last_phys_end: 0,
                        first_block: 0,
                        blocks: Vec::new(),
                    },
                );
            }
            Record::BlockAlloc {
                handle,
                block_index,
                addr,
            } => {
                let q = self
                    .queues
                    .get_mut(&handle)
                    .ok_or_else(|| missing(handle))?;
                if q.blocks.is_empty() {
                    q.first_block = block_index;
                }
                if block_index != q.first_block + q.blocks.len() as u64 {
                    return Err(Inconsistent(format!(
                        "queue {handle}: block {block_index} out of order"
                    )));
                }
                q.blocks.push(addr);
            }
            Record::QueueTrim {
                handle,
                min,
                first_kept_block_index,
            } => {
                let q = self
                    .queues
                    .get_mut(&handle)
                    .ok_or_else(|| missing(handle))?;
                q.min = q.min.max(min);
                let n = usize::try_from(first_kept_block_index.saturating_sub(q.first_block))
                    .unwrap_or(usize::MAX)
                    .min(q.blocks.len());
                q.blocks.drain(..n);
                q.first_block = q.first_block.max(first_kept_block_index);
            }
            Record::QueueTruncate {
                handle,
                max,
                last_phys_end,
            } => {
                let q = self
                    .queues
                    .get_mut(&handle)
                    .ok_or_else(|| missing(handle))?;
                q.max = max;
                q.min = q.min.min(max);
                q.last_phys_end = last_phys_end;
                let keep = usize::try_from(max.div_ceil(k).saturating_sub(q.first_block))
                    .unwrap_or(usize::MAX);
                q.blocks.truncate(keep);
            }
            Record::QueueReset {
                handle,
                epoch,
                offset,
            } => {
                let q = self
                    .queues
                    .get_mut(&handle)
                    .ok_or_else(|| missing(handle))?;
                q.epoch = epoch;
                q.min = offset;
                q.max = offset;
                q.last_phys_end = 0;
                q.first_block = offset / k;
                q.blocks.clear();
            }
            Record::QueueDrop { handle } => {
                self.queues.remove(&handle);
            }
            Record::ArenaAdded { .. } => {}
            Record::Marks(marks) => {
                for m in marks {
                    let q = self
                        .queues
                        .get_mut(&m.handle)
                        .ok_or_else(|| missing(m.handle))?;
                    q.max = m.max;
                    q.last_phys_end = m.last_phys_end;
                }
            }
            Record::Commit { seq, dispatched } => {
                self.seq = seq;
                self.dispatched = Some(dispatched);
            }
        }
        Ok(())
    }
}

/// Journal generations present in `dir`, sorted.
fn generations(dir: &Path) -> Result<Vec<u64>> {
    let mut gens = Vec::new();
    for item in std::fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))? {
        let item = item.map_err(|e| Error::io("listing", dir, e))?;
        if let Some(g) = item
            .file_name()
            .to_str()
            .and_then(format::parse_journal_name)
        {
            gens.push(g);
        }
    }
    gens.sort_unstable();
    Ok(gens)
}

impl QueueStore {
    /// Opens the store in `dir` (`<data>/queues`). Returns it with the commit-log offset
    /// below which every record is indexed, or `None` when there is no usable state (a new
    /// or damaged store, rebuilt empty): the caller then indexes the whole log.
    ///
    /// # Errors
    /// An invalid config, I/O errors.
    pub fn open(
        dir: impl Into<PathBuf>,
        config: Config,
        storage: Arc<dyn Storage>,
    ) -> Result<(Self, Option<u64>)> {
        let geo = config.validate()?;
        let dir = dir.into();
        let arena_dir = dir.join("arena");
        let journal_dir = dir.join("journal");
        for d in [&dir, &arena_dir, &journal_dir] {
            std::fs::create_dir_all(d).map_err(|e| Error::io("creating folder", d, e))?;
        }
        let mut space = Arc::new(Space::new(arena_dir.clone(), Arc::clone(&storage), geo));
        let loaded = load(&dir, &journal_dir, &space, geo);
        let (state, generation, pos, snapshot_bytes) = match loaded {
            Ok(l) => l,
            Err(reason) => {
                tracing::warn!(dir = %dir.display(), %reason, "consume-queue store unusable; rebuilding it from the commit log");
                wipe(&dir, &journal_dir, &space)?;
                // Forget the arenas mapped before the state was found unusable.
                space = Arc::new(Space::new(arena_dir, Arc::clone(&storage), geo));
                (State::default(), 0, 0, 0)
            }
        };
        let journal = Journal::open(storage, &journal_dir, generation, pos)?;
        for g in generations(&journal_dir)? {
            if g < generation {
                let p = journal_dir.join(format::journal_file_name(g));
                space
                    .storage
                    .remove(&p)
                    .map_err(|e| Error::io("removing", &p, e))?;
            }
        }
        let dispatched = state.dispatched;
        let store = Self {
            dir,
            space: Arc::clone(&space),
            tables: RwLock::new(Tables {
                // Handle 0 is never used: an all-zero block header (a lost page) then
                // never passes for a block of a live queue.
                next_handle: state.next_handle.max(1),
                ..Tables::default()
            }),
            journal: Mutex::new(journal),
            seq: AtomicU64::new(state.seq),
            committed_dispatched: AtomicU64::new(dispatched.unwrap_or(u64::MAX)),
            snapshot_bytes: AtomicU64::new(snapshot_bytes),
            config,
        };
        store.install(state)?;
        // Nothing was derived from the journal that needs writing again.
        drop(space.take_changes());
        Ok((store, dispatched))
    }

    /// Builds the in-memory queues and the free list from a loaded state.
    fn install(&self, state: State) -> Result<()> {
        let bpa = self.space.geo.blocks_per_arena;
        let total = u64::from(self.space.arena_count()) * u64::from(bpa);
        let mut used = vec![false; usize::try_from(total).unwrap_or(0)];
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        let mut topics: HashMap<String, Arc<str>> = HashMap::new();
        for (handle, q) in state.queues {
            for a in &q.blocks {
                if let Some(u) = used.get_mut(*a as usize) {
                    *u = true;
                }
            }
            let topic = topics
                .entry(q.topic.clone())
                .or_insert_with(|| Arc::from(q.topic.as_str()))
                .clone();
            let cq = Arc::new(ConsumeQueue::from_parts(
                Arc::clone(&self.space),
                Parts {
                    handle,
                    topic: Arc::clone(&topic),
                    queue_id: q.queue_id,
                    min: q.min.min(q.max),
                    max: q.max,
                    last_phys_end: q.last_phys_end,
                    dir: Dir {
                        epoch: q.epoch,
                        first_block: q.first_block,
                        blocks: q.blocks,
                        dropped: false,
                    },
                },
            ));
            insert(&mut tables, topic, cq);
        }
        drop(tables);
        // Each arena is allocated up to its last referenced block (rounded to a step);
        // only blocks there are free for reuse.
        let mut free = Vec::new();
        for no in 0..self.space.arena_count() {
            let first = no as usize * bpa as usize;
            let part = used.get(first..first + bpa as usize).unwrap_or(&[]);
            let last_used = part.iter().rposition(|u| *u).map_or(1, |i| i + 1);
            self.space
                .set_grown(no, u32::try_from(last_used).unwrap_or(bpa))?;
            let grown = self.space.grown(no) as usize;
            free.extend(
                (1..grown)
                    .filter(|i| !part.get(*i).copied().unwrap_or(true))
                    .filter_map(|i| u32::try_from(first + i).ok()),
            );
        }
        self.space.set_free(free);
        Ok(())
    }

    /// The queue, if it exists.
    pub fn get(&self, topic: &str, queue_id: u32) -> Option<Arc<ConsumeQueue>> {
        let t = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        t.by_name.get(topic)?.get(queue_id as usize)?.clone()
    }

    /// The queue, created (and journaled) if needed.
    ///
    /// # Errors
    /// `InvalidConfig` for a topic name longer than 255 bytes.
    pub fn get_or_create(&self, topic: &str, queue_id: u32) -> Result<Arc<ConsumeQueue>> {
        if let Some(q) = self.get(topic, queue_id) {
            return Ok(q);
        }
        if topic.len() > format::MAX_TOPIC_LEN {
            return Err(Error::InvalidConfig(format!(
                "topic name of {} bytes",
                topic.len()
            )));
        }
        let _w = self.space.write_lock();
        let mut t = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(Some(q)) = t.by_name.get(topic).and_then(|v| v.get(queue_id as usize)) {
            return Ok(Arc::clone(q));
        }
        let handle = t.next_handle;
        t.next_handle = handle
            .checked_add(1)
            .ok_or_else(|| Error::InvalidConfig("queue handles exhausted".into()))?;
        let name: Arc<str> = t
            .by_name
            .get_key_value(topic)
            .map_or_else(|| Arc::from(topic), |(k, _)| Arc::clone(k));
        let cq = Arc::new(ConsumeQueue::from_parts(
            Arc::clone(&self.space),
            Parts {
                handle,
                topic: Arc::clone(&name),
                queue_id,
                min: 0,
                max: 0,
                last_phys_end: 0,
                dir: Dir::default(),
            },
        ));
        self.space.push_record(Record::QueueCreate {
            handle,
            epoch: 0,
            queue_id,
            topic: topic.to_owned(),
        });
        insert(&mut t, name, Arc::clone(&cq));
        Ok(cq)
    }

    /// Every queue.
    pub fn all(&self) -> Vec<Arc<ConsumeQueue>> {
        let t = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        t.by_handle.values().cloned().collect()
    }

    /// Number of queues.
    pub fn len(&self) -> usize {
        self.tables
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_handle
            .len()
    }

    /// Whether the store holds no queue.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Deletes a topic's queues; their blocks are reused after the next checkpoint.
    pub fn drop_topic(&self, topic: &str) {
        let removed = {
            let mut t = self.tables.write().unwrap_or_else(PoisonError::into_inner);
            let removed = t.by_name.remove(topic).unwrap_or_default();
            for q in removed.iter().flatten() {
                t.by_handle.remove(&q.handle());
            }
            removed
        };
        for q in removed.into_iter().flatten() {
            q.drop_queue();
        }
    }

    /// New blocks a queue whose next offset is `next` needs for `n` more entries.
    pub fn blocks_needed(&self, next: u64, n: u64) -> u64 {
        let k = self.space.geo.k;
        (next + n).div_ceil(k) - next.div_ceil(k)
    }

    /// Promises `blocks` blocks to a writer before it appends to the commit log; creates an
    /// arena if needed.
    ///
    /// # Errors
    /// No room, and no arena could be created: `Io` with `ENOSPC` ([`Error::is_disk_full`]).
    pub fn reserve(&self, blocks: u64) -> Result<()> {
        self.space.reserve(blocks)
    }

    /// Returns blocks promised by [`QueueStore::reserve`] that will not be used.
    pub fn unreserve(&self, blocks: u64) {
        self.space.unreserve(blocks);
    }

    /// Recounts the free blocks not promised; call when no promise is outstanding (every
    /// record appended to the log is indexed).
    pub fn recompute_reservations(&self) {
        self.space.recompute_reservations();
    }

    /// Free blocks not promised to writers (may be negative within the safety margin).
    pub fn unreserved_blocks(&self) -> i64 {
        self.space.unreserved()
    }

    /// Creates a spare arena when less than half an arena is free, off the write path.
    ///
    /// # Errors
    /// Creating the arena failed (`ENOSPC` on a full disk).
    pub fn ensure_spare(&self) -> Result<()> {
        self.space.ensure_spare()
    }

    /// Number of arena files.
    pub fn arena_count(&self) -> u32 {
        self.space.arena_count()
    }

    /// Bytes of the active journal generation.
    pub fn journal_bytes(&self) -> u64 {
        lock(&self.journal).pos
    }

    /// Makes the queues durable up to their current ends and records `dispatched` (every
    /// commit-log record below it is indexed): msyncs written arenas, then appends the
    /// changed queue ends and structural changes with one `fdatasync`. Writes nothing when
    /// nothing changed. Returns whether it wrote. The caller must not index records
    /// beyond `dispatched` concurrently (appends wait for the checkpoint).
    ///
    /// # Errors
    /// I/O errors (the changes stay pending and are retried by the next call); `Poisoned`
    /// after a failed sync.
    pub fn checkpoint(&self, dispatched: u64) -> Result<bool> {
        let _w = self.space.write_lock();
        let mut j = lock(&self.journal);
        if let Some(p) = &j.poisoned {
            return Err(Error::Poisoned(p.clone()));
        }
        let changes = self.space.take_changes();
        if changes.is_empty() && self.committed_dispatched.load(Ordering::Acquire) == dispatched {
            return Ok(false);
        }
        if let Err(e) = self.space.sync_arenas() {
            j.poisoned = Some(e.to_string());
            self.space.restore_changes(changes);
            return Err(e);
        }
        let mut marks = Vec::with_capacity(changes.dirty.len());
        {
            let t = self.tables.read().unwrap_or_else(PoisonError::into_inner);
            for h in &changes.dirty {
                if let Some(q) = t.by_handle.get(h) {
                    q.take_dirty();
                    marks.push(Mark {
                        handle: *h,
                        max: q.max_offset().get(),
                        last_phys_end: q.last_physical_end(),
                    });
                }
            }
        }
        let seq = self.seq.load(Ordering::Acquire) + 1;
        let mut bytes = Vec::new();
        for r in &changes.records {
            r.encode_frame(&mut bytes);
        }
        if !marks.is_empty() {
            Record::Marks(marks).encode_frame(&mut bytes);
        }
        Record::Commit { seq, dispatched }.encode_frame(&mut bytes);
        if let Err(e) = j.append(&bytes) {
            let t = self.tables.read().unwrap_or_else(PoisonError::into_inner);
            for h in &changes.dirty {
                if let Some(q) = t.by_handle.get(h) {
                    q.take_dirty();
                }
            }
            drop(t);
            let dirty = changes.dirty.clone();
            self.space.restore_changes(changes);
            self.redirty(&dirty);
            return Err(e);
        }
        self.seq.store(seq, Ordering::Release);
        self.committed_dispatched
            .store(dispatched, Ordering::Release);
        self.space.release(changes.freed);
        let limit = self
            .config
            .snapshot_journal_bytes
            .max(2 * self.snapshot_bytes.load(Ordering::Acquire));
        if j.pos > limit {
            if let Err(e) = self.roll(&mut j, seq, dispatched) {
                tracing::warn!(error = %e, "consume-queue snapshot failed; the journal keeps growing until the next try");
            }
        }
        Ok(true)
    }

    /// Sets the dirty flags of queues whose marks were put back after a failed commit
    /// (their handles are already in the restored change list).
    fn redirty(&self, handles: &[u32]) {
        let t = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        for h in handles {
            if let Some(q) = t.by_handle.get(h) {
                q.mark_dirty_flag();
            }
        }
    }

    /// Writes a snapshot of the state just committed and starts the next generation.
    fn roll(&self, j: &mut Journal, seq: u64, dispatched: u64) -> Result<()> {
        let next = j.generation + 1;
        let snap = Snapshot {
            first_generation: next,
            seq,
            dispatched,
            block_size: self.space.geo.block_size,
            arena_count: self.space.arena_count(),
            queues: self.snapshot_queues(),
        };
        let bytes = snap.encode();
        let path = self.dir.join("snapshot");
        self.space
            .storage
            .write_atomic(&path, &bytes)
            .map_err(|e| Error::io("writing snapshot", &path, e))?;
        self.snapshot_bytes
            .store(bytes.len() as u64, Ordering::Release);
        let old = j.generation;
        *j = Journal::open(Arc::clone(&self.space.storage), &j.dir.clone(), next, 0)?;
        let p = j.dir.join(format::journal_file_name(old));
        self.space
            .storage
            .remove(&p)
            .map_err(|e| Error::io("removing", &p, e))?;
        Ok(())
    }

    fn snapshot_queues(&self) -> Vec<SnapQueue> {
        let t = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<SnapQueue> = t
            .by_handle
            .values()
            .map(|q| {
                q.with_dir(|d| SnapQueue {
                    handle: q.handle(),
                    epoch: d.epoch,
                    queue_id: q.queue_id(),
                    topic: q.topic().to_owned(),
                    min: q.min_offset().get(),
                    max: q.max_offset().get(),
                    last_phys_end: q.last_physical_end(),
                    first_block_index: d.first_block,
                    blocks: d.blocks.clone(),
                })
            })
            .collect();
        out.sort_unstable_by_key(|q| q.handle);
        out
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn insert(t: &mut Tables, topic: Arc<str>, cq: Arc<ConsumeQueue>) {
    let idx = cq.queue_id() as usize;
    t.by_handle.insert(cq.handle(), Arc::clone(&cq));
    let slots = t.by_name.entry(topic).or_default();
    if slots.len() <= idx {
        slots.resize(idx + 1, None);
    }
    slots[idx] = Some(cq);
}

type LoadedStore = (State, u64, u64, u64);

/// Reads snapshot and journal and maps the arenas. `Err` means the state cannot be trusted.
fn load(
    dir: &Path,
    journal_dir: &Path,
    space: &Space,
    geo: Geometry,
) -> std::result::Result<LoadedStore, String> {
    let mut state = State::default();
    let mut first_generation = 0;
    let mut snapshot_bytes = 0;
    let snap_path = dir.join("snapshot");
    match std::fs::read(&snap_path) {
        Ok(bytes) => {
            let snap = Snapshot::decode(&bytes).map_err(|r| format!("snapshot: {r}"))?;
            if snap.block_size != geo.block_size {
                return Err(format!(
                    "block size {} on disk, {} configured",
                    snap.block_size, geo.block_size
                ));
            }
            snapshot_bytes = bytes.len() as u64;
            first_generation = snap.first_generation;
            state.seq = snap.seq;
            state.dispatched = Some(snap.dispatched);
            for q in snap.queues {
                state.next_handle = state.next_handle.max(q.handle.saturating_add(1));
                state.queues.insert(
                    q.handle,
                    Loaded {
                        epoch: q.epoch,
                        queue_id: q.queue_id,
                        topic: q.topic,
                        min: q.min,
                        max: q.max,
                        last_phys_end: q.last_phys_end,
                        first_block: q.first_block_index,
                        blocks: q.blocks,
                    },
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("reading {}: {e}", snap_path.display())),
    }
    let gens: Vec<u64> = generations(journal_dir)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|g| *g >= first_generation)
        .collect();
    let mut generation = first_generation;
    let mut pos = 0;
    for g in gens {
        let path = journal_dir.join(format::journal_file_name(g));
        let bytes = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let read = journal::parse(&bytes);
        if read.corrupted {
            return Err(format!("{} is corrupted", path.display()));
        }
        for batch in read.batches {
            for rec in batch {
                state.apply(rec, geo.k).map_err(|Inconsistent(r)| r)?;
            }
        }
        generation = g;
        pos = read.end;
    }
    map_arenas(space, geo, &state)?;
    Ok((state, generation, pos, snapshot_bytes))
}

/// Maps every valid arena; fails when a referenced block has no intact arena or two queues
/// claim one block.
fn map_arenas(space: &Space, geo: Geometry, state: &State) -> std::result::Result<(), String> {
    let mut no = 0u32;
    loop {
        let path = space.arena_path(no);
        let Some(map) = open_arena(&path, geo, no) else {
            break;
        };
        space.adopt(path, map);
        no += 1;
    }
    // Arenas after a missing one cannot be numbered consistently: forget them.
    if let Ok(listing) = std::fs::read_dir(space.dir()) {
        for item in listing.flatten() {
            let n = item.file_name().to_str().and_then(format::parse_arena_name);
            if n.is_some_and(|n| n >= no) || item.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = space.storage.remove(&item.path());
            }
        }
    }
    let limit = u64::from(no) * u64::from(geo.blocks_per_arena);
    let mut seen = vec![false; usize::try_from(limit).unwrap_or(0)];
    for (h, q) in &state.queues {
        // The blocks must cover every retained entry, so no read walks past the directory.
        let first = q.first_block.saturating_mul(geo.k);
        let end = (q.first_block.saturating_add(q.blocks.len() as u64)).saturating_mul(geo.k);
        if q.min > q.max || (q.max > q.min && (q.min < first || q.max > end)) {
            return Err(format!(
                "queue {h}: range [{}, {}) not covered by blocks [{first}, {end})",
                q.min, q.max
            ));
        }
        for a in &q.blocks {
            let i = *a as usize;
            if u64::from(*a) >= limit
                || u64::from(*a).is_multiple_of(u64::from(geo.blocks_per_arena))
            {
                return Err(format!(
                    "queue {h} references block {a} outside the intact arenas"
                ));
            }
            if std::mem::replace(&mut seen[i], true) {
                return Err(format!("block {a} claimed twice"));
            }
        }
    }
    Ok(())
}

fn open_arena(path: &Path, geo: Geometry, no: u32) -> Option<ArenaMap> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .ok()?;
    if file.metadata().ok()?.len() != geo.arena_bytes() {
        return None;
    }
    let map = ArenaMap::map(&file).ok()?;
    let mut head = [0u8; format::ARENA_HEADER_LEN];
    if !map.read(0, &mut head) {
        return None;
    }
    let h = ArenaHeader::decode(&head).ok()?;
    let expected = ArenaHeader {
        block_size: geo.block_size,
        arena_no: no,
        blocks: geo.blocks_per_arena,
    };
    (h == expected && map.len() as u64 == geo.arena_bytes()).then_some(map)
}

/// Removes every file of an unusable store so that it starts empty.
fn wipe(dir: &Path, journal_dir: &Path, space: &Space) -> Result<()> {
    for d in [space.dir(), journal_dir] {
        for item in std::fs::read_dir(d).map_err(|e| Error::io("listing", d, e))? {
            let p = item.map_err(|e| Error::io("listing", d, e))?.path();
            space
                .storage
                .remove(&p)
                .map_err(|e| Error::io("removing", &p, e))?;
        }
    }
    let snap = dir.join("snapshot");
    match space.storage.remove(&snap) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing", &snap, e)),
    }
}
