//! The only `unsafe` in the crate: the arena mappings.
//!
//! Rules the mappings rely on:
//! 1. **No SIGBUS.** A file region is written through a mapping only after
//!    `posix_fallocate` has allocated it, and a mapped file never shrinks. An arena is
//!    created at its full length with its first step allocated (`Storage::create_segment`),
//!    later steps are allocated (`Storage::allocate`) before any block in them is handed to
//!    a queue, and blocks past the allocated steps are never touched; arenas are never
//!    truncated, and one found shorter than its size at open is not mapped. Files written
//!    with `pwrite` (journal, snapshot) see `ENOSPC` as an error, never as a signal.
//! 2. **One owner per block.** A data block belongs to one queue at a time. Its bytes are
//!    written only by that queue's writer holding the queue's write lock and read only
//!    under its read lock; a freed block is handed to another queue only after its free
//!    was committed to the journal, when no reader of the old queue can reach it.
//! 3. **One process.** The broker holds an exclusive lock on the data directory, so no
//!    other process maps the same files. The fd is closed right after mapping.

use std::fs::File;
use std::io;

use memmap2::{Advice, MmapRaw};

/// A read-write mapping of one whole arena file.
#[derive(Debug)]
pub(crate) struct ArenaMap {
    raw: MmapRaw,
}

impl ArenaMap {
    /// Maps `file`, which must already have every block allocated (rule 1). The file may
    /// be closed afterwards.
    pub(crate) fn map(file: &File) -> io::Result<Self> {
        let raw = MmapRaw::map_raw(file)?;
        // Small pages: a checkpoint msyncs 4 KiB pages of scattered blocks, not 2 MiB
        // folios. Only a hint, so a failure changes nothing.
        let _ = raw.advise(Advice::Random);
        Ok(Self { raw })
    }

    pub(crate) fn len(&self) -> usize {
        self.raw.len()
    }

    /// Copies `out.len()` bytes at `at` into `out`; false when out of bounds.
    pub(crate) fn read(&self, at: usize, out: &mut [u8]) -> bool {
        let Some(end) = at.checked_add(out.len()) else {
            return false;
        };
        if end > self.raw.len() {
            return false;
        }
        // SAFETY: in bounds (checked above) of a live mapping whose file is fully
        // allocated and never shrinks (rule 1); no writer touches these bytes concurrently
        // because the caller holds the owning queue's lock or the arena header is read
        // before any block is handed out (rule 2).
        unsafe {
            std::ptr::copy_nonoverlapping(self.raw.as_ptr().add(at), out.as_mut_ptr(), out.len());
        }
        true
    }

    /// Copies `bytes` to `at`; false when out of bounds.
    pub(crate) fn write(&self, at: usize, bytes: &[u8]) -> bool {
        let Some(end) = at.checked_add(bytes.len()) else {
            return false;
        };
        if end > self.raw.len() {
            return false;
        }
        // SAFETY: in bounds of a live mapping over allocated blocks (rule 1); the caller
        // owns the block exclusively through its queue's write lock (rule 2).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.raw.as_mut_ptr().add(at),
                bytes.len(),
            );
        }
        true
    }

    /// The whole mapping as bytes, for the storage seam's record of synced data.
    ///
    /// Callers guarantee no concurrent writes (the store's write lock is held).
    pub(crate) fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        // SAFETY: the mapping is live for `self`'s lifetime and never shrinks (rule 1);
        // creating the slice reads nothing, and callers read only allocated blocks; the
        // store holds its write lock during the call, so no queue writes into it.
        let bytes = unsafe { std::slice::from_raw_parts(self.raw.as_ptr(), self.raw.len()) };
        f(bytes)
    }

    /// Msyncs the whole mapping.
    pub(crate) fn flush(&self) -> io::Result<()> {
        self.raw.flush()
    }
}
