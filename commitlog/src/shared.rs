//! State shared by the handle, readers and the background threads.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::flush::state::FlushState;
use crate::format::EpochEntry;
use crate::prealloc::state::Prealloc;
use crate::segment::Segment;
use crate::sys::MapWriter;
use crate::{Config, Error, FlushPolicy, PhysicalOffset};

/// Locks a mutex, ignoring poisoning: every critical section here leaves the data
/// consistent, so a panic elsewhere must not cascade.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The single writer's state, behind `Inner::writer`.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) seg: Arc<Segment>,
    pub(crate) map: MapWriter,
    /// Write position inside `seg`.
    pub(crate) pos: usize,
    /// Created segments waiting to become active, in offset order.
    pub(crate) spares: VecDeque<(Arc<Segment>, MapWriter)>,
}

/// Counters observable through [`crate::CommitLog::stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) appends: AtomicU64,
    pub(crate) append_calls: AtomicU64,
    pub(crate) flushes: AtomicU64,
    pub(crate) segments_created: AtomicU64,
    pub(crate) segments_precreated: AtomicU64,
    pub(crate) segments_removed: AtomicU64,
}

/// The log's state, in parts each owned by the file that uses it: the segment list and the
/// write end here, `writer` by `append`, `flush` by `flush` (its type in `flush::state`),
/// `prealloc` by `prealloc` (in `prealloc::state`), `visible` (wake-ups of `wait_visible`)
/// here. The part types are leaves, so this file and the ones working on it do not import
/// each other.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) cfg: Config,
    /// Mapped segments in offset order; the last one is the active segment.
    pub(crate) segments: RwLock<Vec<Arc<Segment>>>,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) write_offset: AtomicU64,
    pub(crate) min_offset: AtomicU64,
    /// Set by a failed flush: no further appends until reopen.
    pub(crate) poison: OnceLock<String>,
    pub(crate) flush: FlushState,
    pub(crate) prealloc: Prealloc,
    visible: VisibleWaiters,
    /// End of the bytes every member of the replication sync set holds (the broker moves
    /// it; a truncation lowers it). Unused by a standalone broker.
    pub(crate) confirm_offset: AtomicU64,
    confirmed: VisibleWaiters,
    /// The epoch history (`epochs.rs`), changed under the writer lock.
    pub(crate) epochs: Mutex<Vec<EpochEntry>>,
    pub(crate) counters: Counters,
    /// Serialises retention runs.
    pub(crate) retention_lock: Mutex<()>,
}

/// Callers blocked in `wait_visible` (or `wait_confirmed`).
#[derive(Debug, Default)]
struct VisibleWaiters {
    count: AtomicUsize,
    mutex: Mutex<()>,
    cv: Condvar,
}

impl VisibleWaiters {
    /// Wakes the waiters; costs one atomic load when nobody waits.
    fn notify(&self) {
        if self.count.load(Ordering::SeqCst) > 0 {
            drop(lock(&self.mutex));
            self.cv.notify_all();
        }
    }

    /// Blocks until `current()` is beyond `beyond` or `timeout` passes; returns it.
    fn wait(&self, beyond: u64, timeout: Duration, current: impl Fn() -> u64) -> u64 {
        let deadline = Instant::now().checked_add(timeout);
        let mut v = current();
        if v > beyond {
            return v;
        }
        self.count.fetch_add(1, Ordering::SeqCst);
        let mut guard = lock(&self.mutex);
        loop {
            v = current();
            let now = Instant::now();
            let remaining = match deadline {
                Some(d) if d > now => d - now,
                Some(_) => break,
                None => Duration::from_secs(3600),
            };
            if v > beyond {
                break;
            }
            guard = self
                .cv
                .wait_timeout(guard, remaining)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(guard);
        self.count.fetch_sub(1, Ordering::SeqCst);
        v
    }
}

impl Inner {
    pub(crate) fn new(
        cfg: Config,
        segments: Vec<Arc<Segment>>,
        writer: Writer,
        end: u64,
        checkpoint: u64,
        epochs: Vec<EpochEntry>,
    ) -> Inner {
        let min = segments.first().map_or(0, |s| s.start.get());
        let next_start = writer.seg.end();
        Inner {
            cfg,
            segments: RwLock::new(segments),
            writer: Mutex::new(writer),
            write_offset: AtomicU64::new(end),
            min_offset: AtomicU64::new(min),
            poison: OnceLock::new(),
            flush: FlushState::new(end, checkpoint),
            prealloc: Prealloc::new(next_start),
            visible: VisibleWaiters::default(),
            confirm_offset: AtomicU64::new(0),
            confirmed: VisibleWaiters::default(),
            epochs: Mutex::new(epochs),
            counters: Counters::default(),
            retention_lock: Mutex::new(()),
        }
    }

    pub(crate) fn check_poison(&self) -> Result<(), Error> {
        match self.poison.get() {
            Some(reason) => Err(Error::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    pub(crate) fn visible_offset(&self) -> u64 {
        match self.cfg.flush {
            FlushPolicy::Async { .. } => self.write_offset.load(Ordering::SeqCst),
            FlushPolicy::Sync => self.flush.flushed_offset.load(Ordering::SeqCst),
        }
    }

    /// Wakes `wait_visible` callers; costs one atomic load when nobody waits.
    pub(crate) fn notify_visible(&self) {
        self.visible.notify();
    }

    pub(crate) fn wait_visible(&self, beyond: PhysicalOffset, timeout: Duration) -> PhysicalOffset {
        PhysicalOffset::new(
            self.visible
                .wait(beyond.get(), timeout, || self.visible_offset()),
        )
    }

    /// Raises the confirm watermark to `to` (clamped to the write offset; it never moves
    /// down here) and wakes its waiters. Returns the watermark.
    pub(crate) fn advance_confirm(&self, to: u64) -> u64 {
        let to = to.min(self.write_offset.load(Ordering::SeqCst));
        let prev = self.confirm_offset.fetch_max(to, Ordering::SeqCst);
        if to > prev {
            self.confirmed.notify();
        }
        prev.max(to)
    }

    /// Lowers the confirm watermark to at most `to` (a truncation).
    pub(crate) fn lower_confirm(&self, to: u64) {
        self.confirm_offset.fetch_min(to, Ordering::SeqCst);
    }

    pub(crate) fn wait_confirmed(&self, beyond: u64, timeout: Duration) -> u64 {
        self.confirmed.wait(beyond, timeout, || {
            self.confirm_offset.load(Ordering::SeqCst)
        })
    }

    /// The segment holding `offset`, if mapped.
    pub(crate) fn segment_for(&self, offset: u64) -> Option<Arc<Segment>> {
        let segs = self.segments.read().unwrap_or_else(PoisonError::into_inner);
        let idx = segs.partition_point(|s| s.start.get() <= offset);
        let seg = segs.get(idx.checked_sub(1)?)?;
        (offset < seg.end()).then(|| Arc::clone(seg))
    }
}
