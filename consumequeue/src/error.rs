//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in a consume queue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed; `op` names what was being done.
    #[error("consume queue I/O error while {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file in the queue folder does not have the expected shape.
    #[error("consume queue file {path} is corrupted: {reason}")]
    Corrupted { path: PathBuf, reason: String },
    /// `append` was called with an offset other than the current maximum.
    #[error("consume queue append at offset {got}, expected {expected}")]
    NotContiguous { expected: u64, got: u64 },
    /// An entry that can never be stored (an all-zero entry marks an empty slot).
    #[error("invalid consume queue entry at offset {offset}: {reason}")]
    InvalidEntry { offset: u64, reason: &'static str },
    /// The configuration was rejected at open.
    #[error("invalid consume queue config: {0}")]
    InvalidConfig(String),
    /// A queue offset outside the retained range was asked for.
    #[error("offset {requested} is outside the queue range [{min}, {max})")]
    OutOfRange { requested: u64, min: u64, max: u64 },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
