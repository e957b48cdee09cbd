//! The write path: validation, queue-offset assignment and the commit-log append.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{MutexGuard, PoisonError, TryLockError};

use commitlog::{FlushPolicy, PhysicalOffset, RecordIn};
use consumequeue::QueueOffset;
use protocol::properties::{Properties, DELAY_LEVEL, DELAY_UNSUPPORTED};

use super::tags::tag_hash_of;
use super::topics::validate_topic_name;
use super::{MessageId, Shared, StoreError, StoreResult, TopicConfig, TopicScope};

/// A message to store. Borrowed, so a batch straight out of a request frame is appended
/// without an intermediate copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PutMessage<'a> {
    /// Property blob in `protocol::properties` encoding (the `TAGS` key drives filtering).
    pub properties: &'a [u8],
    /// The payload.
    pub body: &'a [u8],
    /// When the producer made the message.
    pub born_timestamp_ms: u64,
    /// How often it was sent back for redelivery (0 for a new message).
    pub reconsume_times: u32,
}

/// Where a stored message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutResult {
    /// The message's id (where its record is).
    pub msg_id: MessageId,
    /// The queue it went to.
    pub queue_id: u32,
    /// Its offset in that queue.
    pub queue_offset: QueueOffset,
    /// Where its record starts in the commit log.
    pub physical_offset: PhysicalOffset,
}

/// State owned by the single writer: the next queue offset of every queue.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    /// `None`: not written since open (the queue's max offset is the next one).
    next: HashMap<String, Vec<Option<u64>>>,
    /// Store timestamps never go backwards, so time search can binary-search a queue even
    /// if the wall clock steps back.
    last_store_ts_ms: u64,
}

impl Writer {
    /// The next queue offset, if this writer assigned one since open.
    fn next_offset(&self, topic: &str, queue_id: u32) -> Option<u64> {
        self.next
            .get(topic)
            .and_then(|v| v.get(queue_id as usize))
            .copied()
            .flatten()
    }

    pub(crate) fn set_next(&mut self, topic: &str, queue_id: u32, next: u64) {
        let slots = match self.next.get_mut(topic) {
            Some(s) => s,
            None => self.next.entry(topic.to_owned()).or_default(),
        };
        let idx = queue_id as usize;
        if slots.len() <= idx {
            slots.resize(idx + 1, None);
        }
        slots[idx] = Some(next);
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

/// The messages for one queue inside a multi-queue append ([`crate::store::MessageStore::append_groups`]).
#[derive(Clone, Copy, Debug)]
pub struct PutGroup<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The queue within the topic.
    pub queue_id: u32,
    /// The messages, stored with consecutive queue offsets.
    pub msgs: &'a [PutMessage<'a>],
}

/// What a multi-queue append did: one outcome per group, in order, and the commit-log end
/// that covers every stored group (what a durability wait needs).
#[derive(Debug)]
pub struct GroupsAppended {
    /// Per group, in order: where its messages went, or why it was refused.
    pub results: Vec<StoreResult<Vec<PutResult>>>,
    /// The commit-log end after the append (0 when nothing was stored).
    pub end: PhysicalOffset,
}

impl Shared {
    pub(crate) fn put_batch(
        &self,
        scope: TopicScope,
        topic: &str,
        queue_id: u32,
        msgs: &[PutMessage<'_>],
    ) -> StoreResult<Vec<PutResult>> {
        let group = PutGroup {
            topic,
            queue_id,
            msgs,
        };
        let mut done = self.append_groups(scope, std::slice::from_ref(&group))?;
        let result = done.results.pop().ok_or(StoreError::Closed)??;
        // Outside the writer lock: concurrent producers share one flush.
        self.wait_durable(done.end)?;
        Ok(result)
    }

    /// Whether acknowledgements wait for durability (`FlushPolicy::Sync`).
    pub(crate) fn is_sync(&self) -> bool {
        self.log.flush_policy() == FlushPolicy::Sync
    }

    /// The one durability wait: under `Sync`, blocks until the log is durable up to `end`
    /// (sharing the flush with every other waiter), then indexes the now visible records.
    pub(crate) fn wait_durable(&self, end: PhysicalOffset) -> StoreResult<()> {
        if self.is_sync() && end.get() > 0 {
            self.log.wait_durable(end)?;
            self.dispatch_now();
        }
        Ok(())
    }

    /// Checks one group and returns the tag hash of each message.
    fn check_group(&self, scope: TopicScope, g: &PutGroup<'_>) -> StoreResult<Vec<u64>> {
        validate_topic_name(g.topic, scope)?;
        let mut tag_hashes = Vec::with_capacity(g.msgs.len());
        for m in g.msgs {
            if m.body.len() > self.config.max_body_bytes {
                return Err(StoreError::BodyTooLarge {
                    size: m.body.len(),
                    max: self.config.max_body_bytes,
                });
            }
            let props = Properties::new(m.properties);
            props.validate().map_err(StoreError::BadProperties)?;
            // Refused rather than delivered at once; the retry path sets it internally.
            if scope == TopicScope::Client && props.get(DELAY_LEVEL).is_some() {
                return Err(StoreError::UnsupportedProperty {
                    property: DELAY_LEVEL,
                    reason: DELAY_UNSUPPORTED,
                });
            }
            tag_hashes.push(tag_hash_of(m.properties));
        }
        // Looked at in place: cloning the topic's config for every send of a large
        // append showed in profiles.
        let known = self
            .topics
            .with(g.topic, |t| t.map(|t| (t.perm.write, t.queue_count)));
        let (writable, queue_count) = match known {
            Some(k) => k,
            None => {
                let t = self.topic_for_put(g.topic)?;
                (t.perm.write, t.queue_count)
            }
        };
        if !writable {
            return Err(StoreError::PermissionDenied {
                topic: g.topic.to_owned(),
                access: "writes",
            });
        }
        if g.queue_id >= queue_count {
            return Err(StoreError::QueueNotFound {
                topic: g.topic.to_owned(),
                queue_id: g.queue_id,
                queue_count,
            });
        }
        Ok(tag_hashes)
    }

    /// Stores every valid group with one writer-lock acquisition and one commit-log
    /// append; a group that fails its checks is refused on its own. Does not wait for
    /// durability. The outer error means the append failed and nothing was stored.
    pub(crate) fn append_groups(
        &self,
        scope: TopicScope,
        groups: &[PutGroup<'_>],
    ) -> StoreResult<GroupsAppended> {
        self.admit(groups)?;
        let checked: Vec<StoreResult<Vec<u64>>> =
            groups.iter().map(|g| self.check_group(scope, g)).collect();
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        self.append_checked(writer, groups, checked)
    }

    /// [`Shared::append_groups`] only if the writer lock is free right now: `None` when
    /// another write holds it (nothing is stored then).
    pub(crate) fn try_append_groups(
        &self,
        scope: TopicScope,
        groups: &[PutGroup<'_>],
    ) -> Option<StoreResult<GroupsAppended>> {
        if let Err(e) = self.admit(groups) {
            return Some(Err(e));
        }
        let checked: Vec<StoreResult<Vec<u64>>> =
            groups.iter().map(|g| self.check_group(scope, g)).collect();
        let writer = match self.writer.try_lock() {
            Ok(w) => w,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(self.append_checked(writer, groups, checked))
    }

    /// Refuses a whole append up front when the store is closing or the disk is full,
    /// before anything (an auto-created topic included) is written or acknowledged.
    fn admit(&self, groups: &[PutGroup<'_>]) -> StoreResult<()> {
        if self.dispatch.signal.is_stopped() {
            return Err(StoreError::Closed);
        }
        self.disk.admit(groups.len(), self.log.write_offset().get())
    }

    fn append_checked(
        &self,
        mut writer: MutexGuard<'_, Writer>,
        groups: &[PutGroup<'_>],
        checked: Vec<StoreResult<Vec<u64>>>,
    ) -> StoreResult<GroupsAppended> {
        let mut checked = checked;
        let total: usize = groups.iter().map(|g| g.msgs.len()).sum();
        let mut records: Vec<RecordIn<'_>> = Vec::with_capacity(total);
        // (group index, first queue offset) of every group that goes into the append.
        let mut bases: Vec<(usize, u64)> = Vec::with_capacity(groups.len());
        let cqs = self.queues.store();
        if self.dispatch.dispatched.load(Ordering::Acquire) >= self.log.write_offset().get() {
            // Everything appended is indexed: no promise of blocks is outstanding.
            cqs.recompute_reservations();
        }
        let mut reserved = 0u64;

        let store_ts = now_ms().max(writer.last_store_ts_ms);
        for (i, g) in groups.iter().enumerate() {
            if checked[i].is_err() || g.msgs.is_empty() {
                continue;
            }
            // Queues not written since open start where recovery left them (all indexed).
            let base = writer.next_offset(g.topic, g.queue_id).unwrap_or_else(|| {
                self.queues
                    .get(g.topic, g.queue_id)
                    .map_or(0, |q| q.max_offset().get())
            });
            // Index space is reserved before the append: nothing is acknowledged that
            // cannot be indexed.
            let need = cqs.blocks_needed(base, g.msgs.len() as u64);
            if let Err(e) = cqs.reserve(need) {
                self.disk
                    .report_if_full(&e, 0, "allocating consume-queue space");
                checked[i] = Err(StoreError::cq(g.topic, g.queue_id, e));
                continue;
            }
            reserved += need;
            let Ok(tags) = &checked[i] else { continue };
            // Advanced now so a later group of the same queue continues after this one;
            // undone below if the append fails.
            writer.set_next(g.topic, g.queue_id, base + g.msgs.len() as u64);
            bases.push((i, base));
            records.extend(g.msgs.iter().zip(tags).zip(base..).map(
                |((m, &tag_hash), queue_offset)| RecordIn {
                    topic: g.topic,
                    queue_id: g.queue_id,
                    queue_offset,
                    tag_hash,
                    born_timestamp_ms: m.born_timestamp_ms,
                    store_timestamp_ms: store_ts,
                    reconsume_times: m.reconsume_times,
                    properties: m.properties,
                    body: m.body,
                },
            ));
        }
        let appended = if records.is_empty() {
            Vec::new()
        } else {
            match self.log.write_batch(&records) {
                Ok((a, _)) => a,
                Err(e) => {
                    cqs.unreserve(reserved);
                    let segment = self.config.commitlog.segment_size_bytes;
                    self.disk.append_failed(&e, segment, groups.len());
                    // Nothing of a failed batch is visible: put every counter back, the
                    // earliest base of a queue last.
                    for &(i, base) in bases.iter().rev() {
                        writer.set_next(groups[i].topic, groups[i].queue_id, base);
                    }
                    return Err(e.into());
                }
            }
        };
        writer.last_store_ts_ms = store_ts;
        drop(writer);
        if !appended.is_empty() && !self.is_sync() {
            // Under `Sync` the records are indexed once durable, by `wait_durable`.
            self.dispatch_now();
        }

        let end = appended.last().map_or(PhysicalOffset::new(0), |a| {
            PhysicalOffset::new(a.offset.get() + u64::from(a.size))
        });
        let mut results: Vec<StoreResult<Vec<PutResult>>> =
            checked.into_iter().map(|c| c.map(|_| Vec::new())).collect();
        let mut rest = &appended[..];
        for (i, base) in bases {
            let g = &groups[i];
            let (mine, tail) = rest.split_at(g.msgs.len().min(rest.len()));
            rest = tail;
            results[i] = Ok(mine
                .iter()
                .zip(base..)
                .map(|(a, queue_offset)| PutResult {
                    msg_id: MessageId::new(a.offset, a.size),
                    queue_id: g.queue_id,
                    queue_offset: QueueOffset::new(queue_offset),
                    physical_offset: a.offset,
                })
                .collect());
        }
        Ok(GroupsAppended { results, end })
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
            .dispatch
            .round
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let existed = self.topics.remove(name)?.is_some();
        writer.forget_topic(name);
        drop(writer);
        self.queues.remove_topic(name);
        Ok(existed)
    }
}
