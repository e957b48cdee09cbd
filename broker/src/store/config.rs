//! Message-store configuration.

use std::path::{Path, PathBuf};

use super::{StoreError, StoreResult};

/// Message-store configuration. [`StoreConfig::new`] gives the defaults documented per field.
/// Not serde itself because the commit-log config carries the storage seam; the broker's
/// serde config builds it.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Root of the data directory (`<data>`): holds `commitlog/`, `consumequeue/`, `config/`,
    /// `checkpoint` and `lock`.
    pub data_dir: PathBuf,
    /// Commit-log settings; `dir` defaults to `<data>/commitlog`.
    pub commitlog: commitlog::Config,
    /// Consume-queue settings (default 300,000 entries per segment).
    pub consume_queue: consumequeue::Config,
    /// Largest message body accepted by `put`. Default 4 MiB.
    pub max_body_bytes: usize,
    /// Create unknown topics on first put. Default true.
    pub auto_create_topics: bool,
    /// Queue count of auto-created topics. Default 4.
    pub default_queue_count: u32,
    /// How often the dispatcher msyncs consume queues and writes the dispatch checkpoint,
    /// and checks for commit-log retention. Default 1,000 ms.
    pub flush_interval_ms: u64,
    /// Most topics, schedule topics aside; creating or auto-creating one more fails with
    /// `TopicLimit`. Default 10,000.
    pub max_topics: u32,
}

impl StoreConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            commitlog: commitlog::Config::new(data_dir.join("commitlog")),
            consume_queue: consumequeue::Config::default(),
            max_body_bytes: 4 << 20,
            auto_create_topics: true,
            default_queue_count: 4,
            flush_interval_ms: 1_000,
            max_topics: 10_000,
            data_dir,
        }
    }

    pub(crate) fn validate(&self) -> StoreResult<()> {
        if self.default_queue_count == 0
            || self.default_queue_count > super::topics::MAX_QUEUE_COUNT
        {
            return Err(StoreError::InvalidConfig(format!(
                "default_queue_count must be in 1..={}, got {}",
                super::topics::MAX_QUEUE_COUNT,
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
        Ok(())
    }

    pub(crate) fn consume_queue_dir(&self) -> PathBuf {
        self.data_dir.join("consumequeue")
    }

    pub(crate) fn queue_dir(&self, topic: &str, queue_id: u32) -> PathBuf {
        self.consume_queue_dir()
            .join(topic)
            .join(queue_id.to_string())
    }

    pub(crate) fn checkpoint_path(&self) -> PathBuf {
        self.data_dir.join("checkpoint")
    }

    pub(crate) fn lock_path(&self) -> PathBuf {
        self.data_dir.join("lock")
    }

    /// The config folder, for other broker metadata (consumer offsets).
    pub fn config_dir(&self) -> PathBuf {
        Path::new(&self.data_dir).join("config")
    }
}
