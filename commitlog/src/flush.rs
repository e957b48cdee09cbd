//! Making data durable: group commit, the background flusher and the checkpoint.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use crate::format::{Meta, MetaKind};
use crate::segment::now_ms;
use crate::shared::{lock, Inner};
use crate::{Error, FlushPolicy};

pub(crate) mod state;

pub(crate) const CHECKPOINT_FILE: &str = "checkpoint";
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = "clean_shutdown";

impl Inner {
    /// Blocks until everything below `end` is durable. Concurrent callers share one flush:
    /// the first becomes the leader and syncs all data written so far; the others wait for
    /// it and are done if it covered their end (group commit).
    /// An `end` beyond the written data is clamped to it.
    pub(crate) fn flush_to(&self, end: u64) -> Result<(), Error> {
        loop {
            // Re-clamped each round: a truncation may lower the write offset meanwhile.
            let end = end.min(self.write_offset.load(Ordering::SeqCst));
            self.check_poison()?;
            if self.flush.flushed_offset.load(Ordering::SeqCst) >= end {
                return Ok(());
            }
            let mut flushing = lock(&self.flush.flushing);
            if self.flush.flushed_offset.load(Ordering::SeqCst) >= end {
                return Ok(());
            }
            if *flushing {
                drop(
                    self.flush
                        .done
                        .wait(flushing)
                        .unwrap_or_else(PoisonError::into_inner),
                );
                continue;
            }
            *flushing = true;
            drop(flushing);
            let from = self.flush.flushed_offset.load(Ordering::SeqCst);
            let target = self.write_offset.load(Ordering::SeqCst);
            let started = Instant::now();
            let result = self.sync_range(from, target);
            if let Some(observe) = &self.cfg.on_flush {
                (observe.0)(started.elapsed());
            }
            let mut flushing = lock(&self.flush.flushing);
            *flushing = false;
            if let Err(e) = &result {
                // A failed sync may have dropped dirty pages: nothing after `from` can be
                // trusted to reach the disk, so refuse further writes until reopen.
                let _ = self.poison.set(e.to_string());
            } else {
                self.flush.flushed_offset.store(target, Ordering::SeqCst);
                self.counters.flushes.fetch_add(1, Ordering::Relaxed);
            }
            drop(flushing);
            self.flush.done.notify_all();
            if self.cfg.flush == FlushPolicy::Sync {
                self.notify_visible();
            }
            result?;
        }
    }

    /// msyncs `from..to`, segment by segment in offset order.
    fn sync_range(&self, from: u64, to: u64) -> Result<(), Error> {
        let mut at = from;
        while at < to {
            let Some(seg) = self.segment_for(at) else {
                return Err(Error::InvalidConfig {
                    reason: format!("no segment holds offset {at}"),
                });
            };
            let start = (at - seg.start.get()) as usize;
            let end = (to.min(seg.end()) - seg.start.get()) as usize;
            let data = seg.map.bytes(start, end).unwrap_or(&[]);
            let map = Arc::clone(&seg.map);
            self.cfg
                .storage
                .sync_mapped(&seg.path, start as u64, data, &mut || map.sync(start, end))
                .map_err(|e| Error::io(&seg.path, "msync segment", e))?;
            at = seg.start.get() + end as u64;
        }
        Ok(())
    }

    pub(crate) fn meta_path(&self, name: &str) -> PathBuf {
        self.cfg.dir.join(name)
    }

    /// Records the flushed offset in the checkpoint file if it moved.
    pub(crate) fn write_checkpoint(&self) -> Result<(), Error> {
        let flushed = self.flush.flushed_offset.load(Ordering::SeqCst);
        let mut last = lock(&self.flush.checkpointed);
        if *last == flushed {
            return Ok(());
        }
        let path = self.meta_path(CHECKPOINT_FILE);
        let meta = Meta {
            kind: MetaKind::Checkpoint,
            offset: flushed,
        };
        self.cfg
            .storage
            .write_atomic(&path, &meta.encode())
            .map_err(|e| Error::io(&path, "write checkpoint", e))?;
        *last = flushed;
        Ok(())
    }

    /// Body of the flusher thread: periodic (Async) flushes, checkpoints and retention.
    pub(crate) fn run_flusher(&self) {
        let interval = match self.cfg.flush {
            FlushPolicy::Async { interval_ms } => Duration::from_millis(interval_ms),
            FlushPolicy::Sync => Duration::from_millis(1000),
        };
        let retention_every = Duration::from_millis(self.cfg.retention_check_interval_ms.max(1));
        let mut last_retention = Instant::now();
        while self.flush.signal.wait_timeout(interval) {
            if self.poison.get().is_some() {
                continue;
            }
            // Errors poison the writer; appenders and `flush` callers report them.
            let _ = self.flush_to(self.write_offset.load(Ordering::SeqCst));
            let _ = self.write_checkpoint();
            let retention = self.cfg.retention;
            if (retention.max_age_ms.is_some() || retention.max_total_bytes.is_some())
                && last_retention.elapsed() >= retention_every
            {
                last_retention = Instant::now();
                let _ = self.apply_retention(now_ms());
            }
        }
    }
}
