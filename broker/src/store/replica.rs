//! The store's side of replication: the confirm gate on what is indexed and served, raw
//! appends of a master's records, segment seals, and a truncation that cuts the consume
//! queues with the log.
//!
//! With the gate off (a standalone broker) nothing here runs and the readable end is the
//! log's visible end, as before: one relaxed atomic load per dispatch round or lookup.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::PoisonError;

use commitlog::{EpochEntry, PhysicalOffset};

use super::{MessageStore, Shared, StoreResult, TopicConfig, TopicScope};

impl Shared {
    /// At open, before recovery, for a replicated store: the gate goes on, and the confirm
    /// watermark starts at the journaled dispatched offset, the last one known confirmed
    /// (RocketMQ #6609), so recovery indexes nothing the sync set may not hold.
    pub(crate) fn gate_at_open(&self, journaled: Option<u64>) {
        if !self.config.replicated {
            return;
        }
        let at = journaled.unwrap_or_else(|| self.log.min_offset().get());
        self.log.advance_confirm(PhysicalOffset::new(at));
        self.dispatch.gated.store(true, Ordering::Release);
    }

    /// Where indexing and reads stop: the visible end, and under replication also the
    /// confirm watermark, so no record the sync set does not hold is ever indexed.
    pub(crate) fn readable_end(&self) -> u64 {
        let visible = self.log.visible_offset().get();
        if self.dispatch.gated.load(Ordering::Relaxed) {
            visible.min(self.log.confirm_offset().get())
        } else {
            visible
        }
    }

    /// Creates the topics of replicated records that this broker does not know yet, each
    /// from its first record's offset on, with enough queues for the record's queue id.
    fn learn_topics(&self, bytes: &[u8]) -> StoreResult<()> {
        let mut seen: HashMap<&str, u32> = HashMap::new();
        let mut firsts: Vec<(&str, u64)> = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let Ok(view) = protocol::record::RecordView::decode_unchecked_crc(&bytes[i..]) else {
                break;
            };
            let topic = view.topic();
            let queues = view.queue_id().saturating_add(1);
            if !seen.contains_key(topic) && self.topics.with(topic, |t| t.is_none()) {
                firsts.push((topic, view.physical_offset()));
            }
            let q = seen.entry(topic).or_insert(0);
            *q = (*q).max(queues);
            i += view.total_len().max(1) as usize;
        }
        for (topic, at) in firsts {
            if super::validate_topic_name(topic, TopicScope::Internal).is_err() {
                continue;
            }
            let count = seen
                .get(topic)
                .copied()
                .unwrap_or(1)
                .max(self.config.default_queue_count);
            self.topics.upsert(TopicConfig::new(topic, count), at)?;
        }
        Ok(())
    }
}

impl MessageStore {
    /// Whether the confirm gate is on.
    pub fn is_gated(&self) -> bool {
        self.shared.dispatch.gated.load(Ordering::Acquire)
    }

    /// Raises the confirm watermark (clamped to the write offset) and indexes what it
    /// released. Returns the watermark.
    pub fn advance_confirm(&self, to: PhysicalOffset) -> PhysicalOffset {
        let c = self.shared.log.advance_confirm(to);
        self.shared.dispatch_now();
        c
    }

    /// Appends a master's records at `at` (see [`commitlog::CommitLog::append_raw`]),
    /// learning the topics they belong to first.
    ///
    /// # Errors
    /// The commit log's refusals (wrong offset, bad CRC, foreign record, straddle).
    pub fn replicate(&self, at: PhysicalOffset, bytes: &[u8]) -> StoreResult<PhysicalOffset> {
        self.shared.learn_topics(bytes)?;
        Ok(self.shared.log.append_raw(at, bytes)?)
    }

    /// Ends the active segment at `at`, as the master's did.
    ///
    /// # Errors
    /// As [`commitlog::CommitLog::seal_segment`].
    pub fn seal_segment(&self, at: PhysicalOffset) -> StoreResult<PhysicalOffset> {
        Ok(self.shared.log.seal_segment(at)?)
    }

    /// Records the start of `epoch` at the write offset, durably.
    ///
    /// # Errors
    /// As [`commitlog::CommitLog::begin_epoch`].
    pub fn begin_epoch(&self, epoch: u64, master_id: u64) -> StoreResult<EpochEntry> {
        Ok(self.shared.log.begin_epoch(epoch, master_id)?)
    }

    /// Cuts the log and every consume queue back to `to` (a record boundary), crash-safely:
    /// under the dispatch lock and the writer lock, the dispatched offset is lowered first,
    /// then the log is cut (its own intent makes that survive a crash), then the queues
    /// (recovery cuts them to the log's end anyway), and the queue offsets the writer
    /// assigns next are forgotten so they are read from the queues again.
    ///
    /// # Errors
    /// The commit log's refusal of `to`, I/O errors.
    pub fn truncate_to(&self, to: PhysicalOffset) -> StoreResult<()> {
        let s = &self.shared;
        let _round = s
            .dispatch
            .round
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut writer = s.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let t = to.get();
        s.dispatch.dispatched.fetch_min(t, Ordering::AcqRel);
        s.log.truncate_to(to)?;
        for q in s.queues.all() {
            if q.last_physical_end() > t {
                q.truncate_physical(t)
                    .map_err(|e| super::StoreError::cq(q.topic(), q.queue_id(), e))?;
            }
        }
        *writer = super::put::Writer::default();
        drop(writer);
        s.queues
            .store()
            .checkpoint(s.dispatch.dispatched.load(Ordering::Acquire))
            .map(|_| ())
            .map_err(super::StoreError::Queues)
    }

    /// Before serving as master: makes the writer continue every queue after the highest
    /// queue offset in the log, including records not indexed yet (above the confirm
    /// watermark), so no queue offset is handed out twice (RocketMQ #7689).
    ///
    /// # Errors
    /// A record that cannot be read.
    pub fn seed_writer_from_log(&self) -> StoreResult<()> {
        let s = &self.shared;
        let mut writer = s.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let from = PhysicalOffset::new(s.dispatch.dispatched.load(Ordering::Acquire));
        let mut next: HashMap<(String, u32), u64> = HashMap::new();
        for rec in s.log.iter_from(from) {
            let rec = rec?;
            let v = rec.view();
            let e = next
                .entry((v.topic().to_owned(), v.queue_id()))
                .or_insert(0);
            *e = (*e).max(v.queue_offset() + 1);
        }
        for ((topic, queue_id), n) in next {
            let indexed = s
                .queues
                .get(&topic, queue_id)
                .map_or(0, |q| q.max_offset().get());
            writer.set_next(&topic, queue_id, n.max(indexed));
        }
        Ok(())
    }
}
