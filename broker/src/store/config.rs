//! Message-store configuration.

use std::path::{Path, PathBuf};

use super::{DiskReserve, StoreError, StoreResult};

/// The data-directory lock file, `<data>/lock`.
pub(crate) const LOCK_FILE: &str = "lock";

/// Message-store configuration. [`StoreConfig::new`] gives the defaults documented per field.
/// Not serde itself because the commit-log config carries the storage seam; the broker's
/// serde config builds it.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Root of the data directory (`<data>`): holds `commitlog/`, `queues/`, `config/` and
    /// `lock`.
    pub data_dir: PathBuf,
    /// Commit-log settings; `dir` defaults to `<data>/commitlog`.
    pub commitlog: commitlog::Config,
    /// Consume-queue store settings: `arena_size_bytes` (default 64 MiB, allocated in full
    /// per arena), `block_size_bytes` (default 4 KiB = 204 entries),
    /// `snapshot_journal_bytes` (default 64 MiB).
    pub consume_queue: consumequeue::Config,
    /// Largest message body accepted by `put`. Default 4 MiB.
    pub max_body_bytes: usize,
    /// Create unknown topics on first put. Default true.
    pub auto_create_topics: bool,
    /// Queue count of auto-created topics. Default 4.
    pub default_queue_count: u32,
    /// How often the dispatcher checkpoints the consume queues (msync of written arenas and
    /// one journal append of the changed queue ends; nothing when idle), and checks for
    /// commit-log retention. Default 1,000 ms.
    pub flush_interval_ms: u64,
    /// Free space kept back from writes: while less is free, puts are refused with
    /// `DiskFull`. Default `0` (none: puts are refused only after a write hit `ENOSPC`);
    /// the broker passes its `--disk-reserve` (default 1%).
    pub disk_reserve: DiskReserve,
    /// Most topics, schedule topics aside; creating or auto-creating one more fails with
    /// `TopicLimit`. Default 10,000.
    pub max_topics: u32,
    /// Told how long each dispatch round (indexing new records) took. Default none.
    pub on_dispatch_round: Option<commitlog::DurationObserver>,
    /// The key index under `<data>/index` (lookups by message key). Default on.
    pub key_index: super::KeyIndexConfig,
    /// Part of a replication group (master or replica): only records below the commit
    /// log's confirm watermark are indexed and served. Default false.
    pub replicated: bool,
}

impl StoreConfig {
    /// The defaults documented per field, for a data directory at `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            commitlog: commitlog::Config::new(data_dir.join("commitlog")),
            consume_queue: consumequeue::Config::default(),
            max_body_bytes: 4 << 20,
            auto_create_topics: true,
            default_queue_count: 4,
            flush_interval_ms: 1_000,
            disk_reserve: DiskReserve::Bytes(0),
            max_topics: 10_000,
            on_dispatch_round: None,
            key_index: super::KeyIndexConfig::default(),
            replicated: false,
            data_dir,
        }
    }

    pub(crate) fn validate(&self) -> StoreResult<()> {
        if self.default_queue_count == 0
            || self.default_queue_count > super::topic_config::MAX_QUEUE_COUNT
        {
            return Err(StoreError::InvalidConfig(format!(
                "default_queue_count must be in 1..={}, got {}",
                super::topic_config::MAX_QUEUE_COUNT,
                self.default_queue_count
            )));
        }
        if self.flush_interval_ms == 0 {
            return Err(StoreError::InvalidConfig(
                "flush_interval_ms must be > 0".into(),
            ));
        }
        if self.max_body_bytes == 0 {
            return Err(StoreError::InvalidConfig(
                "max_body_bytes must be > 0".into(),
            ));
        }
        self.key_index.validate()
    }

    /// `<data>/queues`: the consume-queue store (arenas, journal, snapshot).
    pub(crate) fn queues_dir(&self) -> PathBuf {
        self.data_dir.join("queues")
    }

    /// `<data>/consumequeue`: the per-queue files of format version 1, replaced on open.
    pub(crate) fn legacy_queue_dir(&self) -> PathBuf {
        self.data_dir.join("consumequeue")
    }

    /// `<data>/checkpoint`: the JSON dispatch checkpoint of format version 1.
    pub(crate) fn legacy_checkpoint_path(&self) -> PathBuf {
        self.data_dir.join("checkpoint")
    }

    /// The config folder, for other broker metadata (consumer offsets).
    pub fn config_dir(&self) -> PathBuf {
        Path::new(&self.data_dir).join("config")
    }
}
