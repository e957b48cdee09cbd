//! Configuration, validated once at open.

use std::path::PathBuf;
use std::sync::Arc;

use crate::storage::{RealFs, Storage};
use crate::Error;

/// When appended records become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// A background thread flushes every `interval_ms` (and when `flush_dirty_bytes`
    /// accumulate). Appends return once the record is in the page cache.
    Async {
        /// Time between two background flushes.
        interval_ms: u64,
    },
    /// Readers see only durable records, and segments keep small page-cache folios so
    /// that frequent small flushes write back only the pages they changed. Appends do not
    /// wait themselves: [`crate::CommitLog::wait_durable`] makes their end durable,
    /// concurrent waiters sharing one flush (group commit). A background flush every
    /// second is the backstop for appends nobody waits for.
    Sync,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        FlushPolicy::Async { interval_ms: 500 }
    }
}

/// Which sealed segments may be deleted. Both limits off by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Delete sealed segments last written longer ago than this. The age of a segment
    /// sealed in this run is taken from when it was sealed; for segments found on open it
    /// is the file's modification time (which mmap writes update only at page faults and
    /// msync, so it can be somewhat older than the last record).
    pub max_age_ms: Option<u64>,
    /// Delete the oldest sealed segments while all segments together exceed this.
    pub max_total_bytes: Option<u64>,
}

/// Commit-log configuration. [`Config::new`] gives the defaults documented per field.
#[derive(Debug, Clone)]
pub struct Config {
    /// The commit-log folder itself, e.g. `<data>/commitlog`.
    pub dir: PathBuf,
    /// Size of every segment file. Default 1 GiB; minimum 4 KiB.
    pub segment_size_bytes: u64,
    /// Default `Async { interval_ms: 500 }`.
    pub flush: FlushPolicy,
    /// Async policy: also flush once this many bytes are dirty. Default 64 MiB.
    pub flush_dirty_bytes: u64,
    /// Default: keep everything.
    pub retention: Retention,
    /// How often the background thread applies retention. Default 10 s.
    pub retention_check_interval_ms: u64,
    /// Largest record (header included). Default 8 MiB + 64 KiB of header and properties.
    pub max_record_bytes: u32,
    /// Create the next segment ahead of need on a background thread. Default true.
    pub preallocate: bool,
    /// Pre-fault that segment's pages writable (`MADV_POPULATE_WRITE`) so appends take no
    /// page faults. The pages start dirty, so the kernel also writes the zeros back once:
    /// more disk writes for faster appends. Default true.
    pub prefault: bool,
    /// File-system seam; the real file system by default. See [`crate::storage`].
    pub storage: Arc<dyn Storage>,
    /// Told how long each completed flush (one msync pass) took. Default none.
    pub on_flush: Option<DurationObserver>,
}

/// A callback given a duration, e.g. to feed a latency histogram: the log knows nothing of
/// metrics. It runs on the flushing thread, so it must be quick (an atomic add).
#[derive(Clone)]
pub struct DurationObserver(pub Arc<dyn Fn(std::time::Duration) + Send + Sync>);

impl std::fmt::Debug for DurationObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DurationObserver")
    }
}

/// Smallest allowed segment.
pub const MIN_SEGMENT_SIZE_BYTES: u64 = 4096;

impl Config {
    /// The defaults documented per field, for a log in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Config {
            dir: dir.into(),
            segment_size_bytes: 1 << 30,
            flush: FlushPolicy::default(),
            flush_dirty_bytes: 64 << 20,
            retention: Retention::default(),
            retention_check_interval_ms: 10_000,
            max_record_bytes: (8 << 20) + (64 << 10),
            preallocate: true,
            prefault: true,
            storage: Arc::new(RealFs),
            on_flush: None,
        }
    }

    /// Whether written segments should keep small page-cache folios: under `Sync` the log
    /// is flushed often in small steps, where each flush should write back only the pages
    /// it changed (async flushes cover large ranges, where large folios are cheaper).
    pub(crate) fn small_folios(&self) -> bool {
        self.flush == FlushPolicy::Sync
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad = |reason: String| Err(Error::InvalidConfig { reason });
        if self.segment_size_bytes < MIN_SEGMENT_SIZE_BYTES {
            return bad(format!(
                "segment_size_bytes {} < {MIN_SEGMENT_SIZE_BYTES}",
                self.segment_size_bytes
            ));
        }
        if usize::try_from(self.segment_size_bytes).is_err()
            || self.segment_size_bytes > u64::from(u32::MAX)
        {
            return bad(format!(
                "segment_size_bytes {} exceeds 4 GiB",
                self.segment_size_bytes
            ));
        }
        if let FlushPolicy::Async { interval_ms: 0 } = self.flush {
            return bad("flush interval_ms must be > 0".to_owned());
        }
        if self.max_record_bytes == 0 {
            return bad("max_record_bytes must be > 0".to_owned());
        }
        Ok(())
    }
}
