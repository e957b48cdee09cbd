//! The write path: validation, queue-offset assignment and the commit-log append.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::PoisonError;

use commitlog::{PhysicalOffset, RecordIn};
use consumequeue::QueueOffset;
use protocol::properties::Properties;

use super::tags::tag_hash_of;
use super::topics::validate_topic_name;
use super::{MessageId, Shared, StoreError, StoreResult, TopicConfig, TopicScope};

/// A message to store. Borrowed, so a batch straight out of a request frame is appended
/// without an intermediate copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PutMessage<'a> {
    /// Property blob in `protocol::properties` encoding (the `TAGS` key drives filtering).
    pub properties: &'a [u8],
    pub body: &'a [u8],
    pub born_timestamp_ms: u64,
    pub reconsume_times: u32,
}

/// Where a stored message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutResult {
    pub msg_id: MessageId,
    pub queue_id: u32,
    pub queue_offset: QueueOffset,
    pub physical_offset: PhysicalOffset,
}

/// State owned by the single writer: the next queue offset of every queue.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    next: HashMap<String, Vec<u64>>,
    /// Store timestamps never go backwards, so time search can binary-search a queue even
    /// if the wall clock steps back.
    last_store_ts_ms: u64,
}

impl Writer {
    fn next_offset(&self, topic: &str, queue_id: u32) -> u64 {
        self.next
            .get(topic)
            .and_then(|v| v.get(queue_id as usize))
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn set_next(&mut self, topic: &str, queue_id: u32, next: u64) {
        let slots = match self.next.get_mut(topic) {
            Some(s) => s,
            None => self.next.entry(topic.to_owned()).or_default(),
        };
        let idx = queue_id as usize;
        if slots.len() <= idx {
            slots.resize(idx + 1, 0);
        }
        slots[idx] = next;
    }

    pub(crate) fn forget_topic(&mut self, topic: &str) {
        self.next.remove(topic);
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Shared {
    pub(crate) fn put_batch(
        &self,
        scope: TopicScope,
        topic: &str,
        queue_id: u32,
        msgs: &[PutMessage<'_>],
    ) -> StoreResult<Vec<PutResult>> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        validate_topic_name(topic, scope)?;
        let mut tag_hashes = Vec::with_capacity(msgs.len());
        for m in msgs {
            if m.body.len() > self.config.max_body_bytes {
                return Err(StoreError::BodyTooLarge {
                    size: m.body.len(),
                    max: self.config.max_body_bytes,
                });
            }
            Properties::new(m.properties)
                .validate()
                .map_err(StoreError::BadProperties)?;
            tag_hashes.push(tag_hash_of(m.properties));
        }
        let topic_cfg = self.topic_for_put(topic)?;
        if !topic_cfg.perm.write {
            return Err(StoreError::PermissionDenied {
                topic: topic.to_owned(),
                access: "writes",
            });
        }
        if queue_id >= topic_cfg.queue_count {
            return Err(StoreError::QueueNotFound {
                topic: topic.to_owned(),
                queue_id,
                queue_count: topic_cfg.queue_count,
            });
        }
        if msgs.is_empty() {
            return Ok(Vec::new());
        }

        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let base = writer.next_offset(topic, queue_id);
        let store_ts = now_ms().max(writer.last_store_ts_ms);
        let records: Vec<RecordIn<'_>> = msgs
            .iter()
            .zip(&tag_hashes)
            .zip(base..)
            .map(|((m, &tag_hash), queue_offset)| RecordIn {
                topic,
                queue_id,
                queue_offset,
                tag_hash,
                born_timestamp_ms: m.born_timestamp_ms,
                store_timestamp_ms: store_ts,
                reconsume_times: m.reconsume_times,
                properties: m.properties,
                body: m.body,
            })
            .collect();
        // Nothing of a failed batch is visible, so the counter only moves on success.
        let appended = self.log.append_batch(&records)?;
        writer.set_next(topic, queue_id, base + appended.len() as u64);
        writer.last_store_ts_ms = store_ts;
        drop(writer);

        if self.sync {
            if let Some(last) = appended.last() {
                let end = last.offset.get() + u64::from(last.size);
                // Outside the writer lock: concurrent producers share one flush.
                self.log.wait_durable(PhysicalOffset::new(end))?;
            }
        }
        Ok(appended
            .iter()
            .zip(base..)
            .map(|(a, queue_offset)| PutResult {
                msg_id: MessageId::new(a.offset, a.size),
                queue_id,
                queue_offset: QueueOffset::new(queue_offset),
                physical_offset: a.offset,
            })
            .collect())
    }

    /// The topic's config, auto-creating it when allowed.
    fn topic_for_put(&self, topic: &str) -> StoreResult<TopicConfig> {
        if let Some(t) = self.topics.get(topic) {
            return Ok(t);
        }
        if !self.config.auto_create_topics {
            return Err(StoreError::TopicNotFound(topic.to_owned()));
        }
        let created_at = self.log.write_offset().get();
        self.topics.get_or_create(
            TopicConfig::new(topic, self.config.default_queue_count),
            created_at,
        )
    }

    pub(crate) fn create_topic(
        &self,
        scope: TopicScope,
        topic: TopicConfig,
    ) -> StoreResult<TopicConfig> {
        validate_topic_name(&topic.name, scope)?;
        let created_at = self.log.write_offset().get();
        self.topics.upsert(topic, created_at)
    }

    pub(crate) fn delete_topic(&self, name: &str) -> StoreResult<bool> {
        // Hold off the dispatcher and writers so neither recreates the queues mid-way.
        let _round = self
            .dispatch_round
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let existed = self.topics.remove(name)?.is_some();
        writer.forget_topic(name);
        drop(writer);
        self.queues.remove_topic(name)?;
        Ok(existed)
    }
}
