//! The push consumer's ordered mode: each owned queue's messages go to the handler one at
//! a time, in queue order; the next only once the previous was acked.
//!
//! A failing message is retried *in place*, after the delay of its attempt, blocking its
//! queue (it is not sent to the retry topic, which would let later messages of the queue
//! overtake it). Past `max_reconsume_times` failed attempts it goes to the group's
//! dead-letter queue and the queue moves on. The trade-off: one poison message holds up its
//! whole queue for the sum of the retry delays (about 4 h 46 min with the default table
//! and 16 attempts), while the other queues carry on; the attempt count lives in this
//! process only, so a new owner of the queue starts counting again.
//!
//! Before handling a message the worker holds the broker's lock on its queue (taken on
//! the first message, renewed once half the lease is gone). When a rebalance moves the
//! queue away, the consumer waits for the message being handled, commits, and unlocks;
//! the new owner starts from that commit and only once it has the lock, so two members
//! never handle one queue at the same time. A member that dies loses its locks with its
//! connection; one that hangs loses them when the lease (the broker's session timeout)
//! runs out, and it checks its own lease before each message.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::messages::QueueAssignment;
use protocol::ordered::{LockBatchRequest, UnlockBatchRequest};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{retry_delay, Failure, PushConsumer, DEFAULT_RETRY_DELAYS_MS};
use crate::consumer::{Acker, ConsumerEvent, Delivery, PullConsumer, QueueShared, Shared};
use crate::error::{Error, Result};
use crate::message::ReceivedMessage;

/// How long a worker waits before asking again for a lock another member holds.
const LOCK_RETRY: Duration = Duration::from_millis(200);
/// How long a worker waits before trying again to dead-letter a message.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(1);

/// How an ordered push consumer retries.
#[derive(Debug, Clone)]
pub struct OrderedOptions {
    /// Delay before the n-th retry of a failing message, in ms (its last entry past its
    /// end). Default: the broker's table, 1s 5s 10s 30s 1m ... 2h.
    pub retry_delays_ms: Vec<u64>,
    /// Failed attempts after which a message goes to the dead-letter queue (so it is
    /// handled at most one more time than this). Default 16.
    pub max_reconsume_times: u32,
}

impl Default for OrderedOptions {
    fn default() -> Self {
        Self {
            retry_delays_ms: DEFAULT_RETRY_DELAYS_MS.to_vec(),
            max_reconsume_times: 16,
        }
    }
}

impl PushConsumer {
    /// Runs `handler` on the messages of `consumer` (made by
    /// [`PullConsumer::connect_ordered`]) one queue at a time: a queue's messages strictly
    /// one after another, different queues in parallel. `Ok` acks; `Err(Failure::Retry)`
    /// runs the handler on the same message again after the delay of its attempt, and past
    /// the last attempt dead-letters it; `Err(Failure::Reject)` dead-letters it at once.
    ///
    /// # Errors
    /// `InvalidArgument` when `consumer` is not an ordered consumer.
    pub fn start_ordered<F, Fut, E>(
        consumer: PullConsumer,
        opts: OrderedOptions,
        handler: F,
    ) -> Result<Self>
    where
        F: Fn(ReceivedMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), Failure<E>>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        if !consumer.is_ordered() {
            return Err(Error::InvalidArgument(
                "start_ordered needs a consumer made by PullConsumer::connect_ordered".into(),
            ));
        }
        let stop = CancellationToken::new();
        let (events_tx, events) = mpsc::unbounded_channel();
        let ctx = Arc::new(Ctx {
            shared: Arc::clone(consumer.shared()),
            acker: consumer.acker(),
            opts,
            handler,
            stop: stop.clone(),
        });
        let task = tokio::spawn(run(consumer, ctx, events_tx));
        Ok(Self { stop, task, events })
    }
}

struct Ctx<F> {
    shared: Arc<Shared>,
    acker: Acker,
    opts: OrderedOptions,
    handler: F,
    stop: CancellationToken,
}

/// One queue's worker: the queue it serves and its inbox.
struct Worker {
    queue: Arc<QueueShared>,
    tx: mpsc::UnboundedSender<ReceivedMessage>,
}

async fn run<F, Fut, E>(
    mut consumer: PullConsumer,
    ctx: Arc<Ctx<F>>,
    events: mpsc::UnboundedSender<ConsumerEvent>,
) -> Result<()>
where
    F: Fn(ReceivedMessage) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), Failure<E>>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let mut workers: HashMap<(String, u32), Worker> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let msg = tokio::select! {
            () = ctx.stop.cancelled() => break,
            d = consumer.recv_delivery() => match d {
                Some(Delivery::Message(m)) => m,
                Some(Delivery::Event(e)) => {
                    let _ = events.send(e);
                    continue;
                }
                None => break,
            },
        };
        while tasks.try_join_next().is_some() {}
        let Some(queue) = owner_queue(&ctx.shared, &msg) else {
            // Its queue was given up since it was pulled; the new owner gets it.
            continue;
        };
        // A worker of a queue given up (and maybe granted back since, as a new queue)
        // is done: the message goes to the worker of the queue it came from.
        workers.retain(|_, w| !w.queue.is_revoked() && !w.tx.is_closed());
        let key = (msg.stored_topic().to_owned(), msg.queue_id());
        if workers
            .get(&key)
            .is_some_and(|w| !Arc::ptr_eq(&w.queue, &queue))
        {
            workers.remove(&key);
        }
        let w = workers.entry(key).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tasks.spawn(work(Arc::clone(&ctx), Arc::clone(&queue), rx));
            Worker { queue, tx }
        });
        // A closed inbox means the worker stopped with its queue; the message is moot.
        let _ = w.tx.send(msg);
    }
    ctx.stop.cancel();
    drop(workers);
    // Each worker ends after the message it is handling, acked or left for redelivery.
    while tasks.join_next().await.is_some() {}
    consumer.close().await
}

/// The owned queue a message was delivered from, if this member still owns it.
fn owner_queue(shared: &Shared, msg: &ReceivedMessage) -> Option<Arc<QueueShared>> {
    let from = msg.queue.as_ref()?;
    let key = (msg.stored_topic().to_owned(), msg.queue_id());
    let q = shared.queues.lock().ok()?.get(&key).cloned()?;
    let same = std::ptr::eq(Arc::as_ptr(from).cast::<()>(), Arc::as_ptr(&q).cast::<()>());
    (same && !q.is_revoked()).then_some(q)
}

/// Handles a queue's messages in order until the queue is given up or the consumer stops.
async fn work<F, Fut, E>(
    ctx: Arc<Ctx<F>>,
    q: Arc<QueueShared>,
    mut rx: mpsc::UnboundedReceiver<ReceivedMessage>,
) where
    F: Fn(ReceivedMessage) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), Failure<E>>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    loop {
        let msg = tokio::select! {
            biased;
            () = ctx.stop.cancelled() => return,
            () = q.cancel.cancelled() => return,
            m = rx.recv() => match m {
                Some(m) => m,
                None => return,
            },
        };
        if !handle_in_place(&ctx, &q, &msg).await {
            return;
        }
    }
}

/// What one pass over a message came to, when it was not done.
enum Setback {
    /// Another member still holds the queue's lock.
    NotLocked,
    /// The handler failed this many times so far.
    Failed(u32),
    /// Sending it to the dead-letter queue failed.
    DeadLetterFailed,
    /// The handler rejected it: to the dead-letter queue next.
    Rejected,
}

/// Runs the handler on `msg` until it succeeds (acked) or runs out of attempts
/// (dead-lettered): true. False when the queue is given up or the consumer stops first;
/// the message is then left unacked, for this queue's next owner or run.
async fn handle_in_place<F, Fut, E>(ctx: &Ctx<F>, q: &QueueShared, msg: &ReceivedMessage) -> bool
where
    F: Fn(ReceivedMessage) -> Fut,
    Fut: Future<Output = std::result::Result<(), Failure<E>>>,
    E: std::fmt::Display,
{
    let mut failures = 0u32;
    let mut rejected = false;
    loop {
        let setback = {
            // Held while handling, so a rebalance waits for this message before it
            // commits and gives the queue up; and checked, so none starts after that.
            let _busy = q.busy.lock().await;
            if q.is_revoked() || ctx.stop.is_cancelled() {
                return false;
            }
            if !lock_held(&ctx.shared, q).await {
                Setback::NotLocked
            } else if rejected || failures > ctx.opts.max_reconsume_times {
                match ctx.acker.reject(msg).await {
                    Ok(()) => return true,
                    Err(e) => {
                        tracing::warn!(msg_id = %msg.msg_id(), error = %e, "dead-lettering an ordered message failed; trying again");
                        Setback::DeadLetterFailed
                    }
                }
            } else {
                match (ctx.handler)(msg.clone()).await {
                    Ok(()) => {
                        ctx.acker.ack(msg);
                        return true;
                    }
                    Err(Failure::Retry(e)) => {
                        failures += 1;
                        tracing::debug!(msg_id = %msg.msg_id(), error = %e, failures, "ordered handler failed; retrying in place");
                        Setback::Failed(failures)
                    }
                    Err(Failure::Reject(e)) => {
                        tracing::debug!(msg_id = %msg.msg_id(), error = %e, "ordered handler rejected the message");
                        rejected = true;
                        Setback::Rejected
                    }
                }
            }
        };
        let pause = match setback {
            Setback::NotLocked => LOCK_RETRY,
            Setback::Rejected => Duration::ZERO,
            Setback::Failed(n) if n > ctx.opts.max_reconsume_times => Duration::ZERO,
            Setback::Failed(n) => retry_delay(&ctx.opts.retry_delays_ms, n),
            Setback::DeadLetterFailed => DEAD_LETTER_RETRY,
        };
        tokio::select! {
            () = ctx.stop.cancelled() => return false,
            () = q.cancel.cancelled() => return false,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Whether this member holds the broker's lock on `q`; takes or renews it when less than
/// half the lease is left. The lease is counted from when the request was sent, so this
/// member's view of it ends before the broker's.
async fn lock_held(shared: &Shared, q: &QueueShared) -> bool {
    let belief = *q
        .lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = Instant::now();
    if let Some((until, lease)) = belief {
        if until > now + lease / 2 {
            return true;
        }
    }
    let req = LockBatchRequest {
        group: shared.group.clone(),
        client_id: shared.conn.client_id().to_owned(),
        queues: vec![QueueAssignment {
            topic: q.topic.clone(),
            queue_ids: vec![q.queue_id],
        }],
    };
    let sent = Instant::now();
    match shared.conn.call(&req, &[]).await {
        Ok((resp, _)) => {
            let got = resp
                .locked
                .iter()
                .any(|a| a.topic == q.topic && a.queue_ids.contains(&q.queue_id));
            let lease = Duration::from_millis(resp.lease_ms);
            *q.lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                got.then_some((sent + lease, lease));
            got
        }
        Err(e) => {
            tracing::warn!(topic = %q.topic, queue = q.queue_id, error = %e, "queue lock renewal failed");
            // The lease held so far is still good until it ends.
            belief.is_some_and(|(until, _)| until > Instant::now())
        }
    }
}

/// Takes the broker's locks on queues this member was just granted; returns the ones it
/// holds now, each with the end of its lease (counted from when the request was sent).
/// A failed request holds none: they are asked for again at the next heartbeat.
pub(crate) async fn lock_queues(
    shared: &Shared,
    queues: &[(String, u32)],
) -> HashMap<(String, u32), (Instant, Duration)> {
    let mut by_topic: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (topic, q) in queues {
        by_topic.entry(topic.clone()).or_default().push(*q);
    }
    if by_topic.is_empty() {
        return HashMap::new();
    }
    let req = LockBatchRequest {
        group: shared.group.clone(),
        client_id: shared.conn.client_id().to_owned(),
        queues: by_topic
            .into_iter()
            .map(|(topic, queue_ids)| QueueAssignment { topic, queue_ids })
            .collect(),
    };
    let sent = Instant::now();
    match shared.conn.call(&req, &[]).await {
        Ok((resp, _)) => {
            let lease = Duration::from_millis(resp.lease_ms);
            resp.locked
                .into_iter()
                .flat_map(|a| {
                    let topic = a.topic;
                    a.queue_ids
                        .into_iter()
                        .map(move |q| ((topic.clone(), q), (sent + lease, lease)))
                })
                .collect()
        }
        Err(e) => {
            tracing::warn!(group = %shared.group, error = %e, "queue lock request failed; trying again at the next heartbeat");
            HashMap::new()
        }
    }
}

/// Releases the broker's locks on queues this member gave up (after their final commit),
/// so that their new owners start at once. A failure only delays them until the leases
/// run out.
pub(crate) async fn unlock_queues(shared: &Shared, lost: &[Arc<QueueShared>]) {
    let mut by_topic: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for q in lost {
        *q.lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        by_topic
            .entry(q.topic.clone())
            .or_default()
            .push(q.queue_id);
    }
    let req = UnlockBatchRequest {
        group: shared.group.clone(),
        client_id: shared.conn.client_id().to_owned(),
        queues: by_topic
            .into_iter()
            .map(|(topic, queue_ids)| QueueAssignment { topic, queue_ids })
            .collect(),
    };
    if let Err(e) = shared.conn.call(&req, &[]).await {
        tracing::warn!(group = %shared.group, error = %e, "queue unlock failed; the locks lapse with their lease");
    }
}
