//! Queue locks for ordered consumption (RocketMQ's LOCK_BATCH_MQ / UNLOCK_BATCH_MQ).
//!
//! An ordered consumer handles a queue's messages only while it holds the broker's lock
//! on (group, queue). A lock is a lease: granted for `lease_ms` from the moment the
//! broker handles the request, renewed by locking again, and given to another member only
//! once its holder unlocked it, left the group, lost its connection, or let it run out.
//! A holder counts its lease from the moment it *sent* the request, so its own view ends
//! no later than the broker's.

use serde::{Deserialize, Serialize};

use crate::messages::{QueueAssignment, Request};
use crate::RequestCode;

/// Takes or renews the locks of some queues for one member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockBatchRequest {
    /// The consumer group.
    pub group: String,
    /// The member asking; the same id as in its heartbeats.
    pub client_id: String,
    /// The queues wanted, per topic.
    pub queues: Vec<QueueAssignment>,
}

/// The queues the member holds now (a subset of those asked for).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockBatchResponse {
    /// The queues locked or renewed, per topic; the others are held by another member.
    pub locked: Vec<QueueAssignment>,
    /// How long each lock lasts from the request unless renewed.
    pub lease_ms: u64,
}
request!(LockBatchRequest, LockBatch, LockBatchResponse);

/// Releases the locks a member holds on some queues (those it does not hold are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockBatchRequest {
    /// The consumer group.
    pub group: String,
    /// The member releasing.
    pub client_id: String,
    /// The queues released, per topic.
    pub queues: Vec<QueueAssignment>,
}

/// How many of the queues were held by the member and are free now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockBatchResponse {
    /// Locks released.
    pub released: u32,
}
request!(UnlockBatchRequest, UnlockBatch, UnlockBatchResponse);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header;

    #[test]
    fn headers_round_trip() {
        let req = LockBatchRequest {
            group: "g".into(),
            client_id: "c".into(),
            queues: vec![QueueAssignment {
                topic: "t".into(),
                queue_ids: vec![0, 3],
            }],
        };
        let bytes = header::encode(&req).unwrap();
        assert_eq!(header::decode::<LockBatchRequest>(&bytes).unwrap(), req);
        assert!(header::decode::<LockBatchRequest>(&bytes[..bytes.len() - 1]).is_err());
    }
}
