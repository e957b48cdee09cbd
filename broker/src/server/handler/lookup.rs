//! Lookups by time and by id, and send-back (a nack) through the retry service.

use std::sync::Arc;

use protocol::messages::{
    Empty, GetMessageRequest, QueryMessageRequest, QueryMessageResponse, SearchOffsetRequest,
    SearchOffsetResponse, SendBackRequest, MAX_QUERY_MESSAGES,
};
use protocol::{Frame, Status};

use super::{blocking, check_group, decode, HandlerResult, Services};
use crate::server::response::{Body, HandlerError, Response};
use crate::store::MessageId;

pub(super) async fn search_offset(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: SearchOffsetRequest = decode(frame)?;
    let s = Arc::clone(services);
    blocking(move || {
        let offset = s
            .store
            .search_offset_by_time(&req.topic, req.queue_id, req.timestamp_ms)?;
        Ok(Response::ok(&SearchOffsetResponse {
            offset: offset.get(),
        }))
    })
    .await
}

/// Answers with the stored record as the body, straight from its segment.
pub(super) async fn get_message(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: GetMessageRequest = decode(frame)?;
    let id: MessageId = req.msg_id.parse().map_err(HandlerError::from)?;
    let s = Arc::clone(services);
    blocking(move || {
        let record = s.store.get_by_id(id)?;
        Ok(Response::ok_with_body(
            &Empty {},
            Body::Records(vec![record]),
        ))
    })
    .await
}

/// Answers the messages of a topic carrying a key, found through the key index, as
/// records in the body.
pub(super) async fn query_message(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: QueryMessageRequest = decode(frame)?;
    if req.max_messages == 0 || req.max_messages > MAX_QUERY_MESSAGES {
        return Err(HandlerError::new(
            Status::BadRequest,
            format!(
                "max_messages must be 1 to {MAX_QUERY_MESSAGES}, got {}",
                req.max_messages
            ),
        ));
    }
    let s = Arc::clone(services);
    blocking(move || {
        let found = s.store.query_by_key(
            &req.topic,
            &req.key,
            req.from_ms,
            req.to_ms,
            req.max_messages as usize,
        )?;
        let header = QueryMessageResponse {
            count: u32::try_from(found.records.len()).unwrap_or(u32::MAX),
            more: found.more,
        };
        Ok(Response::ok_with_body(
            &header,
            Body::Records(found.records),
        ))
    })
    .await
}

/// Stores a copy of a failed message in the group's retry (or dead-letter) topic.
pub(super) async fn send_back(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: SendBackRequest = decode(frame)?;
    check_group(&req.group)?;
    let s = Arc::clone(services);
    blocking(move || {
        let resp = s.retry.send_back(&req)?;
        s.stats.recorder().sent_back(resp.dead_lettered);
        Ok(Response::ok(&resp))
    })
    .await
}
