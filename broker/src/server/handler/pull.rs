//! Pull with long polling. A pull at (or past) the head of its queue waits on the queue's notify
//! (fired by the store's dispatcher) until a matching message arrives, the requested wait
//! (capped at 30 s) runs out, the connection closes or the broker shuts down.

use std::sync::Arc;
use std::time::Duration;

use protocol::messages::{PullRequest, PullResponse, PullStatus};
use protocol::names::RETRY_PREFIX;
use protocol::{Frame, Status};
use tokio::time::Instant;

use super::{blocking, decode, HandlerResult, Services};
use crate::config::MAX_LONG_POLL_MS;
use crate::server::response::{Body, HandlerError, Response};
use crate::server::session::Session;
use crate::store::{GetRequest, GetResult, QueueOffset, TagFilter};

/// Body bytes a pull returns when the client does not say.
const DEFAULT_PULL_BYTES: u32 = 4 << 20;

pub(super) async fn pull(services: &Arc<Services>, conn: &Session, frame: &Frame) -> HandlerResult {
    let req: PullRequest = decode(frame)?;
    let filter = TagFilter::parse(&req.tag_expr).map_err(HandlerError::from)?;
    let wait = Duration::from_millis(req.max_wait_ms.min(MAX_LONG_POLL_MS));
    let deadline = Instant::now() + wait;
    // Only queues that exist get a notify, so made-up names cannot grow the registry.
    match services.store.topic(&req.topic) {
        Some(t) if req.queue_id < t.queue_count => {}
        Some(t) => {
            return Err(HandlerError::bad_request(format!(
                "queue {} does not exist in topic {} ({} queues)",
                req.queue_id, req.topic, t.queue_count
            )))
        }
        // A group's retry topic exists only from its first nack on: until then it is
        // an empty queue, held like one, and nothing is created for the asking.
        None if req.topic.starts_with(RETRY_PREFIX) => {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = conn.closed.cancelled() => {}
            }
            return Ok(respond_absent(&req));
        }
        None => {
            return Err(HandlerError::new(
                Status::TopicNotFound,
                format!("topic {} does not exist", req.topic),
            ))
        }
    }
    let notify = services.long_polling.watch(&req.topic, req.queue_id);
    let mut offset = req.offset;
    // A read that may touch cold pages of the log runs on the blocking pool. Two reads run
    // right here instead, sparing thread hops on the end-to-end latency path: one at the
    // head of the queue (nothing to read but the index, or a message dispatched a moment
    // ago) and one after a long-poll wake-up (what the dispatcher just indexed, hot in the
    // page cache).
    let mut woken = matches!(
        services.store.queue_range(&req.topic, req.queue_id),
        Ok((min, max)) if offset >= max.get() && offset >= min.get()
    );
    loop {
        // Armed before the store is read, so a message dispatched in between still wakes us.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Reads count against the connection's running requests and byte budget; the
        // wait below does not.
        let running = conn.start_work().await.map_err(|_| {
            HandlerError::new(
                Status::ShuttingDown,
                "the connection is closing (or the broker shutting down); pull not started",
            )
        })?;
        let got = if woken {
            read(services, &req, offset, &filter)?
        } else {
            get(services, &req, offset, &filter).await?
        };
        drop(running);
        let (min, max) = (got.min_offset.get(), got.max_offset.get());
        let next = got.next_offset.get();
        // A pull past the head is held too: its messages may be stored and acknowledged
        // but not yet dispatched. If none come, it is answered `OffsetPastMax`.
        if !got.messages.is_empty() || offset < min {
            return Ok(respond(services, got, offset));
        }
        if next > offset && next < max && offset <= max {
            // The filter skipped a stretch of messages; carry on from past them.
            offset = next;
            continue;
        }
        offset = next.max(offset);
        if Instant::now() >= deadline {
            return Ok(respond(services, got, offset));
        }
        tokio::select! {
            () = &mut notified => woken = true,
            () = tokio::time::sleep_until(deadline) => {}
            () = conn.closed.cancelled() => return Ok(respond(services, got, offset)),
        }
    }
}

/// [`read`] on the blocking pool.
async fn get(
    services: &Arc<Services>,
    req: &PullRequest,
    offset: u64,
    filter: &TagFilter,
) -> Result<GetResult, HandlerError> {
    let s = Arc::clone(services);
    let req = req.clone();
    let filter = filter.clone();
    blocking(move || read(&s, &req, offset, &filter)).await
}

/// Reads the pull's batch from the store, within the request's and the frame's limits.
fn read(
    services: &Services,
    req: &PullRequest,
    offset: u64,
    filter: &TagFilter,
) -> Result<GetResult, HandlerError> {
    let max_count = req
        .max_messages
        .clamp(1, services.config.max_batch_messages) as usize;
    let frame_room = services
        .config
        .max_frame_bytes()
        .saturating_sub(1 << 20)
        .max(1);
    let max_bytes = match req.max_bytes {
        0 => DEFAULT_PULL_BYTES,
        n => n,
    }
    .min(frame_room) as usize;
    services
        .store
        .get_messages(GetRequest {
            topic: &req.topic,
            queue_id: req.queue_id,
            from: QueueOffset::new(offset),
            max_count,
            max_bytes,
            filter,
        })
        .map_err(HandlerError::from)
}

/// Builds the response. The status is derived from the offsets, so it always agrees with
/// the `min_offset`/`max_offset` it reports.
fn respond(services: &Services, got: GetResult, requested: u64) -> Response {
    let (min, max) = (got.min_offset.get(), got.max_offset.get());
    let count = got.messages.len();
    let (status, next_offset) = if count > 0 {
        (PullStatus::Found, got.next_offset.get())
    } else if requested < min {
        (PullStatus::OffsetBelowMin, min)
    } else if requested > max {
        (PullStatus::OffsetPastMax, max)
    } else {
        (
            PullStatus::NoNewMessage,
            got.next_offset.get().max(requested),
        )
    };
    services.stats.add_messages_out(count as u64);
    if let Some(first) = got.messages.first() {
        let bytes = got.messages.iter().map(|r| u64::from(r.size())).sum();
        let topic = first.view().topic();
        services
            .stats
            .recorder()
            .messages_out(topic, count as u64, bytes);
    }
    let header = PullResponse {
        status,
        next_offset,
        min_offset: min,
        max_offset: max,
        count: u32::try_from(count).unwrap_or(u32::MAX),
    };
    Response::ok_with_body(&header, Body::Records(got.messages))
}

/// The answer for a retry topic not created yet: an empty queue at offset 0.
fn respond_absent(req: &PullRequest) -> Response {
    let status = if req.offset > 0 {
        PullStatus::OffsetPastMax
    } else {
        PullStatus::NoNewMessage
    };
    let header = PullResponse {
        status,
        next_offset: 0,
        min_offset: 0,
        max_offset: 0,
        count: 0,
    };
    Response::ok_with_body(&header, Body::Records(Vec::new()))
}
