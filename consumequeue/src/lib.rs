//! Consume queues: per-(topic, queue id) indexes into the commit log.
//!
//! A consume queue is an array of fixed-width 20-byte entries (commit-log offset, record
//! size, tag hash) split over memory-mapped segment files. Entry `n` is logical offset `n`,
//! so a lookup is an index computation. The crate knows nothing about the commit log
//! itself: callers hand in physical offsets and, for time search, a timestamp lookup.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod error;
pub mod format;
mod mmap;
mod offset;
mod queue;
mod segment;

pub use error::Error;
pub use format::Entry;
pub use offset::{QueueId, QueueOffset};
pub use queue::{Config, ConsumeQueue};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
