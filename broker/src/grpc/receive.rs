//! ReceiveMessage, AckMessage, ChangeInvisibleDuration and ForwardMessageToDeadLetterQueue,
//! on the broker's per-message acknowledgement (`crate::pop`): a receive leases messages
//! of every queue of the topic and of the group's retry topic; delivery attempts, the
//! group's max reconsume times and `%DLQ%<group>` are the broker's own.

use std::sync::Arc;
use std::time::Duration;

use protocol::names::retry_topic;
use protocol::receive::{HandleRefused, ReceiptHandle, ReceiveRequest};
use protocol::time::now_ms;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::codes::{ok, status};
use super::convert::{duration_ms, ms_timestamp, outgoing};
use super::pb::{
    self, receive_message_response::Content, AckMessageResponse, AckMessageResultEntry,
    ChangeInvisibleDurationResponse, Code, FilterType, ForwardMessageToDeadLetterQueueResponse,
    ReceiveMessageResponse,
};
use crate::config::MAX_LONG_POLL_MS;
use crate::pop::{Ctx, PopError, Received, MAX_INVISIBLE_MS};
use crate::server::handler::receive::start_tasks;
use crate::server::response::HandlerError;
use crate::server::services::Services;
use crate::store::TagFilter;

/// Invisibility of a push consumer's messages (it names none): the proxy's default.
const DEFAULT_INVISIBLE_MS: u64 = 60_000;
/// Long poll when the request names none: the one the settings announce.
pub(super) const DEFAULT_LONG_POLL_MS: u64 = 20_000;
/// Messages per receive when the request asks for none.
pub(super) const DEFAULT_BATCH: u32 = 32;
/// Time kept back from the client's deadline so the empty answer arrives before it.
const DEADLINE_MARGIN: Duration = Duration::from_millis(500);
/// Body bytes a receive returns at most (gRPC clients cap a message at 4 MiB).
const MAX_RECEIVE_BYTES: usize = 4 << 20;

fn ctx(s: &Services) -> Ctx<'_> {
    Ctx {
        store: &s.store,
        offsets: &s.offsets,
        retry: &s.retry,
    }
}

fn name(r: Option<&pb::Resource>) -> String {
    r.map(|r| r.name.clone()).unwrap_or_default()
}

fn check_group(group: &str) -> Result<(), pb::Status> {
    protocol::names::validate_user_name(group).map_err(|e| {
        status(
            Code::IllegalConsumerGroup,
            format!("invalid consumer group {group:?}: {e}"),
        )
    })
}

/// One long poll: the status (MESSAGE_NOT_FOUND when nothing came), the messages, then
/// the delivery time, as the proxy writes the stream. `client_wait` is what is left of the
/// client's gRPC deadline.
pub(super) async fn receive(
    s: &Arc<Services>,
    req: pb::ReceiveMessageRequest,
    client_wait: Option<Duration>,
    stop: &CancellationToken,
) -> Vec<ReceiveMessageResponse> {
    let items = match receive_inner(s, req, client_wait, stop).await {
        Ok(got) if got.is_empty() => vec![Content::Status(status(
            Code::MessageNotFound,
            "no new message within the long-polling time",
        ))],
        Ok(got) => {
            s.stats.add_messages_out(got.len() as u64);
            let mut items = Vec::with_capacity(got.len() + 2);
            items.push(Content::Status(ok()));
            items.extend(
                got.iter()
                    .map(|r| Content::Message(outgoing(&r.record, Some(&r.lease)))),
            );
            items
        }
        Err(st) => vec![Content::Status(st)],
    };
    items
        .into_iter()
        .chain(std::iter::once(Content::DeliveryTimestamp(ms_timestamp(
            now_ms(),
        ))))
        .map(|c| ReceiveMessageResponse { content: Some(c) })
        .collect()
}

async fn receive_inner(
    s: &Arc<Services>,
    req: pb::ReceiveMessageRequest,
    client_wait: Option<Duration>,
    stop: &CancellationToken,
) -> Result<Vec<Received>, pb::Status> {
    let group = name(req.group.as_ref());
    check_group(&group)?;
    let topic = name(req.message_queue.as_ref().and_then(|q| q.topic.as_ref()));
    let tag_expr = match &req.filter_expression {
        None => "*".to_owned(),
        Some(f) if f.r#type == FilterType::Sql as i32 => {
            return Err(status(
                Code::IllegalFilterExpression,
                "SQL92 filters are not supported; filter by tag (\"*\", \"a\" or \"a||b\")",
            ))
        }
        Some(f) if f.expression.trim().is_empty() => "*".to_owned(),
        Some(f) => f.expression.clone(),
    };
    let filter = TagFilter::parse(&tag_expr).map_err(|e| {
        let mut st = pb::Status::from(HandlerError::from(e));
        st.code = Code::IllegalFilterExpression as i32;
        st
    })?;
    let invisible_ms = req
        .invisible_duration
        .as_ref()
        .map_or(DEFAULT_INVISIBLE_MS, duration_ms);
    if invisible_ms == 0 || invisible_ms > MAX_INVISIBLE_MS {
        return Err(status(
            Code::IllegalInvisibleTime,
            format!(
                "invisible duration {invisible_ms} ms is out of range 1..={MAX_INVISIBLE_MS} ms"
            ),
        ));
    }
    if s.groups.has_live_members(&group) {
        return Err(HandlerError::from(PopError::ModeConflict { group }).into());
    }
    start_tasks(s);
    let mut wait_ms = req
        .long_polling_timeout
        .as_ref()
        .map_or(DEFAULT_LONG_POLL_MS, duration_ms)
        .min(MAX_LONG_POLL_MS);
    if let Some(left) = client_wait {
        let left = left.saturating_sub(DEADLINE_MARGIN);
        wait_ms = wait_ms.min(u64::try_from(left.as_millis()).unwrap_or(u64::MAX));
    }
    let batch = match u32::try_from(req.batch_size) {
        Ok(0) | Err(_) => DEFAULT_BATCH,
        Ok(n) => n,
    };
    let max_count = batch.clamp(1, s.config.max_batch_messages) as usize;
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let entry = s.pop.group(&group);
    let retry = retry_topic(&group);
    let req = ReceiveRequest {
        group,
        topic,
        tag_expr,
        max_messages: batch,
        invisible_ms,
        max_wait_ms: wait_ms,
    };
    loop {
        // Armed before the store is read, so a message dispatched in between still wakes us.
        let Some(topic_waker) = s.pop.topic_waker(&s.store, &req.topic) else {
            return Err(status(
                Code::TopicNotFound,
                format!("topic {} does not exist", req.topic),
            ));
        };
        let retry_waker = s
            .pop
            .topic_waker(&s.store, &retry)
            .unwrap_or_else(|| Arc::clone(&topic_waker));
        let (a, b, c) = (
            topic_waker.notified(),
            retry_waker.notified(),
            entry.room.notified(),
        );
        tokio::pin!(a, b, c);
        a.as_mut().enable();
        b.as_mut().enable();
        c.as_mut().enable();
        let got = s
            .pop
            .receive(
                &ctx(s),
                &req,
                &filter,
                max_count,
                MAX_RECEIVE_BYTES,
                now_ms(),
            )
            .map_err(|e| pb::Status::from(HandlerError::from(e)))?;
        if !got.is_empty() || Instant::now() >= deadline {
            return Ok(got);
        }
        tokio::select! {
            () = &mut a => {}
            () = &mut b => {}
            () = &mut c => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = stop.cancelled() => return Ok(Vec::new()),
            () = s.shutdown.cancelled() => return Ok(Vec::new()),
        }
    }
}

/// Acks each entry; answered once the acks are written, like the native ack. The top
/// status is the first entry's failure, else OK (the clients read only it).
pub(super) async fn ack(s: &Arc<Services>, req: pb::AckMessageRequest) -> AckMessageResponse {
    let group = name(req.group.as_ref());
    if let Err(st) = check_group(&group) {
        return AckMessageResponse {
            status: Some(st),
            entries: Vec::new(),
        };
    }
    // Text handles that do not parse are refused here; the others go to the lease table,
    // whose refusals are mapped back to the request's indices.
    let mut refused: Vec<HandleRefused> = Vec::new();
    let mut handles: Vec<ReceiptHandle> = Vec::with_capacity(req.entries.len());
    let mut at: Vec<usize> = Vec::with_capacity(req.entries.len());
    for (i, e) in req.entries.iter().enumerate() {
        match e.receipt_handle.parse::<ReceiptHandle>() {
            Ok(h) => {
                handles.push(h);
                at.push(i);
            }
            Err(bad) => refused.push(HandleRefused {
                index: u32::try_from(i).unwrap_or(u32::MAX),
                message: bad.to_string(),
            }),
        }
    }
    match s.pop.ack(&ctx(s), &group, &handles) {
        Ok(r) => refused.extend(r.into_iter().map(|mut r| {
            r.index = u32::try_from(at[r.index as usize]).unwrap_or(u32::MAX);
            r
        })),
        Err(e) => {
            return AckMessageResponse {
                status: Some(HandlerError::from(e).into()),
                entries: Vec::new(),
            }
        }
    };
    let mut written = ok();
    if refused.len() < req.entries.len() {
        let ticket = s.pop.durable.ticket();
        tokio::select! {
            r = s.pop.durable.wait(ticket) => if let Err(e) = r {
                written = status(Code::InternalServerError, format!(
                    "ack recorded but not yet written to disk (a crash before it is would deliver the message again): {e}"));
            },
            () = s.shutdown.cancelled() => written = status(Code::InternalServerError,
                "ack recorded; the broker is shutting down and writes it as it stops"),
        }
    }
    let entries: Vec<AckMessageResultEntry> = req
        .entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let st = refused.iter().find(|r| r.index as usize == i).map_or_else(
                || written.clone(),
                |r| status(Code::InvalidReceiptHandle, r.message.clone()),
            );
            AckMessageResultEntry {
                message_id: e.message_id,
                receipt_handle: e.receipt_handle,
                status: Some(st),
            }
        })
        .collect();
    let top = entries
        .iter()
        .filter_map(|e| e.status.clone())
        .find(|st| st.code != Code::Ok as i32)
        .unwrap_or_else(ok);
    AckMessageResponse {
        status: Some(top),
        entries,
    }
}

/// Moves a lease's deadline (0: visible again now, a nack) and answers its new handle; on
/// failure the old handle is echoed (the Python client adopts the answer's handle before
/// it checks the status).
pub(super) fn change(
    s: &Services,
    req: pb::ChangeInvisibleDurationRequest,
) -> ChangeInvisibleDurationResponse {
    let group = name(req.group.as_ref());
    let fail = |st: pb::Status| ChangeInvisibleDurationResponse {
        status: Some(st),
        receipt_handle: req.receipt_handle.clone(),
    };
    if let Err(st) = check_group(&group) {
        return fail(st);
    }
    let ms = req.invisible_duration.as_ref().map_or(0, duration_ms);
    if ms > MAX_INVISIBLE_MS {
        return fail(status(
            Code::IllegalInvisibleTime,
            format!("invisible duration {ms} ms is over the limit of {MAX_INVISIBLE_MS} ms"),
        ));
    }
    let handle = match req.receipt_handle.parse::<ReceiptHandle>() {
        Ok(h) => h,
        Err(bad) => return fail(status(Code::InvalidReceiptHandle, bad.to_string())),
    };
    match s.pop.change(&ctx(s), &group, &handle, ms, now_ms()) {
        Ok(r) => ChangeInvisibleDurationResponse {
            status: Some(ok()),
            receipt_handle: r.receipt_handle.to_string(),
        },
        Err(e) => fail(HandlerError::from(e).into()),
    }
}

/// Moves a leased message to `%DLQ%<group>` at once and ends its lease (a FIFO push
/// consumer out of local retries).
pub(super) async fn forward_to_dlq(
    s: &Arc<Services>,
    req: pb::ForwardMessageToDeadLetterQueueRequest,
) -> ForwardMessageToDeadLetterQueueResponse {
    let group = name(req.group.as_ref());
    if let Err(st) = check_group(&group) {
        return ForwardMessageToDeadLetterQueueResponse { status: Some(st) };
    }
    let handle = match req.receipt_handle.parse::<ReceiptHandle>() {
        Ok(h) => h,
        Err(bad) => {
            return ForwardMessageToDeadLetterQueueResponse {
                status: Some(status(Code::InvalidReceiptHandle, bad.to_string())),
            }
        }
    };
    let services = Arc::clone(s);
    let done =
        tokio::task::spawn_blocking(move || services.pop.reject(&ctx(&services), &group, &handle))
            .await;
    let st = match done {
        Ok(Ok(())) => ok(),
        Ok(Err(e)) => HandlerError::from(e).into(),
        Err(e) => status(
            Code::InternalServerError,
            format!("dead-letter task failed: {e}"),
        ),
    };
    ForwardMessageToDeadLetterQueueResponse { status: Some(st) }
}
