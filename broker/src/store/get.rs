//! The read path: batches by queue offset with tag filtering, lookups by id and by time.

use commitlog::RecordRef;
use consumequeue::{ConsumeQueue, Entry, QueueOffset};

use super::{MessageId, Shared, StoreError, StoreResult, TagFilter, TopicConfig};

/// Entries read from a consume queue per step.
const READ_CHUNK: usize = 256;
/// Most entries a filtered read skips over before returning, so one pull stays bounded.
const MAX_SCAN_ENTRIES: usize = 16_384;

/// What to read: up to `max_count` messages of one queue from `from` (and about
/// `max_bytes`; at least one message when any matches), skipping those `filter` rejects.
#[derive(Clone, Copy, Debug)]
pub struct GetRequest<'a> {
    /// The topic to read.
    pub topic: &'a str,
    /// The queue of that topic.
    pub queue_id: u32,
    /// First queue offset to read.
    pub from: QueueOffset,
    /// Most messages returned.
    pub max_count: usize,
    /// Byte budget of the returned records; the first match is returned even if larger.
    pub max_bytes: usize,
    /// Which messages to return; the others are skipped over.
    pub filter: &'a TagFilter,
}

/// Outcome of a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GetStatus {
    /// `messages` is not empty.
    Found,
    /// Entries were scanned but the filter matched none; `next_offset` skips them.
    NoMatchedMessage,
    /// `from` was below the queue's minimum (retention); resume at `min`.
    OffsetBelowMin {
        /// The queue's minimum.
        min: QueueOffset,
    },
    /// `from` was beyond the queue's end; `next_offset` is the end.
    OffsetPastMax,
    /// `from` is the queue's end: nothing new yet (long-poll candidate).
    NoNewMessage,
}

/// A batch of messages and where to continue.
#[derive(Clone, Debug)]
pub struct GetResult {
    /// What the read found.
    pub status: GetStatus,
    /// Zero-copy handles on the records, in queue order.
    pub messages: Vec<RecordRef>,
    /// Offset to pull from next.
    pub next_offset: QueueOffset,
    /// The queue's minimum offset.
    pub min_offset: QueueOffset,
    /// The queue's maximum offset (exclusive).
    pub max_offset: QueueOffset,
}

impl Shared {
    fn readable_topic(&self, topic: &str, queue_id: u32) -> StoreResult<TopicConfig> {
        let t = self
            .topics
            .get(topic)
            .ok_or_else(|| StoreError::TopicNotFound(topic.to_owned()))?;
        if queue_id >= t.queue_count {
            return Err(StoreError::QueueNotFound {
                topic: topic.to_owned(),
                queue_id,
                queue_count: t.queue_count,
            });
        }
        Ok(t)
    }

    pub(crate) fn queue_range(
        &self,
        topic: &str,
        queue_id: u32,
    ) -> StoreResult<(QueueOffset, QueueOffset)> {
        self.readable_topic(topic, queue_id)?;
        Ok(self
            .queues
            .get(topic, queue_id)
            .map_or((QueueOffset::new(0), QueueOffset::new(0)), |q| {
                (q.min_offset(), q.max_offset())
            }))
    }

    pub(crate) fn get_messages(&self, req: GetRequest<'_>) -> StoreResult<GetResult> {
        let (topic, queue_id) = (req.topic, req.queue_id);
        let t = self.readable_topic(topic, queue_id)?;
        if !t.perm.read {
            return Err(StoreError::PermissionDenied {
                topic: topic.to_owned(),
                access: "reads",
            });
        }
        if self.is_damaged(topic, queue_id) {
            self.repair_queue(topic, queue_id)?;
        }
        match self.get_messages_once(&req) {
            // A lost or damaged block, or an entry that does not match its record: the
            // queue is rebuilt from the log (the truth) and the read tried once more.
            Err(e) if needs_repair(&e) => {
                self.mark_damaged(topic, queue_id, &e);
                self.repair_queue(topic, queue_id)?;
                self.get_messages_once(&req)
            }
            other => other,
        }
    }

    fn get_messages_once(&self, req: &GetRequest<'_>) -> StoreResult<GetResult> {
        let Some(cq) = self.queues.get(req.topic, req.queue_id) else {
            let zero = QueueOffset::new(0);
            let status = if req.from == zero {
                GetStatus::NoNewMessage
            } else {
                GetStatus::OffsetPastMax
            };
            return Ok(empty(status, zero, zero, zero));
        };
        let mut result = self.read_queue(&cq, req)?;
        if let GetStatus::OffsetBelowMin { .. } = result.status {
            // The entry pointed below the log's minimum: retention ran since the queue was
            // last trimmed. Trim now and report the real minimum.
            let min = cq
                .delete_below_physical(self.log.min_offset().get())
                .map_err(|e| StoreError::cq(req.topic, req.queue_id, e))?;
            if req.from >= min {
                return self.read_queue(&cq, req);
            }
            result.status = GetStatus::OffsetBelowMin { min };
            result.next_offset = min;
            result.min_offset = min;
        }
        Ok(result)
    }

    fn read_queue(&self, cq: &ConsumeQueue, req: &GetRequest<'_>) -> StoreResult<GetResult> {
        let GetRequest {
            topic,
            queue_id,
            from,
            max_count,
            max_bytes,
            filter,
        } = *req;
        let (min, max) = (cq.min_offset(), cq.max_offset());
        if from < min {
            return Ok(empty(GetStatus::OffsetBelowMin { min }, min, min, max));
        }
        if from > max {
            return Ok(empty(GetStatus::OffsetPastMax, max, min, max));
        }
        if from == max || max_count == 0 {
            return Ok(empty(GetStatus::NoNewMessage, from, min, max));
        }
        let mut messages = Vec::with_capacity(max_count.min(READ_CHUNK * 4));
        let mut entries: Vec<Entry> = Vec::with_capacity(READ_CHUNK.min(max_count));
        let (mut next, mut bytes, mut scanned) = (from.get(), 0usize, 0usize);
        let mut reader = self.log.reader();
        'scan: while messages.len() < max_count && scanned < MAX_SCAN_ENTRIES.max(max_count) {
            entries.clear();
            let want = if filter.is_all() {
                max_count - messages.len()
            } else {
                READ_CHUNK
            };
            match cq.read(QueueOffset::new(next), want.min(READ_CHUNK), &mut entries) {
                Ok(0) => break,
                Ok(_) => {}
                Err(consumequeue::Error::OutOfRange { min, .. }) if messages.is_empty() => {
                    let min = QueueOffset::new(min);
                    return Ok(empty(
                        GetStatus::OffsetBelowMin { min },
                        min,
                        min,
                        cq.max_offset(),
                    ));
                }
                Err(e) => return Err(StoreError::cq(topic, queue_id, e)),
            }
            for e in &entries {
                scanned += 1;
                if !filter.matches_hash(e.tag_hash) {
                    next += 1;
                    continue;
                }
                let rec = match reader.read(commitlog::PhysicalOffset::new(e.physical_offset)) {
                    Ok(r) => r,
                    Err(commitlog::Error::OffsetUnavailable { .. }) if messages.is_empty() => {
                        return Ok(empty(GetStatus::OffsetBelowMin { min }, min, min, max));
                    }
                    // Retention caught up mid-batch: return what we have.
                    Err(commitlog::Error::OffsetUnavailable { .. }) => break 'scan,
                    Err(err) => return Err(err.into()),
                };
                check_record(&rec, e, topic, queue_id, next)?;
                if !filter.matches_properties(rec.view().properties()) {
                    next += 1;
                    continue;
                }
                let len = rec.bytes().len();
                if !messages.is_empty() && bytes + len > max_bytes {
                    break 'scan;
                }
                bytes += len;
                messages.push(rec);
                next += 1;
                if messages.len() >= max_count || bytes >= max_bytes {
                    break 'scan;
                }
            }
        }
        let status = if messages.is_empty() {
            GetStatus::NoMatchedMessage
        } else {
            GetStatus::Found
        };
        Ok(GetResult {
            status,
            messages,
            next_offset: QueueOffset::new(next),
            min_offset: min,
            max_offset: cq.max_offset(),
        })
    }

    pub(crate) fn get_by_id(&self, id: MessageId) -> StoreResult<RecordRef> {
        let not_found = || StoreError::MessageNotFound(id.to_string());
        let end = id.offset().get().saturating_add(u64::from(id.size()));
        if end > self.readable_end() {
            return Err(not_found());
        }
        match self.log.read(id.offset()) {
            Ok(rec) if rec.size() == id.size() => Ok(rec),
            Ok(_) => Err(not_found()),
            Err(
                commitlog::Error::OffsetUnavailable { .. }
                | commitlog::Error::OffsetNotWritten { .. }
                | commitlog::Error::Corrupted { .. },
            ) => Err(not_found()),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) fn search_offset_by_time(
        &self,
        topic: &str,
        queue_id: u32,
        timestamp_ms: u64,
    ) -> StoreResult<QueueOffset> {
        self.readable_topic(topic, queue_id)?;
        let Some(cq) = self.queues.get(topic, queue_id) else {
            return Ok(QueueOffset::new(0));
        };
        Ok(cq.search_time(timestamp_ms, |e| {
            self.log
                .read(commitlog::PhysicalOffset::new(e.physical_offset))
                .ok()
                .map(|r| r.view().store_timestamp_ms())
        }))
    }
}

fn needs_repair(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Inconsistent { .. }
            | StoreError::ConsumeQueue {
                source: consumequeue::Error::BlockMismatch { .. },
                ..
            }
    )
}

fn empty(status: GetStatus, next: QueueOffset, min: QueueOffset, max: QueueOffset) -> GetResult {
    GetResult {
        status,
        messages: Vec::new(),
        next_offset: next,
        min_offset: min,
        max_offset: max,
    }
}

/// A consume-queue entry must point at exactly the record it indexes.
fn check_record(
    rec: &RecordRef,
    e: &Entry,
    topic: &str,
    queue_id: u32,
    queue_offset: u64,
) -> StoreResult<()> {
    let v = rec.view();
    let reason = if rec.size() != e.size {
        Some(format!("size {} but record has {}", e.size, rec.size()))
    } else if v.topic_bytes() != topic.as_bytes()
        || v.queue_id() != queue_id
        || v.queue_offset() != queue_offset
    {
        Some(format!(
            "record belongs to {}/{} offset {}",
            v.topic(),
            v.queue_id(),
            v.queue_offset()
        ))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(StoreError::Inconsistent {
            topic: topic.to_owned(),
            queue_id,
            queue_offset,
            reason,
        }),
        None => Ok(()),
    }
}
