//! Preparing a send: one message or a batch to one queue, stored all or nothing. The wire
//! checks (header, batch size, batch encoding) happen here; the rest of the checking is
//! the store's [`MessageStore::validate_batch`], run once, whose result is the only thing
//! the store appends. It runs on the connection's task, so the appender thread only
//! appends.

use protocol::batch;
use protocol::messages::{SendReceipt, SendRequest, SendResponse};
use protocol::names::RESERVED_PREFIX;
use protocol::{Frame, Status};

use crate::server::request::decode;
use crate::server::response::{HandlerError, Response};
use crate::store::{
    InvalidSend, MessageStore, PutRange, PutResult, StoreError, TopicScope, ValidatedBatch,
};

/// A validated send, sharing the request frame's body.
pub(super) struct PreparedSend {
    pub(super) batch: ValidatedBatch,
    /// Sum of the message bodies, for the broker's counters.
    pub(super) body_bytes: u64,
}

/// Decodes and validates a send request without storing it.
///
/// # Errors
/// A malformed header or batch, an empty batch or one over `max_batch_messages`, and
/// whatever [`MessageStore::validate_batch`] refuses: a reserved or invalid topic, an
/// oversized body, malformed or unsupported properties.
pub(super) fn prepare(
    store: &MessageStore,
    max_batch_messages: u32,
    frame: &Frame,
) -> Result<PreparedSend, HandlerError> {
    let req: SendRequest = decode(frame)?;
    if req.count == 0 {
        return Err(HandlerError::bad_request(
            "a send needs at least one message",
        ));
    }
    if req.count > max_batch_messages {
        return Err(HandlerError::new(
            Status::BatchTooLarge,
            format!(
                "batch of {} messages exceeds the limit of {max_batch_messages}",
                req.count
            ),
        ));
    }
    // Decoded without a body limit so an oversized body is told apart from a malformed
    // batch and reported as such (by the store's check).
    let msgs = batch::decode(&frame.body, req.count, u32::MAX)
        .map_err(|e| HandlerError::bad_request(e.to_string()))?;
    let body_bytes = msgs.iter().map(|m| m.body.len() as u64).sum();
    let msgs: Vec<PutRange> = msgs
        .iter()
        .map(|m| PutRange {
            properties: range_in(&frame.body, m.properties),
            body: range_in(&frame.body, m.body),
            born_timestamp_ms: m.born_timestamp_ms,
            reconsume_times: 0,
        })
        .collect();
    let batch = store
        .validate_batch(
            TopicScope::Client,
            req.topic,
            req.queue_id,
            frame.body.clone(),
            msgs,
        )
        .map_err(refused)?;
    Ok(PreparedSend { batch, body_bytes })
}

/// Where `part`, a slice the batch decoder cut out of `whole`, lies in `whole`.
fn range_in(whole: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    start..start.wrapping_add(part.len())
}

/// The acknowledgement of a stored send: one receipt per message, in order.
pub(super) fn receipts(results: &[PutResult]) -> Response {
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

/// The answer to a send the store's check refused, in a producer's terms: which message
/// broke which limit, and that `%` topics are the broker's.
pub(crate) fn refused(e: InvalidSend) -> HandlerError {
    match (e.message, e.error) {
        (None, StoreError::InvalidTopicName { name, .. }) if name.starts_with(RESERVED_PREFIX) => {
            HandlerError::new(
                Status::Forbidden,
                format!("topic {name} is reserved for the broker; producers cannot write to it"),
            )
        }
        (Some(i), StoreError::BodyTooLarge { size, max }) => HandlerError::new(
            Status::MessageTooLarge,
            format!("message {i} has a body of {size} bytes, over the limit of {max} bytes"),
        ),
        (Some(i), StoreError::BadProperties(e)) => {
            HandlerError::bad_request(format!("message {i}: {e}"))
        }
        (_, other) => HandlerError::from(other),
    }
}
