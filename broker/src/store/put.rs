//! The write path: validation, queue-offset assignment and the commit-log append.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{MutexGuard, PoisonError, TryLockError};

use bytes::Bytes;
use commitlog::{FlushPolicy, PhysicalOffset, RecordIn};
use consumequeue::QueueOffset;
use protocol::hash::tag_hash;
use protocol::properties::{Properties, DELAY_LEVEL, DELAY_UNSUPPORTED, TAGS};
use protocol::time::now_ms;
use protocol::ProtocolError;

use super::topic_config::validate_topic_name;
use super::{MessageId, Shared, StoreError, StoreResult, TopicConfig, TopicScope};

/// A message to store. Borrowed, so a batch straight out of a request frame is appended
/// without an intermediate copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PutMessage<'a> {
    /// Property blob in `protocol::properties` encoding (the `TAGS` key drives filtering).
    pub properties: &'a [u8],
    /// The payload, stored as is.
    pub body: &'a [u8],
    /// When the producer made the message (wall-clock ms).
    pub born_timestamp_ms: u64,
    /// Deliveries so far: 0 for a producer's message, more for a retry's copy.
    pub reconsume_times: u32,
}

/// Messages for one queue, checked once by [`MessageStore::validate_send`] (the only way
/// to build one): a topic name valid for its scope, every body within `max_body_bytes`,
/// every property blob well formed, no producer-set `DELAY`. It carries each message's
/// tag hash, found while the properties were read, so an append neither checks nor parses
/// them again.
///
/// [`MessageStore::validate_send`]: crate::store::MessageStore::validate_send
#[derive(Clone, Debug)]
pub struct ValidatedSend<'a> {
    topic: Cow<'a, str>,
    queue_id: u32,
    msgs: Cow<'a, [PutMessage<'a>]>,
    tag_hashes: Cow<'a, [u64]>,
}

impl ValidatedSend<'_> {
    /// The topic the messages go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The queue the messages go to.
    pub fn queue_id(&self) -> u32 {
        self.queue_id
    }

    /// The messages, in order.
    pub fn messages(&self) -> &[PutMessage<'_>] {
        &self.msgs
    }
}

/// A message of a [`ValidatedBatch`]: where its property blob and body lie in the
/// batch's data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRange {
    /// The property blob's bytes in the data.
    pub properties: Range<usize>,
    /// The body's bytes in the data.
    pub body: Range<usize>,
    /// When the producer made the message (wall-clock ms).
    pub born_timestamp_ms: u64,
    /// Deliveries so far: 0 for a producer's message, more for a retry's copy.
    pub reconsume_times: u32,
}

/// A [`ValidatedSend`] that owns its data (a request body, shared, not copied), so it can
/// be checked on one thread and appended on another. Built only by
/// [`MessageStore::validate_batch`], with the same checks as `validate_send`.
///
/// [`MessageStore::validate_batch`]: crate::store::MessageStore::validate_batch
#[derive(Clone, Debug)]
pub struct ValidatedBatch {
    data: Bytes,
    topic: String,
    queue_id: u32,
    /// Every range lies within `data` (checked when built).
    msgs: Vec<PutRange>,
    tag_hashes: Vec<u64>,
}

impl ValidatedBatch {
    /// The topic the messages go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The send to append, borrowing this batch; checks nothing again.
    pub fn send(&self) -> ValidatedSend<'_> {
        let msgs: Vec<PutMessage<'_>> = self
            .msgs
            .iter()
            .map(|r| PutMessage {
                properties: &self.data[r.properties.clone()],
                body: &self.data[r.body.clone()],
                born_timestamp_ms: r.born_timestamp_ms,
                reconsume_times: r.reconsume_times,
            })
            .collect();
        ValidatedSend {
            topic: Cow::Borrowed(&self.topic),
            queue_id: self.queue_id,
            msgs: Cow::Owned(msgs),
            tag_hashes: Cow::Borrowed(&self.tag_hashes),
        }
    }
}

/// Why [`MessageStore::validate_send`] refused a send: the rule broken, and the index of
/// the message that broke it (`None`: the topic name).
///
/// [`MessageStore::validate_send`]: crate::store::MessageStore::validate_send
#[derive(Debug)]
pub struct InvalidSend {
    /// The offending message's index in the send; `None` for the topic name.
    pub message: Option<usize>,
    /// What is wrong: `InvalidTopicName`, `BodyTooLarge`, `BadProperties` or
    /// `UnsupportedProperty`.
    pub error: StoreError,
}

impl From<InvalidSend> for StoreError {
    fn from(e: InvalidSend) -> Self {
        e.error
    }
}

/// Where a stored message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutResult {
    /// The message's id (its commit-log position).
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

/// What a multi-queue append did: one outcome per group, in order, and the commit-log end
/// that covers every stored group (what a durability wait needs).
#[derive(Debug)]
pub struct GroupsAppended {
    /// Per group, in order: where its messages went, or why it was refused.
    pub results: Vec<StoreResult<Vec<PutResult>>>,
    /// The commit-log end covering every stored group.
    pub end: PhysicalOffset,
}

/// Reads a property blob once: checks it whole and picks out what the store needs, the
/// tag hash (of the first `TAGS`) and whether a `DELAY` is set.
fn scan_properties(blob: &[u8]) -> Result<(u64, bool), ProtocolError> {
    let (mut tag, mut delay) = (None, false);
    for entry in Properties::new(blob).iter() {
        let (key, value) = entry?;
        if key == TAGS {
            tag.get_or_insert(value);
        } else if key == DELAY_LEVEL {
            delay = true;
        }
    }
    Ok((tag.map_or(0, tag_hash), delay))
}

impl Shared {
    /// The one check of a send; see [`ValidatedSend`].
    pub(crate) fn validate_send<'a>(
        &self,
        scope: TopicScope,
        topic: Cow<'a, str>,
        queue_id: u32,
        msgs: Cow<'a, [PutMessage<'a>]>,
    ) -> Result<ValidatedSend<'a>, InvalidSend> {
        let tag_hashes = self.check_send(scope, &topic, msgs.iter().copied())?;
        Ok(ValidatedSend {
            topic,
            queue_id,
            msgs,
            tag_hashes: Cow::Owned(tag_hashes),
        })
    }

    /// The same check as [`Shared::validate_send`], for messages given as ranges of
    /// `data`; a range outside `data` is refused as malformed.
    pub(crate) fn validate_batch(
        &self,
        scope: TopicScope,
        topic: String,
        queue_id: u32,
        data: Bytes,
        msgs: Vec<PutRange>,
    ) -> Result<ValidatedBatch, InvalidSend> {
        let mut resolved = Vec::with_capacity(msgs.len());
        for (i, r) in msgs.iter().enumerate() {
            match (data.get(r.properties.clone()), data.get(r.body.clone())) {
                (Some(properties), Some(body)) => resolved.push(PutMessage {
                    properties,
                    body,
                    born_timestamp_ms: r.born_timestamp_ms,
                    reconsume_times: r.reconsume_times,
                }),
                _ => {
                    return Err(InvalidSend {
                        message: Some(i),
                        error: StoreError::BadProperties(ProtocolError::Batch(format!(
                            "message {i} lies outside the {} bytes of its batch",
                            data.len()
                        ))),
                    })
                }
            }
        }
        let tag_hashes = self.check_send(scope, &topic, resolved.into_iter())?;
        Ok(ValidatedBatch {
            data,
            topic,
            queue_id,
            msgs,
            tag_hashes,
        })
    }

    /// Checks the topic name and every message; returns the messages' tag hashes.
    fn check_send<'m>(
        &self,
        scope: TopicScope,
        topic: &str,
        msgs: impl ExactSizeIterator<Item = PutMessage<'m>>,
    ) -> Result<Vec<u64>, InvalidSend> {
        validate_topic_name(topic, scope).map_err(|error| InvalidSend {
            message: None,
            error,
        })?;
        let max = self.config.max_body_bytes;
        let mut tag_hashes = Vec::with_capacity(msgs.len());
        for (i, m) in msgs.enumerate() {
            let refuse = |error| InvalidSend {
                message: Some(i),
                error,
            };
            if m.body.len() > max {
                return Err(refuse(StoreError::BodyTooLarge {
                    size: m.body.len(),
                    max,
                }));
            }
            let (tag_hash, delay) =
                scan_properties(m.properties).map_err(|e| refuse(StoreError::BadProperties(e)))?;
            // Refused rather than delivered at once; the retry path sets it internally.
            if delay && scope == TopicScope::Client {
                return Err(refuse(StoreError::UnsupportedProperty {
                    property: DELAY_LEVEL,
                    reason: DELAY_UNSUPPORTED,
                }));
            }
            tag_hashes.push(tag_hash);
        }
        Ok(tag_hashes)
    }

    pub(crate) fn put_batch(
        &self,
        scope: TopicScope,
        topic: &str,
        queue_id: u32,
        msgs: &[PutMessage<'_>],
    ) -> StoreResult<Vec<PutResult>> {
        let send = self.validate_send(scope, topic.into(), queue_id, msgs.into())?;
        let mut done = self.append_groups(std::slice::from_ref(&send))?;
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

    /// Checks that one group's topic takes writes to its queue now (the send itself was
    /// validated when built).
    fn check_group(&self, g: &ValidatedSend<'_>) -> StoreResult<()> {
        let topic = g.topic();
        // Looked at in place: cloning the topic's config for every send of a large
        // append showed in profiles.
        let known = self
            .topics
            .with(topic, |t| t.map(|t| (t.perm.write, t.queue_count)));
        let (writable, queue_count) = match known {
            Some(k) => k,
            None => {
                let t = self.topic_for_put(topic)?;
                (t.perm.write, t.queue_count)
            }
        };
        if !writable {
            return Err(StoreError::PermissionDenied {
                topic: g.topic().to_owned(),
                access: "writes",
            });
        }
        if g.queue_id >= queue_count {
            return Err(StoreError::QueueNotFound {
                topic: g.topic().to_owned(),
                queue_id: g.queue_id,
                queue_count,
            });
        }
        Ok(())
    }

    /// Stores every valid group with one writer-lock acquisition and one commit-log
    /// append; a group that fails its checks is refused on its own. Does not wait for
    /// durability. The outer error means the append failed and nothing was stored.
    pub(crate) fn append_groups(
        &self,
        groups: &[ValidatedSend<'_>],
    ) -> StoreResult<GroupsAppended> {
        self.admit(groups)?;
        let checked: Vec<StoreResult<()>> = groups.iter().map(|g| self.check_group(g)).collect();
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        self.append_checked(writer, groups, checked)
    }

    /// [`Shared::append_groups`] only if the writer lock is free right now: `None` when
    /// another write holds it (nothing is stored then).
    pub(crate) fn try_append_groups(
        &self,
        groups: &[ValidatedSend<'_>],
    ) -> Option<StoreResult<GroupsAppended>> {
        if let Err(e) = self.admit(groups) {
            return Some(Err(e));
        }
        let checked: Vec<StoreResult<()>> = groups.iter().map(|g| self.check_group(g)).collect();
        let writer = match self.writer.try_lock() {
            Ok(w) => w,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(self.append_checked(writer, groups, checked))
    }

    /// Refuses a whole append up front when the store is closing or the disk is full,
    /// before anything (an auto-created topic included) is written or acknowledged.
    fn admit(&self, groups: &[ValidatedSend<'_>]) -> StoreResult<()> {
        if self.dispatch.signal.is_stopped() {
            return Err(StoreError::Closed);
        }
        self.disk.admit(groups.len(), self.log.write_offset().get())
    }

    fn append_checked(
        &self,
        mut writer: MutexGuard<'_, Writer>,
        groups: &[ValidatedSend<'_>],
        checked: Vec<StoreResult<()>>,
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
            let base = writer
                .next_offset(g.topic(), g.queue_id)
                .unwrap_or_else(|| {
                    self.queues
                        .get(g.topic(), g.queue_id)
                        .map_or(0, |q| q.max_offset().get())
                });
            // Index space is reserved before the append: nothing is acknowledged that
            // cannot be indexed.
            let need = cqs.blocks_needed(base, g.msgs.len() as u64);
            if let Err(e) = cqs.reserve(need) {
                self.disk
                    .report_if_full(&e, 0, "allocating consume-queue space");
                checked[i] = Err(StoreError::cq(g.topic(), g.queue_id, e));
                continue;
            }
            reserved += need;
            if checked[i].is_err() {
                continue;
            }
            // Advanced now so a later group of the same queue continues after this one;
            // undone below if the append fails.
            writer.set_next(g.topic(), g.queue_id, base + g.msgs.len() as u64);
            bases.push((i, base));
            records.extend(g.msgs.iter().zip(g.tag_hashes.iter()).zip(base..).map(
                |((m, &tag_hash), queue_offset)| RecordIn {
                    topic: g.topic(),
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
                        writer.set_next(groups[i].topic(), groups[i].queue_id, base);
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
