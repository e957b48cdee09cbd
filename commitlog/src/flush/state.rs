//! The flush part of the log's state: what group commit and the flusher thread share.
//! A leaf: [`crate::shared::Inner`] holds it, and `flush` works on it through `Inner`.

use std::sync::atomic::AtomicU64;
use std::sync::{Condvar, Mutex};

use crate::Signal;

/// Group commit and the flusher thread's state.
#[derive(Debug)]
pub(crate) struct FlushState {
    /// End of the durable data.
    pub(crate) flushed_offset: AtomicU64,
    /// True while one thread (the group-commit leader) runs a flush.
    pub(crate) flushing: Mutex<bool>,
    pub(crate) done: Condvar,
    /// Flushed offset last written to the checkpoint file.
    pub(crate) checkpointed: Mutex<u64>,
    /// Wakes the flusher (dirty-bytes trigger) and stops it.
    pub(crate) signal: Signal,
}

impl FlushState {
    pub(crate) fn new(flushed: u64, checkpointed: u64) -> Self {
        FlushState {
            flushed_offset: AtomicU64::new(flushed),
            flushing: Mutex::new(false),
            done: Condvar::new(),
            checkpointed: Mutex::new(checkpointed),
            signal: Signal::new(),
        }
    }
}
