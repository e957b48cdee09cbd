//! Start-up: the data-directory lock, and bringing the consume queues (as their journal
//! left them) in line with the recovered commit log.

use std::sync::atomic::Ordering;

use commitlog::DirLock;

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
        self.dispatch.trimmed_below.store(0, Ordering::Release);
        self.checkpoint()
    }

    /// Replays the log from `from` to its end; false if a gap was seen (Replay mode).
    fn replay(&self, from: u64, mode: Mode) -> StoreResult<bool> {
        self.dispatch.dispatched.store(from, Ordering::Release);
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
}
