//! The client's error type.

use protocol::{names::NameError, ProtocolError, Status};

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection to the broker failed (connect, read or write).
    #[error("I/O error talking to {addr}: {source}")]
    Io {
        /// The broker's address.
        addr: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The broker sent bytes this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// A record in a pull or get-message response does not decode.
    #[error("bad record in a response: {0}")]
    Record(#[from] protocol::record::FormatError),
    /// The broker answered with a status other than `Ok`.
    #[error("broker refused the request ({status:?}): {message}")]
    Broker {
        /// The broker's status.
        status: Status,
        /// The broker's sentence.
        message: String,
    },
    /// No answer within the request timeout.
    #[error("{what} timed out after {after_ms} ms")]
    Timeout {
        /// What timed out.
        what: &'static str,
        /// After how long.
        after_ms: u64,
    },
    /// The connection closed while the request was in flight, or the client was closed.
    #[error("connection to {addr} closed")]
    Closed {
        /// The broker's address.
        addr: String,
    },
    /// A topic or group name the broker would refuse.
    #[error("invalid name {name:?}: {source}")]
    InvalidName {
        /// The name.
        name: String,
        /// The rule it breaks.
        #[source]
        source: NameError,
    },
    /// A subscription's tag expression the broker would refuse (`a ||`, `a b`).
    #[error("invalid tag expression {expr:?}: {source}")]
    InvalidTagExpression {
        /// The expression.
        expr: String,
        /// What is wrong with it.
        #[source]
        source: protocol::tags::TagExprError,
    },
    /// A message property this broker does not honour yet, refused rather than ignored.
    #[error("the {property} property is not supported: {reason}")]
    UnsupportedProperty {
        /// The property's key.
        property: &'static str,
        /// Why it is refused.
        reason: &'static str,
    },
    /// An argument out of range (empty batch, body over the broker's limit, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A group retry policy the broker would refuse (multiplier below 1, empty delay
    /// table, zero max attempts, ...).
    #[error("invalid retry policy: {0}")]
    InvalidRetryPolicy(#[from] protocol::group_policy::RetryPolicyError),
    /// A broadcast consumer's progress file could not be read, parsed or written.
    #[error("broadcast progress file {path}: {source}")]
    ProgressFile {
        /// The file.
        path: String,
        /// What failed (`InvalidData` for a file that does not parse).
        #[source]
        source: std::io::Error,
    },
    /// TLS could not be set up: a certificate file, or a handshake the broker or this
    /// client refused (untrusted certificate, client certificate missing). Not retried.
    #[error("TLS with {addr}: {reason}")]
    Tls {
        /// The broker's address, or the file at fault.
        addr: String,
        /// What went wrong.
        reason: String,
    },
}

impl Error {
    /// The broker status when the broker refused the request.
    pub fn status(&self) -> Option<Status> {
        match self {
            Self::Broker { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when trying again later (possibly on a new connection) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Io { .. } | Self::Timeout { .. } | Self::Closed { .. } => true,
            Self::Broker { status, .. } => matches!(
                status,
                Status::Busy | Status::ShuttingDown | Status::StorageError
            ),
            _ => false,
        }
    }
}

/// The result of a client call.
pub type Result<T, E = Error> = std::result::Result<T, E>;
