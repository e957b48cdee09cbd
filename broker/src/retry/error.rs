use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::store::StoreError;

/// Why a send-back or the retry scheduler failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RetryError {
    #[error("invalid retry config: {0}")]
    InvalidConfig(String),
    /// The nacked message id does not parse (bad request).
    #[error("send back: bad message id {id:?}: {source}")]
    BadMessageId {
        id: String,
        #[source]
        source: Box<StoreError>,
    },
    /// Nothing is stored under the nacked id (bad request, or removed by retention).
    #[error("send back: message {id} not found: {source}")]
    MessageNotFound {
        id: String,
        #[source]
        source: Box<StoreError>,
    },
    /// The message cannot be sent back (e.g. it sits in a schedule topic, which no
    /// consumer is ever given).
    #[error("send back: message {id} in topic {topic} cannot be sent back: {reason}")]
    NotRetryable {
        id: String,
        topic: String,
        reason: &'static str,
    },
    #[error("send back: invalid group name {group:?}: {source}")]
    InvalidGroup {
        group: String,
        #[source]
        source: protocol::names::NameError,
    },
    /// The stored message's properties do not decode.
    #[error("message {id} has malformed properties: {source}")]
    BadProperties {
        id: String,
        #[source]
        source: protocol::ProtocolError,
    },
    /// The store refused a read or write; `op` says which, `target` names the topic or
    /// message.
    #[error("retry: {op} {target}: {source}")]
    Store {
        op: &'static str,
        target: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("retry: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("schedule progress file {} is corrupt: {reason}", path.display())]
    CorruptProgress { path: PathBuf, reason: String },
    /// The timer refused to park a retry, or did not start.
    #[error("retry: {0}")]
    Timer(#[from] crate::timer::TimerError),
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
        )
    }
}
