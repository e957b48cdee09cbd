//! Why a transaction request failed.

use thiserror::Error;

use crate::store::StoreError;

/// Everything a transaction call can fail with.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TxError {
    /// The id is not one this broker writes.
    #[error("{id:?} is not a transaction id (16 hex digits)")]
    BadId {
        /// The id given (cut to 40 characters).
        id: String,
    },
    /// No transaction has that id: never begun here, or ended long ago and forgotten.
    #[error("no transaction {id} on this broker (never begun, or ended and forgotten)")]
    NotFound {
        /// The id.
        id: String,
    },
    /// The transaction is already decided.
    #[error("transaction {id} is already {outcome}")]
    Finished {
        /// The id.
        id: String,
        /// `committed`, `rolled back (reason)` or `being ended`.
        outcome: String,
    },
    /// The transaction would grow past a limit; the refused part is not added.
    #[error("transaction {id} would hold {would_hold} {unit}, over the limit of {max} (--tx-max-{unit}); the send is refused, the transaction stays open")]
    TooLarge {
        /// The id.
        id: String,
        /// What it would hold with the refused part.
        would_hold: u64,
        /// The limit.
        max: u64,
        /// `messages` or `bytes`.
        unit: &'static str,
    },
    /// A bad argument (an ack of another group mode, a topic that cannot take the send).
    #[error("{0}")]
    Invalid(String),
    /// The store refused a read or a write.
    #[error("transaction store: {0}")]
    Store(#[from] StoreError),
    /// A transaction record that does not decode.
    #[error("corrupt transaction record: {0}")]
    Corrupt(&'static str),
    /// Applying a committed transaction's acknowledgements failed; recovery applies them.
    #[error("acknowledgements of transaction {id} not written yet: {reason}")]
    Acks {
        /// The id.
        id: String,
        /// What failed.
        reason: String,
    },
    /// The checkpoint file could not be written or read.
    #[error("transaction checkpoint: {0}")]
    Checkpoint(String),
}
