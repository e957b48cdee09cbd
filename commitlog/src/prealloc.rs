//! Background creation and pre-faulting of the next segment, so a roll finds its segment
//! ready and the first appends into it take no page faults.

use std::sync::atomic::Ordering;
use std::sync::PoisonError;
use std::time::Duration;

use crate::segment::Segment;
use crate::shared::{lock, Inner};
use crate::PhysicalOffset;

/// Retry pause after a failed creation (e.g. disk full), so the thread does not spin.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

impl Inner {
    pub(crate) fn run_preallocator(&self) {
        let mut pause = None;
        loop {
            {
                let mut bg = lock(&self.bg);
                if !bg.stop && !bg.kick_preallocator {
                    let wait = pause.unwrap_or(Duration::from_secs(3600));
                    bg = self
                        .bg_cv
                        .wait_timeout(bg, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                if bg.stop {
                    return;
                }
                bg.kick_preallocator = false;
            }
            pause = if self.precreate_next() {
                None
            } else {
                Some(RETRY_PAUSE)
            };
        }
    }

    /// Creates the next segment if none is waiting. Returns false on failure.
    pub(crate) fn precreate_next(&self) -> bool {
        let mut next = lock(&self.create_lock);
        if lock(&self.ready).is_some() {
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
                *lock(&self.ready) = Some((seg, map));
                true
            }
            Err(_) => false,
        }
    }
}
