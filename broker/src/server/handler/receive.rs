//! Per-message acknowledgement requests (see `crate::pop`): receive with long polling,
//! ack (answered once written), change invisibility, reject, the lease report; and the two
//! tasks behind them, the lease timer and the ack writer, started with the first receive.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use protocol::messages::Empty;
use protocol::names::retry_topic;
use protocol::receive::{
    AckMessagesRequest, AckMessagesResponse, ChangeInvisibilityRequest, LeaseInfoRequest,
    ReceiveRequest, ReceiveResponse, RejectRequest,
};
use protocol::{Frame, Status};
use tokio::time::Instant;

use protocol::time::now_ms;

use super::{blocking, check_group, HandlerResult};
use crate::config::MAX_LONG_POLL_MS;
use crate::pop::{Ctx, PopError, Received, MAX_INVISIBLE_MS};
use crate::server::request::decode;
use crate::server::response::{Body, HandlerError, Response};
use crate::server::services::Services;
use crate::server::session::Session;
use crate::store::TagFilter;

/// Body bytes a receive returns at most.
const MAX_RECEIVE_BYTES: usize = 4 << 20;
/// How long the lease timer sleeps when no lease is in flight (a new one wakes it).
const IDLE_TIMER: Duration = Duration::from_secs(3600);

fn ctx(s: &Services) -> Ctx<'_> {
    Ctx {
        store: &s.store,
        offsets: &s.offsets,
        retry: &s.retry,
    }
}

pub(super) async fn receive(
    services: &Arc<Services>,
    conn: &Session,
    frame: &Frame,
) -> HandlerResult {
    let req: ReceiveRequest = decode(frame)?;
    check_group(&req.group)?;
    check_invisible(req.invisible_ms, 1)?;
    let filter = TagFilter::parse(&req.tag_expr).map_err(HandlerError::from)?;
    if services.groups.has_live_members(&req.group) {
        return Err(PopError::ModeConflict { group: req.group }.into());
    }
    start_tasks(services);
    let max_count = req
        .max_messages
        .clamp(1, services.config.max_batch_messages) as usize;
    let frame_room = (services.config.max_frame_bytes() as usize).saturating_sub(1 << 20);
    let max_bytes = MAX_RECEIVE_BYTES.min(frame_room).max(1);
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.min(MAX_LONG_POLL_MS));
    let group = services.pop.group(&req.group);
    let retry = retry_topic(&req.group);
    let req = Arc::new(req);
    loop {
        // Armed before the store is read, so a message dispatched in between still wakes us.
        let topic = services
            .pop
            .topic_waker(&services.store, &req.topic)
            .ok_or_else(|| {
                HandlerError::new(
                    Status::TopicNotFound,
                    format!("topic {} does not exist", req.topic),
                )
            })?;
        let retry_waker = services
            .pop
            .topic_waker(&services.store, &retry)
            .unwrap_or_else(|| Arc::clone(&topic));
        let (a, b, c) = (
            topic.notified(),
            retry_waker.notified(),
            group.room.notified(),
        );
        tokio::pin!(a, b, c);
        a.as_mut().enable();
        b.as_mut().enable();
        c.as_mut().enable();
        let running = conn.start_work().await.map_err(|_| {
            HandlerError::new(
                Status::ShuttingDown,
                "the connection is closing (or the broker shutting down); receive not started",
            )
        })?;
        // Read here rather than on the blocking pool, as pull's head reads: a receiving
        // group reads at its cursor, normally recent records hot in the page cache, and
        // the hop (futex wake-ups, task switches) was a quarter of the broker's time in
        // `perf` under `mq bench pop`. A group far behind on cold pages may
        // fault some in on this worker, one batch (at most 4 MiB) at a time.
        let got = services
            .pop
            .receive(
                &ctx(services),
                &req,
                &filter,
                max_count,
                max_bytes,
                now_ms(),
            )
            .map_err(HandlerError::from)?;
        drop(running);
        if !got.is_empty() || Instant::now() >= deadline {
            return Ok(respond(services, got));
        }
        tokio::select! {
            () = &mut a => {}
            () = &mut b => {}
            () = &mut c => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = conn.closed.cancelled() => return Ok(respond(services, Vec::new())),
            () = services.shutdown.cancelled() => return Ok(respond(services, Vec::new())),
        }
    }
}

fn respond(services: &Services, got: Vec<Received>) -> Response {
    services.stats.add_messages_out(got.len() as u64);
    let (leases, records) = got.into_iter().map(|r| (r.lease, r.record)).unzip();
    Response::ok_with_body(&ReceiveResponse { leases }, Body::Records(records))
}

pub(super) async fn ack(services: &Arc<Services>, conn: &Session, frame: &Frame) -> HandlerResult {
    let req: AckMessagesRequest = decode(frame)?;
    check_group(&req.group)?;
    if req.receipt_handles.len() > services.config.max_batch_messages as usize {
        return Err(HandlerError::bad_request(format!(
            "{} receipt handles in one ack; at most {}",
            req.receipt_handles.len(),
            services.config.max_batch_messages
        )));
    }
    let count = req.receipt_handles.len();
    // Memory only (the write is the ack writer's): no blocking-pool hop, and the work
    // permit is held for this part alone.
    let running = conn.start_work().await.map_err(|_| {
        HandlerError::new(
            Status::ShuttingDown,
            "the connection is closing (or the broker shutting down); ack not applied",
        )
    })?;
    let refused = services
        .pop
        .ack(&ctx(services), &req.group, &req.receipt_handles)?;
    drop(running);
    if refused.len() < count {
        let ticket = services.pop.durable.ticket();
        tokio::select! {
            written = services.pop.durable.wait(ticket) => written.map_err(|e| HandlerError::new(
                Status::StorageError,
                format!("acks recorded but not yet written to disk (written later; a crash before would deliver them again): {e}"),
            ))?,
            () = services.shutdown.cancelled() => return Err(HandlerError::new(
                Status::ShuttingDown,
                "acks recorded; the broker is shutting down and writes them as it stops",
            )),
        }
    }
    Ok(Response::ok(&AckMessagesResponse { refused }))
}

pub(super) fn change(services: &Services, frame: &Frame) -> HandlerResult {
    let req: ChangeInvisibilityRequest = decode(frame)?;
    check_group(&req.group)?;
    check_invisible(req.invisible_ms, 0)?;
    let resp = services.pop.change(
        &ctx(services),
        &req.group,
        &req.receipt_handle,
        req.invisible_ms,
        now_ms(),
    )?;
    Ok(Response::ok(&resp))
}

pub(super) async fn reject(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: RejectRequest = decode(frame)?;
    check_group(&req.group)?;
    let s = Arc::clone(services);
    blocking(move || {
        s.pop
            .reject(&ctx(&s), &req.group, &req.receipt_handle)
            .map_err(HandlerError::from)
    })
    .await?;
    Ok(Response::ok(&Empty {}))
}

pub(super) fn lease_info(services: &Services, frame: &Frame) -> HandlerResult {
    let req: LeaseInfoRequest = decode(frame)?;
    check_group(&req.group)?;
    Ok(Response::ok(&services.pop.report(&req.group)))
}

/// Refuses a heartbeat of a group that consumes by receive.
pub(super) fn check_offset_mode(services: &Services, group: &str) -> Result<(), HandlerError> {
    if services
        .pop
        .is_receiving(group, now_ms(), services.config.session_timeout_ms)
    {
        return Err(HandlerError::new(
            Status::GroupModeConflict,
            format!("group {group} consumes by receive (per-message acks); it cannot also join as an offset consumer"),
        ));
    }
    Ok(())
}

fn check_invisible(ms: u64, min: u64) -> Result<(), HandlerError> {
    if ms < min || ms > MAX_INVISIBLE_MS {
        return Err(HandlerError::bad_request(format!(
            "invisible_ms {ms} out of range {min}..={MAX_INVISIBLE_MS}"
        )));
    }
    Ok(())
}

impl From<PopError> for HandlerError {
    fn from(e: PopError) -> Self {
        match e {
            PopError::InvalidHandle { .. } => {
                HandlerError::new(Status::InvalidReceiptHandle, e.to_string())
            }
            PopError::ModeConflict { .. } => {
                HandlerError::new(Status::GroupModeConflict, e.to_string())
            }
            PopError::Store(s) => s.into(),
            PopError::Retry(r) => r.into(),
            PopError::Offsets(o) => HandlerError::new(Status::StorageError, o.to_string()),
        }
    }
}

/// Starts the lease timer and the ack writer once.
pub(crate) fn start_tasks(services: &Arc<Services>) {
    if services.pop.started.swap(true, Ordering::AcqRel) {
        return;
    }
    services.tracker.spawn(lease_timer(Arc::clone(services)));
    services.tracker.spawn(ack_writer(Arc::clone(services)));
}

/// Ends leases as their deadlines pass: sleeps until the earliest one, or until a new
/// earlier one is granted.
async fn lease_timer(services: Arc<Services>) {
    loop {
        let woken = services.pop.timer.notified();
        let sleep = match services.pop.next_deadline() {
            Some(d) => Duration::from_millis(d.saturating_sub(now_ms())),
            None => IDLE_TIMER,
        };
        if !sleep.is_zero() {
            tokio::select! {
                () = services.shutdown.cancelled() => return,
                () = woken => continue,
                () = tokio::time::sleep(sleep) => {}
            }
        }
        let s = Arc::clone(&services);
        if let Err(e) = blocking(move || Ok(s.pop.expire_due(&ctx(&s), now_ms()))).await {
            tracing::warn!(error = %e.message, "ending expired leases failed");
        }
    }
}

/// Writes the consumer offsets for waiting acks: each write covers every ack recorded
/// before it started.
async fn ack_writer(services: Arc<Services>) {
    loop {
        tokio::select! {
            () = services.shutdown.cancelled() => return,
            () = services.pop.durable.kick.notified() => {}
        }
        let through = services.pop.durable.wanted();
        let s = Arc::clone(&services);
        let result = match tokio::task::spawn_blocking(move || {
            s.pop.flush_acks(&ctx(&s)).map_err(|e| e.to_string())?;
            s.offsets.persist().map_err(|e| e.to_string())
        })
        .await
        {
            Ok(r) => r,
            Err(e) => Err(format!("offsets writer task failed: {e}")),
        };
        services.pop.durable.written(through, result);
    }
}
