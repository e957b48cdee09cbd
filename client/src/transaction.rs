//! Transactions: a [`TransactionalProducer`] opens [`Transaction`]s whose sends (and acks
//! of consumed messages, for consume-transform-produce) take effect together on commit,
//! or not at all. A [`TransactionChecker`] answers the broker's check-backs about
//! transactions left open past their timeout (say, after the process that began them
//! died): it looks at the local state (the database write the transaction stood for) and
//! says commit, roll back, or not known yet.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use protocol::messages::Empty;
use protocol::receive::ReceiptHandle;
use protocol::tx::{
    TxAck, TxAckRequest, TxBeginRequest, TxCheckRequest, TxCommitRequest, TxCommitResponse, TxInfo,
    TxListRequest, TxRegisterRequest, TxRollbackRequest, TxSendRequest, TxSendResponse,
};
use protocol::{header, Request, RequestCode};
use tokio::task::JoinHandle;

use crate::connection::{ConnectOptions, Connection};
use crate::consumer::LeasedMessage;
use crate::error::{Error, Result};
use crate::message::{Message, ReceivedMessage};
use crate::producer::{encode_batch, Producer, ProducerOptions};

/// How often a producer names itself to the broker again, so that check-backs find it
/// after a reconnect.
const REGISTER_EVERY: Duration = Duration::from_secs(2);

/// What became of a transaction, as far as the application knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxResolution {
    /// Commit it: the local work it stood for is done.
    Commit,
    /// Roll it back, with a reason the broker records.
    Rollback(String),
    /// Not known yet: the broker asks again later (up to its limit, then rolls back).
    Unknown,
}

/// Answers the broker's check-backs for a producer group. Called on a blocking thread,
/// so it may query a database synchronously.
pub trait TransactionChecker: Send + Sync + 'static {
    /// What became of transaction `tx_id` (the `check`-th time the broker asks).
    fn check(&self, tx_id: &str, check: u32) -> TxResolution;
}

impl<F> TransactionChecker for F
where
    F: Fn(&str, u32) -> TxResolution + Send + Sync + 'static,
{
    fn check(&self, tx_id: &str, check: u32) -> TxResolution {
        self(tx_id, check)
    }
}

/// A producer of transactions for one producer group. While it lives, its connection is
/// one the broker checks back with for the group's open transactions.
pub struct TransactionalProducer {
    producer: Arc<Producer>,
    group: String,
    checker_task: JoinHandle<()>,
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for TransactionalProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionalProducer")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl TransactionalProducer {
    /// Connects to `addr` as a producer of `group`, answering check-backs with `checker`.
    ///
    /// # Errors
    /// As [`Connection::connect`]; `InvalidName` for a bad group name.
    pub async fn connect(
        addr: &str,
        group: &str,
        checker: impl TransactionChecker,
    ) -> Result<Self> {
        let conn = Connection::connect(addr, ConnectOptions::default()).await?;
        Self::with_connection(conn, group, checker).await
    }

    /// A producer of `group` over `conn` (which it takes the broker's requests of).
    ///
    /// # Errors
    /// `InvalidName` for a bad group name; the broker refused the registration.
    pub async fn with_connection(
        conn: Connection,
        group: &str,
        checker: impl TransactionChecker,
    ) -> Result<Self> {
        protocol::names::validate_user_name(group).map_err(|source| Error::InvalidName {
            name: group.to_string(),
            source,
        })?;
        let pushes = conn.requests_from_broker();
        let register = TxRegisterRequest {
            producer_group: group.to_string(),
        };
        conn.call(&register, &[]).await?;
        let closed = Arc::new(AtomicBool::new(false));
        let checker_task = tokio::spawn(answer_checks(
            conn.clone(),
            register,
            Arc::new(checker),
            pushes,
            Arc::clone(&closed),
        ));
        Ok(Self {
            producer: Arc::new(Producer::with_connection(conn, ProducerOptions::default())),
            group: group.to_string(),
            checker_task,
            closed,
        })
    }

    /// The producer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The connection it talks over.
    pub fn connection(&self) -> &Connection {
        self.producer.connection()
    }

    /// Opens a transaction with the broker's timeout (`--tx-timeout-ms`).
    ///
    /// # Errors
    /// Connection failures and the broker's refusal.
    pub async fn begin(&self) -> Result<Transaction> {
        self.begin_with(None).await
    }

    /// Opens a transaction checked back once open longer than `timeout`.
    ///
    /// # Errors
    /// As [`TransactionalProducer::begin`].
    pub async fn begin_with_timeout(&self, timeout: Duration) -> Result<Transaction> {
        self.begin_with(Some(timeout.as_millis().max(1) as u64))
            .await
    }

    async fn begin_with(&self, timeout_ms: Option<u64>) -> Result<Transaction> {
        let req = TxBeginRequest {
            producer_group: self.group.clone(),
            timeout_ms,
        };
        let (resp, _) = self.connection().call(&req, &[]).await?;
        Ok(Transaction::resume(Arc::clone(&self.producer), resp.tx_id))
    }

    /// A transaction already begun (by id), to go on with it: send, ack, commit.
    pub fn resume(&self, tx_id: &str) -> Transaction {
        Transaction::resume(Arc::clone(&self.producer), tx_id.to_string())
    }

    /// Stops answering check-backs and closes the connection.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.checker_task.abort();
        self.connection().close();
    }
}

impl Drop for TransactionalProducer {
    fn drop(&mut self) {
        self.checker_task.abort();
    }
}

/// Answers check-backs until the producer closes, and names the connection a producer of
/// the group again every few seconds (a reconnect starts a new broker-side connection).
async fn answer_checks(
    conn: Connection,
    register: TxRegisterRequest,
    checker: Arc<dyn TransactionChecker>,
    mut pushes: tokio::sync::mpsc::UnboundedReceiver<protocol::Frame>,
    closed: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval(REGISTER_EVERY);
    loop {
        let frame = tokio::select! {
            f = pushes.recv() => match f {
                Some(f) => f,
                None => return,
            },
            _ = tick.tick() => {
                if closed.load(Ordering::Acquire) {
                    return;
                }
                if let Err(e) = conn.call(&register, &[]).await {
                    tracing::debug!(error = %e, "producer registration failed; retrying");
                }
                continue;
            }
        };
        if frame.code != u16::from(RequestCode::TxCheck) {
            continue;
        }
        let Ok(check) = header::decode::<TxCheckRequest>(&frame.header) else {
            tracing::warn!("a check-back that does not decode; ignored");
            continue;
        };
        let (conn, checker) = (conn.clone(), Arc::clone(&checker));
        // One task per check: a slow checker does not hold back the others.
        tokio::spawn(async move {
            let id = check.tx_id.clone();
            let n = check.check;
            let resolution = match tokio::task::spawn_blocking(move || checker.check(&id, n)).await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "transaction checker panicked; the broker asks again");
                    return;
                }
            };
            let result = match resolution {
                TxResolution::Commit => commit_id(&conn, &check.tx_id).await.map(drop),
                TxResolution::Rollback(reason) => {
                    rollback_id(&conn, &check.tx_id, Some(reason)).await
                }
                TxResolution::Unknown => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(tx = %check.tx_id, error = %e, "answer to a check-back failed");
            }
        });
    }
}

async fn commit_id(conn: &Connection, tx_id: &str) -> Result<TxCommitResponse> {
    let req = TxCommitRequest {
        tx_id: tx_id.to_string(),
    };
    Ok(conn.call(&req, &[]).await?.0)
}

async fn rollback_id(conn: &Connection, tx_id: &str, reason: Option<String>) -> Result<()> {
    let req = TxRollbackRequest {
        tx_id: tx_id.to_string(),
        reason,
    };
    let _: Empty = conn.call(&req, &[]).await?.0;
    Ok(())
}

/// An open transaction: send messages, acknowledge consumed ones, then commit (all of it
/// takes effect) or roll back (none of it does). Also the session of
/// consume-transform-produce: ack what was consumed and send what was made of it.
pub struct Transaction {
    producer: Arc<Producer>,
    id: String,
    /// Consumed messages acked in this transaction, marked done in their consumer once
    /// the commit is through (so the consumer's own commits include them).
    delivered: std::sync::Mutex<Vec<ReceivedMessage>>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction").field("id", &self.id).finish()
    }
}

impl Transaction {
    fn resume(producer: Arc<Producer>, id: String) -> Self {
        Self {
            producer,
            id,
            delivered: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The transaction's id (what `mq tx commit ID` takes).
    pub fn id(&self) -> &str {
        &self.id
    }

    fn conn(&self) -> &Connection {
        self.producer.connection()
    }

    async fn call<R: Request>(&self, req: &R, body: &[u8]) -> Result<R::Response> {
        Ok(self.conn().call(req, body).await?.0)
    }

    /// Adds one message (to a queue chosen by its keys, or round robin). Invisible to
    /// consumers until commit.
    ///
    /// # Errors
    /// Connection failures; the broker's refusal (`TxTooLarge` past its limits,
    /// `TxNotFound`, `TxFinished`).
    pub async fn send(&self, topic: &str, msg: &Message) -> Result<TxSendResponse> {
        self.send_batch(topic, std::slice::from_ref(msg)).await
    }

    /// Adds messages to one queue (chosen by the first message's keys, or round robin),
    /// in order.
    ///
    /// # Errors
    /// As [`Transaction::send`]; `InvalidArgument` for an empty batch.
    pub async fn send_batch(&self, topic: &str, msgs: &[Message]) -> Result<TxSendResponse> {
        let first = msgs
            .first()
            .ok_or_else(|| Error::InvalidArgument("empty batch".into()))?;
        let queue_id = self.producer.select_queue(topic, first.key_hash).await?;
        self.send_to(topic, queue_id, msgs).await
    }

    /// Adds messages to queue `queue_id` of `topic`, in order.
    ///
    /// # Errors
    /// As [`Transaction::send_batch`].
    pub async fn send_to(
        &self,
        topic: &str,
        queue_id: u32,
        msgs: &[Message],
    ) -> Result<TxSendResponse> {
        let max = self.conn().max_batch_messages().max(1) as usize;
        let mut last = None;
        for chunk in msgs.chunks(max) {
            let batch = encode_batch(chunk)?;
            let req = TxSendRequest {
                tx_id: self.id.clone(),
                topic: topic.to_string(),
                queue_id,
                count: batch.count(),
            };
            last = Some(self.call(&req, batch.as_bytes()).await?);
        }
        last.ok_or_else(|| Error::InvalidArgument("empty batch".into()))
    }

    /// Acknowledges, in this transaction, messages of a group that consumes by offsets
    /// (by queue offset): on commit they are done for the group, on rollback they are not.
    ///
    /// # Errors
    /// Connection failures and the broker's refusal.
    pub async fn ack_offsets(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        offsets: &[u64],
    ) -> Result<u32> {
        let acks = offsets
            .iter()
            .map(|&offset| TxAck::Offset {
                topic: topic.to_string(),
                queue_id,
                offset,
            })
            .collect();
        self.ack(group, acks).await
    }

    /// Acknowledges a message a [`crate::PullConsumer`] or [`crate::PushConsumer`] of
    /// `group` delivered; once committed, the consumer counts it as acked too.
    ///
    /// # Errors
    /// As [`Transaction::ack_offsets`].
    pub async fn ack_delivered(&self, group: &str, msg: &ReceivedMessage) -> Result<u32> {
        let n = self
            .ack_offsets(
                group,
                msg.stored_topic(),
                msg.queue_id(),
                &[msg.queue_offset()],
            )
            .await?;
        if let Ok(mut d) = self.delivered.lock() {
            d.push(msg.clone());
        }
        Ok(n)
    }

    /// Acknowledges, in this transaction, messages a [`crate::SimpleConsumer`] of `group`
    /// received (by receipt handle). The broker holds their leases until the transaction
    /// ends; a rollback makes them visible again at once.
    ///
    /// # Errors
    /// As [`Transaction::ack_offsets`]; `InvalidReceiptHandle` for a lease that ended.
    pub async fn ack_leased(&self, group: &str, msgs: &[LeasedMessage]) -> Result<u32> {
        let acks = msgs
            .iter()
            .map(|m| TxAck::Receipt {
                handle: m.receipt_handle,
            })
            .collect();
        self.ack(group, acks).await
    }

    async fn ack(&self, group: &str, acks: Vec<TxAck>) -> Result<u32> {
        let req = TxAckRequest {
            tx_id: self.id.clone(),
            group: group.to_string(),
            acks,
        };
        Ok(self.call(&req, &[]).await?.acks)
    }

    /// Commits: every message becomes visible (in send order per queue) and every ack
    /// applies, together.
    ///
    /// # Errors
    /// `TxNotFound` / `TxFinished` (already committed or rolled back, by check-back say),
    /// connection failures (then the outcome is unknown: the broker checks back).
    pub async fn commit(self) -> Result<TxCommitResponse> {
        let resp = commit_id(self.conn(), &self.id).await?;
        let delivered = self.delivered.lock().map(|mut d| std::mem::take(&mut *d));
        for m in delivered.unwrap_or_default() {
            m.mark_acked();
        }
        Ok(resp)
    }

    /// Rolls back: no message becomes visible, no ack applies.
    ///
    /// # Errors
    /// As [`Transaction::commit`].
    pub async fn rollback(self) -> Result<()> {
        rollback_id(self.conn(), &self.id, None).await
    }
}

/// Operator calls on transactions, by id (see `mq tx`).
#[derive(Debug, Clone)]
pub struct TxAdmin {
    conn: Connection,
}

impl TxAdmin {
    /// Transaction calls over `conn`.
    pub fn new(conn: Connection) -> Self {
        Self { conn }
    }

    /// Opens a transaction of `group` (a connection that exits leaves it to check-back).
    ///
    /// # Errors
    /// Connection failures and the broker's refusal.
    pub async fn begin(&self, group: &str, timeout_ms: Option<u64>) -> Result<String> {
        let req = TxBeginRequest {
            producer_group: group.to_string(),
            timeout_ms,
        };
        Ok(self.conn.call(&req, &[]).await?.0.tx_id)
    }

    /// Adds messages to queue `queue_id` of `topic` in transaction `tx_id`.
    ///
    /// # Errors
    /// As [`Transaction::send_to`].
    pub async fn send(
        &self,
        tx_id: &str,
        topic: &str,
        queue_id: u32,
        msgs: &[Message],
    ) -> Result<TxSendResponse> {
        let batch = encode_batch(msgs)?;
        let req = TxSendRequest {
            tx_id: tx_id.to_string(),
            topic: topic.to_string(),
            queue_id,
            count: batch.count(),
        };
        Ok(self.conn.call(&req, batch.as_bytes()).await?.0)
    }

    /// Adds acks of `group` (queue offsets of one queue) to transaction `tx_id`.
    ///
    /// # Errors
    /// As [`Transaction::ack_offsets`].
    pub async fn ack(
        &self,
        tx_id: &str,
        group: &str,
        topic: &str,
        queue_id: u32,
        offsets: &[u64],
    ) -> Result<u32> {
        let req = TxAckRequest {
            tx_id: tx_id.to_string(),
            group: group.to_string(),
            acks: offsets
                .iter()
                .map(|&offset| TxAck::Offset {
                    topic: topic.to_string(),
                    queue_id,
                    offset,
                })
                .collect(),
        };
        Ok(self.conn.call(&req, &[]).await?.0.acks)
    }

    /// Adds acks of `group` by receipt handle (messages a receive-mode consumer of the
    /// group holds leased) to transaction `tx_id`; the broker holds their leases until
    /// the transaction ends.
    ///
    /// # Errors
    /// As [`Transaction::ack_leased`].
    pub async fn ack_receipts(
        &self,
        tx_id: &str,
        group: &str,
        handles: &[ReceiptHandle],
    ) -> Result<u32> {
        let req = TxAckRequest {
            tx_id: tx_id.to_string(),
            group: group.to_string(),
            acks: handles
                .iter()
                .map(|h| TxAck::Receipt { handle: *h })
                .collect(),
        };
        Ok(self.conn.call(&req, &[]).await?.0.acks)
    }

    /// Commits transaction `tx_id`.
    ///
    /// # Errors
    /// As [`Transaction::commit`].
    pub async fn commit(&self, tx_id: &str) -> Result<TxCommitResponse> {
        commit_id(&self.conn, tx_id).await
    }

    /// Rolls transaction `tx_id` back, recording `reason`.
    ///
    /// # Errors
    /// As [`Transaction::rollback`].
    pub async fn rollback(&self, tx_id: &str, reason: Option<String>) -> Result<()> {
        rollback_id(&self.conn, tx_id, reason).await
    }

    /// The open transactions, oldest first.
    ///
    /// # Errors
    /// Connection failures.
    pub async fn list(&self) -> Result<Vec<TxInfo>> {
        Ok(self.conn.call(&TxListRequest {}, &[]).await?.0.transactions)
    }
}
