//! Fault injection for tests: a [`Storage`] that can report a full disk, fail syncs, and
//! produce crash images.
//!
//! A crash image is what the disk would hold after a power loss: for every segment file,
//! only the bytes that a completed sync made durable, plus optionally a torn suffix of
//! the bytes written after them; metadata files as last written atomically. It keeps a
//! copy of every durable byte in memory, so use it with small segments.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::shared::lock;
use crate::storage::{RealFs, Storage};

#[derive(Debug, Default)]
struct DurableFile {
    len: u64,
    /// Durable content; bytes past its end are zero.
    bytes: Vec<u8>,
}

/// Wraps [`RealFs`], recording durable bytes and injecting failures on request.
#[derive(Debug, Default)]
pub struct FaultyStorage {
    real: RealFs,
    disk_full: AtomicBool,
    fail_syncs: AtomicBool,
    syncs: AtomicU64,
    files: Mutex<HashMap<PathBuf, DurableFile>>,
    metas: Mutex<HashMap<PathBuf, Vec<u8>>>,
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

impl FaultyStorage {
    /// A wrapper of the real file system that injects nothing until told to.
    pub fn new() -> Self {
        Self::default()
    }

    /// While on, creating or growing a segment and atomic metadata writes fail with
    /// `ENOSPC`, as on a full disk.
    pub fn disk_full(&self, on: bool) {
        self.disk_full.store(on, Ordering::SeqCst);
    }

    /// While on, every sync of segment data fails with `EIO`.
    pub fn fail_syncs(&self, on: bool) {
        self.fail_syncs.store(on, Ordering::SeqCst);
    }

    /// Successful segment-data syncs so far.
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    /// Writes into `dst` (created if needed) the crash image of the files written under
    /// `src`: durable bytes only, plus the next `torn_bytes` bytes actually written after
    /// each file's durable content (a torn write).
    ///
    /// # Errors
    /// Any I/O error while reading `src` or writing `dst`.
    pub fn write_crash_image(&self, src: &Path, dst: &Path, torn_bytes: u64) -> io::Result<()> {
        std::fs::create_dir_all(dst)?;
        for (path, file) in lock(&self.files).iter() {
            let (Some(name), true) = (path.file_name(), path.parent() == Some(src)) else {
                continue;
            };
            let mut out = File::create(dst.join(name))?;
            out.write_all(&file.bytes)?;
            let mut torn = Vec::new();
            if torn_bytes > 0 {
                if let Ok(mut f) = File::open(path) {
                    f.seek(SeekFrom::Start(file.bytes.len() as u64))?;
                    f.take(torn_bytes).read_to_end(&mut torn)?;
                }
            }
            out.write_all(&torn)?;
            out.set_len(file.len)?;
        }
        for (path, bytes) in lock(&self.metas).iter() {
            if let (Some(name), true) = (path.file_name(), path.parent() == Some(src)) {
                std::fs::write(dst.join(name), bytes)?;
            }
        }
        Ok(())
    }

    fn track_existing(&self, path: &Path) -> io::Result<()> {
        let mut files = lock(&self.files);
        if !files.contains_key(path) {
            // A file that exists when opened is taken as durable as it is.
            let bytes = std::fs::read(path)?;
            files.insert(
                path.to_path_buf(),
                DurableFile {
                    len: bytes.len() as u64,
                    bytes,
                },
            );
        }
        Ok(())
    }
}

impl Storage for FaultyStorage {
    fn create_segment(&self, path: &Path, len: u64) -> io::Result<File> {
        if self.disk_full.load(Ordering::SeqCst) {
            return Err(enospc());
        }
        let f = self.real.create_segment(path, len)?;
        lock(&self.files).insert(
            path.to_path_buf(),
            DurableFile {
                len,
                bytes: Vec::new(),
            },
        );
        Ok(f)
    }

    fn open_segment(&self, path: &Path) -> io::Result<File> {
        self.track_existing(path)?;
        self.real.open_segment(path)
    }

    fn allocate(&self, path: &Path, file: &File, len: u64) -> io::Result<()> {
        if self.disk_full.load(Ordering::SeqCst) {
            return Err(enospc());
        }
        self.real.allocate(path, file, len)?;
        if let Some(f) = lock(&self.files).get_mut(path) {
            f.len = f.len.max(len);
        }
        Ok(())
    }

    fn sync_mapped(
        &self,
        path: &Path,
        offset: u64,
        data: &[u8],
        sync: &mut dyn FnMut() -> io::Result<()>,
    ) -> io::Result<()> {
        if self.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        sync()?;
        let mut files = lock(&self.files);
        let file = files.entry(path.to_path_buf()).or_default();
        let start =
            usize::try_from(offset).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let end = start + data.len();
        if file.bytes.len() < end {
            file.bytes.resize(end, 0);
        }
        file.bytes[start..end].copy_from_slice(data);
        self.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.real.sync_dir(dir)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        lock(&self.files).remove(path);
        lock(&self.metas).remove(path);
        self.real.remove(path)
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        if self.disk_full.load(Ordering::SeqCst) {
            return Err(enospc());
        }
        self.real.write_atomic(path, bytes)?;
        lock(&self.metas).insert(path.to_path_buf(), bytes.to_vec());
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.real.rename(from, to)?;
        let mut files = lock(&self.files);
        if let Some(f) = files.remove(from) {
            files.insert(to.to_path_buf(), f);
        }
        Ok(())
    }
}
