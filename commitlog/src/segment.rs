//! One segment file: a fixed-size, fully allocated, memory-mapped slice of the log.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::storage::{is_disk_full, Storage};
use crate::sys::{MapWriter, Mapping};
use crate::{Error, PhysicalOffset};

/// Segment files are named by their start offset, zero-padded to 20 digits.
pub(crate) const NAME_DIGITS: usize = 20;

pub(crate) fn segment_path(dir: &Path, start: PhysicalOffset) -> PathBuf {
    dir.join(format!("{:020}", start.get()))
}

/// Start offset encoded in a segment file name, if `name` is one.
pub(crate) fn parse_segment_name(name: &str) -> Option<PhysicalOffset> {
    if name.len() != NAME_DIGITS || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok().map(PhysicalOffset::new)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A mapped segment. Shared by the writer, readers (through [`crate::RecordRef`]) and the
/// flusher; the file may be unlinked by retention while still mapped.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) start: PhysicalOffset,
    pub(crate) path: PathBuf,
    pub(crate) map: Arc<Mapping>,
    /// Last time data was written (ms since epoch), for age-based retention.
    last_write_ms: AtomicU64,
}

impl Segment {
    /// Creates, allocates and maps a new segment, then makes its directory entry durable.
    pub(crate) fn create(
        storage: &dyn Storage,
        dir: &Path,
        start: PhysicalOffset,
        size: u64,
    ) -> Result<(Arc<Segment>, MapWriter), Error> {
        let path = segment_path(dir, start);
        let file = match storage.create_segment(&path, size) {
            Ok(f) => f,
            Err(e) if is_disk_full(&e) => {
                return Err(Error::DiskFull {
                    segment: start,
                    path,
                    source: e,
                })
            }
            Err(e) => return Err(Error::io(path, "create segment", e)),
        };
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io(dir, "sync folder", e))?;
        Self::map(file, path, start, now_ms())
    }

    /// Opens and maps an existing segment, first growing it back to `size` if it is short
    /// (a short file would SIGBUS when mapped). Returns whether it was short.
    pub(crate) fn open(
        storage: &dyn Storage,
        path: PathBuf,
        start: PhysicalOffset,
        size: u64,
    ) -> Result<(Arc<Segment>, MapWriter, bool), Error> {
        let file = storage
            .open_segment(&path)
            .map_err(|e| Error::io(&path, "open segment", e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(&path, "stat segment", e))?;
        let len = meta.len();
        if len > size {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "segment {} is {len} bytes, larger than segment_size_bytes {size}",
                    path.display()
                ),
            });
        }
        let short = len < size;
        if short {
            storage.allocate(&path, &file, size).map_err(|e| {
                if is_disk_full(&e) {
                    Error::DiskFull {
                        segment: start,
                        path: path.clone(),
                        source: e,
                    }
                } else {
                    Error::io(&path, "grow short segment", e)
                }
            })?;
        }
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or_else(now_ms, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let (seg, writer) = Self::map(file, path, start, mtime)?;
        Ok((seg, writer, short))
    }

    pub(crate) fn map(
        file: std::fs::File,
        path: PathBuf,
        start: PhysicalOffset,
        mtime_ms: u64,
    ) -> Result<(Arc<Segment>, MapWriter), Error> {
        let (map, writer) = Mapping::map(&file).map_err(|e| Error::io(&path, "map segment", e))?;
        let seg = Segment {
            start,
            path,
            map,
            last_write_ms: AtomicU64::new(mtime_ms),
        };
        Ok((Arc::new(seg), writer))
    }

    pub(crate) fn size(&self) -> u64 {
        self.map.len() as u64
    }

    /// One past the last byte of this segment.
    pub(crate) fn end(&self) -> u64 {
        self.start.get() + self.size()
    }

    pub(crate) fn last_write_ms(&self) -> u64 {
        self.last_write_ms.load(Ordering::Relaxed)
    }

    pub(crate) fn touch(&self, now_ms: u64) {
        self.last_write_ms.store(now_ms, Ordering::Relaxed);
    }
}
