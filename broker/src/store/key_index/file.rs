//! One index file: create, open (checked), append entries, walk a slot's chain.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use commitlog::storage::Storage;

use super::format::{self, Entry, Header, ENTRY_LEN, HEADER_LEN, SLOT_LEN};
use super::map::IndexMap;
use crate::store::{StoreError, StoreResult};

/// Entries are allocated on disk this many bytes at a time before they are written.
const ALLOCATION_STEP_BYTES: u64 = 1 << 20;

/// Slots are prefetched this many entries ahead of the one being appended.
const PREFETCH_AHEAD: usize = 16;

/// An entry a dispatch round has read but not yet appended.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Queued {
    pub(crate) key_hash: u32,
    pub(crate) phys: u64,
    pub(crate) ts: u64,
}

/// Why a file cannot be used: it is rebuilt from the commit log.
#[derive(Debug)]
pub(crate) struct Damaged {
    pub(crate) path: PathBuf,
    pub(crate) reason: String,
}

impl Damaged {
    fn new(path: &Path, reason: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// An open, mapped index file.
#[derive(Debug)]
pub(crate) struct IndexFile {
    path: PathBuf,
    file: File,
    map: Arc<IndexMap>,
    header: Header,
    /// Bytes from the start allocated on disk.
    allocated: u64,
    /// Written since the last msync.
    pub(crate) dirty: bool,
}

impl IndexFile {
    /// Creates `<dir>/<start>.kix` at its full length, with the header and slots allocated.
    pub(crate) fn create(
        storage: &dyn Storage,
        dir: &Path,
        start: u64,
        slot_count: u32,
        max_entries: u32,
    ) -> StoreResult<Self> {
        let path = format::file_path(dir, start);
        let len = format::file_len(slot_count, max_entries);
        let allocated = format::slot_at(slot_count)
            .saturating_add(ALLOCATION_STEP_BYTES)
            .min(len);
        let file = storage
            .create_segment(&path, allocated)
            .map_err(|e| StoreError::io("creating key index file", &path, e))?;
        // Full length, so entry addresses never move; only allocated bytes are written.
        let sized = file
            .set_len(len)
            .and_then(|()| IndexMap::map(&file))
            .map(Arc::new);
        let map = match sized {
            Ok(map) => map,
            Err(e) => {
                drop(file);
                let _ = storage.remove(&path);
                return Err(StoreError::io("sizing key index file", &path, e));
            }
        };
        let f = Self {
            path,
            file,
            map,
            header: Header::empty(slot_count, max_entries, start),
            allocated,
            dirty: true,
        };
        f.publish();
        Ok(f)
    }

    /// Opens a file written before, checking its header, length and name. `entries`
    /// overrides the header's entry count (the checkpointed count of the newest file).
    pub(crate) fn open(
        storage: &dyn Storage,
        path: &Path,
        start: u64,
        entries: Option<u32>,
    ) -> Result<StoreResult<Self>, Damaged> {
        let io = |op: &'static str, e: std::io::Error| -> Result<StoreResult<Self>, Damaged> {
            Ok(Err(StoreError::io(op, path, e)))
        };
        let file = match storage.open_segment(path) {
            Ok(f) => f,
            Err(e) => return io("opening key index file", e),
        };
        let len = match file.metadata() {
            Ok(m) => m.len(),
            Err(e) => return io("reading key index file size", e),
        };
        let mut raw = [0u8; HEADER_LEN];
        if len < HEADER_LEN as u64 || file.read_exact_at(&mut raw, 0).is_err() {
            return Err(Damaged::new(path, "shorter than its header"));
        }
        let mut header = Header::decode(&raw).map_err(|r| Damaged::new(path, r))?;
        if len != format::file_len(header.slot_count, header.max_entries) {
            return Err(Damaged::new(
                path,
                format!("length {len} does not match its header (truncated?)"),
            ));
        }
        if header.first_phys != start {
            return Err(Damaged::new(
                path,
                "header start differs from the file name",
            ));
        }
        if let Some(n) = entries {
            if n > header.max_entries {
                return Err(Damaged::new(
                    path,
                    "checkpoint counts more entries than fit",
                ));
            }
            header.entry_count = n;
        }
        let used = format::entry_at(header.slot_count, header.entry_count);
        let allocated = used
            .div_ceil(ALLOCATION_STEP_BYTES)
            .saturating_mul(ALLOCATION_STEP_BYTES)
            .max(format::slot_at(header.slot_count))
            .min(len);
        // Allocating what is allocated already is a no-op; this makes sure (rule 1 of
        // `map`) even if a crash left a hole.
        if let Err(e) = storage.allocate(path, &file, allocated) {
            return io("allocating key index file", e);
        }
        let map = match IndexMap::map(&file) {
            Ok(m) => Arc::new(m),
            Err(e) => return io("mapping key index file", e),
        };
        Ok(Ok(Self {
            path: path.to_path_buf(),
            file,
            map,
            header,
            allocated,
            dirty: false,
        }))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn header(&self) -> &Header {
        &self.header
    }

    /// Makes room for `n` more entries: false when they do not fit (time to roll).
    pub(crate) fn reserve(&mut self, storage: &dyn Storage, n: u32) -> StoreResult<bool> {
        let h = &self.header;
        let Some(end) = h.entry_count.checked_add(n).filter(|&e| e <= h.max_entries) else {
            return Ok(false);
        };
        let need = format::entry_at(h.slot_count, end);
        if need > self.allocated {
            let len = format::file_len(h.slot_count, h.max_entries);
            let grown = need
                .div_ceil(ALLOCATION_STEP_BYTES)
                .saturating_mul(ALLOCATION_STEP_BYTES)
                .min(len);
            storage
                .allocate_from(&self.path, &self.file, self.allocated, grown)
                .map_err(|e| StoreError::io("allocating key index entries", &self.path, e))?;
            self.allocated = grown;
        }
        Ok(true)
    }

    /// Appends `batch` in order; [`IndexFile::reserve`] made room for it. Each entry reads
    /// and writes its slot, a random place in the slot table (a cache and TLB miss):
    /// the slots of the entries a little ahead are prefetched, so the misses overlap
    /// instead of stalling the writer once per entry.
    pub(crate) fn append_batch(&mut self, batch: &[Queued]) {
        let slots = self.header.slot_count;
        for q in batch.iter().take(PREFETCH_AHEAD) {
            self.map.prefetch(format::slot_at(q.key_hash % slots));
        }
        for (i, q) in batch.iter().enumerate() {
            if let Some(ahead) = batch.get(i + PREFETCH_AHEAD) {
                self.map.prefetch(format::slot_at(ahead.key_hash % slots));
            }
            self.append(q.key_hash, q.phys, q.ts);
        }
    }

    /// Appends an entry; [`IndexFile::reserve`] made room for it.
    pub(crate) fn append(&mut self, key_hash: u32, phys: u64, ts: u64) {
        let h = &mut self.header;
        let slot = format::slot_at(key_hash % h.slot_count);
        let at = format::entry_at(h.slot_count, h.entry_count);
        debug_assert!(at + ENTRY_LEN as u64 <= self.allocated);
        let mut raw = [0u8; SLOT_LEN];
        self.map.read(slot, &mut raw);
        let entry = Entry {
            key_hash,
            prev: u32::from_le_bytes(raw),
            phys,
            ts,
        };
        self.map.write(at, &entry.encode());
        h.entry_count += 1;
        self.map.write(slot, &h.entry_count.to_le_bytes());
        h.min_ts = h.min_ts.min(ts);
        h.max_ts = h.max_ts.max(ts);
        self.dirty = true;
    }

    /// Records that everything below `end` is indexed, in memory and in the mapped header.
    pub(crate) fn set_end(&mut self, end: u64) {
        if end > self.header.end_phys {
            self.header.end_phys = end;
            self.dirty = true;
        }
    }

    /// Writes the in-memory header to the mapping.
    pub(crate) fn publish(&self) {
        self.map.write(0, &self.header.encode());
    }

    /// Calls `f` with each entry of `key_hash`'s slot chain stored within `[from_ms,
    /// to_ms]` and carrying that hash, newest first, until it returns false.
    ///
    /// # Errors
    /// A chain that leaves the written entries or does not go strictly backwards.
    pub(crate) fn walk(
        &self,
        key_hash: u32,
        from_ms: u64,
        to_ms: u64,
        mut f: impl FnMut(&Entry) -> bool,
    ) -> Result<(), Damaged> {
        let h = &self.header;
        let mut raw = [0u8; SLOT_LEN];
        self.map
            .read(format::slot_at(key_hash % h.slot_count), &mut raw);
        let mut next = u32::from_le_bytes(raw);
        let mut newer = u32::MAX;
        while next != 0 {
            if next > h.entry_count || next >= newer {
                return Err(Damaged::new(
                    &self.path,
                    format!("chain link {next} is out of order"),
                ));
            }
            let e = self.entry(next - 1);
            if e.key_hash == key_hash && (from_ms..=to_ms).contains(&e.ts) && !f(&e) {
                return Ok(());
            }
            newer = next;
            next = e.prev;
        }
        Ok(())
    }

    /// Rebuilds the slots from the first `header.entry_count` entries (the rest, written
    /// after the last checkpoint, is dropped), checking every link and the time and offset
    /// ranges on the way; recomputes the header's ranges with `end` as the indexed end.
    pub(crate) fn rebuild_slots(&mut self, end: u64) -> Result<(), Damaged> {
        let count = self.header.entry_count;
        let slots = self.header.slot_count;
        let zeros = vec![0u8; 64 * 1024];
        let mut at = format::slot_at(0);
        while at < format::slot_at(slots) {
            let n = (format::slot_at(slots) - at).min(zeros.len() as u64);
            self.map.write(at, &zeros[..n as usize]);
            at += n;
        }
        let (mut min_ts, mut max_ts, mut last_phys) = (u64::MAX, 0, self.header.first_phys);
        let mut raw = [0u8; SLOT_LEN];
        for i in 0..count {
            let e = self.entry(i);
            let slot = format::slot_at(e.key_hash % slots);
            self.map.read(slot, &mut raw);
            if e.prev != u32::from_le_bytes(raw) {
                return Err(Damaged::new(
                    &self.path,
                    format!("entry {i} links to the wrong entry"),
                ));
            }
            if e.phys < last_phys || e.phys >= end {
                return Err(Damaged::new(
                    &self.path,
                    format!("entry {i} points outside the file's range"),
                ));
            }
            last_phys = e.phys;
            min_ts = min_ts.min(e.ts);
            max_ts = max_ts.max(e.ts);
            self.map.write(slot, &(i + 1).to_le_bytes());
        }
        self.header.min_ts = min_ts;
        self.header.max_ts = max_ts;
        self.header.end_phys = end.max(self.header.first_phys);
        self.dirty = true;
        self.publish();
        Ok(())
    }

    /// What a checkpoint must msync if the file changed since the last one: taken under
    /// the index's lock (the header is written to the mapping now), run outside it.
    pub(crate) fn sync_job(&mut self) -> Option<SyncJob> {
        if !self.dirty {
            return None;
        }
        self.publish();
        self.dirty = false;
        Some(SyncJob {
            path: self.path.clone(),
            map: Arc::clone(&self.map),
            entries_at: format::entry_at(self.header.slot_count, 0),
            entries_len: u64::from(self.header.entry_count) * ENTRY_LEN as u64,
        })
    }

    fn entry(&self, i: u32) -> Entry {
        let mut raw = [0u8; ENTRY_LEN];
        self.map
            .read(format::entry_at(self.header.slot_count, i), &mut raw);
        Entry::decode(&raw)
    }
}

/// An msync of one file, run without the index's lock while the dispatcher goes on
/// writing: entries below the count taken are never written again, and the slots of the
/// newest file are rebuilt from its entries at open, so what the sync catches of later
/// writes does not matter.
pub(crate) struct SyncJob {
    pub(crate) path: PathBuf,
    map: Arc<IndexMap>,
    entries_at: u64,
    entries_len: u64,
}

impl SyncJob {
    /// Msyncs the whole mapping; the storage seam is shown the immutable entries.
    pub(crate) fn run(&self, storage: &dyn Storage) -> StoreResult<()> {
        let map = &self.map;
        map.with_bytes(self.entries_at, self.entries_len, |bytes| {
            storage.sync_mapped(&self.path, self.entries_at, bytes, &mut || map.flush())
        })
        .map_err(|e| StoreError::io("syncing key index file", &self.path, e))
    }
}
