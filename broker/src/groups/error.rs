use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::store::StoreError;

/// Why consumer offsets could not be loaded, changed or saved.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OffsetsError {
    #[error("consumer offsets: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("consumer offsets file {} does not parse: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("consumer offsets journal {} is damaged: {reason}", path.display())]
    CorruptJournal { path: PathBuf, reason: String },
    #[error(
        "consumer offsets file {}: group {group} topic {topic} queue {queue_id}: {reason}",
        path.display()
    )]
    CorruptEntry {
        path: PathBuf,
        group: String,
        topic: String,
        queue_id: u32,
        reason: String,
    },
    #[error(
        "consumer offsets file {} has format version {found}; this broker reads version {supported}",
        path.display()
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("group {group} topic {topic} queue {queue_id}: acked range {start}..{end} ends before it starts")]
    InvalidRange {
        group: String,
        topic: String,
        queue_id: u32,
        start: u64,
        end: u64,
    },
    /// The atomic write of the offsets file failed; the previous file is intact.
    #[error("consumer offsets: saving {}: {source}", path.display())]
    Save {
        path: PathBuf,
        #[source]
        source: Box<StoreError>,
    },
    /// A member's commit from before its group's offsets were reset.
    #[error("group {group} was reset (epoch {current}) after this member's view (epoch {seen}); it restarts from the reset offsets")]
    ResetSince {
        group: String,
        seen: u64,
        current: u64,
    },
    #[error("consumer offsets could not be encoded: {0}")]
    Encode(#[source] serde_json::Error),
}
