//! All `unsafe` of the crate: the segment mappings and the one libc call (`posix_fallocate`).
//!
//! Rules the mapping code relies on (documented here, enforced by the rest of the crate):
//! 1. **No SIGBUS.** A file region is written through a mapping only after
//!    `posix_fallocate` has allocated it, and a mapped file never shrinks while mapped. A
//!    store into a hole of a shared mapping on a full file system raises SIGBUS (seen on
//!    tmpfs and ext4), so segments are created at full size with every block allocated
//!    (`Storage::create_segment`), short files are grown with `allocate` before mapping,
//!    recovery only zeroes bytes, and retention unlinks whole files (the mapping keeps the
//!    inode alive). Files written with `pwrite` see `ENOSPC` as an error, never a signal.
//!    Every mapped file of the broker keeps this rule (the consume-queue arenas too).
//! 2. One writer per mapping: [`MapWriter`] is the only handle that can write, exists once
//!    per mapping, and writes only at or above the published length.
//! 3. Readers only see bytes below the published length, which only grows, and is stored
//!    with `Release` after the bytes are written.
//! 4. No other process writes the files: the directory lock (`flock`) guarantees a single
//!    commit log per folder.
//! 5. A truncation never writes into a published mapping: it maps a fresh file holding
//!    the kept prefix and renames it over the old one, so bytes a reader can see through
//!    an old mapping never change (the old inode lives as long as its mapping).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use memmap2::{Advice, MmapRaw};

/// Allocates every block of `file` up to `len` bytes (extending it if shorter).
pub(crate) fn allocate(file: &File, len: u64) -> io::Result<()> {
    let len =
        libc::off_t::try_from(len).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: plain syscall on a valid, open descriptor owned by `file`; no memory is passed.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc == 0 {
        Ok(())
    } else {
        // posix_fallocate returns the error number instead of setting errno.
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Allocates the blocks of `[from, len)`, growing the file to `len` if shorter; nothing
/// when the range is empty.
pub(crate) fn allocate_range(file: &File, from: u64, len: u64) -> io::Result<()> {
    let off = |v: u64| {
        libc::off_t::try_from(v).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    };
    let (start, count) = (off(from)?, off(len.saturating_sub(from))?);
    if count == 0 {
        return Ok(());
    }
    // SAFETY: plain syscall on a valid, open descriptor owned by `file`; no memory is passed.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), start, count) };
    if rc == 0 {
        Ok(())
    } else {
        // posix_fallocate returns the error number instead of setting errno.
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// A shared, read-mostly mapping of one segment file.
#[derive(Debug)]
pub(crate) struct Mapping {
    raw: MmapRaw,
    published: AtomicUsize,
}

impl Mapping {
    /// Maps the whole of `file`, which must already have its final size (rule 1).
    pub(crate) fn map(file: &File) -> io::Result<(Arc<Mapping>, MapWriter)> {
        let raw = MmapRaw::map_raw(file)?;
        let map = Arc::new(Mapping {
            raw,
            published: AtomicUsize::new(0),
        });
        Ok((
            Arc::clone(&map),
            MapWriter {
                map,
                small_folios: false,
            },
        ))
    }

    pub(crate) fn len(&self) -> usize {
        self.raw.len()
    }

    pub(crate) fn published(&self) -> usize {
        self.published.load(Ordering::Acquire)
    }

    /// Bytes `start..end`, if they are published (rule 3).
    pub(crate) fn bytes(&self, start: usize, end: usize) -> Option<&[u8]> {
        if start > end || end > self.published() {
            return None;
        }
        // SAFETY: `start..end` lies inside the mapping (published <= len) and below the
        // published length, which the single writer never writes again (rule 2) and which
        // stays mapped while `self` lives (rule 1). The Acquire load pairs with the Release
        // store in `publish`, so the bytes are fully written.
        Some(unsafe { std::slice::from_raw_parts(self.raw.as_ptr().add(start), end - start) })
    }

    /// msync of `start..end` (rounded out to pages by memmap2).
    pub(crate) fn sync(&self, start: usize, end: usize) -> io::Result<()> {
        if end <= start {
            return Ok(());
        }
        self.raw.flush_range(start, end - start)
    }
}

/// The single writer of a [`Mapping`] (rule 2). Not `Clone`.
#[derive(Debug)]
pub(crate) struct MapWriter {
    map: Arc<Mapping>,
    /// Whether [`MapWriter::keep_folios_small`] switched readahead off.
    small_folios: bool,
}

impl Drop for MapWriter {
    fn drop(&mut self) {
        if self.small_folios {
            // Sealed (or closing): readahead again for consumers reading it later.
            let _ = self.map.raw.advise(Advice::Normal);
        }
    }
}

impl MapWriter {
    pub(crate) fn mapping(&self) -> &Arc<Mapping> {
        &self.map
    }

    /// The unpublished bytes `start..end`, for writing (or for recovery to inspect).
    pub(crate) fn unpublished_mut(&mut self, start: usize, end: usize) -> Option<&mut [u8]> {
        if start > end || end > self.map.len() || start < self.map.published() {
            return None;
        }
        // SAFETY: in bounds; at or above the published length, so no reader can look at
        // these bytes (rule 3), and `&mut self` on the only writer makes this the only
        // live reference into them (rule 2). The mapping outlives the borrow via `self.map`.
        Some(unsafe {
            std::slice::from_raw_parts_mut(self.map.raw.as_mut_ptr().add(start), end - start)
        })
    }

    /// The unpublished bytes `start..end`, read-only (recovery inspects them before
    /// publishing).
    pub(crate) fn unpublished(&self, start: usize, end: usize) -> Option<&[u8]> {
        if start > end || end > self.map.len() || start < self.map.published() {
            return None;
        }
        // SAFETY: in bounds and unpublished, so only this writer can reach these bytes, and
        // `&self` rules out a concurrent `&mut` borrow through the same writer (rule 2).
        Some(unsafe { std::slice::from_raw_parts(self.map.raw.as_ptr().add(start), end - start) })
    }

    /// Makes bytes below `end` visible to readers. The published length never shrinks.
    pub(crate) fn publish(&mut self, end: usize) {
        let end = end.min(self.map.len());
        if end > self.map.published() {
            self.map.published.store(end, Ordering::Release);
        }
    }

    /// Makes the pages faulted in from now on single 4 KiB folios, for a log that is
    /// flushed often in small steps (group commit). A flush writes back whole folios, and
    /// with the large folios the kernel otherwise builds for file mappings (up to 2 MiB on
    /// ext4 since Linux 6.x) every msync of a few new records rewrites megabytes: measured
    /// 2 MiB per flush under `flush = sync`, about 300 times the data. Without readahead
    /// (`MADV_RANDOM`) a fault allocates a single page. Undone when the writer is dropped
    /// (the segment is sealed), so reads of sealed segments get readahead.
    pub(crate) fn keep_folios_small(&mut self) {
        self.small_folios = self.map.raw.advise(Advice::Random).is_ok();
    }

    /// Pre-faults every page writable so later appends take no page faults. Falls back to
    /// touching one byte per page where `MADV_POPULATE_WRITE` is missing (Linux < 5.14).
    pub(crate) fn prefault(&mut self) {
        if self.map.raw.advise(Advice::PopulateWrite).is_ok() {
            return;
        }
        let start = self.map.published();
        let len = self.map.len();
        if let Some(buf) = self.unpublished_mut(start, len) {
            for b in buf.iter_mut().step_by(4096) {
                // Volatile so the store of the existing value is not optimised away.
                // SAFETY: `b` is a valid, exclusive reference into the mapping.
                unsafe { std::ptr::write_volatile(b, std::ptr::read_volatile(b)) };
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::{Read, Seek, SeekFrom};

    use super::*;

    const PAGE: usize = 4096;
    /// `/proc/kpageflags` bits of pages that belong to a multi-page folio.
    const KPF_COMPOUND_HEAD: u64 = 1 << 15;
    const KPF_COMPOUND_TAIL: u64 = 1 << 16;

    fn read_u64(file: &mut File, index: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        file.seek(SeekFrom::Start(index * 8)).ok()?;
        file.read_exact(&mut b).ok()?;
        Some(u64::from_le_bytes(b))
    }

    /// How many pages of `map` sit in multi-page folios; `None` when the kernel does not
    /// tell this process (page frame numbers need root).
    fn pages_in_large_folios(map: &Mapping) -> Option<usize> {
        let mut pagemap = File::open("/proc/self/pagemap").ok()?;
        let mut flags = File::open("/proc/kpageflags").ok()?;
        let base = map.raw.as_ptr() as u64 / PAGE as u64;
        let mut large = 0;
        for page in 0..(map.len() / PAGE) as u64 {
            let entry = read_u64(&mut pagemap, base + page)?;
            let pfn = entry & ((1 << 55) - 1);
            if entry >> 63 == 0 || pfn == 0 {
                return None;
            }
            if read_u64(&mut flags, pfn)? & (KPF_COMPOUND_HEAD | KPF_COMPOUND_TAIL) != 0 {
                large += 1;
            }
        }
        Some(large)
    }

    /// A segment prepared for frequent flushes is faulted in as single pages, so a flush
    /// writes back only the pages it changed. (Where the kernel builds large folios for
    /// file mappings, the same mapping without `keep_folios_small` is mostly large ones.)
    #[test]
    fn a_segment_kept_small_is_faulted_in_as_single_pages() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("segment");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        allocate(&file, 64 << 20).unwrap();
        let (map, mut writer) = Mapping::map(&file).unwrap();
        writer.keep_folios_small();
        writer.prefault();
        let Some(large) = pages_in_large_folios(&map) else {
            eprintln!("page flags are not readable here; nothing to check");
            return;
        };
        assert_eq!(large, 0, "pages of the segment in large folios");
    }

    #[test]
    fn allocating_a_range_grows_the_file_and_backs_the_range_with_blocks() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::TempDir::new().unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("f"))
            .unwrap();
        allocate_range(&file, 0, 64 << 10).unwrap();
        allocate_range(&file, 64 << 10, 256 << 10).unwrap();
        allocate_range(&file, 256 << 10, 256 << 10).unwrap();
        let m = file.metadata().unwrap();
        assert_eq!(m.len(), 256 << 10);
        assert!(m.blocks() * 512 >= 256 << 10, "{} blocks", m.blocks());
    }
}
