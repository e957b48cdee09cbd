//! Start-up: the data-directory lock, and bringing the consume queues (as their journal
//! left them) in line with the recovered commit log; repair of one damaged queue.

use std::sync::atomic::Ordering;
use std::sync::PoisonError;

use commitlog::{DirLock, PhysicalOffset};
use consumequeue::{Entry, QueueOffset};

use super::config::LOCK_FILE;
use super::dispatch::Mode;
use super::{Shared, StoreConfig, StoreError, StoreResult};

/// Takes `<data>/lock` ([`commitlog::DirLock`]: exclusive, non-blocking, released when
/// the process dies).
pub(crate) fn lock_data_dir(config: &StoreConfig) -> StoreResult<DirLock> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io("creating folder", dir, e))?;
    DirLock::acquire(dir, LOCK_FILE).map_err(|e| match e {
        commitlog::Error::Locked { dir, source } => StoreError::Locked { dir, source },
        other => other.into(),
    })
}

impl Shared {
    /// Brings the consume queues in line with the freshly recovered commit log. Reads no
    /// queue data except for queues whose last record lies past the log's end; then
    /// replays the log after the journaled dispatched offset `journaled` (`None`: the
    /// whole log).
    pub(crate) fn recover(&self, journaled: Option<u64>) -> StoreResult<()> {
        // Everything appended must be visible (Sync policy shows only flushed data) so the
        // replay below sees every record that holds a queue offset.
        self.log.flush()?;
        let log_end = self.log.write_offset().get();
        let log_min = self.log.min_offset().get();
        self.topics.clamp_created_at(log_end)?;
        for q in self.queues.all() {
            if self.topics.with(q.topic(), |t| t.is_none()) {
                // The topic was deleted after the queue's last checkpoint.
                self.queues.remove_topic(q.topic());
            } else if q.last_physical_end() > log_end {
                q.truncate_physical(log_end)
                    .map_err(|e| StoreError::cq(q.topic(), q.queue_id(), e))?;
            }
        }
        let start = journaled.map_or(log_min, |d| d.clamp(log_min, log_end));
        let mode = if start == log_min {
            Mode::FullReplay
        } else {
            Mode::Replay
        };
        if !self.replay(start, mode)? {
            tracing::warn!(
                from = start,
                "consume queues have gaps; replaying the whole log"
            );
            self.replay(log_min, Mode::FullReplay)?;
        }
        self.queues.store().recompute_reservations();
        self.trimmed_below.store(0, Ordering::Release);
        self.checkpoint()
    }

    /// Replays the log from `from` to its end; false if a gap was seen (Replay mode).
    fn replay(&self, from: u64, mode: Mode) -> StoreResult<bool> {
        self.dispatched.store(from, Ordering::Release);
        loop {
            let round = self.dispatch_round(mode)?;
            if round.gap {
                return Ok(false);
            }
            if !round.more {
                return Ok(true);
            }
        }
    }

    /// Rebuilds one queue from the commit log (its blocks were lost or damaged, or
    /// indexing failed for it), without stopping the others for longer than the scan.
    pub(crate) fn repair_queue(&self, topic: &str, queue_id: u32) -> StoreResult<()> {
        let _round = self
            .dispatch_round
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
        let to = self.dispatched.load(Ordering::Acquire);
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
