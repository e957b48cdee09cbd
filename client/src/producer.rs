//! The producer: picks a queue, encodes batches, and pipelines sends with a bounded number
//! of unacknowledged requests.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use protocol::batch::{BatchMessage, BatchWriter};
use protocol::messages::{
    DeliverAt, RecallRequest, RecallStatus, SendRequest, SendTimerRequest, TimerReceipt,
};
use protocol::names::validate_any_name;
use protocol::properties::{Properties, DELAY_LEVEL, DELAY_UNSUPPORTED};
use protocol::time::now_ms;
use protocol::Status;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::connection::{ConnectOptions, Connection, Pending};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::route::RouteCache;

/// How a [`Producer`] behaves.
#[derive(Debug, Clone)]
pub struct ProducerOptions {
    /// Most send requests awaiting their ack at once; further sends wait. Default 256,
    /// the broker's default limit of requests in flight per connection.
    pub max_in_flight: usize,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        Self { max_in_flight: 256 }
    }
}

/// Where a message was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    /// The message's id.
    pub msg_id: String,
    /// The queue it went to.
    pub queue_id: u32,
    /// Its offset in that queue.
    pub queue_offset: u64,
}

/// Sends messages to topics over one connection.
pub struct Producer {
    conn: Connection,
    routes: RouteCache,
    next_queue: AtomicU32,
    in_flight: Arc<Semaphore>,
    max_in_flight: u32,
    timeout: Duration,
}

impl Producer {
    /// Connects a producer to the broker at `addr`.
    ///
    /// # Errors
    /// As [`Connection::connect`].
    pub async fn connect(addr: &str, opts: ProducerOptions) -> Result<Self> {
        let conn = Connection::connect(addr, ConnectOptions::default()).await?;
        Ok(Self::with_connection(conn, opts))
    }

    /// A producer over an existing connection (which may be shared with others).
    pub fn with_connection(conn: Connection, opts: ProducerOptions) -> Self {
        let timeout = conn.options().request_timeout;
        let max_in_flight = u32::try_from(opts.max_in_flight.clamp(1, 1 << 20)).unwrap_or(1024);
        Self {
            conn,
            routes: RouteCache::default(),
            next_queue: AtomicU32::new(0),
            in_flight: Arc::new(Semaphore::new(max_in_flight as usize)),
            max_in_flight,
            timeout,
        }
    }

    /// The connection the producer sends over.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Sends one message and waits for its ack.
    ///
    /// # Errors
    /// Connection failures, timeouts, and the broker's refusal (`Broker`).
    pub async fn send(&self, topic: &str, msg: &Message) -> Result<SendResult> {
        let results = self.send_async(topic, msg).await?.wait().await?;
        results.into_iter().next().ok_or_else(no_receipt)
    }

    /// Sends messages as one batch to one queue (chosen by the first message's keys, or
    /// round robin) and waits for the ack; the broker stores all of them or none. Batches
    /// over the broker's limit are split and pipelined.
    ///
    /// # Errors
    /// As [`Producer::send`]; `InvalidArgument` for an empty batch.
    pub async fn send_batch(&self, topic: &str, msgs: &[Message]) -> Result<Vec<SendResult>> {
        let first = msgs
            .first()
            .ok_or_else(|| Error::InvalidArgument("empty batch".into()))?;
        let queue = self.select_queue(topic, first.key_hash).await?;
        let max = self.conn.max_batch_messages().max(1) as usize;
        let mut handles = Vec::with_capacity(msgs.len().div_ceil(max));
        for chunk in msgs.chunks(max) {
            let batch = encode_batch(chunk)?;
            handles.push(self.send_encoded(topic, queue, &batch).await?);
        }
        let mut out = Vec::with_capacity(msgs.len());
        for h in handles {
            out.extend(h.wait().await?);
        }
        Ok(out)
    }

    /// Puts one message on the wire and returns a handle on its ack without waiting for it.
    /// Waits only while `max_in_flight` sends are unacknowledged. Sends started one after
    /// the other are written in that order, and the broker stores the sends of one
    /// connection in the order they arrive, so pipelined sends to one queue keep their
    /// order (a send refused as `Busy` is the exception: keep `max_in_flight` at or below
    /// the broker's limit).
    ///
    /// # Errors
    /// Failures that happen before the request is written (connect, encoding).
    pub async fn send_async(&self, topic: &str, msg: &Message) -> Result<SendHandle> {
        let queue = self.select_queue(topic, msg.key_hash).await?;
        let batch = encode_batch(std::slice::from_ref(msg))?;
        self.send_encoded(topic, queue, &batch).await
    }

    /// A slot among the requests in flight for a non-empty encoded batch.
    async fn permit_for(&self, batch: &BatchWriter) -> Result<OwnedSemaphorePermit> {
        if batch.is_empty() {
            return Err(Error::InvalidArgument("empty batch".into()));
        }
        Arc::clone(&self.in_flight)
            .acquire_owned()
            .await
            .map_err(|_| Error::Closed {
                addr: self.conn.addr().to_string(),
            })
    }

    /// Sends an already encoded batch to one queue, pipelined like [`Producer::send_async`].
    /// The cheapest path: nothing is encoded per call.
    ///
    /// # Errors
    /// As [`Producer::send_async`].
    pub async fn send_encoded(
        &self,
        topic: &str,
        queue_id: u32,
        batch: &BatchWriter,
    ) -> Result<SendHandle> {
        let permit = self.permit_for(batch).await?;
        let req = SendRequest {
            topic: topic.to_string(),
            queue_id,
            count: batch.count(),
        };
        let pending = self.conn.start(&req, batch.as_bytes()).await?;
        Ok(SendHandle {
            pending,
            _permit: permit,
            timeout: self.timeout,
        })
    }

    /// The queue a message goes to: by key hash when it has keys, else round robin.
    ///
    /// # Errors
    /// An invalid topic name, or a failed metadata lookup.
    pub async fn select_queue(&self, topic: &str, key_hash: Option<u64>) -> Result<u32> {
        validate_any_name(topic).map_err(|source| Error::InvalidName {
            name: topic.to_string(),
            source,
        })?;
        let count = self.routes.queue_count(&self.conn, topic).await?;
        Ok(match key_hash {
            Some(h) => (h % u64::from(count)) as u32,
            None => self.next_queue.fetch_add(1, Ordering::Relaxed) % count,
        })
    }

    /// Sends one timer message: stored now, delivered to its queue when due (a time in
    /// the past means now). The receipt carries its due time and a recall handle.
    ///
    /// # Errors
    /// As [`Producer::send`]; the broker refuses (`BadRequest`) a time further ahead than
    /// its `--max-timer-delay-ms`.
    pub async fn send_timer(
        &self,
        topic: &str,
        msg: &Message,
        at: DeliverAt,
    ) -> Result<TimerReceipt> {
        let mut receipts = self.send_timer_async(topic, msg, at).await?.wait().await?;
        receipts.pop().ok_or_else(no_receipt)
    }

    /// Puts one timer message on the wire and returns a handle on its ack, pipelined like
    /// [`Producer::send_async`].
    ///
    /// # Errors
    /// As [`Producer::send_async`].
    pub async fn send_timer_async(
        &self,
        topic: &str,
        msg: &Message,
        at: DeliverAt,
    ) -> Result<TimerHandle> {
        let queue = self.select_queue(topic, msg.key_hash).await?;
        let batch = encode_batch(std::slice::from_ref(msg))?;
        self.send_timer_encoded(topic, queue, &batch, at).await
    }

    /// Sends timer messages as batches to one queue (chosen as for
    /// [`Producer::send_batch`]), all due at `at`.
    ///
    /// # Errors
    /// As [`Producer::send_timer`]; `InvalidArgument` for an empty batch.
    pub async fn send_batch_timer(
        &self,
        topic: &str,
        msgs: &[Message],
        at: DeliverAt,
    ) -> Result<Vec<TimerReceipt>> {
        let first = msgs
            .first()
            .ok_or_else(|| Error::InvalidArgument("empty batch".into()))?;
        let queue = self.select_queue(topic, first.key_hash).await?;
        let max = self.conn.max_batch_messages().max(1) as usize;
        let mut handles = Vec::with_capacity(msgs.len().div_ceil(max));
        for chunk in msgs.chunks(max) {
            let batch = encode_batch(chunk)?;
            handles.push(self.send_timer_encoded(topic, queue, &batch, at).await?);
        }
        let mut out = Vec::with_capacity(msgs.len());
        for h in handles {
            out.extend(h.wait().await?);
        }
        Ok(out)
    }

    /// Sends an encoded batch of timer messages to one queue, pipelined like
    /// [`Producer::send_encoded`].
    ///
    /// # Errors
    /// As [`Producer::send_async`].
    pub async fn send_timer_encoded(
        &self,
        topic: &str,
        queue_id: u32,
        batch: &BatchWriter,
        at: DeliverAt,
    ) -> Result<TimerHandle> {
        let permit = self.permit_for(batch).await?;
        let req = SendTimerRequest {
            topic: topic.to_string(),
            queue_id,
            count: batch.count(),
            deliver_at: at,
        };
        let pending = self.conn.start(&req, batch.as_bytes()).await?;
        Ok(TimerHandle {
            pending,
            _permit: permit,
            timeout: self.timeout,
        })
    }

    /// Recalls a timer message of `topic` by the handle its send answered: removed for
    /// good if not yet due, else `AlreadyDelivered`.
    ///
    /// # Errors
    /// Connection failures; `NotFound` for a handle of no timer message of the topic;
    /// `BadRequest` for one that does not decode.
    pub async fn recall(&self, topic: &str, recall_handle: &str) -> Result<RecallStatus> {
        let req = RecallRequest {
            topic: topic.to_string(),
            recall_handle: recall_handle.to_string(),
        };
        Ok(self.conn.call(&req, &[]).await?.0.status)
    }

    /// Forgets cached metadata of a topic (e.g. after it gained queues).
    pub fn refresh_topic(&self, topic: &str) {
        self.routes.invalidate(topic);
    }

    /// Waits for all unacknowledged sends, then closes the connection.
    pub async fn close(self) {
        // Every slot back means every ack arrived (or its handle was dropped).
        let _ = self.in_flight.acquire_many(self.max_in_flight).await;
        self.conn.close();
    }
}

fn no_receipt() -> Error {
    Error::Broker {
        status: Status::Internal,
        message: "the broker acknowledged the send without a receipt".into(),
    }
}

/// Encodes messages in the send layout, stamped with the current time.
///
/// # Errors
/// `InvalidArgument` for a body or property blob over 4 GiB; `UnsupportedProperty` for a
/// message asking for delayed delivery (`DELAY`), which the broker does not offer yet.
pub fn encode_batch(msgs: &[Message]) -> Result<BatchWriter> {
    if msgs
        .iter()
        .any(|m| Properties::new(m.properties()).get(DELAY_LEVEL).is_some())
    {
        return Err(Error::UnsupportedProperty {
            property: DELAY_LEVEL,
            reason: DELAY_UNSUPPORTED,
        });
    }
    let now = now_ms();
    let bytes: usize = msgs
        .iter()
        .map(|m| 16 + m.body.len() + m.properties().len())
        .sum();
    let mut w = BatchWriter::with_capacity(bytes);
    for m in msgs {
        w.push(&BatchMessage {
            properties: m.properties(),
            body: &m.body,
            born_timestamp_ms: now,
        })?;
    }
    Ok(w)
}

/// The ack of a send in flight. Holding it holds one of the producer's in-flight slots.
pub struct SendHandle {
    pending: Pending<SendRequest>,
    _permit: OwnedSemaphorePermit,
    timeout: Duration,
}

impl SendHandle {
    /// Waits for the ack: one result per message, in the order sent.
    ///
    /// # Errors
    /// Timeouts, a lost connection, or the broker's refusal.
    pub async fn wait(self) -> Result<Vec<SendResult>> {
        let (resp, _) = self.pending.wait(self.timeout).await?;
        Ok(resp
            .receipts
            .into_iter()
            .map(|r| SendResult {
                msg_id: r.msg_id,
                queue_id: r.queue_id,
                queue_offset: r.queue_offset,
            })
            .collect())
    }
}

/// The ack of a timer send started by [`Producer::send_timer_encoded`].
pub struct TimerHandle {
    pending: Pending<SendTimerRequest>,
    _permit: OwnedSemaphorePermit,
    timeout: Duration,
}

impl TimerHandle {
    /// Waits for the broker's answer: one receipt per message, in order.
    ///
    /// # Errors
    /// As [`Producer::send_timer`].
    pub async fn wait(self) -> Result<Vec<TimerReceipt>> {
        let (resp, _) = self.pending.wait(self.timeout).await?;
        Ok(resp.receipts)
    }
}
