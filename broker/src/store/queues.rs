//! The broker's view of the consume-queue store, keyed by topic and queue id.

use std::sync::Arc;

use commitlog::storage::Storage;
use consumequeue::{ConsumeQueue, QueueStore};

use super::{StoreConfig, StoreError, StoreResult};

/// Every consume queue, in the shared arenas of `<data>/queues`. No file per queue: the
/// fd and mapping counts do not grow with the number of queues.
#[derive(Debug)]
pub(crate) struct QueueTable {
    store: QueueStore,
}

impl QueueTable {
    /// Opens the store; returns the dispatched offset its journal vouches for (`None`: the
    /// whole log must be indexed). A format-1 tree (`consumequeue/` + JSON `checkpoint`) is
    /// not converted: it is deleted and the queues are rebuilt from the commit log, which
    /// is the truth.
    pub(crate) fn open(
        config: &StoreConfig,
        storage: Arc<dyn Storage>,
    ) -> StoreResult<(Self, Option<u64>)> {
        let legacy = config.legacy_queue_dir();
        let legacy_checkpoint = config.legacy_checkpoint_path();
        let migrating = legacy.exists() || legacy_checkpoint.exists();
        let dir = config.queues_dir();
        if migrating {
            tracing::warn!(
                old = %legacy.display(),
                "consume queues of format 1 found; rebuilding them in {} from the commit log",
                dir.display()
            );
            // A half-built store of an interrupted migration is rebuilt too.
            remove_all(&dir)?;
        }
        let (store, dispatched) = QueueStore::open(&dir, config.consume_queue.clone(), storage)
            .map_err(|e| StoreError::cq("", 0, e))?;
        if migrating {
            // Only removed once the new store exists; until its first checkpoint it rebuilds
            // from the log again if interrupted, as `dispatched` is `None`.
            remove_all(&legacy)?;
            match std::fs::remove_file(&legacy_checkpoint) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("removing", &legacy_checkpoint, e)),
            }
            return Ok((Self { store }, None));
        }
        Ok((Self { store }, dispatched))
    }

    pub(crate) fn store(&self) -> &QueueStore {
        &self.store
    }

    pub(crate) fn get(&self, topic: &str, queue_id: u32) -> Option<Arc<ConsumeQueue>> {
        self.store.get(topic, queue_id)
    }

    /// The queue, created (and journaled) if needed.
    pub(crate) fn get_or_open(&self, topic: &str, queue_id: u32) -> StoreResult<Arc<ConsumeQueue>> {
        self.store
            .get_or_create(topic, queue_id)
            .map_err(|e| StoreError::cq(topic, queue_id, e))
    }

    /// Every queue.
    pub(crate) fn all(&self) -> Vec<Arc<ConsumeQueue>> {
        self.store.all()
    }

    /// Forgets a topic's queues; their blocks are reused after the next checkpoint.
    pub(crate) fn remove_topic(&self, topic: &str) {
        self.store.drop_topic(topic);
    }
}

fn remove_all(dir: &std::path::Path) -> StoreResult<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("removing folder", dir, e)),
    }
}
