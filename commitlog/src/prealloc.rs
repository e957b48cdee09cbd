//! Background creation and pre-faulting of the next segment, so a roll finds its segment
//! ready and the first appends into it take no page faults.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::segment::Segment;
use crate::shared::{lock, Inner};
use crate::PhysicalOffset;

pub(crate) mod state;

/// Retry pause after a failed creation (e.g. disk full), so the thread does not spin.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Sleep between wake-ups when nothing is asked for.
const IDLE: Duration = Duration::from_secs(3600);

impl Inner {
    pub(crate) fn run_preallocator(&self) {
        let mut pause = None;
        while self.prealloc.signal.wait_timeout(pause.unwrap_or(IDLE)) {
            pause = if self.precreate_next() {
                None
            } else {
                Some(RETRY_PAUSE)
            };
        }
    }

    /// Creates the next segment if none is waiting. Returns false on failure.
    pub(crate) fn precreate_next(&self) -> bool {
        let mut next = lock(&self.prealloc.next_start);
        if lock(&self.prealloc.ready).is_some() {
            return true;
        }
        let start = PhysicalOffset::new(*next);
        match Segment::create(
            self.cfg.storage.as_ref(),
            &self.cfg.dir,
            start,
            self.cfg.segment_size_bytes,
        ) {
            Ok((seg, mut map)) => {
                // Still under the create lock: a writer that needs this segment waits for
                // it rather than racing to create the same file.
                if self.cfg.small_folios() {
                    map.keep_folios_small();
                }
                if self.cfg.prefault {
                    map.prefault();
                }
                *next = seg.end();
                self.counters
                    .segments_precreated
                    .fetch_add(1, Ordering::Relaxed);
                *lock(&self.prealloc.ready) = Some((seg, map));
                true
            }
            Err(_) => false,
        }
    }
}
