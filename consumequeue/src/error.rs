//! The crate's error type.

use std::path::PathBuf;

use commitlog::storage::is_disk_full;

/// Everything that can go wrong in the consume-queue store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed; `op` names what was being done.
    #[error("consume queue I/O error while {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or folder it was about.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A store file does not have the expected shape.
    #[error("consume queue file {path} is corrupted: {reason}")]
    Corrupted {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A block does not carry the header of the queue that reads it (lost or damaged).
    #[error("consume queue block {block_index} of queue {handle}: {reason}")]
    BlockMismatch {
        /// The reading queue's handle.
        handle: u32,
        /// Index of the block within the queue.
        block_index: u64,
        /// What the header says instead.
        reason: String,
    },
    /// `append` was called with an offset other than the current maximum.
    #[error("consume queue append at offset {got}, expected {expected}")]
    NotContiguous {
        /// The queue's maximum offset.
        expected: u64,
        /// The offset the append started at.
        got: u64,
    },
    /// An entry that can never be stored.
    #[error("invalid consume queue entry at offset {offset}: {reason}")]
    InvalidEntry {
        /// The entry's queue offset.
        offset: u64,
        /// Why it cannot be stored.
        reason: &'static str,
    },
    /// The configuration was rejected at open.
    #[error("invalid consume queue config: {0}")]
    InvalidConfig(String),
    /// A queue offset outside the retained range was asked for.
    #[error("offset {requested} is outside the queue range [{min}, {max})")]
    OutOfRange {
        /// The offset asked for.
        requested: u64,
        /// The queue's minimum.
        min: u64,
        /// The queue's maximum (exclusive).
        max: u64,
    },
    /// A failed sync of the journal or an arena: checkpoints stop until reopen.
    #[error("consume queue checkpoints stopped after a failed sync: {0}")]
    Poisoned(String),
    /// The queue was dropped (its topic deleted).
    #[error("consume queue was dropped")]
    Dropped,
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Whether this is a full disk (`ENOSPC`/`EDQUOT`), e.g. no room for a new arena.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Self::Io { source, .. } if is_disk_full(source))
    }
}
