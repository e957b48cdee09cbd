//! Request and response headers, one pair per [`RequestCode`].
//!
//! Bodies are described where they are not empty: a send carries a [`crate::batch`]; a
//! pull response and a get-message response carry commit-log records end to end, in the
//! commit log's own record format, exactly as stored.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::RequestCode;

/// A request header type, its code and the header type of its successful response.
pub trait Request: Serialize + DeserializeOwned + Send + 'static {
    const CODE: RequestCode;
    type Response: Serialize + DeserializeOwned + Send + 'static;
}

macro_rules! request {
    ($req:ty, $code:ident, $resp:ty) => {
        impl Request for $req {
            const CODE: RequestCode = RequestCode::$code;
            type Response = $resp;
        }
    };
}

/// The header of every response whose status is not `Ok`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub message: String,
}

/// A response with nothing to say beyond its `Ok` status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

// ---- handshake ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloRequest {
    pub protocol_version: u8,
    pub client_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloResponse {
    pub protocol_version: u8,
    pub broker_version: String,
    pub max_frame_bytes: u32,
    pub max_message_bytes: u32,
    pub max_batch_messages: u32,
    /// Whether a send to an unknown topic creates it.
    pub auto_create_topics: bool,
    /// Queues of a topic created on its first send (the broker's `--default-queues`).
    pub default_queue_count: u32,
}
request!(HelloRequest, Hello, HelloResponse);

// ---- topics ----

/// Permission bits of a topic.
pub const PERM_READ: u8 = 0b100;
pub const PERM_WRITE: u8 = 0b010;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueInfo {
    pub queue_id: u32,
    /// Smallest offset still stored.
    pub min_offset: u64,
    /// One past the newest message.
    pub max_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    pub name: String,
    pub queue_count: u32,
    pub perm: u8,
    pub queues: Vec<QueueInfo>,
    /// Timer messages waiting to be delivered to this topic.
    pub timers_pending: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTopicRequest {
    pub topic: String,
    pub queue_count: u32,
    pub perm: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicResponse {
    pub topic: TopicInfo,
}
request!(CreateTopicRequest, CreateTopic, TopicResponse);

/// Changes queue count (growing only) and permissions of an existing topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateTopicRequest {
    pub topic: String,
    pub queue_count: u32,
    pub perm: u8,
}
request!(UpdateTopicRequest, UpdateTopic, TopicResponse);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteTopicRequest {
    pub topic: String,
}
request!(DeleteTopicRequest, DeleteTopic, Empty);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetTopicRequest {
    pub topic: String,
}
request!(GetTopicRequest, GetTopic, TopicResponse);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListTopicsRequest {
    /// Also list `%RETRY%` and `%DLQ%` topics.
    pub include_internal: bool,
    /// Start after this topic name (`None`: from the first); topics come in name order.
    pub after: Option<String>,
    /// Most topics in the answer; 0 or more than the broker's page size means its page
    /// size (1,000 topics, fewer when they have many queues).
    pub limit: u32,
}

/// One page of topics in name order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListTopicsResponse {
    pub topics: Vec<TopicInfo>,
    /// Set when more topics follow: the `after` of the next page.
    pub next: Option<String>,
}
request!(ListTopicsRequest, ListTopics, ListTopicsResponse);

// ---- produce ----

/// Body: `count` messages in the [`crate::batch`] layout, all for one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest {
    pub topic: String,
    pub queue_id: u32,
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReceipt {
    pub msg_id: String,
    pub queue_id: u32,
    pub queue_offset: u64,
}

/// One receipt per message, in the order sent; the whole batch is stored or none of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResponse {
    pub receipts: Vec<SendReceipt>,
}
request!(SendRequest, Send, SendResponse);

/// When a timer send is delivered: at a wall-clock time, or after a delay from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliverAt {
    /// Wall-clock ms; a time in the past means now.
    TimestampMs(u64),
    /// Ms from the moment the broker receives the send.
    DelayMs(u64),
}

/// A send whose messages become visible in their queue when due (body: a batch, as for
/// [`SendRequest`]). Stored durably at once, under the flush policy; refused when due
/// further ahead than the broker's `--max-timer-delay-ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendTimerRequest {
    pub topic: String,
    pub queue_id: u32,
    pub count: u32,
    pub deliver_at: DeliverAt,
}

/// Where a timer message waits, and how to recall it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerReceipt {
    /// The message's id; the delivered message carries it as its id.
    pub msg_id: String,
    /// The queue it will be delivered to.
    pub queue_id: u32,
    /// When it becomes due (wall-clock ms).
    pub deliver_at_ms: u64,
    /// Names the message to [`RecallRequest`].
    pub recall_handle: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendTimerResponse {
    pub receipts: Vec<TimerReceipt>,
}
request!(SendTimerRequest, SendTimer, SendTimerResponse);

/// Removes a timer message that is not yet due, durably.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecallRequest {
    pub topic: String,
    pub recall_handle: String,
}

/// What a recall did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecallStatus {
    /// Removed: it will never be delivered.
    Recalled,
    /// Removed by an earlier recall.
    AlreadyRecalled,
    /// Too late: it was delivered (or was due) already.
    AlreadyDelivered,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecallResponse {
    pub status: RecallStatus,
}
request!(RecallRequest, Recall, RecallResponse);

// ---- consume ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    pub topic: String,
    pub queue_id: u32,
    pub group: String,
    pub offset: u64,
    pub max_messages: u32,
    pub max_bytes: u32,
    /// `*`, `a`, or `a || b`.
    pub tag_expr: String,
    /// How long the broker may hold the pull when nothing is there (capped at 30 s).
    pub max_wait_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullStatus {
    /// `count` records follow in the body.
    Found,
    /// The offset is the queue's head and nothing arrived within the wait.
    NoNewMessage,
    /// The offset was removed by retention; `min_offset` is where to go on.
    OffsetBelowMin,
    /// The offset is beyond the queue's head; `max_offset` is the head.
    OffsetPastMax,
}

/// Body: `count` commit-log records end to end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullResponse {
    pub status: PullStatus,
    /// Where the next pull starts (past records skipped by the tag filter too).
    pub next_offset: u64,
    pub min_offset: u64,
    pub max_offset: u64,
    pub count: u32,
}
request!(PullRequest, Pull, PullResponse);

/// Half-open range `[start, end)` of queue offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRange {
    pub start: u64,
    pub end: u64,
}

/// A group's progress on one queue: everything below `offset` is done, and so is every
/// offset inside `acked_above` (exact acknowledgement: these are not redelivered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCommit {
    pub topic: String,
    pub queue_id: u32,
    pub offset: u64,
    pub acked_above: Vec<OffsetRange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitOffsetRequest {
    pub group: String,
    pub commits: Vec<QueueCommit>,
    /// A group member's last seen [`HeartbeatResponse::reset_epoch`]: the commit is refused
    /// with `OffsetsReset` when the group's offsets were reset since. `None` (tools) always
    /// applies.
    pub reset_epoch: Option<u64>,
}
request!(CommitOffsetRequest, CommitOffset, Empty);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryOffsetRequest {
    pub group: String,
    pub topic: String,
    pub queue_id: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryOffsetResponse {
    /// `None` when the group never committed on this queue.
    pub committed: Option<QueueCommit>,
}
request!(QueryOffsetRequest, QueryOffset, QueryOffsetResponse);

// ---- groups ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub topic: String,
    pub tag_expr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueAssignment {
    pub topic: String,
    pub queue_ids: Vec<u32>,
}

/// Joins the group on the first call, keeps the member alive on later ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub group: String,
    pub client_id: String,
    pub subscriptions: Vec<Subscription>,
    /// Overrides the group's max reconsume times for this member's nacks.
    pub max_reconsume_times: Option<u32>,
    /// The queues this member still holds: it may deliver from them and has not yet
    /// committed what it acked on them. The coordinator grants a queue to its new owner
    /// only once no other live member reports (or was last granted) it, so that the new
    /// owner starts from a commit that includes every ack of the old one.
    pub held: Vec<QueueAssignment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// Changes whenever the group's membership or assignment changes.
    pub generation: u64,
    /// The queues this member owns now, per subscribed topic (retry topic included): the
    /// part of its target assignment that no other member still holds.
    pub assignment: Vec<QueueAssignment>,
    /// Queues of this member's target assignment not granted yet, because another member
    /// still holds them. While non-zero the member should heartbeat again soon.
    pub pending_queues: u32,
    /// A member silent for longer than this is dropped.
    pub session_timeout_ms: u64,
    /// Changes when the group's offsets are reset while it runs (0: not since the broker
    /// started). A member seeing a new value drops its queues without committing and
    /// starts them again from the committed (reset) offsets.
    pub reset_epoch: u64,
}
request!(HeartbeatRequest, Heartbeat, HeartbeatResponse);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveGroupRequest {
    pub group: String,
    pub client_id: String,
}
request!(LeaveGroupRequest, LeaveGroup, Empty);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfoRequest {
    pub group: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub client_id: String,
    pub assignment: Vec<QueueAssignment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueLag {
    pub topic: String,
    pub queue_id: u32,
    pub committed: Option<u64>,
    pub max_offset: u64,
    pub lag: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfoResponse {
    pub group: String,
    pub members: Vec<MemberInfo>,
    pub queues: Vec<QueueLag>,
}
request!(GroupInfoRequest, GroupInfo, GroupInfoResponse);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResetTarget {
    Earliest,
    Latest,
    TimestampMs(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetOffsetRequest {
    pub group: String,
    pub topic: String,
    pub to: ResetTarget,
    /// Reset even while the group has live members.
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetOffsetResponse {
    pub queues: Vec<QueueCommit>,
}
request!(ResetOffsetRequest, ResetOffset, ResetOffsetResponse);

/// A nack: the broker stores a copy of the message in the group's retry topic, due after
/// the delay of its next attempt, or in its dead-letter topic past the last attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendBackRequest {
    pub group: String,
    /// The id of the record as delivered (for a retried message, the retry record's id).
    pub msg_id: String,
    pub max_reconsume_times: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendBackResponse {
    /// True when the message went to the dead-letter topic.
    pub dead_lettered: bool,
    pub reconsume_times: u32,
    /// When the retry becomes due (wall clock, ms); 0 when dead-lettered.
    pub due_at_ms: u64,
}
request!(SendBackRequest, SendBack, SendBackResponse);

/// Removes a consumer group: its committed offsets and its `%RETRY%` and `%DLQ%` topics.
/// Refused with `GroupHasMembers` while it has live members unless forced (forced, its
/// members join afresh at their next heartbeat); `NotFound` when the broker knows nothing
/// of the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteGroupRequest {
    pub group: String,
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteGroupResponse {
    /// Live members dropped (only with `force`).
    pub members: u32,
    /// Queues whose committed offset was removed.
    pub offsets: u32,
    /// Topics removed (the group's retry and dead-letter topics that existed).
    pub topics: Vec<String>,
}
request!(DeleteGroupRequest, DeleteGroup, DeleteGroupResponse);

// ---- lookups ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchOffsetRequest {
    pub topic: String,
    pub queue_id: u32,
    pub timestamp_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchOffsetResponse {
    /// First offset stored at or after the timestamp (the head if none).
    pub offset: u64,
}
request!(SearchOffsetRequest, SearchOffset, SearchOffsetResponse);

/// Response body: the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetMessageRequest {
    pub msg_id: String,
}
request!(GetMessageRequest, GetMessage, Empty);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRequest {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsResponse {
    pub broker_version: String,
    pub uptime_ms: u64,
    pub connections: u64,
    pub topics: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub commitlog_min_offset: u64,
    pub commitlog_write_offset: u64,
    pub commitlog_flushed_offset: u64,
    /// `ok`, or `full` while sends are refused until disk space is freed.
    pub disk_state: DiskState,
    /// Free bytes on the data directory's filesystem at the broker's last reading.
    pub disk_free_bytes: u64,
    /// Sends and send-backs refused with `DiskFull` since the broker started.
    pub sends_refused_disk_full: u64,
    /// Timer messages (and retries) waiting for their delivery time.
    pub timers_pending: u64,
}
request!(StatsRequest, BrokerStats, StatsResponse);

/// Whether the broker accepts new messages, as far as disk space goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskState {
    #[default]
    Ok,
    /// Free space is below the reserve, or a write hit `ENOSPC`: sends are refused.
    Full,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header;

    #[test]
    fn headers_round_trip() {
        let req = PullRequest {
            topic: "orders".into(),
            queue_id: 3,
            group: "billing".into(),
            offset: 1 << 40,
            max_messages: 32,
            max_bytes: 1 << 20,
            tag_expr: "a || b".into(),
            max_wait_ms: 5000,
        };
        let bytes = header::encode(&req).unwrap();
        assert_eq!(header::decode::<PullRequest>(&bytes).unwrap(), req);
        assert!(header::decode::<PullRequest>(&bytes[..bytes.len() - 1]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(header::decode::<PullRequest>(&long).is_err());
    }

    #[test]
    fn a_hostile_vector_length_does_not_allocate() {
        // A ListTopicsResponse claiming 2^60 topics in a few bytes.
        let bytes = [0xFF, 0, 0, 0, 0, 0, 0, 0, 0x10];
        assert!(header::decode::<ListTopicsResponse>(&bytes).is_err());
    }
}
