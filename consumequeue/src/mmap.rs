//! The only `unsafe` in the crate: mapping segment files into memory.
//!
//! Mapping a file is unsafe because the memory changes whenever the file does, including
//! through other mappings or processes, and a file shrunk under a mapping turns accesses into
//! SIGBUS. The rules this crate keeps so that the mappings behave like ordinary memory:
//!
//! 1. A segment file is created at its full length and never shrunk or truncated while
//!    mapped; truncating a queue zeroes entries inside the mapping, and deleting a segment
//!    drops the mapping before the file is removed.
//! 2. Within the process, a queue's mappings are reached only through its `RwLock`, so
//!    writes (`&mut MmapMut`) never overlap reads.
//! 3. Across processes, the broker holds an exclusive lock on the data directory (the
//!    commit log's `lock` file), so no other writer maps the same files.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use crate::{Error, Result};

/// A read-write mapping of a whole file.
#[derive(Debug)]
pub(crate) struct MappedFile {
    path: PathBuf,
    map: MmapMut,
    // Kept open so the mapping's file stays the one we sized, and for fsync of metadata.
    _file: File,
}

impl MappedFile {
    /// Creates a new file of `len` bytes (sparse, reads as zeros) and maps it.
    pub(crate) fn create(path: &Path, len: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Error::io("creating", path, e))?;
        file.set_len(len)
            .map_err(|e| Error::io("sizing", path, e))?;
        Self::map(path, file)
    }

    /// Maps an existing file at its current length.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("opening", path, e))?;
        Self::map(path, file)
    }

    fn map(path: &Path, file: File) -> Result<Self> {
        // SAFETY: rules 1-3 of the module doc: the file is never shrunk while mapped, all
        // in-process access goes through the owning queue's RwLock, and the data-directory
        // lock keeps other processes out. The file is not empty (checked by callers via
        // `len`), and `MmapMut` keeps its own reference to the mapping's lifetime.
        let map = unsafe { MmapMut::map_mut(&file) }.map_err(|e| Error::io("mapping", path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
            _file: file,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }

    /// Writes `[from, to)` of the mapping back to the file and waits for it (msync).
    pub(crate) fn flush_range(&self, from: usize, to: usize) -> Result<()> {
        if to <= from {
            return Ok(());
        }
        self.map
            .flush_range(from, to - from)
            .map_err(|e| Error::io("flushing", &self.path, e))
    }
}
