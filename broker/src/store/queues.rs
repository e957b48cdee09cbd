//! The set of open consume queues, keyed by topic and queue id.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use consumequeue::ConsumeQueue;

use super::{StoreConfig, StoreError, StoreResult};

type Topics = HashMap<String, Vec<Option<Arc<ConsumeQueue>>>>;

/// Open consume queues. Queues are opened lazily on first dispatch and stay open.
#[derive(Debug)]
pub(crate) struct QueueTable {
    config: StoreConfig,
    queues: RwLock<Topics>,
}

impl QueueTable {
    pub(crate) fn new(config: StoreConfig) -> Self {
        Self {
            config,
            queues: RwLock::new(HashMap::new()),
        }
    }

    pub(crate) fn get(&self, topic: &str, queue_id: u32) -> Option<Arc<ConsumeQueue>> {
        let queues = self.queues.read().unwrap_or_else(PoisonError::into_inner);
        queues
            .get(topic)?
            .get(usize::try_from(queue_id).ok()?)?
            .clone()
    }

    /// The queue, opened (and created on disk) if needed.
    pub(crate) fn get_or_open(&self, topic: &str, queue_id: u32) -> StoreResult<Arc<ConsumeQueue>> {
        if let Some(q) = self.get(topic, queue_id) {
            return Ok(q);
        }
        let mut queues = self.queues.write().unwrap_or_else(PoisonError::into_inner);
        let slots = queues.entry(topic.to_owned()).or_default();
        let idx = usize::try_from(queue_id)
            .map_err(|_| StoreError::InvalidConfig(format!("queue id {queue_id} too large")))?;
        if slots.len() <= idx {
            slots.resize(idx + 1, None);
        }
        if let Some(Some(q)) = slots.get(idx) {
            return Ok(Arc::clone(q));
        }
        let dir = self.config.queue_dir(topic, queue_id);
        let q = ConsumeQueue::open(dir, self.config.consume_queue.clone())
            .map(Arc::new)
            .map_err(|e| StoreError::cq(topic, queue_id, e))?;
        slots[idx] = Some(Arc::clone(&q));
        Ok(q)
    }

    /// Opens every queue folder on disk that belongs to one of `topics`.
    pub(crate) fn open_existing<'a>(
        &self,
        topics: impl IntoIterator<Item = &'a str>,
    ) -> StoreResult<()> {
        for topic in topics {
            let dir = self.config.consume_queue_dir().join(topic);
            let listing = match std::fs::read_dir(&dir) {
                Ok(l) => l,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io("listing", &dir, e)),
            };
            for item in listing {
                let item = item.map_err(|e| StoreError::io("listing", &dir, e))?;
                let name = item.file_name();
                // Anything that is not a queue number (temp files) is not ours to open.
                if let Some(queue_id) = name.to_str().and_then(|n| n.parse::<u32>().ok()) {
                    if item.path().is_dir() {
                        self.get_or_open(topic, queue_id)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Every open queue with its topic and id.
    pub(crate) fn all(&self) -> Vec<(String, u32, Arc<ConsumeQueue>)> {
        let queues = self.queues.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for (topic, slots) in queues.iter() {
            for (id, q) in slots.iter().enumerate() {
                if let (Some(q), Ok(id)) = (q, u32::try_from(id)) {
                    out.push((topic.clone(), id, Arc::clone(q)));
                }
            }
        }
        out
    }

    /// Forgets a topic's queues and deletes their files.
    pub(crate) fn remove_topic(&self, topic: &str) -> StoreResult<()> {
        let removed = self
            .queues
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(topic);
        // Readers may still hold an Arc; unlinking mapped files is safe on Unix, the
        // mappings stay valid until the last reference goes.
        drop(removed);
        let dir = self.config.consume_queue_dir().join(topic);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("removing folder", &dir, e)),
        }
    }
}
