use protocol::receive::ReceiptHandle;
use thiserror::Error;

use crate::groups::OffsetsError;
use crate::retry::RetryError;
use crate::store::StoreError;

/// Why a receive, ack, change or reject failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub(crate) enum PopError {
    #[error("receipt handle {handle} is not valid: {reason}")]
    InvalidHandle {
        handle: ReceiptHandle,
        reason: &'static str,
    },
    #[error("group {group} consumes by offsets (it has live members); it cannot also receive")]
    ModeConflict { group: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Retry(#[from] RetryError),
    #[error(transparent)]
    Offsets(#[from] OffsetsError),
}
