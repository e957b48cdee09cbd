//! The file-system seam.
//!
//! Every operation whose failure or crash behaviour matters goes through [`Storage`]:
//! creating and allocating segment files, making mapped bytes durable, syncing the
//! folder, removing files and writing small metadata files atomically. [`RealFs`] is the
//! real thing; [`crate::fault::FaultyStorage`] wraps it to inject `ENOSPC`, failed syncs
//! and crash images (only bytes a completed sync made durable survive).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// File operations the commit log needs. Implementations must be thread safe.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates `path` (must not exist) with `len` bytes, all blocks allocated so that writes
    /// through a mapping can never fail for lack of space. On error no file is left behind.
    ///
    /// # Errors
    /// `ENOSPC` (`io::ErrorKind::StorageFull`) when the disk is full; any other I/O error.
    fn create_segment(&self, path: &Path, len: u64) -> io::Result<File>;

    /// Opens an existing segment file for reading and writing.
    ///
    /// # Errors
    /// Any I/O error.
    fn open_segment(&self, path: &Path) -> io::Result<File>;

    /// Makes sure `file` is at least `len` bytes with every block allocated.
    ///
    /// # Errors
    /// `ENOSPC` or any other I/O error.
    fn allocate(&self, path: &Path, file: &File, len: u64) -> io::Result<()>;

    /// [`Storage::allocate`] for a caller that knows `[0, from)` is allocated already:
    /// only `[from, len)` need be asked of the file system (tmpfs walks every page of the
    /// range it is given, so growing a file in steps from 0 costs its size each step).
    ///
    /// # Errors
    /// As [`Storage::allocate`].
    fn allocate_from(&self, path: &Path, file: &File, from: u64, len: u64) -> io::Result<()> {
        let _ = from;
        self.allocate(path, file, len)
    }

    /// Makes `data`, the bytes at `offset` of the mapped file `path`, durable by calling
    /// `sync` (which msyncs the mapping). Wrappers may fail instead, or record `data`.
    ///
    /// # Errors
    /// Whatever `sync` returns, or an injected failure.
    fn sync_mapped(
        &self,
        path: &Path,
        offset: u64,
        data: &[u8],
        sync: &mut dyn FnMut() -> io::Result<()>,
    ) -> io::Result<()>;

    /// Makes creations and removals in `dir` durable.
    ///
    /// # Errors
    /// Any I/O error.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Removes a file.
    ///
    /// # Errors
    /// Any I/O error.
    fn remove(&self, path: &Path) -> io::Result<()>;

    /// Replaces `path` with `bytes` atomically and durably (temp file, fsync, rename, fsync
    /// the folder).
    ///
    /// # Errors
    /// Any I/O error.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;

    /// Renames `from` over `to` (atomic on one file system; the caller syncs the folder).
    ///
    /// # Errors
    /// Any I/O error.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

impl Storage for RealFs {
    fn create_segment(&self, path: &Path, len: u64) -> io::Result<File> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        if let Err(e) = self.allocate(path, &file, len) {
            drop(file);
            // Best effort: the allocation error is what the caller needs to see.
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Ok(file)
    }

    fn open_segment(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new().read(true).write(true).open(path)
    }

    fn allocate(&self, _path: &Path, file: &File, len: u64) -> io::Result<()> {
        crate::sys::allocate(file, len)
    }

    fn allocate_from(&self, _path: &Path, file: &File, from: u64, len: u64) -> io::Result<()> {
        crate::sys::allocate_range(file, from.min(len), len)
    }

    fn sync_mapped(
        &self,
        _path: &Path,
        _offset: u64,
        _data: &[u8],
        sync: &mut dyn FnMut() -> io::Result<()>,
    ) -> io::Result<()> {
        sync()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        // `<name>.XXXXXX.tmp`: unique, so concurrent writers of one file each rename a
        // complete file of their own, and recognisably a leftover of `<name>` after a crash.
        // Dropped unpersisted on any error, which deletes it (and frees its blocks).
        let mut prefix = path.file_name().unwrap_or_default().to_os_string();
        prefix.push(".");
        let mut tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".tmp")
            .tempfile_in(dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        self.sync_dir(dir)
    }
}

/// True when `e` means the disk (or quota) is full: `ENOSPC`, `EDQUOT` or
/// `io::ErrorKind::StorageFull`. The one definition the storage crates and the broker use.
pub fn is_disk_full(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC)
        || e.raw_os_error() == Some(libc::EDQUOT)
        || e.kind() == io::ErrorKind::StorageFull
}
