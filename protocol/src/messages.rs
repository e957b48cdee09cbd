//! Request and response headers, one pair per [`RequestCode`].
//!
//! Bodies are described where they are not empty: a send carries a [`crate::batch`]; a
//! pull response and a get-message response carry commit-log records end to end, in the
//! commit log's own record format, exactly as stored.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::RequestCode;

/// A request header type, its code and the header type of its successful response.
pub trait Request: Serialize + DeserializeOwned + Send + 'static {
    /// The request code frames of this request carry.
    const CODE: RequestCode;
    /// The header of its successful response.
    type Response: Serialize + DeserializeOwned + Send + 'static;
}

/// The header of every response whose status is not `Ok`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What went wrong, in a sentence for humans.
    pub message: String,
}

/// A response with nothing to say beyond its `Ok` status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

// ---- handshake ----

/// The first request on a connection: versions and who the client is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloRequest {
    /// The protocol version the client speaks ([`crate::PROTOCOL_VERSION`]).
    pub protocol_version: u8,
    /// The client's id, for the broker's logs and group membership.
    pub client_id: String,
}

/// The broker's version and the limits a client must respect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloResponse {
    /// The protocol version the broker speaks.
    pub protocol_version: u8,
    /// The broker's build version.
    pub broker_version: String,
    /// Largest frame the broker reads, prefix included.
    pub max_frame_bytes: u32,
    /// Largest message body the broker stores.
    pub max_message_bytes: u32,
    /// Most messages in one send.
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
/// Permission bit of a topic: sends are accepted.
pub const PERM_WRITE: u8 = 0b010;

/// One queue of a topic and the offsets it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueInfo {
    /// The queue's number inside its topic.
    pub queue_id: u32,
    /// Smallest offset still stored.
    pub min_offset: u64,
    /// One past the newest message.
    pub max_offset: u64,
}

/// A topic, its settings and its queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// The topic's name.
    pub name: String,
    /// How many queues it has.
    pub queue_count: u32,
    /// [`PERM_READ`] and [`PERM_WRITE`] bits.
    pub perm: u8,
    /// Each queue and its offsets.
    pub queues: Vec<QueueInfo>,
    /// Timer messages waiting to be delivered to this topic.
    pub timers_pending: u64,
}

/// Creates a topic, or answers the existing one when it is already there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTopicRequest {
    /// The topic's name.
    pub topic: String,
    /// How many queues it gets.
    pub queue_count: u32,
    /// [`PERM_READ`] and [`PERM_WRITE`] bits.
    pub perm: u8,
}

/// A topic as the broker holds it after the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicResponse {
    /// The topic.
    pub topic: TopicInfo,
}
request!(CreateTopicRequest, CreateTopic, TopicResponse);

/// Changes queue count (growing only) and permissions of an existing topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateTopicRequest {
    /// The topic to change.
    pub topic: String,
    /// The new queue count; never fewer than it has.
    pub queue_count: u32,
    /// The new [`PERM_READ`] and [`PERM_WRITE`] bits.
    pub perm: u8,
}
request!(UpdateTopicRequest, UpdateTopic, TopicResponse);

/// Removes a user topic and its messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteTopicRequest {
    /// The topic to remove.
    pub topic: String,
}
request!(DeleteTopicRequest, DeleteTopic, Empty);

/// Reads one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetTopicRequest {
    /// The topic to read.
    pub topic: String,
}
request!(GetTopicRequest, GetTopic, TopicResponse);

/// Lists topics, one page at a time.
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
    /// The topics of this page.
    pub topics: Vec<TopicInfo>,
    /// Set when more topics follow: the `after` of the next page.
    pub next: Option<String>,
}
request!(ListTopicsRequest, ListTopics, ListTopicsResponse);

// ---- produce ----

/// Body: `count` messages in the [`crate::batch`] layout, all for one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest {
    /// The topic the messages go to.
    pub topic: String,
    /// The queue the messages go to.
    pub queue_id: u32,
    /// How many messages the body holds.
    pub count: u32,
}

/// Where one sent message was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReceipt {
    /// The message's id (its commit-log position, as text).
    pub msg_id: String,
    /// The queue it went to.
    pub queue_id: u32,
    /// Its offset in that queue.
    pub queue_offset: u64,
}

/// One receipt per message, in the order sent; the whole batch is stored or none of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResponse {
    /// One per message, in the order sent.
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
    /// The topic the messages are delivered to.
    pub topic: String,
    /// The queue they are delivered to.
    pub queue_id: u32,
    /// Messages in the body's batch.
    pub count: u32,
    /// When they become due.
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

/// The answer to a [`SendTimerRequest`]: one receipt per message, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendTimerResponse {
    /// Where each message waits and how to recall it.
    pub receipts: Vec<TimerReceipt>,
}
request!(SendTimerRequest, SendTimer, SendTimerResponse);

/// Removes a timer message that is not yet due, durably.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecallRequest {
    /// The topic the message was sent to.
    pub topic: String,
    /// The handle its send was answered with.
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

/// The answer to a [`RecallRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecallResponse {
    /// What the recall did.
    pub status: RecallStatus,
}
request!(RecallRequest, Recall, RecallResponse);

// ---- consume ----

/// Reads messages of one queue for a group, from an offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    /// The topic to read.
    pub topic: String,
    /// The queue to read.
    pub queue_id: u32,
    /// The consumer group reading (its read permission and statistics).
    pub group: String,
    /// The first queue offset wanted.
    pub offset: u64,
    /// Most messages in the answer.
    pub max_messages: u32,
    /// Most record bytes in the answer (at least one record is sent).
    pub max_bytes: u32,
    /// `*`, `a`, or `a || b`.
    pub tag_expr: String,
    /// How long the broker may hold the pull when nothing is there (capped at 30 s).
    pub max_wait_ms: u64,
}

/// What a pull found.
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
    /// What the pull found.
    pub status: PullStatus,
    /// Where the next pull starts (past records skipped by the tag filter too).
    pub next_offset: u64,
    /// The queue's smallest stored offset.
    pub min_offset: u64,
    /// One past the queue's newest message.
    pub max_offset: u64,
    /// How many records the body holds.
    pub count: u32,
}
request!(PullRequest, Pull, PullResponse);

/// Half-open range `[start, end)` of queue offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRange {
    /// First offset in the range.
    pub start: u64,
    /// One past the last offset in the range.
    pub end: u64,
}

/// A group's progress on one queue: everything below `offset` is done, and so is every
/// offset inside `acked_above` (exact acknowledgement: these are not redelivered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCommit {
    /// The topic of the queue.
    pub topic: String,
    /// The queue.
    pub queue_id: u32,
    /// Everything below it is done.
    pub offset: u64,
    /// Ranges at or above `offset` that are done too.
    pub acked_above: Vec<OffsetRange>,
}

/// Records a group's progress on some queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitOffsetRequest {
    /// The consumer group.
    pub group: String,
    /// The progress per queue.
    pub commits: Vec<QueueCommit>,
    /// A group member's last seen [`HeartbeatResponse::reset_epoch`]: the commit is refused
    /// with `OffsetsReset` when the group's offsets were reset since. `None` (tools) always
    /// applies.
    pub reset_epoch: Option<u64>,
}
request!(CommitOffsetRequest, CommitOffset, Empty);

/// Reads a group's committed progress on one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryOffsetRequest {
    /// The consumer group.
    pub group: String,
    /// The topic of the queue.
    pub topic: String,
    /// The queue.
    pub queue_id: u32,
}

/// A group's committed progress on one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryOffsetResponse {
    /// `None` when the group never committed on this queue.
    pub committed: Option<QueueCommit>,
}
request!(QueryOffsetRequest, QueryOffset, QueryOffsetResponse);

// ---- groups ----

/// A topic a group member consumes, and which of its messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The topic.
    pub topic: String,
    /// Which tags: `*`, `a`, or `a || b`.
    pub tag_expr: String,
}

/// Queues of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueAssignment {
    /// The topic.
    pub topic: String,
    /// Its queues.
    pub queue_ids: Vec<u32>,
}

/// Joins the group on the first call, keeps the member alive on later ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// The consumer group.
    pub group: String,
    /// The member's id, unique within the group.
    pub client_id: String,
    /// The topics it consumes.
    pub subscriptions: Vec<Subscription>,
    /// Overrides the group's max reconsume times for this member's nacks.
    pub max_reconsume_times: Option<u32>,
    /// The queues this member still holds: it may deliver from them and has not yet
    /// committed what it acked on them. The coordinator grants a queue to its new owner
    /// only once no other live member reports (or was last granted) it, so that the new
    /// owner starts from a commit that includes every ack of the old one.
    pub held: Vec<QueueAssignment>,
}

/// The member's place in its group.
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

/// A member leaves its group at once (its queues go to the others).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveGroupRequest {
    /// The consumer group.
    pub group: String,
    /// The member leaving.
    pub client_id: String,
}
request!(LeaveGroupRequest, LeaveGroup, Empty);

/// Reads a group's members, their queues and the lag per queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfoRequest {
    /// The consumer group.
    pub group: String,
}

/// A live member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The member's id.
    pub client_id: String,
    /// The queues it owns.
    pub assignment: Vec<QueueAssignment>,
}

/// How far behind a group is on one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueLag {
    /// The topic of the queue.
    pub topic: String,
    /// The queue.
    pub queue_id: u32,
    /// The committed offset; `None` when the group never committed here.
    pub committed: Option<u64>,
    /// One past the queue's newest message.
    pub max_offset: u64,
    /// Messages not yet committed.
    pub lag: u64,
}

/// A group's members and progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfoResponse {
    /// The consumer group.
    pub group: String,
    /// Its live members.
    pub members: Vec<MemberInfo>,
    /// Its progress per queue.
    pub queues: Vec<QueueLag>,
}
request!(GroupInfoRequest, GroupInfo, GroupInfoResponse);

/// Where a group's offsets are moved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResetTarget {
    /// Each queue's smallest stored offset.
    Earliest,
    /// Each queue's head: only new messages are consumed.
    Latest,
    /// The first message stored at or after this wall-clock time (ms).
    TimestampMs(u64),
}

/// Moves a group's committed offsets on every queue of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetOffsetRequest {
    /// The consumer group.
    pub group: String,
    /// The topic whose queues are reset.
    pub topic: String,
    /// Where to.
    pub to: ResetTarget,
    /// Reset even while the group has live members.
    pub force: bool,
}

/// The offsets after the reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetOffsetResponse {
    /// One commit per queue of the topic.
    pub queues: Vec<QueueCommit>,
}
request!(ResetOffsetRequest, ResetOffset, ResetOffsetResponse);

/// A nack: the broker stores a copy of the message in the group's retry topic, due after
/// the delay of its next attempt, or in its dead-letter topic past the last attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendBackRequest {
    /// The consumer group handing the message back.
    pub group: String,
    /// The id of the record as delivered (for a retried message, the retry record's id).
    pub msg_id: String,
    /// Overrides the group's max reconsume times for this message.
    pub max_reconsume_times: Option<u32>,
}

/// Where a handed-back message went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendBackResponse {
    /// True when the message went to the dead-letter topic.
    pub dead_lettered: bool,
    /// The copy's delivery attempts so far.
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
    /// The consumer group.
    pub group: String,
    /// Delete even while the group has live members.
    pub force: bool,
}

/// What deleting a group removed.
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

/// Finds the queue offset of a point in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchOffsetRequest {
    /// The topic of the queue.
    pub topic: String,
    /// The queue.
    pub queue_id: u32,
    /// The wall-clock time (ms) looked for.
    pub timestamp_ms: u64,
}

/// The offset found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchOffsetResponse {
    /// First offset stored at or after the timestamp (the head if none).
    pub offset: u64,
}
request!(SearchOffsetRequest, SearchOffset, SearchOffsetResponse);

/// Response body: the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetMessageRequest {
    /// The message's id, as a receipt or a delivery gives it.
    pub msg_id: String,
}
request!(GetMessageRequest, GetMessage, Empty);

/// Most messages one [`QueryMessageRequest`] answers.
pub const MAX_QUERY_MESSAGES: u32 = 10_000;

/// Finds the messages of a topic whose keys (the space-separated `KEYS` property) include
/// `key`, stored within `[from_ms, to_ms]`: the newest `max_messages` of them. Response
/// body: their records end to end, oldest first, as in a pull response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryMessageRequest {
    /// The topic.
    pub topic: String,
    /// One key.
    pub key: String,
    /// Earliest store time, ms since the epoch (0: no bound).
    pub from_ms: u64,
    /// Latest store time, ms since the epoch (`u64::MAX`: no bound).
    pub to_ms: u64,
    /// Most messages to return, 1 to [`MAX_QUERY_MESSAGES`].
    pub max_messages: u32,
}

/// The answer to a [`QueryMessageRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryMessageResponse {
    /// Records in the body.
    pub count: u32,
    /// More messages match than were returned (raise `max_messages` or narrow the time
    /// range).
    pub more: bool,
}
request!(QueryMessageRequest, QueryMessage, QueryMessageResponse);

/// Reads the broker's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRequest {}

/// The broker's counters since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsResponse {
    /// The broker's build version.
    pub broker_version: String,
    /// Time since the broker started.
    pub uptime_ms: u64,
    /// Connections open now.
    pub connections: u64,
    /// Topics it holds.
    pub topics: u64,
    /// Messages stored by sends.
    pub messages_in: u64,
    /// Messages delivered by pulls.
    pub messages_out: u64,
    /// Body bytes stored by sends.
    pub bytes_in: u64,
    /// Record bytes delivered by pulls.
    pub bytes_out: u64,
    /// The commit log's oldest stored offset.
    pub commitlog_min_offset: u64,
    /// Where the commit log's next record goes.
    pub commitlog_write_offset: u64,
    /// How far the commit log is durable on disk.
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
    /// Enough free space: sends are accepted.
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
