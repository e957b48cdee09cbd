//! The crate's one error type.

use std::io;
use std::path::PathBuf;

use crate::format::FormatError;
use crate::PhysicalOffset;

/// Everything that can go wrong in the commit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("I/O error ({context}) on {}", path.display())]
    Io {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("commit log at {} is locked by another process", dir.display())]
    Locked {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupted data in segment {segment} at offset {offset}: {reason}")]
    Corrupted {
        segment: PhysicalOffset,
        offset: PhysicalOffset,
        #[source]
        reason: FormatError,
    },
    #[error(
        "checksum mismatch at offset {offset}: stored {expected:#010x}, computed {actual:#010x}"
    )]
    ChecksumMismatch {
        offset: PhysicalOffset,
        expected: u32,
        actual: u32,
    },
    #[error("offset {requested} no longer available, minimum is {min}")]
    OffsetUnavailable {
        requested: PhysicalOffset,
        min: PhysicalOffset,
    },
    #[error("offset {requested} is not written yet (visible end is {end})")]
    OffsetNotWritten {
        requested: PhysicalOffset,
        end: PhysicalOffset,
    },
    #[error("record of {size} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { size: u64, max: u64 },
    #[error("disk full while creating segment {segment} ({})", path.display())]
    DiskFull {
        segment: PhysicalOffset,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writer poisoned by an earlier failed flush ({reason}); reopen the log")]
    Poisoned { reason: String },
    #[error("invalid configuration: {reason}")]
    InvalidConfig { reason: String },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, context: &'static str, source: io::Error) -> Error {
        Error::Io {
            path: path.into(),
            context,
            source,
        }
    }

    /// Maps a decode failure at `offset` to the most specific variant.
    pub(crate) fn format(
        segment: PhysicalOffset,
        offset: PhysicalOffset,
        reason: FormatError,
    ) -> Error {
        match reason {
            FormatError::ChecksumMismatch { expected, actual } => Error::ChecksumMismatch {
                offset,
                expected,
                actual,
            },
            reason => Error::Corrupted {
                segment,
                offset,
                reason,
            },
        }
    }
}
