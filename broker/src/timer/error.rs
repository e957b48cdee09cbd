//! Errors of the timer.

use std::path::PathBuf;

use crate::store::StoreError;

/// Why a timer operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TimerError {
    /// A file of the timer could not be read or written.
    #[error("timer: cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A timer file does not parse.
    #[error("timer: {} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The store refused a read or a write.
    #[error("timer: {op} {target}: {source}")]
    Store {
        /// What was being done.
        op: &'static str,
        /// The topic or message concerned.
        target: String,
        /// The store's error.
        #[source]
        source: Box<StoreError>,
    },
    /// The delivery time is further ahead than the broker allows.
    #[error(
        "delivery time {deliver_at_ms} is {delay_ms} ms ahead, over the broker's maximum \
         timer delay of {max_delay_ms} ms (--max-timer-delay-ms)"
    )]
    DelayTooLong {
        /// The requested delivery time (wall-clock ms).
        deliver_at_ms: u64,
        /// How far ahead that is.
        delay_ms: u64,
        /// The broker's maximum (`--max-timer-delay-ms`).
        max_delay_ms: u64,
    },
    /// A send named both a delivery time and a delay.
    #[error("a send takes a delivery time or a delay, not both")]
    BothTimes,
    /// A recall handle that does not decode.
    #[error("bad recall handle {handle:?}: {reason}")]
    BadHandle {
        /// The handle as given.
        handle: String,
        /// Why it does not decode.
        reason: &'static str,
    },
    /// A recall handle of no timer message of this topic.
    #[error("no timer message {handle:?} for topic {topic}")]
    NotFound {
        /// The handle as given.
        handle: String,
        /// The topic named with it.
        topic: String,
    },
    /// The timer is stopping.
    #[error("the timer is stopping")]
    Closed,
}

impl TimerError {
    /// Whether the error is the request's fault rather than the broker's.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            Self::DelayTooLong { .. } | Self::BothTimes | Self::BadHandle { .. }
        )
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn store(op: &'static str, target: impl Into<String>, source: StoreError) -> Self {
        Self::Store {
            op,
            target: target.into(),
            source: Box::new(source),
        }
    }
}
