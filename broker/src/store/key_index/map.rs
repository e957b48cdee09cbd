//! The only `unsafe` of the key index: its file mappings.
//!
//! Rules the mappings rely on:
//! 1. **No SIGBUS.** Bytes are written through a mapping only below the length allocated
//!    with `posix_fallocate` (`Storage::create_segment` for the header and slots,
//!    `Storage::allocate` in steps for entries); files are never truncated while mapped,
//!    and a file whose length does not match its header is not mapped.
//! 2. **Readers and the writer never overlap.** The index's `RwLock` is held for writing
//!    by the one writer (the dispatcher) and for reading by lookups. The one exception,
//!    the checkpoint's msync, reads only entries below the written count, which are never
//!    written again.
//! 3. **One process.** The broker's lock on the data directory keeps other processes away.

use std::fs::File;
use std::io;

use memmap2::MmapRaw;

/// A read-write mapping of one whole index file.
#[derive(Debug)]
pub(crate) struct IndexMap {
    raw: MmapRaw,
}

impl IndexMap {
    /// Maps all of `file`.
    pub(crate) fn map(file: &File) -> io::Result<Self> {
        Ok(Self {
            raw: MmapRaw::map_raw(file)?,
        })
    }

    /// Copies `out.len()` bytes at `at` into `out`; false when out of bounds.
    pub(crate) fn read(&self, at: u64, out: &mut [u8]) -> bool {
        let Some(at) = self.in_bounds(at, out.len()) else {
            return false;
        };
        // SAFETY: in bounds of a live mapping (checked above) that never shrinks (rule 1);
        // no write runs concurrently (rule 2).
        unsafe {
            std::ptr::copy_nonoverlapping(self.raw.as_ptr().add(at), out.as_mut_ptr(), out.len());
        }
        true
    }

    /// Copies `bytes` to `at`; false when out of bounds. The caller has allocated the
    /// region (rule 1) and holds the write lock (rule 2).
    pub(crate) fn write(&self, at: u64, bytes: &[u8]) -> bool {
        let Some(at) = self.in_bounds(at, bytes.len()) else {
            return false;
        };
        // SAFETY: in bounds of a live mapping over allocated blocks (rule 1), written by
        // the only writer while no reader looks (rule 2).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.raw.as_mut_ptr().add(at),
                bytes.len(),
            );
        }
        true
    }

    /// The `len` bytes at `at` (clamped to the mapping), for the storage seam's record of
    /// synced data. Callers ask only for entries below the written count, which are never
    /// written again, so no write overlaps the slice even without the lock (rule 2).
    pub(crate) fn with_bytes<R>(&self, at: u64, len: u64, f: impl FnOnce(&[u8]) -> R) -> R {
        let total = self.raw.len();
        let at = usize::try_from(at).map_or(total, |a| a.min(total));
        let len = usize::try_from(len).map_or(total - at, |l| l.min(total - at));
        // SAFETY: within a live mapping that never shrinks (rule 1); the bytes are written
        // entries that nothing writes again, so no write races the slice; only allocated
        // bytes are asked for.
        let bytes = unsafe { std::slice::from_raw_parts(self.raw.as_ptr().add(at), len) };
        f(bytes)
    }

    /// Starts loading the cache line at `at` into the cache: a hint that changes no byte
    /// and no result, so out-of-bounds offsets are ignored and other targets do nothing.
    pub(crate) fn prefetch(&self, at: u64) {
        let Some(at) = self.in_bounds(at, 1) else {
            return;
        };
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let p = self.raw.as_ptr().wrapping_add(at).cast::<i8>();
            // SAFETY: a prefetch never faults and reads nothing the program sees; the
            // address lies inside the live mapping anyway (checked above).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = at;
    }

    /// Msyncs the whole mapping.
    pub(crate) fn flush(&self) -> io::Result<()> {
        self.raw.flush()
    }

    fn in_bounds(&self, at: u64, len: usize) -> Option<usize> {
        let at = usize::try_from(at).ok()?;
        (at.checked_add(len)? <= self.raw.len()).then_some(at)
    }
}
