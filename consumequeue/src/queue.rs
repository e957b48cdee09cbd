//! One consume queue: a list of blocks in the shared arenas, addressed by logical offset.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::format::{BlockHeader, Entry, Record, ENTRY_SIZE};
use crate::space::Space;
use crate::{Error, QueueOffset, Result};

/// The block list of a queue: `blocks[i]` holds entries `(first_block + i) * k ..`.
#[derive(Debug, Default)]
pub(crate) struct Dir {
    pub(crate) epoch: u32,
    pub(crate) first_block: u64,
    pub(crate) blocks: Vec<u32>,
    pub(crate) dropped: bool,
}

/// The index of one (topic, queue id): append-only entries addressed by logical offset.
///
/// One writer (the store's dispatcher) and any number of readers; all methods take `&self`.
/// `min_offset`/`max_offset` are lock-free; reads take a shared lock for the copy only.
#[derive(Debug)]
pub struct ConsumeQueue {
    space: Arc<Space>,
    handle: u32,
    topic: Arc<str>,
    queue_id: u32,
    min: AtomicU64,
    max: AtomicU64,
    last_phys_end: AtomicU64,
    /// Its end moved since the last checkpoint.
    dirty: AtomicBool,
    dir: RwLock<Dir>,
}

/// What a queue is made of when loaded from the journal.
pub(crate) struct Parts {
    pub(crate) handle: u32,
    pub(crate) topic: Arc<str>,
    pub(crate) queue_id: u32,
    pub(crate) min: u64,
    pub(crate) max: u64,
    pub(crate) last_phys_end: u64,
    pub(crate) dir: Dir,
}

impl ConsumeQueue {
    pub(crate) fn from_parts(space: Arc<Space>, p: Parts) -> Self {
        Self {
            space,
            handle: p.handle,
            topic: p.topic,
            queue_id: p.queue_id,
            min: AtomicU64::new(p.min),
            max: AtomicU64::new(p.max),
            last_phys_end: AtomicU64::new(p.last_phys_end),
            dirty: AtomicBool::new(false),
            dir: RwLock::new(p.dir),
        }
    }

    /// The store's handle of this queue (written in its block headers).
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// Topic of the queue.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Queue id inside the topic.
    pub fn queue_id(&self) -> u32 {
        self.queue_id
    }

    /// Smallest retained logical offset.
    pub fn min_offset(&self) -> QueueOffset {
        QueueOffset::new(self.min.load(Ordering::Acquire))
    }

    /// One past the last entry (the offset the next append must use).
    pub fn max_offset(&self) -> QueueOffset {
        QueueOffset::new(self.max.load(Ordering::Acquire))
    }

    /// Commit-log end of the last entry's record (0 when empty).
    pub fn last_physical_end(&self) -> u64 {
        self.last_phys_end.load(Ordering::Acquire)
    }

    /// Appends one entry at `offset`, which must equal `max_offset()`.
    ///
    /// # Errors
    /// See [`ConsumeQueue::append_batch`].
    pub fn append(&self, offset: QueueOffset, entry: Entry) -> Result<()> {
        self.append_batch(offset, &[entry])
    }

    /// Appends `entries` starting at `offset`, which must equal `max_offset()`.
    ///
    /// # Errors
    /// `NotContiguous` for a wrong offset, `InvalidEntry` for a zero-size entry, `Dropped`,
    /// I/O errors creating an arena when no block is free.
    pub fn append_batch(&self, offset: QueueOffset, entries: &[Entry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let _w = self.space.write_lock();
        let mut d = self.exclusive();
        if d.dropped {
            return Err(Error::Dropped);
        }
        let mut at = self.max.load(Ordering::Acquire);
        if offset.get() != at {
            return Err(Error::NotContiguous {
                expected: at,
                got: offset.get(),
            });
        }
        if let Some(i) = entries.iter().position(|e| e.size == 0) {
            return Err(Error::InvalidEntry {
                offset: at + i as u64,
                reason: "size 0 is never a record",
            });
        }
        let k = self.space.geo.k;
        let mut rest = entries;
        let mut buf = Vec::with_capacity(entries.len().min(k as usize) * ENTRY_SIZE);
        while !rest.is_empty() {
            let addr = self.block_for_append(&mut d, at)?;
            let slot = at % k;
            let room = usize::try_from(k - slot).unwrap_or(usize::MAX);
            let (now, later) = rest.split_at(room.min(rest.len()));
            buf.clear();
            for e in now {
                buf.extend_from_slice(&e.encode());
            }
            if !self.space.write_slots(addr, slot, &buf) {
                return Err(self.mismatch(at / k, "block outside the mapped arenas"));
            }
            at += now.len() as u64;
            if let Some(last) = now.last() {
                self.last_phys_end
                    .store(last.physical_end(), Ordering::Release);
            }
            // Publish per block so a failure on the next block keeps what was written.
            self.max.store(at, Ordering::Release);
            rest = later;
        }
        self.touch();
        Ok(())
    }

    /// The block that holds offset `at`, allocated and journaled if it is the next one.
    fn block_for_append(&self, d: &mut Dir, at: u64) -> Result<u32> {
        let k = self.space.geo.k;
        let index = at / k;
        if d.blocks.is_empty() && index != d.first_block {
            d.first_block = index;
        }
        let rel = index
            .checked_sub(d.first_block)
            .and_then(|r| usize::try_from(r).ok())
            .ok_or_else(|| self.mismatch(index, "append below the first block"))?;
        if let Some(addr) = d.blocks.get(rel) {
            return Ok(*addr);
        }
        let addr = self.space.take_block()?;
        let header = BlockHeader {
            queue: self.handle,
            epoch: d.epoch,
            first_offset: index * k,
        };
        if !self.space.write_header(addr, &header) {
            return Err(self.mismatch(index, "block outside the mapped arenas"));
        }
        d.blocks.push(addr);
        self.space.push_record(Record::BlockAlloc {
            handle: self.handle,
            block_index: index,
            addr,
        });
        Ok(addr)
    }

    /// Entry at `offset`, or `None` outside `[min_offset, max_offset)` or when its block
    /// does not belong to this queue (damage).
    pub fn get(&self, offset: QueueOffset) -> Option<Entry> {
        let mut out = Vec::with_capacity(1);
        match self.read(offset, 1, &mut out) {
            Ok(1) => out.pop(),
            _ => None,
        }
    }

    /// Appends up to `max_count` entries starting at `from` to `out`; returns how many.
    /// Reading at `max_offset()` returns 0.
    ///
    /// # Errors
    /// `OutOfRange` when `from` is below `min_offset()` or past `max_offset()`;
    /// `BlockMismatch` when a block's header is not this queue's (lost or damaged block).
    pub fn read(&self, from: QueueOffset, max_count: usize, out: &mut Vec<Entry>) -> Result<usize> {
        let d = self.shared();
        let (min, max) = (
            self.min.load(Ordering::Acquire),
            self.max.load(Ordering::Acquire),
        );
        let mut at = from.get();
        if at < min || at > max {
            return Err(Error::OutOfRange {
                requested: at,
                min,
                max,
            });
        }
        let end = max.min(at.saturating_add(max_count as u64));
        let k = self.space.geo.k;
        let start = out.len();
        let mut buf = Vec::new();
        while at < end {
            let index = at / k;
            let addr = self.checked_block(&d, index)?;
            let slot = at % k;
            let n = (k - slot).min(end - at);
            buf.resize(n as usize * ENTRY_SIZE, 0);
            if !self.space.read_slots(addr, slot, &mut buf) {
                return Err(self.mismatch(index, "block outside the mapped arenas"));
            }
            for chunk in buf.chunks_exact(ENTRY_SIZE) {
                let mut e = [0u8; ENTRY_SIZE];
                e.copy_from_slice(chunk);
                out.push(Entry::decode(&e));
            }
            at += n;
        }
        Ok(out.len() - start)
    }

    /// The address of block `index`, after checking its header names this queue.
    fn checked_block(&self, d: &Dir, index: u64) -> Result<u32> {
        let addr = index
            .checked_sub(d.first_block)
            .and_then(|r| d.blocks.get(usize::try_from(r).ok()?))
            .copied()
            .ok_or_else(|| self.mismatch(index, "block missing from the queue's directory"))?;
        let expected = BlockHeader {
            queue: self.handle,
            epoch: d.epoch,
            first_offset: index * self.space.geo.k,
        };
        match self.space.read_header(addr) {
            Some(h) if h == expected => Ok(addr),
            Some(h) => Err(self.mismatch(index, &format!("header {h:?}, expected {expected:?}"))),
            None => Err(self.mismatch(index, "block outside the mapped arenas")),
        }
    }

    fn mismatch(&self, block_index: u64, reason: &str) -> Error {
        Error::BlockMismatch {
            handle: self.handle,
            block_index,
            reason: reason.to_owned(),
        }
    }

    /// Drops every entry whose record does not end at or before `log_end` (the recovered end
    /// of the commit log). Returns the new `max_offset()`.
    ///
    /// # Errors
    /// None today; kept fallible for the journal's sake.
    pub fn truncate_physical(&self, log_end: u64) -> Result<QueueOffset> {
        let min = self.min.load(Ordering::Acquire);
        let mut new_max = self.max.load(Ordering::Acquire);
        while new_max > min {
            match self.get(QueueOffset::new(new_max - 1)) {
                Some(e) if e.physical_end() <= log_end => break,
                _ => new_max -= 1,
            }
        }
        self.truncate_to(QueueOffset::new(new_max))?;
        Ok(QueueOffset::new(new_max))
    }

    /// Drops every entry at or after `offset`. A no-op when `offset >= max_offset()`.
    ///
    /// # Errors
    /// None today; kept fallible for the journal's sake.
    pub fn truncate_to(&self, offset: QueueOffset) -> Result<()> {
        let _w = self.space.write_lock();
        let mut d = self.exclusive();
        let offset = offset.get();
        if offset >= self.max.load(Ordering::Acquire) || d.dropped {
            return Ok(());
        }
        let k = self.space.geo.k;
        if offset < d.first_block * k {
            drop(d);
            drop(_w);
            return self.reset(QueueOffset::new(offset));
        }
        let keep = usize::try_from(offset.div_ceil(k) - d.first_block).unwrap_or(usize::MAX);
        if keep < d.blocks.len() {
            let freed: Vec<u32> = d.blocks.drain(keep..).collect();
            self.space.free_later(freed);
        }
        self.max.store(offset, Ordering::Release);
        self.min.fetch_min(offset, Ordering::AcqRel);
        drop(d);
        let last_phys_end = if offset > self.min.load(Ordering::Acquire) {
            self.get(QueueOffset::new(offset - 1))
                .map_or(0, |e| e.physical_end())
        } else {
            0
        };
        self.last_phys_end.store(last_phys_end, Ordering::Release);
        self.space.push_record(Record::QueueTruncate {
            handle: self.handle,
            max: offset,
            last_phys_end,
        });
        self.touch();
        Ok(())
    }

    /// Empties the queue and restarts it at `offset` (min = max = `offset`) with a new
    /// epoch; used when the index is rebuilt from a log whose older records are gone.
    ///
    /// # Errors
    /// None today; kept fallible for the journal's sake.
    pub fn reset(&self, offset: QueueOffset) -> Result<()> {
        let _w = self.space.write_lock();
        let mut d = self.exclusive();
        if d.dropped {
            return Err(Error::Dropped);
        }
        let offset = offset.get();
        d.epoch = d.epoch.wrapping_add(1);
        d.first_block = offset / self.space.geo.k;
        let freed = std::mem::take(&mut d.blocks);
        self.space.free_later(freed);
        self.min.store(offset, Ordering::Release);
        self.max.store(offset, Ordering::Release);
        self.last_phys_end.store(0, Ordering::Release);
        self.space.push_record(Record::QueueReset {
            handle: self.handle,
            epoch: d.epoch,
            offset,
        });
        self.touch();
        Ok(())
    }

    /// Advances `min_offset()` past every entry whose record lies below `min_physical`
    /// (the commit log's minimum after retention) and frees whole blocks below it.
    /// Returns the new minimum.
    ///
    /// # Errors
    /// None today; kept fallible for the journal's sake.
    pub fn delete_below_physical(&self, min_physical: u64) -> Result<QueueOffset> {
        // Physical offsets grow with logical ones: binary search for the first kept entry.
        let mut lo = self.min.load(Ordering::Acquire);
        let mut hi = self.max.load(Ordering::Acquire);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self
                .get(QueueOffset::new(mid))
                .is_none_or(|e| e.physical_offset < min_physical)
            {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let _w = self.space.write_lock();
        let mut d = self.exclusive();
        if d.dropped || lo <= self.min.load(Ordering::Acquire) {
            return Ok(self.min_offset());
        }
        let lo = lo.min(self.max.load(Ordering::Acquire));
        let first_kept = lo / self.space.geo.k;
        let drop_n = usize::try_from(first_kept.saturating_sub(d.first_block))
            .unwrap_or(usize::MAX)
            .min(d.blocks.len());
        let freed: Vec<u32> = d.blocks.drain(..drop_n).collect();
        self.space.free_later(freed);
        d.first_block = d.first_block.max(first_kept);
        self.min.store(lo, Ordering::Release);
        self.space.push_record(Record::QueueTrim {
            handle: self.handle,
            min: lo,
            first_kept_block_index: d.first_block,
        });
        Ok(QueueOffset::new(lo))
    }

    /// First offset whose record was stored at or after `timestamp_ms`, by binary search;
    /// `max_offset()` when every record is older. `store_timestamp` looks a record's store
    /// time up in the commit log; `None` (record gone) counts as older.
    pub fn search_time<F>(&self, timestamp_ms: u64, mut store_timestamp: F) -> QueueOffset
    where
        F: FnMut(&Entry) -> Option<u64>,
    {
        let mut lo = self.min.load(Ordering::Acquire);
        let mut hi = self.max.load(Ordering::Acquire);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let ts = self
                .get(QueueOffset::new(mid))
                .and_then(|e| store_timestamp(&e));
            if ts.is_none_or(|t| t < timestamp_ms) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        QueueOffset::new(lo)
    }

    /// Where this queue's blocks sit: arena file and byte offset of each, in block order.
    /// For damage tests, which must not depend on the layout.
    pub fn debug_block_locations(&self) -> Vec<(PathBuf, u64)> {
        let d = self.shared();
        d.blocks
            .iter()
            .filter_map(|a| self.space.location(*a))
            .collect()
    }

    /// Marks the queue deleted and frees its blocks (the store forgets it).
    pub(crate) fn drop_queue(&self) {
        let _w = self.space.write_lock();
        let mut d = self.exclusive();
        if d.dropped {
            return;
        }
        d.dropped = true;
        d.epoch = d.epoch.wrapping_add(1);
        let freed = std::mem::take(&mut d.blocks);
        self.space.free_later(freed);
        self.min.store(0, Ordering::Release);
        self.max.store(0, Ordering::Release);
        self.space.push_record(Record::QueueDrop {
            handle: self.handle,
        });
    }

    /// Snapshot view: (epoch, first block, blocks, dropped).
    pub(crate) fn with_dir<R>(&self, f: impl FnOnce(&Dir) -> R) -> R {
        f(&self.shared())
    }

    /// Clears the dirty flag; true if the queue's end moved since the last call.
    pub(crate) fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    fn touch(&self) {
        if !self.dirty.swap(true, Ordering::AcqRel) {
            self.space.mark_dirty(self.handle);
        }
    }

    /// Sets the dirty flag without queueing the handle (it is queued already).
    pub(crate) fn mark_dirty_flag(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    fn shared(&self) -> RwLockReadGuard<'_, Dir> {
        // Every mutation publishes `max` last, so a panic mid-way leaves readable data.
        self.dir.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn exclusive(&self) -> RwLockWriteGuard<'_, Dir> {
        self.dir.write().unwrap_or_else(PoisonError::into_inner)
    }
}
