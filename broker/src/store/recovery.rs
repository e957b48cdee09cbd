//! Start-up: the data-directory lock, the dispatch checkpoint, and rebuilding the consume
//! queues so that they agree with the recovered commit log.

use std::fs::{File, OpenOptions};
use std::sync::atomic::Ordering;
use std::sync::PoisonError;

use serde::{Deserialize, Serialize};

use super::dispatch::Mode;
use super::fsutil::atomic_write_on;
use super::{Shared, StoreConfig, StoreError, StoreResult};

/// Takes an exclusive, non-blocking lock on `<data>/lock` (released when the file closes,
/// including when the process dies).
pub(crate) fn lock_data_dir(config: &StoreConfig) -> StoreResult<File> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io("creating folder", dir, e))?;
    let path = config.lock_path();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::io("opening", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            dir: dir.clone(),
            source: std::io::Error::from(std::io::ErrorKind::WouldBlock),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::io("locking", &path, e)),
    }
}

/// `<data>/checkpoint`: every consume-queue entry for a record below `dispatched_offset` was
/// durable when it was written, and each listed queue held at least `max_offset` entries.
/// Recovery replays the log from there; a queue found shorter than its mark lost durable
/// entries (damage, deleted files) and triggers a replay of the whole log.
#[derive(Serialize, Deserialize, Default)]
pub(crate) struct Checkpoint {
    version: u32,
    dispatched_offset: u64,
    #[serde(default)]
    queues: Vec<QueueMark>,
}

#[derive(Serialize, Deserialize)]
struct QueueMark {
    topic: String,
    queue_id: u32,
    max_offset: u64,
}

impl Checkpoint {
    pub(crate) fn new(dispatched_offset: u64) -> Self {
        Self {
            version: CHECKPOINT_VERSION,
            dispatched_offset,
            queues: Vec::new(),
        }
    }

    pub(crate) fn mark(&mut self, topic: &str, queue_id: u32, max_offset: u64) {
        self.queues.push(QueueMark {
            topic: topic.to_owned(),
            queue_id,
            max_offset,
        });
    }
}

const CHECKPOINT_VERSION: u32 = 1;

pub(crate) fn write_checkpoint(config: &StoreConfig, cp: &Checkpoint) -> StoreResult<()> {
    let path = config.checkpoint_path();
    let bytes = serde_json::to_vec(cp).map_err(|e| StoreError::CorruptedFile {
        path: path.clone(),
        reason: format!("cannot encode checkpoint: {e}"),
    })?;
    atomic_write_on(config.commitlog.storage.as_ref(), &path, &bytes)
}

/// The checkpoint, or `None` when missing or unreadable (then the whole log is replayed,
/// which is slow but always correct).
fn read_checkpoint(config: &StoreConfig) -> Option<Checkpoint> {
    let path = config.checkpoint_path();
    let bytes = std::fs::read(&path).ok()?;
    match serde_json::from_slice::<Checkpoint>(&bytes) {
        Ok(cp) if cp.version == CHECKPOINT_VERSION => Some(cp),
        _ => {
            tracing::warn!(path = %path.display(), "unreadable dispatch checkpoint; replaying the whole log");
            None
        }
    }
}

impl Shared {
    /// Brings the consume queues in line with the freshly recovered commit log and seeds the
    /// writer's queue-offset counters.
    pub(crate) fn recover(&self) -> StoreResult<()> {
        // Everything appended must be visible (Sync policy shows only flushed data) so the
        // replay below sees every record that holds a queue offset.
        self.log.flush()?;
        let log_end = self.log.write_offset().get();
        let log_min = self.log.min_offset().get();
        self.topics.clamp_created_at(log_end)?;
        let topic_names: Vec<String> = self.topics.all().into_iter().map(|t| t.name).collect();
        self.queues
            .open_existing(topic_names.iter().map(String::as_str))?;
        for (topic, queue_id, q) in self.queues.all() {
            let cq_err = |e| StoreError::cq(&topic, queue_id, e);
            q.truncate_physical(log_end).map_err(cq_err)?;
            q.delete_below_physical(log_min).map_err(cq_err)?;
        }

        let checkpoint = read_checkpoint(&self.config);
        let intact = checkpoint
            .as_ref()
            .is_some_and(|cp| self.queues_reach_marks(cp));
        let start = match checkpoint {
            Some(cp) if intact => cp.dispatched_offset.clamp(log_min, log_end),
            _ => log_min,
        };
        if !self.replay(
            start,
            if start == log_min {
                Mode::FullReplay
            } else {
                Mode::Replay
            },
        )? {
            tracing::warn!(
                from = start,
                "consume queues have gaps; replaying the whole log"
            );
            self.replay(log_min, Mode::FullReplay)?;
        }

        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        for (topic, queue_id, q) in self.queues.all() {
            writer.set_next(&topic, queue_id, q.max_offset().get());
        }
        drop(writer);
        self.flush_queues()
    }

    /// Whether every queue of a live topic still holds the entries the checkpoint vouched for.
    fn queues_reach_marks(&self, cp: &Checkpoint) -> bool {
        cp.queues.iter().all(|m| {
            let live = self.topics.with(&m.topic, |t| t.is_some());
            let max = self
                .queues
                .get(&m.topic, m.queue_id)
                .map_or(0, |q| q.max_offset().get());
            let ok = !live || max >= m.max_offset;
            if !ok {
                tracing::warn!(topic = %m.topic, queue_id = m.queue_id, max, mark = m.max_offset, "consume queue lost durable entries");
            }
            ok
        })
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
}
