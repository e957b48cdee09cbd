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
        /// What was being done.
        op: &'static str,
        /// The file or folder it was about.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Another broker holds `<data>/lock`.
    #[error("data directory {dir} is in use by another broker")]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// Why the lock was refused.
        #[source]
        source: std::io::Error,
    },
    /// The commit log failed.
    #[error(transparent)]
    CommitLog(#[from] commitlog::Error),
    /// One consume queue failed.
    #[error("consume queue {topic}/{queue_id}: {source}")]
    ConsumeQueue {
        /// Its topic.
        topic: String,
        /// Its queue id.
        queue_id: u32,
        /// What failed.
        #[source]
        source: consumequeue::Error,
    },
    /// The consume-queue store as a whole (open, checkpoint).
    #[error("consume-queue store: {0}")]
    Queues(#[source] consumequeue::Error),
    /// A topic name breaks the naming rules of its scope.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName {
        /// The name.
        name: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// No such topic (and auto-creation is off or does not apply).
    #[error("topic {0} does not exist")]
    TopicNotFound(String),
    /// Creating the topic would pass the broker's topic limit.
    #[error("cannot create topic {topic}: the broker already holds its limit of {limit} topics (max_topics); delete unused topics or raise the limit")]
    TopicLimit {
        /// The topic that was not created.
        topic: String,
        /// The limit.
        limit: u32,
    },
    /// The queue id is not below the topic's queue count.
    #[error("queue {queue_id} does not exist in topic {topic} ({queue_count} queues)")]
    QueueNotFound {
        /// The topic.
        topic: String,
        /// The queue id asked for.
        queue_id: u32,
        /// The topic's queue count.
        queue_count: u32,
    },
    /// The topic's permissions forbid this access.
    #[error("topic {topic} does not allow {access}")]
    PermissionDenied {
        /// The topic.
        topic: String,
        /// `"reads"` or `"writes"`.
        access: &'static str,
    },
    /// A message body is larger than `max_body_bytes`.
    #[error("message body of {size} bytes exceeds the limit of {max} bytes")]
    BodyTooLarge {
        /// The body's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A property blob does not decode.
    #[error("malformed message properties: {0}")]
    BadProperties(#[source] protocol::ProtocolError),
    /// A client set a property the broker does not honour yet (`DELAY`).
    #[error("the {property} property is not supported: {reason}")]
    UnsupportedProperty {
        /// The property's key.
        property: &'static str,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A tag filter does not parse.
    #[error("invalid tag expression {expr:?}: {reason}")]
    BadTagExpression {
        /// The expression.
        expr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A message id does not parse.
    #[error("invalid message id {id:?}: {reason}")]
    BadMessageId {
        /// The id as given.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No record lives where the id points (or it was removed by retention).
    #[error("no message with id {0}")]
    MessageNotFound(String),
    /// A consume-queue entry does not point at the record it should: the index is damaged.
    #[error("consume queue {topic}/{queue_id} entry {queue_offset} is inconsistent: {reason}")]
    Inconsistent {
        /// The queue's topic.
        topic: String,
        /// The queue id.
        queue_id: u32,
        /// The entry's offset.
        queue_offset: u64,
        /// How entry and record differ.
        reason: String,
    },
    /// A metadata file does not decode.
    #[error("corrupted store file {path}: {reason}")]
    CorruptedFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Lookups by key are off on this broker.
    #[error("lookups by key are off on this broker (it runs with --key-index off)")]
    KeyIndexOff,
    /// The key index has not indexed everything dispatched yet: it is being built or
    /// rebuilt from the commit log, or a write failed (a full disk) and it waits to retry.
    /// Answering would miss messages, so lookups are refused meanwhile.
    #[error("the key index is behind the commit log (indexed up to offset {indexed} of {end}): {reason}; try again later")]
    KeyIndexBehind {
        /// Commit-log offset up to which records are indexed.
        indexed: u64,
        /// Commit-log offset up to which records are dispatched.
        end: u64,
        /// Why it is behind.
        reason: String,
    },
    /// A key index file failed its checks; the index is rebuilt from the commit log.
    #[error("key index file {path} is damaged ({reason}); it is being rebuilt from the commit log, try again later")]
    KeyIndexDamaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A lookup by key asks for something impossible.
    #[error("invalid lookup by key: {0}")]
    InvalidKeyQuery(&'static str),
    /// The configuration failed validation at open.
    #[error("invalid store config: {0}")]
    InvalidConfig(String),
    /// The store is closing or closed.
    #[error("the message store is shut down")]
    Closed,
    /// The disk is full (or below the reserve): new writes are refused until space is
    /// freed. Nothing of the refused write was stored.
    #[error(
        "sends refused until space is freed (free={}, reserve={})",
        Human(*free_bytes),
        Human(*reserve_bytes)
    )]
    DiskFull {
        /// Free bytes at the last reading.
        free_bytes: u64,
        /// The reserve in bytes.
        reserve_bytes: u64,
    },
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
