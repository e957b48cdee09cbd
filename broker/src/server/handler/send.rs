//! Send: one message or a batch to one queue, stored all or nothing. Sends are not run as
//! request tasks: the connection hands them to the appender (`server::appender`) in arrival
//! order, which checks them here and stores many at once.

use protocol::batch::{self, BatchMessage};
use protocol::messages::{SendReceipt, SendRequest, SendResponse};
use protocol::names::{validate_user_name, NameError};
use protocol::properties::Properties;
use protocol::{Frame, Status};

use super::decode;
use crate::server::response::{HandlerError, Response};
use crate::store::{PutMessage, PutResult};

/// The limits a send is checked against, copied out of the broker config.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SendLimits {
    pub(crate) max_batch_messages: u32,
    pub(crate) max_body_bytes: u32,
}

/// A checked send, borrowing its messages from the request frame.
pub(crate) struct PreparedSend<'a> {
    pub(crate) req: SendRequest,
    pub(crate) msgs: Vec<PutMessage<'a>>,
    pub(crate) body_bytes: u64,
}

/// Decodes and checks a send request without storing it.
///
/// # Errors
/// A malformed header or batch, a reserved or invalid topic, an empty or oversized batch,
/// an oversized body, malformed properties.
pub(crate) fn prepare(limits: SendLimits, frame: &Frame) -> Result<PreparedSend<'_>, HandlerError> {
    let req: SendRequest = decode(frame)?;
    check_topic(&req.topic)?;
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
    // Decoded without a body limit so an oversized body is told apart from a malformed
    // batch and reported as such.
    let msgs = batch::decode(&frame.body, req.count, u32::MAX)
        .map_err(|e| HandlerError::bad_request(e.to_string()))?;
    check_messages(&msgs, limits.max_body_bytes)?;
    let body_bytes = msgs.iter().map(|m| m.body.len() as u64).sum();
    let msgs = msgs
        .iter()
        .map(|m| PutMessage {
            properties: m.properties,
            body: m.body,
            born_timestamp_ms: m.born_timestamp_ms,
            reconsume_times: 0,
        })
        .collect();
    Ok(PreparedSend {
        req,
        msgs,
        body_bytes,
    })
}

/// The acknowledgement of a stored send: one receipt per message, in order.
pub(crate) fn receipts(results: &[PutResult]) -> Response {
    let receipts = results
        .iter()
        .map(|r| SendReceipt {
            msg_id: r.msg_id.to_text(),
            queue_id: r.queue_id,
            queue_offset: r.queue_offset.get(),
        })
        .collect();
    Response::ok(&SendResponse { receipts })
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
