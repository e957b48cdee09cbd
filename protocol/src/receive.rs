//! Per-message acknowledgement: receive with an invisibility lease, ack by receipt
//! handle, change a lease's invisibility, reject to the dead-letter queue, and the lease
//! report of a group.
//!
//! A receipt handle is an opaque string the broker hands out with each received message;
//! clients only store it and send it back. It names one lease: once the lease expired,
//! was changed (a new handle replaces it) or ended, the handle is refused with
//! [`crate::Status::InvalidReceiptHandle`].

use serde::{Deserialize, Serialize};

use crate::messages::{Empty, Request};
use crate::RequestCode;

/// Takes up to `max_messages` messages of `topic` (any of its queues) and of the group's
/// retry topic, each leased to the caller for `invisible_ms`. Held up to `max_wait_ms`
/// (capped at 30 s) while nothing is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiveRequest {
    /// The consumer group.
    pub group: String,
    /// The topic to receive from.
    pub topic: String,
    /// `*`, `a`, or `a || b`. Fixed per group and topic by the first receive of a run.
    pub tag_expr: String,
    /// Most messages returned.
    pub max_messages: u32,
    /// How long each message stays invisible to other receivers (1 ms to 12 h).
    pub invisible_ms: u64,
    /// How long the request is held while nothing is ready.
    pub max_wait_ms: u64,
}

/// One received message's lease; the body carries the records in the same order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Names this lease to ack, change or reject.
    pub receipt_handle: String,
    /// 1 on first delivery; one more on each redelivery.
    pub delivery_attempt: u32,
    /// Wall-clock ms at which the lease ends unless acked or changed.
    pub invisible_until_ms: u64,
}

/// Body: one commit-log record per lease, end to end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiveResponse {
    /// One lease per returned record, in order.
    pub leases: Vec<Lease>,
}
request!(ReceiveRequest, Receive, ReceiveResponse);

/// Acknowledges a batch of received messages: done for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckMessagesRequest {
    /// The consumer group.
    pub group: String,
    /// The handles to acknowledge.
    pub receipt_handles: Vec<String>,
}

/// A handle of an ack batch that was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandleRefused {
    /// Index of the handle in the request.
    pub index: u32,
    /// Why it was refused.
    pub message: String,
}

/// The ack applied to every handle except those listed (stale or malformed ones). The
/// response comes once the acks are written to disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckMessagesResponse {
    /// The refused handles; empty when every ack applied.
    pub refused: Vec<HandleRefused>,
}
request!(AckMessagesRequest, AckMessages, AckMessagesResponse);

/// Moves a lease's deadline to `invisible_ms` from now (0: visible again at once, a nack).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeInvisibilityRequest {
    /// The consumer group.
    pub group: String,
    /// The lease to change.
    pub receipt_handle: String,
    /// The new invisibility, from now.
    pub invisible_ms: u64,
}

/// The lease's new handle; the old one is refused from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeInvisibilityResponse {
    /// The lease's new handle.
    pub receipt_handle: String,
    /// Wall-clock ms at which the lease now ends.
    pub invisible_until_ms: u64,
}
request!(
    ChangeInvisibilityRequest,
    ChangeInvisibility,
    ChangeInvisibilityResponse
);

/// The message is poison: it goes to `%DLQ%<group>` now, with no further attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectRequest {
    /// The consumer group.
    pub group: String,
    /// The lease of the message to reject.
    pub receipt_handle: String,
}
request!(RejectRequest, Reject, Empty);

/// The in-flight leases of a group that receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfoRequest {
    /// The consumer group.
    pub group: String,
}

/// In-flight leases on one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueLeases {
    /// The topic.
    pub topic: String,
    /// The queue.
    pub queue_id: u32,
    /// Leases in flight on it.
    pub in_flight: u32,
    /// Next offset not handed out yet in this broker run.
    pub next_offset: u64,
}

/// A group's in-flight leases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfoResponse {
    /// True when the group consumes by receive (it received since the broker started).
    pub receives: bool,
    /// Leases in flight in the group.
    pub in_flight: u32,
    /// The broker's limit per group (`--max-in-flight-leases`).
    pub max_in_flight: u32,
    /// Per queue with leases.
    pub queues: Vec<QueueLeases>,
}
request!(LeaseInfoRequest, LeaseInfo, LeaseInfoResponse);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header;

    #[test]
    fn headers_round_trip() {
        let req = AckMessagesRequest {
            group: "g".into(),
            receipt_handles: vec!["a".into(), "b".into()],
        };
        let bytes = header::encode(&req).unwrap();
        assert_eq!(header::decode::<AckMessagesRequest>(&bytes).unwrap(), req);
        assert!(header::decode::<AckMessagesRequest>(&bytes[..bytes.len() - 1]).is_err());
    }
}
