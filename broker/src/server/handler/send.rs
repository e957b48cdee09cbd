//! Send: one message or a batch to one queue, stored all or nothing.

use std::sync::Arc;

use protocol::batch::{self, BatchMessage};
use protocol::messages::{SendReceipt, SendRequest, SendResponse};
use protocol::names::{validate_user_name, NameError};
use protocol::properties::Properties;
use protocol::{Frame, Status};

use super::{blocking, decode, HandlerResult, Services};
use crate::server::response::{HandlerError, Response};
use crate::store::PutMessage;

pub(super) async fn send(services: &Arc<Services>, frame: Frame) -> HandlerResult {
    let req: SendRequest = decode(&frame)?;
    check_topic(&req.topic)?;
    let limits = &services.config;
    if req.count == 0 {
        return Err(HandlerError::bad_request(
            "a send needs at least one message",
        ));
    }
    if req.count > limits.max_batch_messages {
        return Err(HandlerError::new(
            Status::BatchTooLarge,
            format!(
                "batch of {} messages exceeds the limit of {}",
                req.count, limits.max_batch_messages
            ),
        ));
    }
    let max_body = limits.max_message_bytes();
    let s = Arc::clone(services);
    let body = frame.body;
    blocking(move || {
        // Decoded without a body limit so an oversized body is told apart from a
        // malformed batch and reported as such.
        let msgs = batch::decode(&body, req.count, u32::MAX)
            .map_err(|e| HandlerError::bad_request(e.to_string()))?;
        check_messages(&msgs, max_body)?;
        let puts: Vec<PutMessage<'_>> = msgs
            .iter()
            .map(|m| PutMessage {
                properties: m.properties,
                body: m.body,
                born_timestamp_ms: m.born_timestamp_ms,
                reconsume_times: 0,
            })
            .collect();
        let results = s.store.put_batch(&req.topic, req.queue_id, &puts)?;
        let bytes: u64 = msgs.iter().map(|m| m.body.len() as u64).sum();
        s.stats.add_messages_in(results.len() as u64, bytes);
        let receipts = results
            .iter()
            .map(|r| SendReceipt {
                msg_id: r.msg_id.to_string(),
                queue_id: r.queue_id,
                queue_offset: r.queue_offset.get(),
            })
            .collect();
        Ok(Response::ok(&SendResponse { receipts }))
    })
    .await
}

/// Producers may only write user topics; `%RETRY%` and `%DLQ%` are the broker's.
fn check_topic(topic: &str) -> Result<(), HandlerError> {
    match validate_user_name(topic) {
        Ok(()) => Ok(()),
        Err(NameError::Reserved) => Err(HandlerError::new(
            Status::Forbidden,
            format!("topic {topic} is reserved for the broker; producers cannot write to it"),
        )),
        Err(e) => Err(HandlerError::new(
            Status::InvalidName,
            format!("invalid topic name {topic:?}: {e}"),
        )),
    }
}

fn check_messages(msgs: &[BatchMessage<'_>], max_body: u32) -> Result<(), HandlerError> {
    for (i, m) in msgs.iter().enumerate() {
        if m.body.len() > max_body as usize {
            return Err(HandlerError::new(
                Status::MessageTooLarge,
                format!(
                    "message {i} has a body of {} bytes, over the limit of {max_body} bytes",
                    m.body.len()
                ),
            ));
        }
        Properties::new(m.properties)
            .validate()
            .map_err(|e| HandlerError::bad_request(format!("message {i}: {e}")))?;
    }
    Ok(())
}
