//! A consume queue: the ordered set of segments of one (topic, queue id).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::{Deserialize, Serialize};

use crate::format::{self, Entry, FileKind, ENTRY_SIZE};
use crate::segment::Segment;
use crate::{Error, QueueOffset, Result};

/// Consume-queue configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Entries per segment file (default 300,000, i.e. 6,000,000-byte files). Only new
    /// segments use it; existing ones keep the capacity they were created with.
    pub entries_per_segment: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            entries_per_segment: 300_000,
        }
    }
}

impl Config {
    fn validate(&self) -> Result<()> {
        let max = (isize::MAX as u64) / ENTRY_SIZE as u64;
        if self.entries_per_segment == 0 || self.entries_per_segment > max {
            return Err(Error::InvalidConfig(format!(
                "entries_per_segment must be in 1..={max}, got {}",
                self.entries_per_segment
            )));
        }
        Ok(())
    }
}

/// The index of one (topic, queue id): append-only entries addressed by logical offset.
///
/// One writer (the store's dispatcher) and any number of readers; all methods take `&self`.
/// `min_offset`/`max_offset` are lock-free; reads take a shared lock for the copy only.
#[derive(Debug)]
pub struct ConsumeQueue {
    dir: PathBuf,
    config: Config,
    segments: RwLock<Vec<Segment>>,
    min: AtomicU64,
    max: AtomicU64,
    /// Entries below this are msynced.
    flushed: AtomicU64,
    /// A segment file was created or removed since the folder was last fsynced.
    dir_dirty: AtomicBool,
}

impl ConsumeQueue {
    /// Opens (or creates) the queue in `dir`, recovering its end as the first empty slot.
    ///
    /// Entries after a hole (possible after a power loss, when pages reach the disk out of
    /// order) are cleared: the caller rebuilds them from the commit log.
    ///
    /// # Errors
    /// I/O failures, an invalid config, or a segment of an unknown format version.
    pub fn open(dir: impl Into<PathBuf>, config: Config) -> Result<Self> {
        config.validate()?;
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating folder", &dir, e))?;
        let mut segments = load_segments(&dir)?;
        let max = recover_end(&mut segments)?;
        let min = segments.first().map_or(max, Segment::base).min(max);
        Ok(Self {
            dir,
            config,
            segments: RwLock::new(segments),
            min: AtomicU64::new(min),
            max: AtomicU64::new(max),
            flushed: AtomicU64::new(max),
            dir_dirty: AtomicBool::new(true),
        })
    }

    /// The folder holding this queue's segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Smallest retained logical offset.
    pub fn min_offset(&self) -> QueueOffset {
        QueueOffset::new(self.min.load(Ordering::Acquire))
    }

    /// One past the last entry (the offset the next append must use).
    pub fn max_offset(&self) -> QueueOffset {
        QueueOffset::new(self.max.load(Ordering::Acquire))
    }

    /// Appends one entry at `offset`, which must equal `max_offset()`.
    ///
    /// # Errors
    /// See [`ConsumeQueue::append_batch`].
    pub fn append(&self, offset: QueueOffset, entry: Entry) -> Result<()> {
        self.append_batch(offset, &[entry])
    }

    /// Appends `entries` starting at `offset`, which must equal `max_offset()`; one lock
    /// acquisition for the whole batch.
    ///
    /// # Errors
    /// `NotContiguous` for a wrong offset, `InvalidEntry` for a zero-size entry (it would
    /// read back as an empty slot), I/O errors creating a segment.
    pub fn append_batch(&self, offset: QueueOffset, entries: &[Entry]) -> Result<()> {
        let mut segs = self.exclusive();
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
                reason: "size 0 is reserved for empty slots",
            });
        }
        let mut rest = entries;
        while !rest.is_empty() {
            if segs.last().is_none_or(|s| s.end() <= at) {
                segs.push(Segment::create(
                    &self.dir,
                    at,
                    self.config.entries_per_segment,
                )?);
                self.dir_dirty.store(true, Ordering::Release);
            }
            let Some(seg) = segs.last_mut() else { break };
            let room = usize::try_from(seg.end() - at).unwrap_or(usize::MAX);
            let (now, later) = rest.split_at(room.min(rest.len()));
            seg.write(at, now)?;
            at += now.len() as u64;
            // Publish per chunk so a failure on the next segment keeps what was written.
            self.max.store(at, Ordering::Release);
            rest = later;
        }
        Ok(())
    }

    /// Entry at `offset`, or `None` outside `[min_offset, max_offset)`.
    pub fn get(&self, offset: QueueOffset) -> Option<Entry> {
        let o = offset.get();
        if o < self.min.load(Ordering::Acquire) || o >= self.max.load(Ordering::Acquire) {
            return None;
        }
        let segs = self.shared();
        segs.get(segment_index(&segs, o)?)?.get(o)
    }

    /// Appends up to `max_count` entries starting at `from` to `out`; returns how many.
    /// Reading at `max_offset()` returns 0.
    ///
    /// # Errors
    /// `OutOfRange` when `from` is below `min_offset()` or past `max_offset()`.
    pub fn read(&self, from: QueueOffset, max_count: usize, out: &mut Vec<Entry>) -> Result<usize> {
        let segs = self.shared();
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
        out.reserve(usize::try_from(end - at).unwrap_or(0));
        let start = out.len();
        while at < end {
            let Some(seg) = segment_index(&segs, at).and_then(|i| segs.get(i)) else {
                break;
            };
            while at < end.min(seg.end()) {
                match seg.get(at) {
                    Some(e) => out.push(e),
                    None => return Ok(out.len() - start),
                }
                at += 1;
            }
        }
        Ok(out.len() - start)
    }

    /// Drops every entry whose record does not end at or before `log_end` (the recovered end
    /// of the commit log). Returns the new `max_offset()`.
    ///
    /// # Errors
    /// I/O errors while removing or flushing segments.
    pub fn truncate_physical(&self, log_end: u64) -> Result<QueueOffset> {
        let mut segs = self.exclusive();
        let min = self.min.load(Ordering::Acquire);
        let mut new_max = self.max.load(Ordering::Acquire);
        while new_max > min {
            let idx = segment_index(&segs, new_max - 1);
            let entry = idx
                .and_then(|i| segs.get(i))
                .and_then(|s| s.get(new_max - 1));
            match entry {
                Some(e) if e.physical_end() <= log_end => break,
                _ => new_max -= 1,
            }
        }
        self.truncate_locked(&mut segs, new_max)?;
        Ok(QueueOffset::new(new_max))
    }

    /// Drops every entry at or after `offset`. A no-op when `offset >= max_offset()`.
    ///
    /// # Errors
    /// I/O errors while removing, creating or flushing segments.
    pub fn truncate_to(&self, offset: QueueOffset) -> Result<()> {
        let mut segs = self.exclusive();
        if offset.get() < self.max.load(Ordering::Acquire) {
            self.truncate_locked(&mut segs, offset.get())?;
        }
        Ok(())
    }

    /// Empties the queue and restarts it at `offset` (min = max = `offset`); used when the
    /// index is rebuilt from a commit log whose older records were already deleted.
    ///
    /// # Errors
    /// I/O errors while removing or creating segments.
    pub fn reset(&self, offset: QueueOffset) -> Result<()> {
        let mut segs = self.exclusive();
        self.reset_locked(&mut segs, offset.get())
    }

    /// Deletes whole segments whose entries all point below `min_physical` (the commit log's
    /// minimum after retention) and advances `min_offset()` past every entry below it. The
    /// last segment is kept so the queue remembers its end. Returns the new minimum.
    ///
    /// # Errors
    /// I/O errors while removing files.
    pub fn delete_below_physical(&self, min_physical: u64) -> Result<QueueOffset> {
        let mut segs = self.exclusive();
        let max = self.max.load(Ordering::Acquire);
        while segs.len() > 1 {
            let last_in_first = segs.first().map(|s| s.end().min(max).saturating_sub(1));
            let below = last_in_first
                .and_then(|o| segs.first().and_then(|s| s.get(o)))
                .is_none_or(|e| e.physical_offset < min_physical);
            if !below {
                break;
            }
            let seg = segs.remove(0);
            let path = seg.path().to_path_buf();
            drop(seg);
            std::fs::remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
            self.dir_dirty.store(true, Ordering::Release);
        }
        // Physical offsets grow with logical ones, so the first kept entry is found by
        // binary search.
        let mut lo = self
            .min
            .load(Ordering::Acquire)
            .max(segs.first().map_or(max, Segment::base));
        let mut hi = max;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let e = segment_index(&segs, mid)
                .and_then(|i| segs.get(i))
                .and_then(|s| s.get(mid));
            if e.is_none_or(|e| e.physical_offset < min_physical) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        self.min.store(lo, Ordering::Release);
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

    /// Msyncs entries written since the last flush, and the folder if files came or went.
    ///
    /// # Errors
    /// I/O errors from msync or the folder fsync.
    pub fn flush(&self) -> Result<()> {
        let segs = self.shared();
        let from = self.flushed.load(Ordering::Acquire);
        let to = self.max.load(Ordering::Acquire);
        for seg in segs.iter().filter(|s| s.end() > from && s.base() < to) {
            seg.flush(from, to)?;
        }
        drop(segs);
        self.flushed.store(to, Ordering::Release);
        if self.dir_dirty.swap(false, Ordering::AcqRel) {
            if let Err(e) = sync_dir(&self.dir) {
                self.dir_dirty.store(true, Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Flushes and closes the queue.
    ///
    /// # Errors
    /// See [`ConsumeQueue::flush`].
    pub fn close(self) -> Result<()> {
        self.flush()
    }

    /// Deletes the queue's files and folder (the topic was deleted).
    ///
    /// # Errors
    /// I/O errors while removing.
    pub fn destroy(self) -> Result<()> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io("removing folder", &dir, e))
    }

    fn truncate_locked(&self, segs: &mut Vec<Segment>, offset: u64) -> Result<()> {
        let old_max = self.max.load(Ordering::Acquire);
        if segs.first().is_none_or(|s| offset < s.base()) {
            return self.reset_locked(segs, offset);
        }
        while segs.len() > 1 && segs.last().is_some_and(|s| s.base() > offset) {
            if let Some(seg) = segs.pop() {
                let path = seg.path().to_path_buf();
                drop(seg);
                std::fs::remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
                self.dir_dirty.store(true, Ordering::Release);
            }
        }
        if let Some(seg) = segs.last_mut() {
            seg.clear_from(offset);
            seg.flush(offset, old_max)?;
        }
        self.max.store(offset, Ordering::Release);
        self.min.fetch_min(offset, Ordering::AcqRel);
        self.flushed.fetch_min(offset, Ordering::AcqRel);
        Ok(())
    }

    fn reset_locked(&self, segs: &mut Vec<Segment>, offset: u64) -> Result<()> {
        for seg in segs.drain(..) {
            let path = seg.path().to_path_buf();
            drop(seg);
            std::fs::remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
        }
        self.dir_dirty.store(true, Ordering::Release);
        // Keep one (empty) segment at the new base so a reopen finds min = max = offset.
        segs.push(Segment::create(
            &self.dir,
            offset,
            self.config.entries_per_segment,
        )?);
        self.min.store(offset, Ordering::Release);
        self.max.store(offset, Ordering::Release);
        self.flushed.store(offset, Ordering::Release);
        Ok(())
    }

    fn shared(&self) -> RwLockReadGuard<'_, Vec<Segment>> {
        // A panic while holding the lock cannot leave segments half-updated in a way that
        // matters: every mutation publishes `max` last, so the data is still consistent.
        self.segments
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn exclusive(&self) -> RwLockWriteGuard<'_, Vec<Segment>> {
        self.segments
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Index of the segment holding logical `offset` (the last one whose base is `<= offset`).
fn segment_index(segs: &[Segment], offset: u64) -> Option<usize> {
    segs.partition_point(|s| s.base() <= offset).checked_sub(1)
}

fn load_segments(dir: &Path) -> Result<Vec<Segment>> {
    let mut bases = Vec::new();
    let listing = std::fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))?;
    for item in listing {
        let path = item.map_err(|e| Error::io("listing", dir, e))?.path();
        match format::parse_file_name(&path) {
            FileKind::Segment(base) => bases.push((base, path)),
            FileKind::OtherVersion => {
                return Err(Error::Corrupted {
                    path,
                    reason: format!(
                        "unsupported format version (this build reads v{})",
                        format::VERSION
                    ),
                })
            }
            FileKind::Unrelated => {}
        }
    }
    bases.sort_unstable_by_key(|(b, _)| *b);
    let mut segs = Vec::with_capacity(bases.len());
    let mut rest = bases.into_iter();
    for (base, path) in rest.by_ref() {
        match Segment::open(&path, base)? {
            Some(seg) => segs.push(seg),
            None => {
                // Holds no whole entry: it and every later segment (unreachable behind the
                // gap) go; the owner rebuilds the missing entries from the commit log.
                std::fs::remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
                break;
            }
        }
    }
    for (_, path) in rest {
        std::fs::remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
    }
    Ok(segs)
}

/// Finds the queue's end (first empty slot), clears anything written after it and removes
/// segments that start past it or that are not contiguous with their predecessor.
fn recover_end(segs: &mut Vec<Segment>) -> Result<u64> {
    let mut end = None;
    for (i, seg) in segs.iter().enumerate() {
        let contiguous = i == 0 || segs.get(i - 1).is_some_and(|p| p.end() == seg.base());
        if !contiguous {
            end = Some((i, segs[i - 1].end()));
            break;
        }
        // A full earlier segment has its last slot written; only then is skipping it safe.
        let last_written = seg.get(seg.end() - 1).is_some();
        if i + 1 < segs.len() && last_written {
            continue;
        }
        end = Some((i + 1, seg.first_empty_from(seg.base())));
        break;
    }
    let Some((keep, max)) = end else { return Ok(0) };
    for seg in segs.drain(keep..) {
        let path = seg.path().to_path_buf();
        drop(seg);
        std::fs::remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
    }
    if let Some(seg) = segs.last_mut() {
        seg.clear_from(max);
        seg.flush(max, seg.end())?;
    }
    Ok(max)
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("syncing folder", dir, e))
}
