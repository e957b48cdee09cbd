use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::store::StoreError;

/// Why a send-back or the retry scheduler failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RetryError {
    /// The retry settings are out of range.
    #[error("invalid retry config: {0}")]
    InvalidConfig(String),
    /// The nacked message id does not parse (bad request).
    #[error("send back: bad message id {id:?}: {source}")]
    BadMessageId {
        /// The id as sent.
        id: String,
        /// Why it does not parse.
        #[source]
        source: Box<StoreError>,
    },
    /// Nothing is stored under the nacked id (bad request, or removed by retention).
    #[error("send back: message {id} not found: {source}")]
    MessageNotFound {
        /// The id.
        id: String,
        /// The store's answer.
        #[source]
        source: Box<StoreError>,
    },
    /// The message cannot be sent back (e.g. it sits in a schedule topic, which no
    /// consumer is ever given).
    #[error("send back: message {id} in topic {topic} cannot be sent back: {reason}")]
    NotRetryable {
        /// The message's id.
        id: String,
        /// The topic it is stored in.
        topic: String,
        /// Why it cannot be sent back.
        reason: &'static str,
    },
    /// The group name breaks the naming rules (bad request).
    #[error("send back: invalid group name {group:?}: {source}")]
    InvalidGroup {
        /// The name as sent.
        group: String,
        /// The rule it breaks.
        #[source]
        source: protocol::names::NameError,
    },
    /// The stored message's properties do not decode.
    #[error("message {id} has malformed properties: {source}")]
    BadProperties {
        /// The message's id.
        id: String,
        /// What is wrong with them.
        #[source]
        source: protocol::ProtocolError,
    },
    /// The store refused a read or write; `op` says which, `target` names the topic or
    /// message.
    #[error("retry: {op} {target}: {source}")]
    Store {
        /// What the retry service was doing.
        op: &'static str,
        /// The topic or message it was doing it to.
        target: String,
        /// The store's error.
        #[source]
        source: Box<StoreError>,
    },
    /// A file of the retry service (its progress) could not be read or written.
    #[error("retry: {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The schedule progress file does not decode.
    #[error("schedule progress file {} is corrupt: {reason}", path.display())]
    CorruptProgress {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The timer refused to park a retry, or did not start.
    #[error("retry: {0}")]
    Timer(#[from] crate::timer::TimerError),
    /// The group policies file does not decode or fails its checksum.
    #[error("group policies file {} is corrupt: {reason}", path.display())]
    CorruptPolicies {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A group's retry policy is out of range (bad request).
    #[error("invalid retry policy for group {group}: {source}")]
    InvalidPolicy {
        /// The group.
        group: String,
        /// What is out of range.
        #[source]
        source: protocol::group_policy::RetryPolicyError,
    },
}

impl RetryError {
    /// Whether the request itself was at fault (the server answers a client error rather
    /// than a broker error).
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            Self::BadMessageId { .. }
                | Self::MessageNotFound { .. }
                | Self::NotRetryable { .. }
                | Self::InvalidGroup { .. }
                | Self::InvalidPolicy { .. }
        )
    }
}
