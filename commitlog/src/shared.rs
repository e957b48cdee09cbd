//! State shared by the handle, readers and the background threads.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

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

/// Background-thread control.
#[derive(Debug, Default)]
pub(crate) struct BgState {
    pub(crate) stop: bool,
    pub(crate) kick_flusher: bool,
    pub(crate) kick_preallocator: bool,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) cfg: Config,
    /// Mapped segments in offset order; the last one is the active segment.
    pub(crate) segments: RwLock<Vec<Arc<Segment>>>,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) write_offset: AtomicU64,
    pub(crate) flushed_offset: AtomicU64,
    pub(crate) min_offset: AtomicU64,
    pub(crate) poison: OnceLock<String>,
    /// True while one thread (the group-commit leader) runs a flush.
    pub(crate) flushing: Mutex<bool>,
    pub(crate) flush_cv: Condvar,
    visible_waiters: AtomicUsize,
    visible_mutex: Mutex<()>,
    visible_cv: Condvar,
    pub(crate) bg: Mutex<BgState>,
    pub(crate) bg_cv: Condvar,
    pub(crate) counters: Counters,
    pub(crate) retention_lock: Mutex<()>,
    /// Flushed offset last written to the checkpoint file.
    pub(crate) checkpointed: Mutex<u64>,
    /// Serialises segment creation; holds the start of the next segment not yet created.
    pub(crate) create_lock: Mutex<u64>,
    /// A segment created (and pre-faulted) ahead of need by the background thread.
    pub(crate) ready: Mutex<Option<(Arc<Segment>, MapWriter)>>,
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
            flushed_offset: AtomicU64::new(end),
            min_offset: AtomicU64::new(min),
            poison: OnceLock::new(),
            flushing: Mutex::new(false),
            flush_cv: Condvar::new(),
            visible_waiters: AtomicUsize::new(0),
            visible_mutex: Mutex::new(()),
            visible_cv: Condvar::new(),
            bg: Mutex::new(BgState::default()),
            bg_cv: Condvar::new(),
            counters: Counters::default(),
            retention_lock: Mutex::new(()),
            checkpointed: Mutex::new(checkpoint),
            create_lock: Mutex::new(next_start),
            ready: Mutex::new(None),
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
            FlushPolicy::Sync => self.flushed_offset.load(Ordering::SeqCst),
        }
    }

    /// Wakes `wait_visible` callers; costs one atomic load when nobody waits.
    pub(crate) fn notify_visible(&self) {
        if self.visible_waiters.load(Ordering::SeqCst) > 0 {
            drop(lock(&self.visible_mutex));
            self.visible_cv.notify_all();
        }
    }

    pub(crate) fn wait_visible(&self, beyond: PhysicalOffset, timeout: Duration) -> PhysicalOffset {
        let deadline = Instant::now().checked_add(timeout);
        let mut v = self.visible_offset();
        if v > beyond.get() {
            return PhysicalOffset::new(v);
        }
        self.visible_waiters.fetch_add(1, Ordering::SeqCst);
        let mut guard = lock(&self.visible_mutex);
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
                .visible_cv
                .wait_timeout(guard, remaining)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(guard);
        self.visible_waiters.fetch_sub(1, Ordering::SeqCst);
        PhysicalOffset::new(v)
    }

    /// Wakes the flusher (dirty-bytes trigger).
    pub(crate) fn kick_flusher(&self) {
        lock(&self.bg).kick_flusher = true;
        self.bg_cv.notify_all();
    }

    /// Wakes the preallocator (a spare segment was used).
    pub(crate) fn kick_preallocator(&self) {
        lock(&self.bg).kick_preallocator = true;
        self.bg_cv.notify_all();
    }

    /// The segment holding `offset`, if mapped.
    pub(crate) fn segment_for(&self, offset: u64) -> Option<Arc<Segment>> {
        let segs = self.segments.read().unwrap_or_else(PoisonError::into_inner);
        let idx = segs.partition_point(|s| s.start.get() <= offset);
        let seg = segs.get(idx.checked_sub(1)?)?;
        (offset < seg.end()).then(|| Arc::clone(seg))
    }
}
