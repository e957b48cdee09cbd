//! The message store's error type.

use std::path::PathBuf;

use super::disk::Human;

/// Everything the message store can fail with. Bad input gets its own variant so the server
/// can map it to a precise wire status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file-system call failed; `op` names what was being done.
    #[error("store I/O error while {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another broker holds `<data>/lock`.
    #[error("data directory {dir} is in use by another broker")]
    Locked {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    CommitLog(#[from] commitlog::Error),
    #[error("consume queue {topic}/{queue_id}: {source}")]
    ConsumeQueue {
        topic: String,
        queue_id: u32,
        #[source]
        source: consumequeue::Error,
    },
    /// The consume-queue store as a whole (open, checkpoint).
    #[error("consume-queue store: {0}")]
    Queues(#[source] consumequeue::Error),
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: String },
    #[error("topic {0} does not exist")]
    TopicNotFound(String),
    /// Creating the topic would pass the broker's topic limit.
    #[error("cannot create topic {topic}: the broker already holds its limit of {limit} topics (max_topics); delete unused topics or raise the limit")]
    TopicLimit { topic: String, limit: u32 },
    #[error("queue {queue_id} does not exist in topic {topic} ({queue_count} queues)")]
    QueueNotFound {
        topic: String,
        queue_id: u32,
        queue_count: u32,
    },
    #[error("topic {topic} does not allow {access}")]
    PermissionDenied { topic: String, access: &'static str },
    #[error("message body of {size} bytes exceeds the limit of {max} bytes")]
    BodyTooLarge { size: usize, max: usize },
    #[error("malformed message properties: {0}")]
    BadProperties(#[source] protocol::ProtocolError),
    /// A client set a property the broker does not honour yet (`DELAY`).
    #[error("the {property} property is not supported: {reason}")]
    UnsupportedProperty {
        property: &'static str,
        reason: &'static str,
    },
    #[error("invalid tag expression {expr:?}: {reason}")]
    BadTagExpression { expr: String, reason: &'static str },
    #[error("invalid message id {id:?}: {reason}")]
    BadMessageId { id: String, reason: &'static str },
    #[error("no message with id {0}")]
    MessageNotFound(String),
    /// A consume-queue entry does not point at the record it should: the index is damaged.
    #[error("consume queue {topic}/{queue_id} entry {queue_offset} is inconsistent: {reason}")]
    Inconsistent {
        topic: String,
        queue_id: u32,
        queue_offset: u64,
        reason: String,
    },
    #[error("corrupted store file {path}: {reason}")]
    CorruptedFile { path: PathBuf, reason: String },
    #[error("invalid store config: {0}")]
    InvalidConfig(String),
    #[error("the message store is shut down")]
    Closed,
    /// The disk is full (or below the reserve): new writes are refused until space is
    /// freed. Nothing of the refused write was stored.
    #[error(
        "sends refused until space is freed (free={}, reserve={})",
        Human(*free_bytes),
        Human(*reserve_bytes)
    )]
    DiskFull { free_bytes: u64, reserve_bytes: u64 },
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Whether the disk (or quota) is full: sends are refused until space is freed. The
    /// one way to ask; callers never match on the commit log's or queues' I/O errors.
    pub fn is_disk_full(&self) -> bool {
        let full = commitlog::storage::is_disk_full;
        match self {
            Self::Io { source, .. } => full(source),
            Self::ConsumeQueue { source, .. } | Self::Queues(source) => source.is_disk_full(),
            Self::DiskFull { .. } | Self::CommitLog(commitlog::Error::DiskFull { .. }) => true,
            Self::CommitLog(commitlog::Error::Io { source, .. }) => full(source),
            _ => false,
        }
    }

    pub(crate) fn cq(topic: &str, queue_id: u32, source: consumequeue::Error) -> Self {
        Self::ConsumeQueue {
            topic: topic.to_owned(),
            queue_id,
            source,
        }
    }
}

/// Result alias for the store.
pub type StoreResult<T> = Result<T, StoreError>;
