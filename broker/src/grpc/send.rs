//! SendMessage and RecallMessage. The server picks the queue (the clients' queue id is a
//! hint; the Node client always says 0): a message group's messages go to the queue its
//! hash names, as the native producer routes them, so ordered receive keeps them in order;
//! others go round robin. A delivery timestamp makes a timer message.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use protocol::hash::key_hash;
use protocol::messages::{DeliverAt, RecallStatus};

use super::codes::{ok, status};
use super::convert::{duration_ms, incoming, Incoming};
use super::pb::{
    self, Code, MessageType, RecallMessageResponse, SendMessageResponse, SendResultEntry,
};
use super::tx::GrpcTx;
use crate::server::handler::tx::rollback_now;
use crate::server::response::HandlerError;
use crate::server::services::Services;
use crate::store::{PutMessage, StoreError, TopicConfig};

/// Who sent a request: the client id (`x-mq-client-id`), for transaction check-backs.
pub(super) struct Sender<'a> {
    pub(super) client: &'a str,
    pub(super) txs: &'a Arc<GrpcTx>,
}

/// Stores the request's messages, each on its own (the clients send one per request).
pub(super) async fn send(
    s: &Arc<Services>,
    req: pb::SendMessageRequest,
    next: &AtomicU32,
    from: &Sender<'_>,
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
        let entry = match send_one(s, m, turn, from).await {
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
    from: &Sender<'_>,
) -> Result<SendResultEntry, pb::Status> {
    let kind = m
        .system_properties
        .as_ref()
        .map_or(MessageType::Normal as i32, |p| p.message_type);
    let msg = incoming(&m)?;
    if kind == MessageType::Transaction as i32 {
        return send_half(s, m, msg, turn, from).await;
    }
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

/// Begins a transaction holding the message as its half message; the answer carries the
/// transaction id EndTransaction names.
async fn send_half(
    s: &Arc<Services>,
    m: pb::Message,
    msg: Incoming,
    turn: u32,
    from: &Sender<'_>,
) -> Result<SendResultEntry, pb::Status> {
    let sys = m.system_properties.clone().unwrap_or_default();
    let timeout_ms = sys
        .orphaned_transaction_recovery_duration
        .as_ref()
        .map(duration_ms)
        .filter(|ms| *ms > 0);
    // The transaction's producer group (shown by `mq tx list`): the client that sent it.
    let group = if from.client.is_empty() {
        "grpc".to_owned()
    } else {
        from.client.to_owned()
    };
    let services = Arc::clone(s);
    let body = m.body.clone();
    let topic = msg.topic.clone();
    let begun = tokio::task::spawn_blocking(move || -> Result<String, HandlerError> {
        let queue_id = queue_for(&services, &msg, turn)?;
        let put = PutMessage {
            properties: &msg.properties,
            body: &body,
            born_timestamp_ms: msg.born_timestamp_ms,
            reconsume_times: 0,
        };
        let id = services.tx.begin(&group, timeout_ms)?;
        if let Err(e) = services
            .tx
            .send(&id, &msg.topic, queue_id, std::slice::from_ref(&put))
        {
            let _ = rollback_now(&services, &id, "its half message was refused");
            return Err(e.into());
        }
        Ok(id)
    })
    .await
    .map_err(|e| status(Code::InternalServerError, format!("send task failed: {e}")))?
    .map_err(pb::Status::from)?;
    let message_id = if sys.message_id.is_empty() {
        begun.clone()
    } else {
        sys.message_id.clone()
    };
    from.txs.hold(&begun, from.client, &topic, m);
    Ok(SendResultEntry {
        status: Some(ok()),
        message_id,
        transaction_id: begun,
        offset: 0,
        recall_handle: String::new(),
    })
}

/// The queue a message goes to: its message group's, else the next in turn. Creates the
/// topic when the broker auto-creates topics.
fn queue_for(s: &Services, msg: &Incoming, turn: u32) -> Result<u32, HandlerError> {
    let t = match s.store.topic(&msg.topic) {
        Some(t) => t,
        None if s.store.config().auto_create_topics => s.store.create_topic(TopicConfig::new(
            msg.topic.as_str(),
            s.store.config().default_queue_count,
        ))?,
        None => return Err(StoreError::TopicNotFound(msg.topic.clone()).into()),
    };
    let count = t.queue_count.max(1);
    Ok(match &msg.message_group {
        Some(g) => u32::try_from(key_hash(g) % u64::from(count)).unwrap_or(0),
        None => turn % count,
    })
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
    let queue_id = queue_for(s, msg, turn)?;
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
