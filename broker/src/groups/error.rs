use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::store::StoreError;

/// Why consumer offsets could not be loaded, changed or saved.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OffsetsError {
    /// Reading, creating or syncing an offsets file or folder failed.
    #[error("consumer offsets: {op} {}: {source}", path.display())]
    Io {
        /// What was being done (`"read"`, `"create folder"`...).
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The error from the OS.
        #[source]
        source: io::Error,
    },
    /// The snapshot `config/offsets` is not the JSON this broker writes.
    #[error("consumer offsets file {} does not parse: {source}", path.display())]
    Corrupt {
        /// The snapshot file.
        path: PathBuf,
        /// What the JSON parser found.
        #[source]
        source: serde_json::Error,
    },
    /// The journal `config/offsets.jnl` has a bad frame with data after it (not a torn
    /// tail, which is cut off).
    #[error("consumer offsets journal {} is damaged: {reason}", path.display())]
    CorruptJournal {
        /// The journal file.
        path: PathBuf,
        /// Where and what is wrong.
        reason: String,
    },
    /// An entry of the snapshot parses but cannot be true: an acked range that ends
    /// before it starts.
    #[error(
        "consumer offsets file {}: group {group} topic {topic} queue {queue_id}: {reason}",
        path.display()
    )]
    CorruptEntry {
        /// The file holding the entry.
        path: PathBuf,
        /// The entry's consumer group.
        group: String,
        /// The entry's topic.
        topic: String,
        /// The entry's queue.
        queue_id: u32,
        /// What is wrong with it.
        reason: String,
    },
    /// The snapshot was written by a broker with another format version.
    #[error(
        "consumer offsets file {} has format version {found}; this broker reads version {supported}",
        path.display()
    )]
    UnsupportedVersion {
        /// The snapshot file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this broker reads ([`super::OFFSETS_FORMAT_VERSION`]).
        supported: u32,
    },
    /// A commit holds an acked range that ends before it starts.
    #[error("group {group} topic {topic} queue {queue_id}: acked range {start}..{end} ends before it starts")]
    InvalidRange {
        /// The committing group.
        group: String,
        /// The queue's topic.
        topic: String,
        /// The queue.
        queue_id: u32,
        /// First offset of the range.
        start: u64,
        /// End of the range (exclusive), below `start`.
        end: u64,
    },
    /// The atomic write of the offsets file failed; the previous file is intact.
    #[error("consumer offsets: saving {}: {source}", path.display())]
    Save {
        /// The file being replaced.
        path: PathBuf,
        /// Why the write failed (a full disk shows as one).
        #[source]
        source: Box<StoreError>,
    },
    /// A member's commit from before its group's offsets were reset.
    #[error("group {group} was reset (epoch {current}) after this member's view (epoch {seen}); it restarts from the reset offsets")]
    ResetSince {
        /// The group that was reset.
        group: String,
        /// The reset epoch the member last saw.
        seen: u64,
        /// The group's reset epoch now.
        current: u64,
    },
    /// Serialising offsets to JSON failed (not expected with well-formed state).
    #[error("consumer offsets could not be encoded: {0}")]
    Encode(#[source] serde_json::Error),
}
