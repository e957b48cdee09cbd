//! Consume queues: per-(topic, queue id) indexes into the commit log, packed into shared
//! arena files.
//!
//! A consume queue is an array of fixed-width 20-byte entries (commit-log offset, record
//! size, tag hash); entry `n` is logical offset `n`, so a lookup is arithmetic. Queues are
//! lists of 4 KiB blocks in 64 MiB arena files whose blocks are allocated on disk
//! (`posix_fallocate`, 1 MiB steps) before any is written through the mapping; queue ends and block lists live in a CRC-framed journal with snapshots, so
//! opening reads no queue data and costs what is stored, not queues × file size. The crate
//! knows nothing about the commit log's records: callers hand in physical offsets.
//!
//! Modules: [`format`] (byte tables), `mmap` (all `unsafe`), `space` (arenas, block
//! allocation, reservations), `queue` ([`ConsumeQueue`]), `journal` (the journal file),
//! `store` ([`QueueStore`]: open, recovery, checkpoints).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod error;
pub mod format;
mod journal;
mod mmap;
mod offset;
mod queue;
mod space;
mod store;

pub use error::Error;
pub use format::Entry;
pub use offset::QueueOffset;
pub use queue::ConsumeQueue;
pub use store::{Config, QueueStore};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
