//! Damaged queues: which ones are known damaged (indexing failed, or a lost or mismatching
//! block was found), and their rebuild from the commit log, the truth, while the other
//! queues go on.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, PoisonError};

use commitlog::PhysicalOffset;
use consumequeue::{Entry, QueueOffset};

use super::{Shared, StoreError, StoreResult};

/// The set of damaged queues, `(topic, queue id)`; almost always empty.
#[derive(Debug, Default)]
pub(crate) struct Damaged {
    queues: Mutex<HashSet<(String, u32)>>,
}

impl Damaged {
    fn set(&self) -> MutexGuard<'_, HashSet<(String, u32)>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Shared {
    /// Records that a queue needs rebuilding from the log; logged once per queue.
    pub(crate) fn mark_damaged(&self, topic: &str, queue_id: u32, e: &StoreError) {
        let mut d = self.damaged.set();
        if d.insert((topic.to_owned(), queue_id)) {
            tracing::error!(topic, queue_id, error = %e, "consume queue failed; it is rebuilt from the commit log, the other queues go on");
        }
    }

    pub(crate) fn is_damaged(&self, topic: &str, queue_id: u32) -> bool {
        let d = self.damaged.set();
        !d.is_empty() && d.contains(&(topic.to_owned(), queue_id))
    }

    pub(crate) fn forget_damage(&self, topic: &str, queue_id: u32) {
        let mut d = self.damaged.set();
        if !d.is_empty() {
            d.remove(&(topic.to_owned(), queue_id));
        }
    }

    pub(crate) fn damaged_queues(&self) -> Vec<(String, u32)> {
        let d = self.damaged.set();
        d.iter().cloned().collect()
    }

    /// Rebuilds one queue from the commit log (its blocks were lost or damaged, or
    /// indexing failed for it), without stopping the others for longer than the scan.
    pub(crate) fn repair_queue(&self, topic: &str, queue_id: u32) -> StoreResult<()> {
        let _round = self
            .dispatch
            .round
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(created) = self
            .topics
            .with(topic, |t| t.map(|t| t.created_at_physical))
        else {
            self.forget_damage(topic, queue_id);
            return Ok(());
        };
        let cq = self.queues.get_or_open(topic, queue_id)?;
        let to = self.dispatch.dispatched.load(Ordering::Acquire);
        let from = self.log.min_offset().get().max(created);
        let mut found: Vec<(u64, Entry)> = Vec::new();
        // Nothing indexed lies below `from` (or the log holds nothing): nothing to scan.
        let scan = if from < to {
            Some(self.log.iter_from(PhysicalOffset::new(from)))
        } else {
            None
        };
        for rec in scan.into_iter().flatten() {
            let rec = rec?;
            if rec.next_offset().get() > to {
                break;
            }
            let v = rec.view();
            if v.topic() == topic && v.queue_id() == queue_id {
                found.push((
                    v.queue_offset(),
                    Entry {
                        physical_offset: rec.offset().get(),
                        size: rec.size(),
                        tag_hash: v.tag_hash(),
                    },
                ));
            }
        }
        let cq_err = |e| StoreError::cq(topic, queue_id, e);
        let mut next = found.first().map_or(cq.max_offset().get(), |(o, _)| *o);
        cq.reset(QueueOffset::new(next)).map_err(cq_err)?;
        let mut run: Vec<Entry> = Vec::new();
        let mut run_start = next;
        for (o, e) in found {
            if o != next {
                cq.append_batch(QueueOffset::new(run_start), &run)
                    .map_err(cq_err)?;
                run.clear();
                cq.reset(QueueOffset::new(o)).map_err(cq_err)?;
                run_start = o;
                next = o;
            }
            run.push(e);
            next += 1;
        }
        cq.append_batch(QueueOffset::new(run_start), &run)
            .map_err(cq_err)?;
        self.forget_damage(topic, queue_id);
        tracing::warn!(
            topic,
            queue_id,
            max = next,
            "consume queue rebuilt from the commit log"
        );
        Ok(())
    }
}
