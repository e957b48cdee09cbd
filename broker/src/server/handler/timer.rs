//! Timer sends and recalls, through the timer service.

use std::sync::Arc;

use protocol::batch;
use protocol::messages::{
    RecallRequest, RecallResponse, SendTimerRequest, SendTimerResponse, TimerReceipt,
};
use protocol::{Frame, Status};

use super::{blocking, decode, HandlerResult, Services};
use crate::server::response::{HandlerError, Response};
use crate::server::send::refused;
use crate::store::{PutMessage, StoreError, TopicConfig, TopicScope};
use crate::timer::TimerError;

/// Stores a batch as timer messages of one queue; answers once stored under the flush
/// policy, with each message's id, due time and recall handle.
pub(super) async fn send_timer(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: SendTimerRequest = decode(frame)?;
    let max = services.config.max_batch_messages;
    if req.count == 0 {
        return Err(HandlerError::bad_request(
            "a send needs at least one message",
        ));
    }
    if req.count > max {
        return Err(HandlerError::new(
            Status::BatchTooLarge,
            format!("batch of {} messages exceeds the limit of {max}", req.count),
        ));
    }
    let due_ms = services.timer.due_time(req.deliver_at)?;
    let s = Arc::clone(services);
    let body = frame.body.clone();
    blocking(move || {
        let msgs = batch::decode(&body, req.count, u32::MAX)
            .map_err(|e| HandlerError::bad_request(e.to_string()))?;
        let puts: Vec<PutMessage<'_>> = msgs
            .iter()
            .map(|m| PutMessage {
                properties: m.properties,
                body: m.body,
                born_timestamp_ms: m.born_timestamp_ms,
                reconsume_times: 0,
            })
            .collect();
        let bytes: u64 = puts.iter().map(|m| m.body.len() as u64).sum();
        let send = s
            .store
            .validate_send(TopicScope::Client, req.topic.as_str(), req.queue_id, puts)
            .map_err(refused)?;
        check_destination(&s, &req.topic, req.queue_id)?;
        let scheduled = s
            .timer
            .schedule(&req.topic, req.queue_id, send.messages(), due_ms)?;
        s.stats.add_messages_in(scheduled.len() as u64, bytes);
        let receipts = scheduled
            .into_iter()
            .map(|r| TimerReceipt {
                msg_id: r.msg_id.to_text(),
                queue_id: r.queue_id,
                deliver_at_ms: r.deliver_at_ms,
                recall_handle: r.recall_handle,
            })
            .collect();
        Ok(Response::ok(&SendTimerResponse { receipts }))
    })
    .await
}

/// The checks a plain send makes of its topic when it is stored: the topic exists (or is
/// created, as a send would), takes writes, and has the queue.
fn check_destination(s: &Services, topic: &str, queue_id: u32) -> Result<(), HandlerError> {
    let t = match s.store.topic(topic) {
        Some(t) => t,
        None if s.store.config().auto_create_topics => s.store.create_topic(TopicConfig::new(
            topic,
            s.store.config().default_queue_count,
        ))?,
        None => return Err(StoreError::TopicNotFound(topic.to_owned()).into()),
    };
    if !t.perm.write {
        return Err(StoreError::PermissionDenied {
            topic: topic.to_owned(),
            access: "writes",
        }
        .into());
    }
    if queue_id >= t.queue_count {
        return Err(StoreError::QueueNotFound {
            topic: topic.to_owned(),
            queue_id,
            queue_count: t.queue_count,
        }
        .into());
    }
    Ok(())
}

/// Recalls a timer message not yet due.
pub(super) async fn recall(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: RecallRequest = decode(frame)?;
    let s = Arc::clone(services);
    blocking(move || {
        let status = s.timer.recall(&req.topic, &req.recall_handle)?;
        Ok(Response::ok(&RecallResponse { status }))
    })
    .await
}

impl From<TimerError> for HandlerError {
    fn from(e: TimerError) -> Self {
        let status = match &e {
            TimerError::NotFound { .. } => Status::NotFound,
            TimerError::Store { source, .. } => super::store_status(source),
            TimerError::Closed => Status::ShuttingDown,
            other if other.is_bad_request() => Status::BadRequest,
            _ => Status::StorageError,
        };
        if status == Status::StorageError {
            tracing::error!(error = %e, "timer failure");
        }
        HandlerError::new(status, e.to_string())
    }
}
