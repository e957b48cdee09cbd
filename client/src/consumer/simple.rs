//! [`SimpleConsumer`]: per-message acknowledgement. Receive leases messages of a topic
//! (any queue, shared with the group's other receivers) for an invisibility period; each
//! comes with a receipt handle to ack, change or reject it. A message neither acked nor
//! changed before its deadline comes again, to any receiver, with one more attempt; past
//! the group's max attempts it goes to `%DLQ%<group>`. [`SimpleConsumer::nack`] hides a
//! failed message for the retry delay of its attempt under the group's retry policy.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::group_policy::{GetGroupPolicyRequest, RetryPolicy};
use protocol::names::{validate_any_name, validate_user_name};
use protocol::receive::{
    AckMessagesRequest, ChangeInvisibilityRequest, HandleRefused, ReceiptHandle, ReceiveRequest,
    RejectRequest,
};
use protocol::tags::parse_tag_expression;
use protocol::Status;

use crate::connection::{ConnectOptions, Connection, Pending};
use crate::error::{Error, Result};
use crate::message::ReceivedMessage;

/// How a [`SimpleConsumer`] receives.
#[derive(Debug, Clone)]
pub struct SimpleConsumerOptions {
    /// Tag expression: `*`, `a`, or `a || b`. Default `*`.
    pub tag_expr: String,
    /// How long a received message stays invisible to other receivers. Default 30 s.
    pub invisible: Duration,
    /// How long a receive waits for messages when none is ready (at most 30 s). Default 5 s.
    pub wait: Duration,
    /// Connection settings.
    pub connect: ConnectOptions,
}

impl Default for SimpleConsumerOptions {
    fn default() -> Self {
        Self {
            tag_expr: "*".into(),
            invisible: Duration::from_secs(30),
            wait: Duration::from_secs(5),
            connect: ConnectOptions::default(),
        }
    }
}

/// A received message and its lease.
#[derive(Debug, Clone)]
pub struct LeasedMessage {
    /// The message itself.
    pub message: ReceivedMessage,
    /// Opaque; names this lease. Replaced by [`SimpleConsumer::change_invisibility`].
    /// Its text form (`to_string()`, parsed back with `str::parse`) is what shells and
    /// `mq` print.
    pub receipt_handle: ReceiptHandle,
    /// 1 on first delivery, one more on each redelivery.
    pub delivery_attempt: u32,
    /// Wall-clock ms at which the lease ends unless acked or changed.
    pub invisible_until_ms: u64,
}

/// How long [`SimpleConsumer::nack`] uses the group's retry policy before reading it
/// from the broker again, so a changed policy reaches running consumers.
const RETRY_POLICY_REFRESH: Duration = Duration::from_secs(5);

/// The broker's longest invisibility (12 h); a longer retry delay waits this long.
const MAX_INVISIBLE: Duration = Duration::from_secs(12 * 3_600);

/// A consumer that receives with leases and acks each message by its receipt handle.
/// Many may share a group (and a single-queue topic): each message goes to one of them at
/// a time. Cheap to share behind an `Arc`; every call may run concurrently.
pub struct SimpleConsumer {
    conn: Connection,
    group: String,
    topic: String,
    opts: SimpleConsumerOptions,
    /// The group's retry policy in force and when it was read.
    policy: Mutex<Option<(Instant, RetryPolicy)>>,
}

impl SimpleConsumer {
    /// Connects to the broker at `addr` to receive `topic` as a member of `group`.
    ///
    /// # Errors
    /// Invalid names or tag expression; the broker cannot be reached.
    pub async fn connect(
        addr: &str,
        group: &str,
        topic: &str,
        opts: SimpleConsumerOptions,
    ) -> Result<Self> {
        let conn = Connection::connect(addr, opts.connect.clone()).await?;
        Self::with_connection(conn, group, topic, opts)
    }

    /// As [`SimpleConsumer::connect`], over an existing connection.
    ///
    /// # Errors
    /// Invalid names or tag expression.
    pub fn with_connection(
        conn: Connection,
        group: &str,
        topic: &str,
        opts: SimpleConsumerOptions,
    ) -> Result<Self> {
        validate_user_name(group).map_err(|source| Error::InvalidName {
            name: group.into(),
            source,
        })?;
        validate_any_name(topic).map_err(|source| Error::InvalidName {
            name: topic.into(),
            source,
        })?;
        parse_tag_expression(&opts.tag_expr).map_err(|source| Error::InvalidTagExpression {
            expr: opts.tag_expr.clone(),
            source,
        })?;
        Ok(Self {
            conn,
            group: group.into(),
            topic: topic.into(),
            opts,
            policy: Mutex::new(None),
        })
    }

    /// The consumer group this consumer receives for.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The topic it receives from.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Its connection to the broker.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Receives up to `max` messages with the options' invisibility and wait; an empty
    /// list when none came within the wait.
    ///
    /// # Errors
    /// `Broker` with `GroupModeConflict` when the group consumes by offsets, `TopicNotFound`,
    /// connection failures.
    pub async fn receive(&self, max: u32) -> Result<Vec<LeasedMessage>> {
        self.receive_with(max, self.opts.invisible, self.opts.wait)
            .await
    }

    /// [`SimpleConsumer::receive`] with an explicit invisibility and wait.
    ///
    /// # Errors
    /// As `receive`.
    pub async fn receive_with(
        &self,
        max: u32,
        invisible: Duration,
        wait: Duration,
    ) -> Result<Vec<LeasedMessage>> {
        let req = ReceiveRequest {
            group: self.group.clone(),
            topic: self.topic.clone(),
            tag_expr: self.opts.tag_expr.clone(),
            max_messages: max.max(1),
            invisible_ms: millis(invisible).max(1),
            max_wait_ms: millis(wait),
        };
        let timeout = self.conn.options().request_timeout + wait;
        let (resp, body) = self.conn.start(&req, &[]).await?.wait(timeout).await?;
        decode_leased(resp.leases, &body)
    }

    /// Acks one message: done for good.
    ///
    /// # Errors
    /// `Broker` with `InvalidReceiptHandle` when its lease expired, was changed or ended.
    pub async fn ack(&self, msg: &LeasedMessage) -> Result<()> {
        let refused = self.ack_handles(vec![msg.receipt_handle]).await?;
        match refused.into_iter().next() {
            None => Ok(()),
            Some(r) => Err(Error::Broker {
                status: Status::InvalidReceiptHandle,
                message: r.message,
            }),
        }
    }

    /// Acks a batch in one request; returns the handles refused (by index), the others
    /// are acked. Answered once the acks are written to disk.
    ///
    /// # Errors
    /// Connection failures; the broker could not write the acks.
    pub async fn ack_handles(&self, handles: Vec<ReceiptHandle>) -> Result<Vec<HandleRefused>> {
        Ok(self
            .start_ack(handles)
            .await?
            .wait(self.timeout())
            .await?
            .0
            .refused)
    }

    /// Puts an ack batch on the wire without waiting for its answer, so receives and acks
    /// can be pipelined; await the answer with [`Pending::wait`].
    ///
    /// # Errors
    /// Connection failures.
    pub async fn start_ack(
        &self,
        handles: Vec<ReceiptHandle>,
    ) -> Result<Pending<AckMessagesRequest>> {
        let req = AckMessagesRequest {
            group: self.group.clone(),
            receipt_handles: handles,
        };
        self.conn.start(&req, &[]).await
    }

    /// Makes the message invisible for `invisible` from now (zero: visible again at once,
    /// a nack without delay) and updates its handle and deadline; the old handle is refused
    /// from now on.
    ///
    /// # Errors
    /// `Broker` with `InvalidReceiptHandle` when the lease is no longer held.
    pub async fn change_invisibility(
        &self,
        msg: &mut LeasedMessage,
        invisible: Duration,
    ) -> Result<()> {
        let req = ChangeInvisibilityRequest {
            group: self.group.clone(),
            receipt_handle: msg.receipt_handle,
            invisible_ms: millis(invisible),
        };
        let (resp, _) = self.conn.call(&req, &[]).await?;
        msg.receipt_handle = resp.receipt_handle;
        msg.invisible_until_ms = resp.invisible_until_ms;
        Ok(())
    }

    /// The retry policy in force for the group: its own (`mq group set`) or the broker's
    /// defaults. Read from the broker at most once every 5 s.
    ///
    /// # Errors
    /// Connection failures.
    pub async fn retry_policy(&self) -> Result<RetryPolicy> {
        let cached = self
            .policy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|(at, _)| at.elapsed() < RETRY_POLICY_REFRESH)
            .map(|(_, p)| p.clone());
        if let Some(p) = cached {
            return Ok(p);
        }
        let req = GetGroupPolicyRequest {
            group: self.group.clone(),
        };
        let effective = self.conn.call(&req, &[]).await?.0.effective;
        *self.policy.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), effective.clone()));
        Ok(effective)
    }

    /// Fails the message: it is hidden for the retry delay of its attempt under the
    /// group's retry policy and then comes again with one more attempt, or, when this was
    /// its last attempt, its lease ends now and the broker dead-letters it. Returns the
    /// delay.
    ///
    /// # Errors
    /// As [`SimpleConsumer::change_invisibility`]; reading the policy failed.
    pub async fn nack(&self, msg: &mut LeasedMessage) -> Result<Duration> {
        let policy = self.retry_policy().await?;
        let delay = if msg.delivery_attempt > policy.max_reconsume_times {
            // The lease's end makes the dead-letter copy: no point waiting for it.
            Duration::ZERO
        } else {
            // The retry that follows failed attempt `k` is retry `k`.
            let ms = policy
                .delays
                .as_ref()
                .map_or(0, |d| d.delay_ms(msg.delivery_attempt));
            Duration::from_millis(ms).min(MAX_INVISIBLE)
        };
        self.change_invisibility(msg, delay).await?;
        Ok(delay)
    }

    /// Sends the message to the group's dead-letter queue now: no more attempts.
    ///
    /// # Errors
    /// `Broker` with `InvalidReceiptHandle` when the lease is no longer held; the broker
    /// could not write the dead-letter copy (the message then comes again later).
    pub async fn reject(&self, msg: &LeasedMessage) -> Result<()> {
        let req = RejectRequest {
            group: self.group.clone(),
            receipt_handle: msg.receipt_handle,
        };
        self.conn.call(&req, &[]).await?;
        Ok(())
    }

    /// Closes the connection. Messages still leased come again after their deadline.
    pub fn close(&self) {
        self.conn.close();
    }

    fn timeout(&self) -> Duration {
        self.conn.options().request_timeout
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Pairs each lease with its record in the body.
fn decode_leased(
    leases: Vec<protocol::receive::Lease>,
    body: &Bytes,
) -> Result<Vec<LeasedMessage>> {
    let mut out = Vec::with_capacity(leases.len());
    let mut rest = body.clone();
    for lease in leases {
        let message = ReceivedMessage::decode(&rest)?;
        rest = rest.slice(message.record_len()..);
        out.push(LeasedMessage {
            message,
            receipt_handle: lease.receipt_handle,
            delivery_attempt: lease.delivery_attempt,
            invisible_until_ms: lease.invisible_until_ms,
        });
    }
    if !rest.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "receive response carries {} bytes past its records",
            rest.len()
        )));
    }
    Ok(out)
}
