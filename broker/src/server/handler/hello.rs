//! The version handshake.

use protocol::messages::{HelloRequest, HelloResponse};
use protocol::{Frame, Status, PROTOCOL_VERSION};

use super::{decode, HandlerResult, Services};
use crate::server::response::{HandlerError, Response};

pub(super) fn hello(services: &Services, frame: &Frame) -> HandlerResult {
    let req: HelloRequest = decode(frame)?;
    if req.protocol_version != PROTOCOL_VERSION {
        return Err(HandlerError::new(
            Status::UnsupportedVersion,
            format!(
                "client {} speaks protocol version {}; this broker speaks version {PROTOCOL_VERSION}",
                req.client_id, req.protocol_version
            ),
        ));
    }
    tracing::debug!(client = %req.client_id, "hello");
    Ok(Response::ok(&HelloResponse {
        protocol_version: PROTOCOL_VERSION,
        broker_version: env!("CARGO_PKG_VERSION").to_owned(),
        max_frame_bytes: services.config.max_frame_bytes(),
        max_message_bytes: services.config.max_message_bytes(),
        max_batch_messages: services.config.max_batch_messages,
        auto_create_topics: services.config.auto_create_topics,
        default_queue_count: services.config.default_queues,
    }))
}
