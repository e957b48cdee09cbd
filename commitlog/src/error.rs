//! The crate's one error type.

use std::io;
use std::path::PathBuf;

use crate::format::FormatError;
use crate::PhysicalOffset;

/// Everything that can go wrong in the commit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system call failed.
    #[error("I/O error ({context}) on {}", path.display())]
    Io {
        /// The file or folder it was about.
        path: PathBuf,
        /// What was being done.
        context: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Another process (or handle) holds the folder's lock.
    #[error("commit log at {} is locked by another process", dir.display())]
    Locked {
        /// The locked folder.
        dir: PathBuf,
        /// Why the lock was refused.
        #[source]
        source: io::Error,
    },
    /// Bytes in a segment do not decode as a record where one should be.
    #[error("corrupted data in segment {segment} at offset {offset}: {reason}")]
    Corrupted {
        /// Start offset of the segment.
        segment: PhysicalOffset,
        /// Where the bad bytes start.
        offset: PhysicalOffset,
        /// What is wrong with them.
        #[source]
        reason: FormatError,
    },
    /// A record's CRC does not match its bytes: it is never served.
    #[error(
        "checksum mismatch at offset {offset}: stored {expected:#010x}, computed {actual:#010x}"
    )]
    ChecksumMismatch {
        /// Where the record starts.
        offset: PhysicalOffset,
        /// The CRC stored in the record.
        expected: u32,
        /// The CRC of the bytes as read.
        actual: u32,
    },
    /// The offset lies below the log's minimum (retention removed it).
    #[error("offset {requested} no longer available, minimum is {min}")]
    OffsetUnavailable {
        /// The offset asked for.
        requested: PhysicalOffset,
        /// The log's current minimum.
        min: PhysicalOffset,
    },
    /// The offset lies at or past the visible end.
    #[error("offset {requested} is not written yet (visible end is {end})")]
    OffsetNotWritten {
        /// The offset asked for.
        requested: PhysicalOffset,
        /// The visible end at the time of the read.
        end: PhysicalOffset,
    },
    /// The encoded record is larger than the configured maximum (or the segment).
    #[error("record of {size} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// Encoded size of the record.
        size: u64,
        /// The limit it exceeds.
        max: u64,
    },
    /// No space for a new segment; nothing of the append was written.
    #[error("disk full while creating segment {segment} ({})", path.display())]
    DiskFull {
        /// Start offset of the segment that could not be created.
        segment: PhysicalOffset,
        /// Its file.
        path: PathBuf,
        /// The `ENOSPC` (or quota) error.
        #[source]
        source: io::Error,
    },
    /// A flush failed earlier: no appends or flushes until the log is reopened.
    #[error("writer poisoned by an earlier failed flush ({reason}); reopen the log")]
    Poisoned {
        /// The failed flush's error.
        reason: String,
    },
    /// The configuration failed validation at open.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// Which setting is wrong and why.
        reason: String,
    },
    /// The epoch file exists but does not decode.
    #[error("epoch file {} is damaged: {reason}", path.display())]
    BadEpochFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        reason: FormatError,
    },
    /// A new epoch must be higher than the newest one in the history.
    #[error("epoch {epoch} is not above the newest epoch {last}")]
    EpochOutOfOrder {
        /// The epoch asked for.
        epoch: u64,
        /// The newest epoch held.
        last: u64,
    },
    /// Replicated bytes must start exactly at the log's write offset.
    #[error("replicated bytes start at {got}, the log ends at {expected}")]
    ReplicaOffsetMismatch {
        /// The log's write offset.
        expected: PhysicalOffset,
        /// Where the bytes claim to start.
        got: PhysicalOffset,
    },
    /// Replicated bytes would cross the end of the active segment (the master never
    /// writes a record across segments, so the stream is broken).
    #[error("replicated record at {offset} of {len} bytes crosses the end of segment {segment}")]
    RecordStraddlesSegment {
        /// Start offset of the active segment.
        segment: PhysicalOffset,
        /// Where the record starts.
        offset: PhysicalOffset,
        /// Its length.
        len: u64,
    },
    /// A truncation point that is not the start of a record, a segment or the write offset.
    #[error("cannot truncate at {offset}: not a record boundary ({reason})")]
    NotRecordBoundary {
        /// The offset asked for.
        offset: PhysicalOffset,
        /// Why it is not a boundary.
        reason: String,
    },
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
