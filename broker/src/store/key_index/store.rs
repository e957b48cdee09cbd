//! The store's side of the key index: lookups checked against the log, catching up.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use commitlog::{PhysicalOffset, RecordRef};

use super::{keys_of, Lookup};
use crate::store::{Shared, StoreError, StoreResult};

/// Record bytes one lookup returns at most (at least one record); `more` says the rest.
const MAX_MATCH_BYTES: u64 = 16 << 20;

/// What a lookup by key found.
#[derive(Debug, Default)]
pub struct KeyMatches {
    /// The messages, oldest first.
    pub records: Vec<RecordRef>,
    /// More messages match than were returned (the limit or the byte budget was hit).
    pub more: bool,
}

impl Shared {
    pub(crate) fn query_by_key(
        &self,
        topic: &str,
        key: &str,
        from_ms: u64,
        to_ms: u64,
        max: usize,
    ) -> StoreResult<KeyMatches> {
        let Some(index) = &self.keys else {
            return Err(StoreError::KeyIndexOff);
        };
        if key.is_empty() || key.contains(|c: char| c.is_ascii_whitespace()) {
            return Err(StoreError::InvalidKeyQuery("a key is one word, not empty"));
        }
        if max == 0 {
            return Err(StoreError::InvalidKeyQuery("max must be at least 1"));
        }
        if from_ms > to_ms {
            return Err(StoreError::InvalidKeyQuery("from is after to"));
        }
        let t = self
            .topics
            .get(topic)
            .ok_or_else(|| StoreError::TopicNotFound(topic.to_owned()))?;
        if !t.perm.read {
            return Err(StoreError::PermissionDenied {
                topic: topic.to_owned(),
                access: "reads",
            });
        }
        let q = Lookup {
            topic,
            key,
            from_ms,
            to_ms,
        };
        let dispatched = self.dispatch.dispatched.load(Ordering::Acquire);
        let mut out = KeyMatches::default();
        let mut bytes = 0u64;
        index.lookup(&q, dispatched, |phys| {
            // Records of a deleted topic of the same name are never served again.
            if phys < t.created_at_physical {
                return ControlFlow::Continue(());
            }
            let Some(rec) = self.matching(&q, phys) else {
                return ControlFlow::Continue(());
            };
            if out.records.len() >= max || (bytes >= MAX_MATCH_BYTES && !out.records.is_empty()) {
                out.more = true;
                return ControlFlow::Break(());
            }
            bytes += u64::from(rec.size());
            out.records.push(rec);
            ControlFlow::Continue(())
        })?;
        out.records.reverse();
        Ok(out)
    }

    /// The record at `phys` if it is a message of `q`'s topic carrying its key within its
    /// time range; the index only says where to look.
    fn matching(&self, q: &Lookup<'_>, phys: u64) -> Option<RecordRef> {
        let rec = self.log.read(PhysicalOffset::new(phys)).ok()?;
        let v = rec.view();
        let ok = v.topic() == q.topic
            && (q.from_ms..=q.to_ms).contains(&v.store_timestamp_ms())
            && keys_of(v.properties()).any(|k| k == q.key);
        ok.then_some(rec)
    }

    /// Indexes what the key index lacks up to the dispatched offset, a step at a time under
    /// the dispatch round lock; gives up after `budget` (`None`: until done or failed).
    pub(crate) fn catch_up_keys(&self, budget: Option<Duration>) {
        let Some(index) = &self.keys else {
            return;
        };
        let started = Instant::now();
        loop {
            let dispatched = self.dispatch.dispatched.load(Ordering::Acquire);
            if !index.is_behind(dispatched) {
                return;
            }
            let round = self
                .dispatch
                .round
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let dispatched = self.dispatch.dispatched.load(Ordering::Acquire);
            let step = index.catch_up(&self.log, dispatched);
            drop(round);
            match step {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    self.disk.report_if_full(&e, 0, "writing the key index");
                    tracing::debug!(error = %e, "key index catch-up failed; retrying later");
                    return;
                }
            }
            if budget.is_some_and(|b| started.elapsed() >= b) {
                return;
            }
        }
    }

    /// Removes key index files below the log's minimum (after retention).
    pub(crate) fn trim_keys(&self) -> StoreResult<()> {
        let Some(index) = &self.keys else {
            return Ok(());
        };
        let _round = self
            .dispatch
            .round
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        index.trim(self.log.min_offset().get())
    }
}
