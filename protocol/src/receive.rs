//! Per-message acknowledgement: receive with an invisibility lease, ack by receipt
//! handle, change a lease's invisibility, reject to the dead-letter queue, and the lease
//! report of a group.
//!
//! A receipt handle ([`ReceiptHandle`]) is an opaque value the broker hands out with each
//! received message; clients only store it and send it back. It names one lease: once the
//! lease expired, was changed (a new handle replaces it) or ended, the handle is refused
//! with [`crate::Status::InvalidReceiptHandle`]. On the wire it is four integers, read and
//! written without text or allocation; shells and other protocols use its text form
//! (`Display` / `FromStr`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::messages::{Empty, Request};
use crate::RequestCode;

/// Names one lease of one received message. Opaque to clients: only the broker that
/// issued it gives its fields meaning (its run, the lease's epoch, the group's queue slot
/// and the message's queue offset), and the form may change.
///
/// Text form: `2.<run>.<epoch>.<slot>.<offset>`, numbers in lowercase hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReceiptHandle {
    run: u64,
    epoch: u64,
    slot: u32,
    offset: u64,
}

impl ReceiptHandle {
    /// A handle; for the broker that issues it.
    #[must_use]
    pub const fn new(run: u64, epoch: u64, slot: u32, offset: u64) -> Self {
        Self {
            run,
            epoch,
            slot,
            offset,
        }
    }

    /// The broker run that issued it.
    #[must_use]
    pub const fn run(&self) -> u64 {
        self.run
    }

    /// The lease it names.
    #[must_use]
    pub const fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The issuing group's queue slot.
    #[must_use]
    pub const fn slot(&self) -> u32 {
        self.slot
    }

    /// The message's queue offset.
    #[must_use]
    pub const fn offset(&self) -> u64 {
        self.offset
    }
}

const HANDLE_VERSION: &str = "2";

impl fmt::Display for ReceiptHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{HANDLE_VERSION}.{:x}.{:x}.{:x}.{:x}",
            self.run, self.epoch, self.slot, self.offset
        )
    }
}

/// A text that is not a receipt handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a receipt handle")]
pub struct BadReceiptHandle(pub String);

impl FromStr for ReceiptHandle {
    type Err = BadReceiptHandle;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadReceiptHandle(text.chars().take(80).collect());
        let mut parts = text.split('.');
        if parts.next() != Some(HANDLE_VERSION) {
            return Err(bad());
        }
        let mut num = || -> Option<u64> {
            let p = parts.next()?;
            // from_str_radix alone would take a leading '+'.
            if p.is_empty() || p.len() > 16 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            u64::from_str_radix(p, 16).ok()
        };
        let (Some(run), Some(epoch), Some(slot), Some(offset)) = (num(), num(), num(), num())
        else {
            return Err(bad());
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        let slot = u32::try_from(slot).map_err(|_| bad())?;
        Ok(Self::new(run, epoch, slot, offset))
    }
}

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
    pub receipt_handle: ReceiptHandle,
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
    pub receipt_handles: Vec<ReceiptHandle>,
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
    pub receipt_handle: ReceiptHandle,
    /// The new invisibility, from now.
    pub invisible_ms: u64,
}

/// The lease's new handle; the old one is refused from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeInvisibilityResponse {
    /// The lease's new handle.
    pub receipt_handle: ReceiptHandle,
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
    pub receipt_handle: ReceiptHandle,
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
            receipt_handles: vec![
                ReceiptHandle::new(1, 2, 3, 4),
                ReceiptHandle::new(u64::MAX, 0, u32::MAX, 1 << 40),
            ],
        };
        let bytes = header::encode(&req).unwrap();
        assert_eq!(header::decode::<AckMessagesRequest>(&bytes).unwrap(), req);
        assert!(header::decode::<AckMessagesRequest>(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn handle_text_round_trips_and_garbage_is_refused() {
        for h in [
            ReceiptHandle::new(0x1234, 99, 7, 1 << 40),
            ReceiptHandle::new(u64::MAX, u64::MAX, u32::MAX, u64::MAX),
            ReceiptHandle::new(0, 0, 0, 0),
        ] {
            assert_eq!(h.to_string().parse::<ReceiptHandle>(), Ok(h));
        }
        for bad in [
            "",
            "2",
            "1.1.1.0.0",
            "2.x.1.0.0",
            "2.1.1.0.",
            "2.1.1.0.0.0",
            "2.1.1.-1.0",
            "2.+1.1.0.0",
            "2.1.1.100000000.0",
            "2.11111111111111111.1.0.0",
            "nonsense",
        ] {
            assert!(bad.parse::<ReceiptHandle>().is_err(), "{bad:?}");
        }
    }
}
