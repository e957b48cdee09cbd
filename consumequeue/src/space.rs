//! Arenas and their blocks: allocation, deferred frees, reservations, and the changes
//! waiting for the next journal commit.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use commitlog::storage::Storage;

use crate::format::{self, ArenaHeader, BlockHeader, Record, BLOCK_HEADER_LEN, ENTRY_SIZE};
use crate::mmap::ArenaMap;
use crate::{Error, Result};

/// Blocks kept out of reservations, so that the few blocks a reset or a replay needs
/// beyond what writers reserved are still there.
const SAFETY_BLOCKS: i64 = 8;
/// After a failed arena creation, the next attempt waits this long.
const ARENA_RETRY: Duration = Duration::from_secs(1);

/// One mapped arena file. The file has its full length, but only its first `grown` blocks
/// are allocated (`posix_fallocate`); blocks past them are never handed out, so the disk
/// cost follows the blocks in use and no write reaches an unallocated page.
#[derive(Debug)]
pub(crate) struct Arena {
    pub(crate) path: PathBuf,
    pub(crate) map: ArenaMap,
    /// Written since the last checkpoint msynced it.
    pub(crate) dirty: AtomicBool,
    /// Blocks allocated on disk, header block included.
    pub(crate) grown: AtomicU32,
}

/// Changes since the last journal commit.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    pub(crate) records: Vec<Record>,
    /// Blocks freed since the last commit; reusable only once that free is committed.
    pub(crate) freed: Vec<u32>,
    /// Handles of queues whose end moved.
    pub(crate) dirty: Vec<u32>,
}

impl Changes {
    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty() && self.freed.is_empty() && self.dirty.is_empty()
    }
}

/// Geometry of the arenas.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub(crate) block_size: u32,
    pub(crate) blocks_per_arena: u32,
    /// Entries per block.
    pub(crate) k: u64,
}

/// Arenas grow on disk in steps of this many bytes (or their whole size if smaller).
const GROW_STEP_BYTES: u64 = 1 << 20;

impl Geometry {
    pub(crate) fn arena_bytes(&self) -> u64 {
        u64::from(self.block_size) * u64::from(self.blocks_per_arena)
    }

    /// Blocks allocated per growth step.
    pub(crate) fn step_blocks(&self) -> u32 {
        let step = (GROW_STEP_BYTES / u64::from(self.block_size)).max(2);
        u32::try_from(step)
            .unwrap_or(u32::MAX)
            .min(self.blocks_per_arena)
    }
}

#[derive(Debug)]
pub(crate) struct Space {
    pub(crate) dir: PathBuf,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) geo: Geometry,
    arenas: RwLock<Vec<Arc<Arena>>>,
    free: Mutex<Vec<u32>>,
    /// Free blocks not promised to a writer, minus the safety margin; may go negative.
    unreserved: AtomicI64,
    changes: Mutex<Changes>,
    /// Serializes every mutation of queues with checkpoints (which msync the arenas).
    write_lock: Mutex<()>,
    arena_retry_at: Mutex<Option<Instant>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Space {
    pub(crate) fn new(dir: PathBuf, storage: Arc<dyn Storage>, geo: Geometry) -> Self {
        Self {
            dir,
            storage,
            geo,
            arenas: RwLock::new(Vec::new()),
            free: Mutex::new(Vec::new()),
            unreserved: AtomicI64::new(0),
            changes: Mutex::new(Changes::default()),
            write_lock: Mutex::new(()),
            arena_retry_at: Mutex::new(None),
        }
    }

    pub(crate) fn write_lock(&self) -> MutexGuard<'_, ()> {
        lock(&self.write_lock)
    }

    pub(crate) fn arenas(&self) -> Vec<Arc<Arena>> {
        self.arenas
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn arena_count(&self) -> u32 {
        let n = self
            .arenas
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn arena(&self, addr: u32) -> Option<(Arc<Arena>, usize)> {
        let no = addr / self.geo.blocks_per_arena;
        let index = addr % self.geo.blocks_per_arena;
        let arena = self
            .arenas
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(no as usize)
            .cloned()?;
        Some((arena, index as usize * self.geo.block_size as usize))
    }

    /// Where block `addr` lives: its arena file and byte offset (for damage tests).
    pub(crate) fn location(&self, addr: u32) -> Option<(PathBuf, u64)> {
        self.arena(addr).map(|(a, at)| (a.path.clone(), at as u64))
    }

    /// Maps an existing arena at open; it becomes number `arenas.len()`.
    pub(crate) fn adopt(&self, path: PathBuf, map: ArenaMap) {
        self.arenas
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::new(Arena {
                path,
                map,
                dirty: AtomicBool::new(false),
                grown: AtomicU32::new(0),
            }));
    }

    /// At open: allocates (again; a no-op for allocated blocks) the first `blocks` blocks
    /// of arena `no`, the part that may hold referenced blocks.
    pub(crate) fn set_grown(&self, no: u32, blocks: u32) -> Result<()> {
        let Some(a) = self.arenas().get(no as usize).cloned() else {
            return Ok(());
        };
        let step = self.geo.step_blocks();
        let blocks = blocks
            .max(1)
            .div_ceil(step)
            .saturating_mul(step)
            .min(self.geo.blocks_per_arena);
        self.allocate(&a.path, blocks)?;
        a.grown.store(blocks, Ordering::Release);
        Ok(())
    }

    /// Blocks allocated in arena `no`.
    pub(crate) fn grown(&self, no: u32) -> u32 {
        self.arenas()
            .get(no as usize)
            .map_or(0, |a| a.grown.load(Ordering::Acquire))
    }

    fn allocate(&self, path: &Path, blocks: u32) -> Result<()> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("opening arena", path, e))?;
        self.storage
            .allocate(
                path,
                &file,
                u64::from(blocks) * u64::from(self.geo.block_size),
            )
            .map_err(|e| Error::io("allocating arena blocks", path, e))
    }

    /// Allocates the next step of the last arena; false when it is full (or none exists).
    fn grow_last(&self) -> Result<bool> {
        let arenas = self.arenas.read().unwrap_or_else(PoisonError::into_inner);
        let Some(a) = arenas.last() else {
            return Ok(false);
        };
        let no = arenas.len() - 1;
        let grown = a.grown.load(Ordering::Acquire);
        if grown >= self.geo.blocks_per_arena {
            return Ok(false);
        }
        let next = grown
            .saturating_add(self.geo.step_blocks())
            .min(self.geo.blocks_per_arena);
        self.allocate(&a.path, next)?;
        a.grown.store(next, Ordering::Release);
        let first = u32::try_from(no).unwrap_or(u32::MAX) * self.geo.blocks_per_arena;
        lock(&self.free).extend((first + grown..first + next).rev());
        self.unreserved
            .fetch_add(i64::from(next - grown), Ordering::AcqRel);
        Ok(true)
    }

    /// More blocks: the next step of the last arena, or a new arena.
    fn grow(&self) -> Result<()> {
        if self.grow_last()? {
            return Ok(());
        }
        self.add_arena()
    }

    /// Sets the free list at open from the blocks no queue references.
    pub(crate) fn set_free(&self, mut free: Vec<u32>) {
        // Popped from the end: low addresses first, so a young store stays compact.
        free.sort_unstable_by(|a, b| b.cmp(a));
        *lock(&self.free) = free;
        self.recompute_reservations();
    }

    /// Creates, allocates in full, and maps a new arena.
    pub(crate) fn add_arena(&self) -> Result<()> {
        let mut arenas = self.arenas.write().unwrap_or_else(PoisonError::into_inner);
        let no = u32::try_from(arenas.len())
            .map_err(|_| Error::InvalidConfig("too many arenas".into()))?;
        let path = self.dir.join(format::arena_file_name(no));
        // A leftover from a crash during creation is not referenced by anything.
        let _ = self.storage.remove(&path);
        let step = self.geo.step_blocks();
        let file = self
            .storage
            .create_segment(&path, u64::from(step) * u64::from(self.geo.block_size))
            .map_err(|e| Error::io("creating arena", &path, e))?;
        // Full length, so block addresses never move; only the first step is allocated,
        // and only allocated blocks are handed out (rule 1 of `mmap`).
        if let Err(e) = file.set_len(self.geo.arena_bytes()) {
            drop(file);
            let _ = self.storage.remove(&path);
            return Err(Error::io("sizing arena", &path, e));
        }
        let map = ArenaMap::map(&file).map_err(|e| Error::io("mapping", &path, e))?;
        drop(file);
        let header = ArenaHeader {
            block_size: self.geo.block_size,
            arena_no: no,
            blocks: self.geo.blocks_per_arena,
        }
        .encode();
        map.write(0, &header);
        let mut flush = || map.flush();
        self.storage
            .sync_mapped(&path, 0, &header, &mut flush)
            .and_then(|()| self.storage.sync_dir(&self.dir))
            .map_err(|e| Error::io("syncing new arena", &path, e))?;
        arenas.push(Arc::new(Arena {
            path,
            map,
            dirty: AtomicBool::new(false),
            grown: AtomicU32::new(step),
        }));
        drop(arenas);
        let first = no * self.geo.blocks_per_arena;
        let mut free = lock(&self.free);
        free.extend((first + 1..first + step).rev());
        drop(free);
        self.unreserved
            .fetch_add(i64::from(step - 1), Ordering::AcqRel);
        self.push_record(Record::ArenaAdded { arena_no: no });
        tracing::debug!(arena = no, "consume-queue arena added");
        Ok(())
    }

    /// `grow`, unless it failed less than a second ago (a full disk is not retried on
    /// every send).
    fn grow_throttled(&self) -> Result<()> {
        let mut retry = lock(&self.arena_retry_at);
        if retry.is_some_and(|at| Instant::now() < at) {
            return Err(Error::io(
                "creating arena (retry pending)",
                &self.dir,
                std::io::Error::from_raw_os_error(libc::ENOSPC),
            ));
        }
        match self.grow() {
            Ok(()) => {
                *retry = None;
                Ok(())
            }
            Err(e) => {
                *retry = Some(Instant::now() + ARENA_RETRY);
                Err(e)
            }
        }
    }

    /// Keeps spare blocks allocated ahead of need, off the write path: grows when fewer
    /// than half a growth step is free.
    ///
    /// # Errors
    /// Allocating failed (`ENOSPC` on a full disk).
    pub(crate) fn ensure_spare(&self) -> Result<()> {
        if self.unreserved.load(Ordering::Acquire) < i64::from(self.geo.step_blocks() / 2) {
            self.grow_throttled()?;
        }
        Ok(())
    }

    /// Promises `n` blocks to a writer; creates an arena if needed.
    ///
    /// # Errors
    /// No room for the blocks and no arena could be created (disk full).
    pub(crate) fn reserve(&self, n: u64) -> Result<()> {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        if n == 0 {
            return Ok(());
        }
        loop {
            let cur = self.unreserved.load(Ordering::Acquire);
            if cur >= n {
                if self
                    .unreserved
                    .compare_exchange(cur, cur - n, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Ok(());
                }
                continue;
            }
            self.grow_throttled()?;
        }
    }

    /// Gives back blocks promised by [`Space::reserve`] that will not be used.
    pub(crate) fn unreserve(&self, n: u64) {
        self.unreserved
            .fetch_add(i64::try_from(n).unwrap_or(i64::MAX), Ordering::AcqRel);
    }

    /// Resets the promise count when no writer holds a promise (everything dispatched).
    pub(crate) fn recompute_reservations(&self) {
        let free = i64::try_from(lock(&self.free).len()).unwrap_or(i64::MAX);
        self.unreserved
            .store(free - SAFETY_BLOCKS, Ordering::Release);
    }

    /// Free blocks not promised to writers.
    pub(crate) fn unreserved(&self) -> i64 {
        self.unreserved.load(Ordering::Acquire)
    }

    /// Takes a free block for a queue (promised earlier, or from the safety margin).
    pub(crate) fn take_block(&self) -> Result<u32> {
        if let Some(b) = lock(&self.free).pop() {
            return Ok(b);
        }
        self.grow()?;
        lock(&self.free)
            .pop()
            .ok_or_else(|| Error::InvalidConfig("arena without blocks".into()))
    }

    pub(crate) fn write_header(&self, addr: u32, h: &BlockHeader) -> bool {
        match self.arena(addr) {
            Some((a, at)) => {
                a.dirty.store(true, Ordering::Release);
                a.map.write(at, &h.encode())
            }
            None => false,
        }
    }

    pub(crate) fn read_header(&self, addr: u32) -> Option<BlockHeader> {
        let (a, at) = self.arena(addr)?;
        let mut b = [0u8; BLOCK_HEADER_LEN];
        a.map.read(at, &mut b).then(|| BlockHeader::decode(&b))
    }

    /// Writes encoded entries into slots from `slot` on of block `addr`.
    pub(crate) fn write_slots(&self, addr: u32, slot: u64, bytes: &[u8]) -> bool {
        match self.arena(addr) {
            Some((a, at)) => {
                a.dirty.store(true, Ordering::Release);
                a.map
                    .write(at + BLOCK_HEADER_LEN + slot as usize * ENTRY_SIZE, bytes)
            }
            None => false,
        }
    }

    pub(crate) fn read_slots(&self, addr: u32, slot: u64, out: &mut [u8]) -> bool {
        match self.arena(addr) {
            Some((a, at)) => a
                .map
                .read(at + BLOCK_HEADER_LEN + slot as usize * ENTRY_SIZE, out),
            None => false,
        }
    }

    pub(crate) fn push_record(&self, r: Record) {
        lock(&self.changes).records.push(r);
    }

    pub(crate) fn free_later(&self, blocks: impl IntoIterator<Item = u32>) {
        lock(&self.changes).freed.extend(blocks);
    }

    pub(crate) fn mark_dirty(&self, handle: u32) {
        lock(&self.changes).dirty.push(handle);
    }

    pub(crate) fn take_changes(&self) -> Changes {
        std::mem::take(&mut *lock(&self.changes))
    }

    /// Puts back changes a failed commit did not write, ahead of newer ones.
    pub(crate) fn restore_changes(&self, mut old: Changes) {
        let mut c = lock(&self.changes);
        old.records.append(&mut c.records);
        old.freed.append(&mut c.freed);
        old.dirty.append(&mut c.dirty);
        *c = old;
    }

    /// Makes blocks whose free was committed reusable.
    pub(crate) fn release(&self, blocks: Vec<u32>) {
        let n = i64::try_from(blocks.len()).unwrap_or(i64::MAX);
        lock(&self.free).extend(blocks);
        self.unreserved.fetch_add(n, Ordering::AcqRel);
    }

    /// Msyncs every arena written since the last call, through the storage seam.
    pub(crate) fn sync_arenas(&self) -> Result<()> {
        for a in self.arenas() {
            if a.dirty.swap(false, Ordering::AcqRel) {
                // Only the allocated prefix: the seam may copy it, and reading holes of a
                // mapping allocates pages on some file systems.
                let grown = a.grown.load(Ordering::Acquire) as usize * self.geo.block_size as usize;
                let r = a.map.with_bytes(|bytes| {
                    let mut flush = || a.map.flush();
                    let prefix = &bytes[..grown.min(bytes.len())];
                    self.storage.sync_mapped(&a.path, 0, prefix, &mut flush)
                });
                if let Err(e) = r {
                    a.dirty.store(true, Ordering::Release);
                    return Err(Error::io("syncing arena", &a.path, e));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn arena_path(&self, no: u32) -> PathBuf {
        self.dir.join(format::arena_file_name(no))
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}
