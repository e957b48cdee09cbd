//! One owned queue: its ack tracker, its prefetch accounting and the task pulling it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::messages::{PullRequest, PullResponse, PullStatus, QueueCommit};
use protocol::Status;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::ack::AckTracker;
use super::{ConsumerEvent, Shared};
use crate::message::{decode_records, AckQueue};

pub(crate) struct QueueState {
    pub(crate) tracker: AckTracker,
    /// Delivered and not acked: what the prefetch limits bound.
    pub(crate) outstanding_msgs: usize,
    pub(crate) outstanding_bytes: usize,
    /// The commit position may have changed since the last commit.
    pub(crate) dirty: bool,
}

/// A queue this consumer owns, shared by its puller, the ack path and the committer.
pub struct QueueShared {
    pub(crate) topic: String,
    pub(crate) queue_id: u32,
    state: Mutex<QueueState>,
    /// Signalled when acks free prefetch space.
    space: Notify,
    /// Set when the queue is given up; its later deliveries and acks are ignored.
    pub(crate) revoked: AtomicBool,
    pub(crate) cancel: CancellationToken,
    /// Held by an ordered worker while it handles one of the queue's messages; taken
    /// before the queue is given up, so that no message is mid-handler when its final
    /// commit is sent (ordered consumption's hand-over).
    pub(crate) busy: tokio::sync::Mutex<()>,
    /// Until when this member holds the broker's lock on the queue, and the lease length
    /// (ordered consumption).
    pub(crate) lock: Mutex<Option<(Instant, Duration)>>,
}

impl AckQueue for QueueShared {
    fn is_revoked(&self) -> bool {
        QueueShared::is_revoked(self)
    }

    fn ack(&self, queue_offset: u64, record_len: usize) -> bool {
        QueueShared::ack(self, queue_offset, record_len)
    }
}

impl QueueShared {
    pub(crate) fn new(
        topic: String,
        queue_id: u32,
        tracker: AckTracker,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            topic,
            queue_id,
            state: Mutex::new(QueueState {
                tracker,
                outstanding_msgs: 0,
                outstanding_bytes: 0,
                // Commit the starting position at once, so a restart resumes from it.
                dirty: true,
            }),
            space: Notify::new(),
            revoked: AtomicBool::new(false),
            cancel,
            busy: tokio::sync::Mutex::new(()),
            lock: Mutex::new(None),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding this lock leaves consistent counters; keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    /// Acks one delivered offset; returns false when it was not pending.
    pub(crate) fn ack(&self, offset: u64, bytes: usize) -> bool {
        let acked = {
            let mut s = self.lock();
            let acked = s.tracker.ack(offset);
            if acked {
                s.outstanding_msgs = s.outstanding_msgs.saturating_sub(1);
                s.outstanding_bytes = s.outstanding_bytes.saturating_sub(bytes);
                s.dirty = true;
            }
            acked
        };
        if acked {
            self.space.notify_one();
        }
        acked
    }

    /// The commit for this queue when it changed since the last one (`force`: always).
    pub(crate) fn take_commit(&self, force: bool) -> Option<QueueCommit> {
        let mut s = self.lock();
        if !s.dirty && !force {
            return None;
        }
        s.dirty = false;
        let (offset, acked_above) = s.tracker.commit_position();
        Some(QueueCommit {
            topic: self.topic.clone(),
            queue_id: self.queue_id,
            offset,
            acked_above,
        })
    }

    /// A commit that did not reach the broker: try again next time.
    pub(crate) fn mark_dirty(&self) {
        self.lock().dirty = true;
    }
}

/// Pulls the queue until it is cancelled: waits for prefetch space, long-polls the broker,
/// decodes the records and hands them to the consumer.
pub(crate) async fn run_puller(q: Arc<QueueShared>, ctx: Arc<Shared>, tag_expr: String) {
    let pause = || crate::backoff::delays(Duration::from_millis(10), Duration::from_secs(1));
    let mut delays = pause();
    // A refusal is reported once, not at every retry, until a pull succeeds again.
    let mut refusal_reported = false;
    loop {
        let Some(room) = wait_for_space(&q, &ctx).await else {
            return;
        };
        let req = PullRequest {
            topic: q.topic.clone(),
            queue_id: q.queue_id,
            group: ctx.group.clone(),
            offset: q.lock().tracker.next_offset(),
            max_messages: room.min(ctx.opts.pull_batch_messages),
            max_bytes: ctx.opts.pull_max_bytes,
            tag_expr: tag_expr.clone(),
            max_wait_ms: ctx.opts.long_poll_ms,
        };
        let timeout = ctx.conn.options().request_timeout + Duration::from_millis(req.max_wait_ms);
        let result = tokio::select! {
            () = q.cancel.cancelled() => return,
            r = async { ctx.conn.start(&req, &[]).await?.wait(timeout).await } => r,
        };
        match result {
            Ok((resp, body)) => {
                delays = pause();
                refusal_reported = false;
                if !deliver(&q, &ctx, req.offset, &resp, &body).await {
                    return;
                }
            }
            Err(e) => {
                if q.cancel.is_cancelled() || ctx.cancel.is_cancelled() {
                    // The consumer is closing: a pull cut short by it is no failure.
                    return;
                }
                if let Some(status) = e.status().filter(|_| !e.is_retriable()) {
                    if !refusal_reported {
                        refusal_reported = true;
                        ctx.report(ConsumerEvent::PullRefused {
                            topic: q.topic.clone(),
                            queue_id: q.queue_id,
                            status,
                            message: e.to_string(),
                        });
                    }
                    if status == Status::BadRequest {
                        // The same request would be refused forever.
                        tracing::error!(topic = %q.topic, queue = q.queue_id, error = %e, "pull refused; queue no longer pulled");
                        return;
                    }
                }
                tracing::warn!(topic = %q.topic, queue = q.queue_id, error = %e, "pull failed");
                if matches!(e, crate::Error::Closed { .. } | crate::Error::Io { .. }) {
                    // The broker drops a member whose connection closed: rejoin over the
                    // new connection now rather than at the next heartbeat.
                    ctx.heartbeat_now.notify_one();
                }
                let backoff = delays.next().unwrap_or(Duration::from_secs(1));
                tokio::select! {
                    () = q.cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
            }
        }
    }
}

/// Waits until the queue may pull again; `None` when cancelled. Returns how many messages fit.
async fn wait_for_space(q: &QueueShared, ctx: &Shared) -> Option<u32> {
    loop {
        let notified = q.space.notified();
        {
            let s = q.lock();
            let msgs = ctx
                .opts
                .prefetch_messages
                .saturating_sub(s.outstanding_msgs);
            if msgs > 0 && s.outstanding_bytes < ctx.opts.prefetch_bytes {
                return Some(u32::try_from(msgs).unwrap_or(u32::MAX));
            }
        }
        tokio::select! {
            () = q.cancel.cancelled() => return None,
            () = notified => {}
        }
    }
}

/// Applies one pull response; false when the consumer is gone.
async fn deliver(
    q: &Arc<QueueShared>,
    ctx: &Shared,
    from: u64,
    resp: &PullResponse,
    body: &Bytes,
) -> bool {
    match resp.status {
        PullStatus::Found => {}
        PullStatus::NoNewMessage => {
            q.lock().tracker.pulled_to(resp.next_offset.max(from));
            return true;
        }
        PullStatus::OffsetBelowMin => {
            tracing::warn!(topic = %q.topic, queue = q.queue_id, from, to = resp.min_offset, "offset removed by retention, skipping ahead");
            reset(q, resp.min_offset);
            ctx.report(ConsumerEvent::Skipped {
                topic: q.topic.clone(),
                queue_id: q.queue_id,
                from,
                to: resp.min_offset,
            });
            return true;
        }
        PullStatus::OffsetPastMax => {
            reset(q, resp.max_offset);
            return true;
        }
    }
    let mut batch = Vec::with_capacity(resp.count as usize);
    if let Err(e) = decode_records(body, resp.count, &mut batch) {
        // A record that does not decode is not delivered; pulling again re-reads it.
        tracing::error!(topic = %q.topic, queue = q.queue_id, error = %e, "bad pull response");
        tokio::time::sleep(Duration::from_millis(100)).await;
        return true;
    }
    {
        let mut s = q.lock();
        let mut bytes = 0;
        batch.retain(|m| {
            let o = m.queue_offset();
            let keep = o >= from && !s.tracker.already_acked(o);
            if keep {
                s.tracker.delivered(o);
                bytes += m.record_len();
            }
            keep
        });
        s.outstanding_msgs += batch.len();
        s.outstanding_bytes += bytes;
        s.tracker.pulled_to(resp.next_offset.max(from));
        s.dirty = true;
    }
    if batch.is_empty() {
        return true;
    }
    let by: Arc<dyn AckQueue> = Arc::clone(q) as _;
    for m in &mut batch {
        m.queue = Some(Arc::clone(&by));
    }
    tokio::select! {
        () = q.cancel.cancelled() => false,
        sent = ctx.tx.send(batch) => sent.is_ok(),
    }
}

fn reset(q: &QueueShared, offset: u64) {
    let mut s = q.lock();
    s.tracker.reset_to(offset);
    s.dirty = true;
}
