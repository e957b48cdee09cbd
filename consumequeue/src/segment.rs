//! One segment file: a fixed-capacity array of entries starting at a base logical offset.

use std::path::Path;

use crate::format::{self, Entry, ENTRY_SIZE};
use crate::mmap::MappedFile;
use crate::{Error, Result};

#[derive(Debug)]
pub(crate) struct Segment {
    base: u64,
    capacity: u64,
    file: MappedFile,
}

impl Segment {
    /// Creates a fresh, all-empty segment in `dir`.
    pub(crate) fn create(dir: &Path, base: u64, capacity: u64) -> Result<Self> {
        let path = dir.join(format::segment_file_name(base));
        let len = capacity
            .checked_mul(ENTRY_SIZE as u64)
            .ok_or_else(|| Error::InvalidConfig(format!("capacity {capacity} overflows")))?;
        let file = MappedFile::create(&path, len)?;
        Ok(Self {
            base,
            capacity,
            file,
        })
    }

    /// Opens an existing segment; its capacity is taken from the file length so that a
    /// change of `entries_per_segment` only affects new segments.
    ///
    /// A file cut mid-entry (a torn write or damage) loses its partial last entry: the file
    /// is shortened to whole entries, and the queue's recovery then treats it as a short
    /// segment (everything after it is rebuilt from the commit log). Returns `None` for a
    /// file too short to hold one entry.
    pub(crate) fn open(path: &Path, base: u64) -> Result<Option<Self>> {
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io("inspecting", path, e))?
            .len();
        let whole = len - len % ENTRY_SIZE as u64;
        if whole == 0 {
            return Ok(None);
        }
        if whole != len {
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(whole))
                .map_err(|e| Error::io("cutting a partial entry from", path, e))?;
        }
        let file = MappedFile::open(path)?;
        Ok(Some(Self {
            base,
            capacity: whole / ENTRY_SIZE as u64,
            file,
        }))
    }

    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// Logical offset one past the segment's last slot.
    pub(crate) fn end(&self) -> u64 {
        self.base + self.capacity
    }

    pub(crate) fn path(&self) -> &Path {
        self.file.path()
    }

    fn slot(&self, index: u64) -> Option<&[u8; ENTRY_SIZE]> {
        let at = usize::try_from(index).ok()?.checked_mul(ENTRY_SIZE)?;
        self.file.bytes().get(at..at + ENTRY_SIZE)?.try_into().ok()
    }

    /// Entry at logical `offset`, or `None` for an empty slot or an offset outside the segment.
    pub(crate) fn get(&self, offset: u64) -> Option<Entry> {
        let slot = self.slot(offset.checked_sub(self.base)?)?;
        (!Entry::is_empty_slot(slot)).then(|| Entry::decode(slot))
    }

    /// Writes `entries` starting at logical `offset`; they must fit in the segment.
    pub(crate) fn write(&mut self, offset: u64, entries: &[Entry]) -> Result<()> {
        let range = self.byte_range(offset, entries.len() as u64)?;
        let dst = &mut self.file.bytes_mut()[range];
        for (chunk, e) in dst.chunks_exact_mut(ENTRY_SIZE).zip(entries) {
            chunk.copy_from_slice(&e.encode());
        }
        Ok(())
    }

    /// Zeroes every slot from logical `offset` to the end of the segment.
    pub(crate) fn clear_from(&mut self, offset: u64) {
        let from = offset.max(self.base) - self.base;
        let at = usize::try_from(from).map_or(usize::MAX, |f| f.saturating_mul(ENTRY_SIZE));
        if let Some(tail) = self.file.bytes_mut().get_mut(at..) {
            // Only touch pages that hold data: writing zeros into a sparse hole would
            // allocate disk blocks for nothing.
            for chunk in tail.chunks_mut(4096) {
                if chunk.iter().any(|b| *b != 0) {
                    chunk.fill(0);
                }
            }
        }
    }

    /// First empty slot at or after logical `from`, or `end()` when the segment is full.
    pub(crate) fn first_empty_from(&self, from: u64) -> u64 {
        let mut offset = from.max(self.base);
        while offset < self.end() {
            match self.slot(offset - self.base) {
                Some(slot) if !Entry::is_empty_slot(slot) => offset += 1,
                _ => return offset,
            }
        }
        self.end()
    }

    /// Msyncs the slots `[from, to)` (logical offsets, clamped to the segment).
    pub(crate) fn flush(&self, from: u64, to: u64) -> Result<()> {
        let from = from.clamp(self.base, self.end());
        let to = to.clamp(self.base, self.end());
        if to <= from {
            return Ok(());
        }
        let range = self.byte_range(from, to - from)?;
        self.file.flush_range(range.start, range.end)
    }

    fn byte_range(&self, offset: u64, count: u64) -> Result<std::ops::Range<usize>> {
        let bad = || Error::OutOfRange {
            requested: offset,
            min: self.base,
            max: self.end(),
        };
        let rel = offset.checked_sub(self.base).ok_or_else(bad)?;
        let end = rel.checked_add(count).ok_or_else(bad)?;
        if end > self.capacity {
            return Err(bad());
        }
        let start = usize::try_from(rel).map_err(|_| bad())? * ENTRY_SIZE;
        let stop = usize::try_from(end).map_err(|_| bad())? * ENTRY_SIZE;
        if stop > self.file.len() {
            return Err(bad());
        }
        Ok(start..stop)
    }
}
