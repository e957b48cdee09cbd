//! FerroMQ's commit log: one segmented, memory-mapped, CRC-checked, append-only log of
//! records, with group-committed flushing, crash recovery and retention. It knows nothing
//! of topics or consumer groups; the broker builds consume queues on top of it.
//!
//! Modules:
//! - [`format`](mod@format): the on-disk byte layout (records, end-of-segment marker, meta files).
//! - [`storage`]: the file-system seam; [`fault`] wraps it for fault injection and crash
//!   images (used by this crate's tests and by the broker's reliability tests).
//! - `log`: [`CommitLog`], the public handle. `append`: the single writer.
//!   `read`: [`RecordRef`] and [`Iter`]. `flush`: group commit, flusher, checkpoint.
//!   `recovery`: start-up scan. `retention`: deleting old segments. `prealloc`: next
//!   segment created ahead of need. `segment`: one mapped file. `sys`: all `unsafe`.
//! - Replication: `replica` appends a master's raw records ([`RawChunk`] is what the
//!   master reads to send); `epochs` keeps the epoch history and [`consistent_point`];
//!   `truncate` cuts the log back crash-safely. The confirm watermark lives in `shared`.
//! - [`Signal`]: the stop/wake signal of every background loop (here and in the broker).
//! - [`DirLock`]: one process per folder (here and for the broker's data directory).
//!
//! # Using the storage seam in tests
//! ```no_run
//! use std::sync::Arc;
//! use commitlog::{fault::FaultyStorage, CommitLog, Config};
//! let faults = Arc::new(FaultyStorage::new());
//! let mut cfg = Config::new("/tmp/x/commitlog");
//! cfg.storage = faults.clone();
//! let (log, _) = CommitLog::open(cfg).unwrap();
//! faults.fail_syncs(true);            // next flush fails -> log is poisoned
//! faults.disk_full(true);             // segment creation fails with ENOSPC
//! // after dropping `log`: only synced bytes (+ a torn suffix) into a fresh folder
//! // faults.write_crash_image("/tmp/x/commitlog".as_ref(), "/tmp/y/commitlog".as_ref(), 100)
//! ```
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod append;
mod config;
mod epochs;
mod error;
pub mod fault;
mod flush;
pub mod format;
mod lock;
mod log;
mod offset;
mod prealloc;
mod read;
mod recovery;
mod replica;
mod retention;
mod segment;
mod shared;
mod signal;
pub mod storage;
mod sys;
mod truncate;

pub use config::{Config, DurationObserver, FlushPolicy, Retention, MIN_SEGMENT_SIZE_BYTES};
pub use epochs::consistent_point;
pub use error::Error;
pub use format::{EpochEntry, RecordIn};
pub use lock::DirLock;
pub use log::{Appended, CommitLog, Stats};
pub use offset::PhysicalOffset;
pub use read::{Iter, Reader, RecordRef};
pub use recovery::{DropReason, Dropped, RecoveryReport};
pub use replica::RawChunk;
pub use retention::RetentionReport;
pub use signal::Signal;

#[cfg(test)]
mod tests {
    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn handles_are_send_sync_static() {
        assert_send_sync::<crate::CommitLog>();
        assert_send_sync::<crate::RecordRef>();
        assert_send_sync::<crate::Iter>();
        assert_send_sync::<crate::Error>();
    }
}
