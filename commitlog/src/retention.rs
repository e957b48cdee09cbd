//! Retention: deleting whole sealed segments by age or by a total-size budget.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use crate::segment::Segment;
use crate::shared::{lock, Inner};
use crate::{Error, PhysicalOffset};

/// What [`crate::CommitLog::apply_retention`] removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetentionReport {
    /// Start offsets of the removed segments.
    /// Start offsets of the segments deleted.
    pub removed_segments: Vec<PhysicalOffset>,
    /// Their total size.
    pub removed_bytes: u64,
    /// The log's minimum offset afterwards.
    pub min_offset: PhysicalOffset,
}

impl Inner {
    /// Removes the oldest sealed segments that are too old or over the byte budget. The
    /// active segment is never removed; removal is always a prefix so the log stays
    /// contiguous. Readers holding records of a removed segment keep them (the mapping
    /// outlives the file).
    pub(crate) fn apply_retention(&self, now_ms: u64) -> Result<RetentionReport, Error> {
        let _serial = lock(&self.retention_lock);
        let policy = self.cfg.retention;
        let flushed = self.flush.flushed_offset.load(Ordering::SeqCst);
        let removed: Vec<Arc<Segment>> = {
            let mut segs = self
                .segments
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let mut total: u64 = segs.iter().map(|s| s.size()).sum();
            let mut n = 0;
            // Sealed = not the last; only fully durable segments go.
            while n + 1 < segs.len() && segs[n].end() <= flushed {
                let seg = &segs[n];
                let too_old = policy
                    .max_age_ms
                    .is_some_and(|age| now_ms.saturating_sub(seg.last_write_ms()) >= age);
                let over_budget = policy.max_total_bytes.is_some_and(|max| total > max);
                if !too_old && !over_budget {
                    break;
                }
                total -= seg.size();
                n += 1;
            }
            if n > 0 {
                // Advance the minimum before the segments disappear, so a reader either
                // finds the segment or gets OffsetUnavailable.
                self.min_offset.store(segs[n].start.get(), Ordering::SeqCst);
            }
            segs.drain(..n).collect()
        };
        let mut report = RetentionReport {
            min_offset: PhysicalOffset::new(self.min_offset.load(Ordering::SeqCst)),
            ..Default::default()
        };
        for seg in &removed {
            self.cfg
                .storage
                .remove(&seg.path)
                .map_err(|e| Error::io(&seg.path, "remove segment", e))?;
            report.removed_segments.push(seg.start);
            report.removed_bytes += seg.size();
            self.counters
                .segments_removed
                .fetch_add(1, Ordering::Relaxed);
        }
        if !removed.is_empty() {
            self.cfg
                .storage
                .sync_dir(&self.cfg.dir)
                .map_err(|e| Error::io(&self.cfg.dir, "sync folder", e))?;
        }
        Ok(report)
    }
}
