//! Replication admin requests: a broker's view of its group, and manual promotion of a
//! replica (the HA stream between brokers has its own binary frames in the broker).

use serde::{Deserialize, Serialize};

use crate::messages::Request;
use crate::RequestCode;

/// Asks a broker for its replication state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatusRequest {}

/// One replica as its master sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// The replica's broker id.
    pub broker_id: u64,
    /// Where it connected from.
    pub peer: String,
    /// End of what it holds (its cumulative ack).
    pub acked: u64,
    /// How far behind the master's write offset it is, in bytes.
    pub lag_bytes: u64,
    /// Milliseconds since it last held everything the master had written.
    pub lag_ms: u64,
    /// Whether it is in the sync set (its acks count for confirm).
    pub in_sync: bool,
}

/// A broker's replication state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatusResponse {
    /// `standalone`, `master` or `replica`.
    pub role: String,
    /// This broker's id.
    pub broker_id: u64,
    /// The newest epoch in its log.
    pub epoch: u64,
    /// The master's client address (a replica's master; a master's own).
    pub master: Option<String>,
    /// Its HA address.
    pub ha_addr: Option<String>,
    /// Commit-log end.
    pub write_offset: u64,
    /// Durable end.
    pub flushed_offset: u64,
    /// What the sync set holds: indexed and served up to here.
    pub confirm_offset: u64,
    /// Indexed into consume queues up to here.
    pub dispatched_offset: u64,
    /// Members of the sync set, this broker included, and the minimum.
    pub sync_set_size: u32,
    /// `--min-sync-replicas`.
    pub min_sync_replicas: u32,
    /// A master's replicas.
    pub replicas: Vec<ReplicaStatus>,
    /// A replica: connected to its master and streaming.
    pub streaming: bool,
}
request!(ClusterStatusRequest, ClusterStatus, ClusterStatusResponse);

/// Turns a replica into the master of its group with a new epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPromoteRequest {
    /// The lowest epoch to open (the highest epoch the caller saw, plus one); the broker
    /// opens the higher of this and its own newest epoch plus one.
    pub min_epoch: u64,
}

/// The epoch the promoted broker opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPromoteResponse {
    /// The new epoch.
    pub epoch: u64,
    /// Where it starts in the log.
    pub start_offset: u64,
}
request!(
    ClusterPromoteRequest,
    ClusterPromote,
    ClusterPromoteResponse
);
