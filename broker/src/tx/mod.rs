//! Transactions: sends and acknowledgements that take effect together, or not at all.
//!
//! # Design
//!
//! - **Half messages.** A transaction begins with a durable begin record in the system
//!   topic `%TXN_HALF%` (one queue); its id is that record's commit-log offset, unique for
//!   the life of the data directory. Each send-in-transaction stores its messages there
//!   too, as half messages carrying the transaction id, their index and their
//!   destination; each ack-in-transaction stores one ack record per message (group,
//!   queue, offset; a receipt handle is resolved to its queue offset and its lease
//!   extended past the transaction's check window). Nothing reaches a real queue before
//!   commit, so an open transaction holds back no other producer's messages.
//! - **One decision record.** Commit appends, in **one** commit-log append, a commit
//!   record to `%TXN_OP%` followed by the committed copies of every half message in send
//!   order (each copy carries `TX_ID` and `TX_INDEX`). The records of one append are
//!   contiguous in the log and a crash keeps a prefix of them, so after a SIGKILL either
//!   the commit record is gone (nothing of the transaction is visible: it is still open)
//!   or it is there and the copies that survived follow it directly. Recovery counts them
//!   and appends the missing ones behind a new commit record that says where they start,
//!   so a crash during recovery is handled the same way. Then the acks are applied to the
//!   consumer offsets (exact acks: idempotent) and written, and only then a done record
//!   is appended; a commit without a done record is completed at the next start.
//!   Rollback is one rollback record with its reason; half messages are never copied.
//! - **Check-back.** A transaction open past its timeout is checked back every
//!   `check_interval_ms` on the connection of a live producer of its group (the server
//!   keeps them); after `max_checks` unanswered checks it is rolled back, the reason
//!   recorded. Open transactions survive restarts and are checked back after them.
//! - **Bounded start-up.** `<data>/txn/checkpoint` (JSON, version 1) holds the queue
//!   offsets of both topics below which every record belongs to a finished transaction;
//!   recovery reads from there, so start-up cost follows the open transactions, not the
//!   history. It is written (after a commit-log flush) by the check-back loop.
//! - **Limits.** Messages and body bytes per transaction (and acks, counted like messages)
//!   are capped; past a cap the send is refused with `TooLarge` and the transaction stays
//!   open, never buffered without bound.
//!
//! Considered and not chosen: holding half messages in broker memory until commit (lost
//! on a crash, unbounded), and writing copies in a second append after a durable commit
//! record (then recovery must search the log for which copies exist; in one append the
//! copies sit right behind their commit record).

mod acks;
mod error;
mod records;
mod recovery;
mod schedule;
mod service;

pub use error::TxError;
pub(crate) use records::parse_id;
pub use records::AckItem;
pub use recovery::Recovered;
pub use service::{
    ApplyAcks, Check, OpenTx, TxConfig, TxService, DEFAULT_TX_CHECK_INTERVAL_MS,
    DEFAULT_TX_MAX_BYTES, DEFAULT_TX_MAX_CHECKS, DEFAULT_TX_MAX_MESSAGES, DEFAULT_TX_TIMEOUT_MS,
};
