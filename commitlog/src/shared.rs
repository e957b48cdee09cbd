//! State shared by the handle, readers and the background threads.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::flush::state::FlushState;
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
    pub(crate) counters: Counters,
    /// Serialises retention runs.
    pub(crate) retention_lock: Mutex<()>,
}

/// Callers blocked in `wait_visible`.
#[derive(Debug, Default)]
struct VisibleWaiters {
    count: AtomicUsize,
    mutex: Mutex<()>,
    cv: Condvar,
}

impl Inner {
    pub(crate) fn new(
        cfg: Config,
        segments: Vec<Arc<Segment>>,
        writer: Writer,
        end: u64,
        checkpoint: u64,
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
        if self.visible.count.load(Ordering::SeqCst) > 0 {
            drop(lock(&self.visible.mutex));
            self.visible.cv.notify_all();
        }
    }

    pub(crate) fn wait_visible(&self, beyond: PhysicalOffset, timeout: Duration) -> PhysicalOffset {
        let deadline = Instant::now().checked_add(timeout);
        let mut v = self.visible_offset();
        if v > beyond.get() {
            return PhysicalOffset::new(v);
        }
        self.visible.count.fetch_add(1, Ordering::SeqCst);
        let mut guard = lock(&self.visible.mutex);
        loop {
            v = self.visible_offset();
            let now = Instant::now();
            let remaining = match deadline {
                Some(d) if d > now => d - now,
                Some(_) => break,
                None => Duration::from_secs(3600),
            };
            if v > beyond.get() {
                break;
            }
            guard = self
                .visible
                .cv
                .wait_timeout(guard, remaining)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(guard);
        self.visible.count.fetch_sub(1, Ordering::SeqCst);
        PhysicalOffset::new(v)
    }

    /// The segment holding `offset`, if mapped.
    pub(crate) fn segment_for(&self, offset: u64) -> Option<Arc<Segment>> {
        let segs = self.segments.read().unwrap_or_else(PoisonError::into_inner);
        let idx = segs.partition_point(|s| s.start.get() <= offset);
        let seg = segs.get(idx.checked_sub(1)?)?;
        (offset < seg.end()).then(|| Arc::clone(seg))
    }
}
