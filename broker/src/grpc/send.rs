//! SendMessage and RecallMessage. The server picks the queue (the clients' queue id is a
//! hint; the Node client always says 0): a message group's messages go to the queue its
//! hash names, as the native producer routes them, so ordered receive keeps them in order;
//! others go round robin. A delivery timestamp makes a timer message.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use protocol::hash::key_hash;
use protocol::messages::{DeliverAt, RecallStatus};

use super::codes::{ok, status};
use super::convert::{incoming, Incoming};
use super::pb::{
    self, Code, MessageType, RecallMessageResponse, SendMessageResponse, SendResultEntry,
};
use crate::server::response::HandlerError;
use crate::server::services::Services;
use crate::store::{PutMessage, StoreError, TopicConfig};

/// Stores the request's messages, each on its own (the clients send one per request).
pub(super) async fn send(
    s: &Arc<Services>,
    req: pb::SendMessageRequest,
    next: &AtomicU32,
) -> SendMessageResponse {
    if req.messages.is_empty() {
        return SendMessageResponse {
            status: Some(status(
                Code::BadRequest,
                "a send needs at least one message",
            )),
            entries: Vec::new(),
        };
    }
    let mut entries = Vec::with_capacity(req.messages.len());
    for m in req.messages {
        let turn = next.fetch_add(1, Ordering::Relaxed);
        let entry = match send_one(s, m, turn).await {
            Ok(e) => e,
            Err(st) => SendResultEntry {
                status: Some(st),
                ..Default::default()
            },
        };
        entries.push(entry);
    }
    // The clients read the top-level status: the entries' common one, else the first error.
    let top = entries
        .iter()
        .filter_map(|e| e.status.clone())
        .find(|st| st.code != Code::Ok as i32)
        .unwrap_or_else(ok);
    SendMessageResponse {
        status: Some(top),
        entries,
    }
}

async fn send_one(
    s: &Arc<Services>,
    m: pb::Message,
    turn: u32,
) -> Result<SendResultEntry, pb::Status> {
    let kind = m
        .system_properties
        .as_ref()
        .map_or(MessageType::Normal as i32, |p| p.message_type);
    if kind == MessageType::Transaction as i32 {
        return Err(status(
            Code::NotImplemented,
            "transactional messages are not served on FerroMQ's gRPC endpoint yet; use the native protocol's transactions (mq tx)",
        ));
    }
    let msg = incoming(&m)?;
    let due_ms = match msg.deliver_at_ms {
        Some(at) => Some(s.timer.due_time(DeliverAt::TimestampMs(at)).map_err(|e| {
            let mut st = pb::Status::from(HandlerError::from(e));
            st.code = Code::IllegalDeliveryTime as i32;
            st
        })?),
        None => None,
    };
    let body = m.body;
    let services = Arc::clone(s);
    let stored = tokio::task::spawn_blocking(move || store(&services, &msg, &body, due_ms, turn))
        .await
        .map_err(|e| status(Code::InternalServerError, format!("send task failed: {e}")))?;
    stored.map_err(pb::Status::from)
}

/// Stores one message (blocking): on its queue now, or with the timer when it has a due
/// time.
fn store(
    s: &Services,
    msg: &Incoming,
    body: &[u8],
    due_ms: Option<u64>,
    turn: u32,
) -> Result<SendResultEntry, HandlerError> {
    let t = match s.store.topic(&msg.topic) {
        Some(t) => t,
        None if s.store.config().auto_create_topics => s.store.create_topic(TopicConfig::new(
            msg.topic.as_str(),
            s.store.config().default_queue_count,
        ))?,
        None => return Err(StoreError::TopicNotFound(msg.topic.clone()).into()),
    };
    let count = t.queue_count.max(1);
    let queue_id = match &msg.message_group {
        Some(g) => u32::try_from(key_hash(g) % u64::from(count)).unwrap_or(0),
        None => turn % count,
    };
    let put = PutMessage {
        properties: &msg.properties,
        body,
        born_timestamp_ms: msg.born_timestamp_ms,
        reconsume_times: 0,
    };
    let bytes = body.len() as u64;
    if let Some(due) = due_ms {
        let send = s
            .store
            .validate_send(
                crate::store::TopicScope::Client,
                msg.topic.as_str(),
                queue_id,
                std::slice::from_ref(&put),
            )
            .map_err(crate::server::send::refused)?;
        let scheduled = s
            .timer
            .schedule(&msg.topic, queue_id, send.messages(), due)?;
        s.stats.add_messages_in(scheduled.len() as u64, bytes);
        let r = scheduled
            .into_iter()
            .next()
            .ok_or_else(|| HandlerError::internal("the timer stored nothing"))?;
        return Ok(SendResultEntry {
            status: Some(ok()),
            message_id: r.msg_id.to_text(),
            transaction_id: String::new(),
            offset: 0,
            recall_handle: r.recall_handle,
        });
    }
    let r = s.store.put(&msg.topic, queue_id, &put)?;
    s.stats.add_messages_in(1, bytes);
    Ok(SendResultEntry {
        status: Some(ok()),
        message_id: r.msg_id.to_text(),
        transaction_id: String::new(),
        offset: i64::try_from(r.queue_offset.get()).unwrap_or(i64::MAX),
        recall_handle: String::new(),
    })
}

/// Cancels a delay message not yet due (the recall handle its send answered).
pub(super) async fn recall(
    s: &Arc<Services>,
    req: pb::RecallMessageRequest,
) -> RecallMessageResponse {
    let topic = req.topic.map(|t| t.name).unwrap_or_default();
    let services = Arc::clone(s);
    let handle = req.recall_handle.clone();
    let done = tokio::task::spawn_blocking(move || services.timer.recall(&topic, &handle)).await;
    let st = match done {
        Ok(Ok(RecallStatus::Recalled | RecallStatus::AlreadyRecalled)) => ok(),
        Ok(Ok(RecallStatus::AlreadyDelivered)) => status(
            Code::NotFound,
            "the message was delivered already (or was due); it cannot be recalled",
        ),
        Ok(Err(e)) => HandlerError::from(e).into(),
        Err(e) => status(
            Code::InternalServerError,
            format!("recall task failed: {e}"),
        ),
    };
    RecallMessageResponse {
        status: Some(st),
        message_id: req.recall_handle,
    }
}
