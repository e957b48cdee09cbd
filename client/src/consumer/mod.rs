//! Group consumers: [`PullConsumer`] (the application asks for messages) and
//! [`PushConsumer`] (a handler runs on a bounded worker pool).
//!
//! A pull consumer heartbeats to the broker and follows the assignment in each reply: a
//! puller task per owned queue long-polls batches into a bounded per-queue prefetch, acks
//! are tracked per queue exactly ([`ack`]), and a committer sends the commit positions of
//! changed queues every N acks or T ms, when a queue is lost, and on close.

mod ack;
mod broadcast;
mod group;
mod push;
mod queue;
mod simple;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::messages::{SendBackRequest, Subscription};
use protocol::names::{dlq_topic, retry_topic, validate_any_name, validate_user_name, DLQ_PREFIX};
use protocol::tags::parse_tag_expression;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::connection::{ConnectOptions, Connection};
use crate::error::{Error, Result};
use crate::message::ReceivedMessage;

pub use broadcast::BroadcastOptions;
pub use push::{retry_delay, Failure, OrderedOptions, PushConsumer, DEFAULT_RETRY_DELAYS_MS};
pub(crate) use queue::QueueShared;
pub use simple::{LeasedMessage, SimpleConsumer, SimpleConsumerOptions};

/// Something a consumer ran into besides messages, for the application to observe
/// ([`PullConsumer::next_event`], [`PullConsumer::try_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsumerEvent {
    /// Retention removed offsets `from..to` of a queue before the group consumed them:
    /// those messages are lost to this group, which continues at `to`.
    Skipped {
        /// The topic of the queue.
        topic: String,
        /// The queue.
        queue_id: u32,
        /// The first offset lost.
        from: u64,
        /// Where consumption continues.
        to: u64,
    },
    /// The broker refused to serve a pull of a queue for a reason retrying does not fix
    /// (a bad request, a topic that is not readable, ...). A `BadRequest` stops pulling that
    /// queue; other refusals are retried with backoff and reported again after a success.
    PullRefused {
        /// The topic of the queue.
        topic: String,
        /// The queue.
        queue_id: u32,
        /// The broker's status.
        status: protocol::Status,
        /// The broker's sentence.
        message: String,
    },
}

impl std::fmt::Display for ConsumerEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Skipped {
                topic,
                queue_id,
                from,
                to,
            } => write!(
                f,
                "{} messages of {topic} queue {queue_id} (offsets {from}..{to}) were removed by retention before this group consumed them; skipped",
                to - from
            ),
            Self::PullRefused {
                topic,
                queue_id,
                status,
                message,
            } => write!(
                f,
                "the broker refused to pull {topic} queue {queue_id} ({status:?}): {message}"
            ),
        }
    }
}

/// Where a group starts on a queue it never committed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// Each queue's oldest stored message.
    #[default]
    Earliest,
    /// Only messages sent from now on.
    Latest,
    /// The first message stored at or after this wall-clock millisecond.
    TimestampMs(u64),
}

/// How a consumer behaves. Defaults suit most uses.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Where to start on queues without a committed offset. Default earliest.
    pub start_from: StartFrom,
    /// Most delivered-but-unacked messages per queue; pulling pauses beyond. Default 2048.
    pub prefetch_messages: usize,
    /// Most delivered-but-unacked bytes per queue. Default 16 MiB.
    pub prefetch_bytes: usize,
    /// Most messages per pull. Default 1024.
    pub pull_batch_messages: u32,
    /// Most bytes per pull response. Default 8 MiB.
    pub pull_max_bytes: u32,
    /// How long the broker may hold a pull at the head of a queue. Default 5000 ms.
    pub long_poll_ms: u64,
    /// Commit after this many acks... Default 1000.
    pub commit_every_acks: usize,
    /// ...or after this long. Default 200 ms.
    pub commit_interval: Duration,
    /// Heartbeat period; a changed assignment is learnt within it. Default 3 s. A queue
    /// moving to this member arrives once its old owner has committed and released it
    /// (within the old owner's heartbeat period); meanwhile this member asks again every
    /// 200 ms (or this period, if shorter).
    pub heartbeat_interval: Duration,
    /// Overrides the group's max reconsume times for this member's nacks.
    pub max_reconsume_times: Option<u32>,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            start_from: StartFrom::Earliest,
            prefetch_messages: 2048,
            prefetch_bytes: 16 << 20,
            pull_batch_messages: 1024,
            pull_max_bytes: 8 << 20,
            long_poll_ms: 5000,
            commit_every_acks: 1000,
            commit_interval: Duration::from_millis(200),
            heartbeat_interval: Duration::from_secs(3),
            max_reconsume_times: None,
        }
    }
}

impl ConsumerOptions {
    /// Tuning for draining a backlog as fast as possible: deep prefetch, large pulls and
    /// rare commits (a crash redelivers more). What `mq bench consume` uses.
    pub fn high_throughput() -> Self {
        Self {
            prefetch_messages: 32 * 1024,
            prefetch_bytes: 64 << 20,
            pull_batch_messages: 4096,
            commit_every_acks: 50_000,
            ..Self::default()
        }
    }
}

/// State shared by the consumer handle, its tasks and its ackers.
pub(crate) struct Shared {
    pub(crate) conn: Connection,
    pub(crate) group: String,
    pub(crate) opts: ConsumerOptions,
    pub(crate) subscriptions: Vec<Subscription>,
    pub(crate) queues: Mutex<HashMap<(String, u32), Arc<QueueShared>>>,
    pub(crate) tx: mpsc::Sender<Vec<ReceivedMessage>>,
    acks_since_commit: AtomicUsize,
    pub(crate) commit_now: Notify,
    pub(crate) heartbeat_now: Notify,
    pub(crate) cancel: CancellationToken,
    /// The group's offsets-reset epoch as last heartbeat showed it; sent with commits.
    pub(crate) reset_epoch: AtomicU64,
    /// Final commits of dropped queues that did not reach the broker yet; those queues are
    /// still reported as held until they do.
    pub(crate) unreleased: Mutex<Vec<protocol::messages::QueueCommit>>,
    /// Events for the application; unbounded because they are rare (one per skip or
    /// refusal) and must not be dropped.
    pub(crate) events: mpsc::UnboundedSender<ConsumerEvent>,
    /// How the member shares the group's queues.
    pub(crate) mode: Mode,
}

/// How a consumer shares its group's queues with the other members.
pub(crate) enum Mode {
    /// The queues are split among the members; messages are handled in any order.
    Clustering,
    /// Split among the members, and each queue is handled one message at a time under the
    /// broker's queue lock ([`PushConsumer::start_ordered`]).
    Ordered,
    /// Every instance consumes every queue; its progress lives in a local file.
    Broadcast(broadcast::Progress),
}

impl Shared {
    /// The tag expression for an assigned topic (the retry topic takes everything).
    pub(crate) fn tag_expr_of(&self, topic: &str) -> String {
        self.subscriptions
            .iter()
            .find(|s| s.topic == topic)
            .map_or_else(|| "*".to_string(), |s| s.tag_expr.clone())
    }

    /// Reports an event; one sent after the application dropped the consumer is moot.
    pub(crate) fn report(&self, event: ConsumerEvent) {
        let _ = self.events.send(event);
    }
}

/// Acknowledges messages; clonable, so handler tasks can ack on their own.
#[derive(Clone)]
pub struct Acker {
    shared: Arc<Shared>,
}

impl Acker {
    /// Marks a message done. Acks of a queue this consumer no longer owns are ignored
    /// (the new owner gets the message again).
    pub fn ack(&self, msg: &ReceivedMessage) {
        let Some(q) = &msg.queue else { return };
        if q.is_revoked() || !q.ack(msg.queue_offset(), msg.record_len()) {
            return;
        }
        let n = self
            .shared
            .acks_since_commit
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if n >= self.shared.opts.commit_every_acks {
            self.shared.acks_since_commit.store(0, Ordering::Relaxed);
            self.shared.commit_now.notify_one();
        }
    }

    /// Hands a message back for a later retry (the broker stores it in the group's retry
    /// topic, or its dead-letter topic past the last attempt), then acks it. If the broker
    /// cannot be reached (or its disk is full) the message stays unacked and the send-back is retried in the
    /// background until it succeeds or the consumer closes: the queue's committed offset
    /// never passes it.
    ///
    /// # Errors
    /// A permanent refusal by the broker; the message then stays unacked (ack it to drop it).
    pub async fn nack(&self, msg: &ReceivedMessage) -> Result<()> {
        if matches!(self.shared.mode, Mode::Broadcast(_)) {
            return Err(Error::InvalidArgument(
                "a broadcast consumer does not retry: its group's retry topic is not consumed \
                 by every instance; ack the message or handle the failure locally"
                    .into(),
            ));
        }
        let req = SendBackRequest {
            group: self.shared.group.clone(),
            msg_id: msg.delivered_msg_id(),
            max_reconsume_times: self.shared.opts.max_reconsume_times,
        };
        match self.shared.conn.call(&req, &[]).await {
            Ok(_) => {
                self.nacked(msg);
                Ok(())
            }
            Err(e) if send_back_retriable(&e) => {
                tracing::warn!(error = %e, msg_id = %req.msg_id, "send-back failed, retrying in the background");
                tokio::spawn(retry_send_back(self.clone(), req, msg.clone()));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Sends a poison message straight to the group's dead-letter queue (no more attempts),
    /// then acks it.
    ///
    /// # Errors
    /// The broker could not be reached or refused; the message then stays unacked.
    pub async fn reject(&self, msg: &ReceivedMessage) -> Result<()> {
        let req = SendBackRequest {
            group: self.shared.group.clone(),
            msg_id: msg.delivered_msg_id(),
            // No attempt left: the copy goes to the dead-letter queue.
            max_reconsume_times: Some(0),
        };
        self.shared.conn.call(&req, &[]).await?;
        self.ack(msg);
        Ok(())
    }

    fn nacked(&self, msg: &ReceivedMessage) {
        self.ack(msg);
        // The retry topic may have just been created: learn its queues soon.
        self.shared.heartbeat_now.notify_one();
    }
}

fn ack_with(shared: &Shared, msg: &ReceivedMessage) {
    let Some(q) = &msg.queue else { return };
    if q.is_revoked() || !q.ack(msg.queue_offset(), msg.record_len()) {
        return;
    }
    let n = shared.acks_since_commit.fetch_add(1, Ordering::Relaxed) + 1;
    if n >= shared.opts.commit_every_acks {
        shared.acks_since_commit.store(0, Ordering::Relaxed);
        shared.commit_now.notify_one();
    }
}

/// A send-back that may succeed later. A full disk is waited out too: the broker refuses
/// new writes until space is freed, and the message must not be dropped meanwhile.
fn send_back_retriable(e: &crate::Error) -> bool {
    e.is_retriable() || e.status() == Some(protocol::Status::DiskFull)
}

async fn retry_send_back(acker: Acker, req: SendBackRequest, msg: ReceivedMessage) {
    for backoff in crate::backoff::delays(Duration::from_millis(100), Duration::from_secs(5)) {
        tokio::select! {
            () = acker.shared.cancel.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        match acker.shared.conn.call(&req, &[]).await {
            Ok(_) => return acker.nacked(&msg),
            Err(e) if send_back_retriable(&e) => {}
            Err(e) => {
                tracing::error!(error = %e, msg_id = %req.msg_id, "send-back refused; message left unacked");
                return;
            }
        }
    }
}

/// What [`PullConsumer::recv_delivery`] returns.
#[derive(Debug)]
pub enum Delivery {
    /// The next message.
    Message(ReceivedMessage),
    /// Something the application should know about a queue.
    Event(ConsumerEvent),
}

/// The next message of a live queue from the current batch or the channel.
async fn next_message(
    current: &mut std::vec::IntoIter<ReceivedMessage>,
    rx: &mut mpsc::Receiver<Vec<ReceivedMessage>>,
) -> Option<ReceivedMessage> {
    loop {
        for m in current.by_ref() {
            if m.queue.as_ref().is_some_and(|q| !q.is_revoked()) {
                return Some(m);
            }
        }
        *current = rx.recv().await?.into_iter();
    }
}

/// A member of a consumer group that the application pulls messages from.
pub struct PullConsumer {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Vec<ReceivedMessage>>,
    events: mpsc::UnboundedReceiver<ConsumerEvent>,
    current: std::vec::IntoIter<ReceivedMessage>,
    tasks: tokio::task::JoinSet<()>,
}

impl PullConsumer {
    /// Connects to `addr` and joins `group`, subscribed to `(topic, tag expression)` pairs
    /// (the group's retry topic is consumed implicitly). A topic may be another group's
    /// dead-letter queue (`%DLQ%OTHER`), e.g. for a repair job.
    ///
    /// # Errors
    /// Invalid names (a reserved one, the group's own dead-letter queue), an invalid tag
    /// expression, connection failures, or a refused first heartbeat.
    pub async fn connect(
        addr: &str,
        group: &str,
        subscriptions: &[(&str, &str)],
        opts: ConsumerOptions,
    ) -> Result<Self> {
        let conn = Connection::connect(addr, ConnectOptions::default()).await?;
        Self::with_connection(conn, group, subscriptions, opts).await
    }

    /// As [`PullConsumer::connect`] over an existing connection.
    ///
    /// # Errors
    /// As [`PullConsumer::connect`].
    pub async fn with_connection(
        conn: Connection,
        group: &str,
        subscriptions: &[(&str, &str)],
        opts: ConsumerOptions,
    ) -> Result<Self> {
        Self::start(conn, group, subscriptions, opts, Mode::Clustering).await
    }

    /// Connects and joins `group` as an ordered consumer: each owned queue is handed to
    /// [`PushConsumer::start_ordered`]'s handler one message at a time, under the broker's
    /// lock on the queue, so that no other member handles it meanwhile, not even during a
    /// rebalance.
    ///
    /// # Errors
    /// As [`PullConsumer::connect`].
    pub async fn connect_ordered(
        addr: &str,
        group: &str,
        subscriptions: &[(&str, &str)],
        opts: ConsumerOptions,
    ) -> Result<Self> {
        let conn = Connection::connect(addr, ConnectOptions::default()).await?;
        Self::start(conn, group, subscriptions, opts, Mode::Ordered).await
    }

    /// Connects as one instance of broadcast group `group`: it consumes every queue of its
    /// topics, whatever other instances do, and keeps its progress in
    /// `broadcast.progress_file` (not on the broker). Without progress in that file a queue
    /// starts at `broadcast.start_from` (latest by default). Failed messages are not
    /// retried: [`Acker::nack`] is refused.
    ///
    /// # Errors
    /// As [`PullConsumer::connect`]; a progress file that cannot be read or parsed.
    pub async fn connect_broadcast(
        addr: &str,
        group: &str,
        subscriptions: &[(&str, &str)],
        mut opts: ConsumerOptions,
        broadcast: BroadcastOptions,
    ) -> Result<Self> {
        let progress = broadcast::Progress::load(&broadcast.progress_file, group)?;
        opts.start_from = broadcast.start_from;
        let conn = Connection::connect(addr, ConnectOptions::default()).await?;
        Self::start(conn, group, subscriptions, opts, Mode::Broadcast(progress)).await
    }

    async fn start(
        conn: Connection,
        group: &str,
        subscriptions: &[(&str, &str)],
        opts: ConsumerOptions,
        mode: Mode,
    ) -> Result<Self> {
        let invalid = |name: &str, source| Error::InvalidName {
            name: name.to_string(),
            source,
        };
        validate_user_name(group).map_err(|e| invalid(group, e))?;
        for (topic, _) in subscriptions {
            // Another group's dead-letter queue may be consumed (a repair job); the group's
            // own is left to `dlq` tools, which keep their progress under the group.
            let other_dlq = topic.starts_with(DLQ_PREFIX) && *topic != dlq_topic(group);
            if other_dlq {
                validate_any_name(topic).map_err(|e| invalid(topic, e))?;
            } else {
                validate_user_name(topic).map_err(|e| invalid(topic, e))?;
            }
        }
        // Checked here: the broker would refuse every pull of the subscription.
        for (_, expr) in subscriptions {
            parse_tag_expression(expr).map_err(|source| Error::InvalidTagExpression {
                expr: (*expr).to_string(),
                source,
            })?;
        }
        let (tx, rx) = mpsc::channel(1024);
        let (events_tx, events) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            conn,
            group: group.to_string(),
            opts,
            subscriptions: subscriptions
                .iter()
                .map(|(t, e)| Subscription {
                    topic: (*t).to_string(),
                    tag_expr: if e.is_empty() {
                        "*".into()
                    } else {
                        (*e).to_string()
                    },
                })
                .collect(),
            queues: Mutex::new(HashMap::new()),
            tx,
            acks_since_commit: AtomicUsize::new(0),
            commit_now: Notify::new(),
            heartbeat_now: Notify::new(),
            cancel: CancellationToken::new(),
            reset_epoch: AtomicU64::new(0),
            unreleased: Mutex::new(Vec::new()),
            events: events_tx,
            mode,
        });
        // The first heartbeat happens here so that errors (bad group, no broker) surface.
        let next = assign_queues(&shared).await?;
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(group::heartbeat_loop(Arc::clone(&shared), next));
        tasks.spawn(group::commit_loop(Arc::clone(&shared)));
        Ok(Self {
            shared,
            rx,
            events,
            current: Vec::new().into_iter(),
            tasks,
        })
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.shared.group
    }

    /// Whether this consumer was started by [`PullConsumer::connect_ordered`].
    pub fn is_ordered(&self) -> bool {
        matches!(self.shared.mode, Mode::Ordered)
    }

    /// Whether this consumer was started by [`PullConsumer::connect_broadcast`].
    pub fn is_broadcast(&self) -> bool {
        matches!(self.shared.mode, Mode::Broadcast(_))
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// This member's id in the group.
    pub fn client_id(&self) -> &str {
        self.shared.conn.client_id()
    }

    /// The retry topic this consumer also consumes.
    pub fn retry_topic(&self) -> String {
        retry_topic(&self.shared.group)
    }

    /// A clonable handle for acking from other tasks.
    pub fn acker(&self) -> Acker {
        Acker {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The queues owned now, as `(stored topic, queue id)`, sorted.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        let mut v: Vec<_> = self
            .shared
            .queues
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The next message; waits for one. `None` once the consumer is closed.
    pub async fn recv(&mut self) -> Option<ReceivedMessage> {
        next_message(&mut self.current, &mut self.rx).await
    }

    /// The next event or message, events first: what an application that wants to hear of
    /// skipped messages and refused pulls as they happen waits on. `None` once closed.
    pub async fn recv_delivery(&mut self) -> Option<Delivery> {
        if let Ok(e) = self.events.try_recv() {
            return Some(Delivery::Event(e));
        }
        tokio::select! {
            biased;
            Some(e) = self.events.recv() => Some(Delivery::Event(e)),
            m = next_message(&mut self.current, &mut self.rx) => m.map(Delivery::Message),
        }
    }

    /// The next message, or `None` when nothing arrives within `timeout`.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Option<ReceivedMessage> {
        tokio::time::timeout(timeout, self.recv())
            .await
            .ok()
            .flatten()
    }

    /// Up to `max` messages already received, waiting only for the first.
    pub async fn recv_batch(&mut self, max: usize, out: &mut Vec<ReceivedMessage>) {
        if let Some(first) = self.recv().await {
            out.push(first);
        }
        while out.len() < max {
            match self.current.next() {
                Some(m) if m.queue.as_ref().is_some_and(|q| !q.is_revoked()) => out.push(m),
                Some(_) => {}
                None => match self.rx.try_recv() {
                    Ok(batch) => self.current = batch.into_iter(),
                    Err(_) => break,
                },
            }
        }
    }

    /// The next event (skipped messages, refused pulls), waiting until one is reported.
    pub async fn next_event(&mut self) -> Option<ConsumerEvent> {
        self.events.recv().await
    }

    /// An event already reported, if any, without waiting.
    pub fn try_event(&mut self) -> Option<ConsumerEvent> {
        self.events.try_recv().ok()
    }

    /// See [`Acker::ack`].
    pub fn ack(&self, msg: &ReceivedMessage) {
        ack_with(&self.shared, msg);
    }

    /// See [`Acker::nack`].
    ///
    /// # Errors
    /// As [`Acker::nack`].
    pub async fn nack(&self, msg: &ReceivedMessage) -> Result<()> {
        self.acker().nack(msg).await
    }

    /// See [`Acker::reject`].
    ///
    /// # Errors
    /// As [`Acker::reject`].
    pub async fn reject(&self, msg: &ReceivedMessage) -> Result<()> {
        self.acker().reject(msg).await
    }

    /// Sends the commit positions of every owned queue now.
    ///
    /// # Errors
    /// When the commit did not reach the broker (it is retried at the next commit).
    pub async fn commit(&self) -> Result<()> {
        group::commit_changed(&self.shared, true).await
    }

    /// Commits, leaves the group (its queues move to other members at once) and closes.
    ///
    /// # Errors
    /// When the final commit or the leave did not reach the broker.
    pub async fn close(mut self) -> Result<()> {
        self.shared.cancel.cancel();
        let queues: Vec<_> = self
            .shared
            .queues
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        for q in &queues {
            q.cancel.cancel();
        }
        self.tasks.shutdown().await;
        group::retry_unreleased(&self.shared).await;
        let committed = group::commit_changed(&self.shared, true).await;
        let left = group::leave(&self.shared).await;
        self.shared.conn.close();
        committed.and(left)
    }

    /// Stops without committing or leaving, as a crashed process would: the broker drops
    /// the member after its session timeout and everything not committed is redelivered.
    pub fn abandon(mut self) {
        self.shared.cancel.cancel();
        self.tasks.abort_all();
        self.shared.conn.close();
    }
}

impl Drop for PullConsumer {
    fn drop(&mut self) {
        // Stops the tasks; a consumer dropped without close() commits nothing more.
        self.shared.cancel.cancel();
        if let Ok(m) = self.shared.queues.lock() {
            for q in m.values() {
                q.cancel.cancel();
            }
        }
    }
}

/// One round of learning which queues this consumer reads: a heartbeat to the group, or
/// for a broadcast instance every queue of its topics.
pub(crate) async fn assign_queues(shared: &Arc<Shared>) -> Result<group::Next> {
    if matches!(shared.mode, Mode::Broadcast(_)) {
        broadcast::assign_once(shared).await
    } else {
        group::heartbeat_once(shared).await
    }
}
