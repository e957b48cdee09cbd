//! The preallocator's part of the log's state. A leaf: [`crate::shared::Inner`] holds
//! it, and `prealloc` works on it through `Inner`.

use std::sync::{Arc, Mutex};

use crate::segment::Segment;
use crate::sys::MapWriter;
use crate::Signal;

/// The preallocator's state.
#[derive(Debug)]
pub(crate) struct Prealloc {
    /// Serialises segment creation; holds the start of the next segment not yet created.
    pub(crate) next_start: Mutex<u64>,
    /// A segment created (and pre-faulted) ahead of need by the background thread.
    pub(crate) ready: Mutex<Option<(Arc<Segment>, MapWriter)>>,
    /// Wakes the preallocator (a spare segment was used) and stops it.
    pub(crate) signal: Signal,
}

impl Prealloc {
    pub(crate) fn new(next_start: u64) -> Self {
        Prealloc {
            next_start: Mutex::new(next_start),
            ready: Mutex::new(None),
            signal: Signal::new(),
        }
    }
}
