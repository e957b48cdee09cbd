//! Transactions: sends and acknowledgements that take effect together or not at all.
//!
//! A producer opens a transaction with [`TxBeginRequest`] (naming its producer group),
//! adds messages with [`TxSendRequest`] (body: a [`crate::batch`], as for a send) and
//! acknowledgements of consumed messages with [`TxAckRequest`], then ends it with
//! [`TxCommitRequest`] or [`TxRollbackRequest`]. Until commit nothing of it is visible.
//!
//! A transaction left open past its timeout is checked back: the broker sends a
//! [`TxCheckRequest`] *request frame* down the connection of a live producer of the group
//! (one that sent [`TxRegisterRequest`] or began a transaction on it). The producer
//! answers by committing or rolling back with the usual requests; it owes no response
//! frame. Past the broker's check limit the transaction is rolled back, the reason kept.

use serde::{Deserialize, Serialize};

use crate::messages::{Empty, Request, SendReceipt};
use crate::RequestCode;

/// The system topic holding half messages (and each transaction's begin and acks).
pub const HALF_TOPIC: &str = "%TXN_HALF%";
/// The system topic holding each transaction's decision (commit or rollback) and the
/// mark that a commit was fully applied.
pub const OP_TOPIC: &str = "%TXN_OP%";
/// Property: the transaction a message was sent in (committed copies keep it).
pub const TX_ID: &str = "TX_ID";
/// Property: a committed message's place among its transaction's messages (0-based).
pub const TX_INDEX: &str = "TX_INDEX";

/// Names this connection a live producer of `producer_group`, for check-backs, until it
/// closes. Beginning a transaction does the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRegisterRequest {
    /// The producer group.
    pub producer_group: String,
}
request!(TxRegisterRequest, TxRegister, Empty);

/// Opens a transaction, durably (it survives a broker restart as a pending one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxBeginRequest {
    /// The producer group whose live producers answer check-backs.
    pub producer_group: String,
    /// Open longer than this, the transaction is checked back; `None`: the broker's
    /// `--tx-timeout-ms`.
    pub timeout_ms: Option<u64>,
}

/// The new transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxBeginResponse {
    /// Names the transaction in every later request.
    pub tx_id: String,
}
request!(TxBeginRequest, TxBegin, TxBeginResponse);

/// Adds messages for one queue to a transaction. Body: `count` messages in the
/// [`crate::batch`] layout. Stored durably as half messages, invisible until commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxSendRequest {
    /// The transaction.
    pub tx_id: String,
    /// The topic the messages go to on commit.
    pub topic: String,
    /// The queue they go to on commit.
    pub queue_id: u32,
    /// Messages in the body.
    pub count: u32,
}

/// What the transaction holds after the send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxSendResponse {
    /// Index (in the transaction) of the first message of this send.
    pub first_index: u32,
    /// Messages in the transaction so far.
    pub messages: u32,
}
request!(TxSendRequest, TxSend, TxSendResponse);

/// One consumed message acknowledged by a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxAck {
    /// A message of a group that consumes by offsets: applied on commit as an exact ack
    /// of `offset` in the group's committed progress (an offset commit).
    Offset {
        /// The topic of the queue.
        topic: String,
        /// The queue.
        queue_id: u32,
        /// The message's queue offset.
        offset: u64,
    },
    /// A message of a group that consumes by receive, named by its receipt handle. The
    /// broker extends the lease to outlive the transaction; commit acks it.
    Receipt {
        /// The handle the receive gave.
        handle: crate::receive::ReceiptHandle,
    },
}

/// Adds acknowledgements of one consumer group to a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxAckRequest {
    /// The transaction.
    pub tx_id: String,
    /// The consumer group the messages were consumed by.
    pub group: String,
    /// The acknowledgements.
    pub acks: Vec<TxAck>,
}

/// What the transaction holds after the acks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxAckResponse {
    /// Acknowledgements in the transaction so far.
    pub acks: u32,
}
request!(TxAckRequest, TxAck, TxAckResponse);

/// Commits a transaction. A producer of its group or an operator may commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxCommitRequest {
    /// The transaction.
    pub tx_id: String,
}

/// A committed transaction: where its messages went, in send order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxCommitResponse {
    /// One per message, in send order.
    pub receipts: Vec<SendReceipt>,
    /// Acknowledgements applied.
    pub acks: u32,
}
request!(TxCommitRequest, TxCommit, TxCommitResponse);

/// Rolls a transaction back: its messages are never visible, its acks never applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRollbackRequest {
    /// The transaction.
    pub tx_id: String,
    /// Why, kept with the decision; `None`: "rolled back by the client".
    pub reason: Option<String>,
}
request!(TxRollbackRequest, TxRollback, Empty);

/// Lists the transactions that are still open (pending).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxListRequest {}

/// One open transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxInfo {
    /// Its id.
    pub tx_id: String,
    /// Its producer group.
    pub producer_group: String,
    /// Time since it began, ms.
    pub age_ms: u64,
    /// Check-backs sent so far.
    pub checks: u32,
    /// Messages it holds.
    pub messages: u32,
    /// Acknowledgements it holds.
    pub acks: u32,
}

/// The open transactions, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxListResponse {
    /// The open transactions, oldest first.
    pub transactions: Vec<TxInfo>,
}
request!(TxListRequest, TxList, TxListResponse);

/// Broker to client, on a producer's connection: "what became of this transaction?" The
/// producer answers with [`TxCommitRequest`] or [`TxRollbackRequest`], or not at all
/// while it does not know yet (it is asked again, up to the broker's limit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxCheckRequest {
    /// The transaction.
    pub tx_id: String,
    /// Its producer group.
    pub producer_group: String,
    /// 1 for the first check-back, one more each time.
    pub check: u32,
}
request!(TxCheckRequest, TxCheck, Empty);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header;

    #[test]
    fn headers_round_trip() {
        let req = TxAckRequest {
            tx_id: "00000000000000ff".into(),
            group: "g".into(),
            acks: vec![
                TxAck::Offset {
                    topic: "t".into(),
                    queue_id: 1,
                    offset: 7,
                },
                TxAck::Receipt {
                    handle: crate::receive::ReceiptHandle::new(1, 2, 3, 4),
                },
            ],
        };
        let bytes = header::encode(&req).unwrap();
        assert_eq!(header::decode::<TxAckRequest>(&bytes).unwrap(), req);
        assert!(header::decode::<TxAckRequest>(&bytes[..bytes.len() - 1]).is_err());
    }
}
