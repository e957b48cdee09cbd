//! What a handler hands to the connection's writer: a status, an encoded header and a
//! body of commit-log records sent straight from the mapped segments.

use commitlog::RecordRef;
use protocol::messages::ErrorResponse;
use protocol::{header, Status};
use serde::Serialize;

/// The body of a response frame.
pub(crate) enum Body {
    Empty,
    /// Records written one slice each from their segment mapping, never copied.
    Records(Vec<RecordRef>),
}

impl Body {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::Records(rs) => rs.iter().map(|r| r.bytes().len()).sum(),
        }
    }
}

/// A response ready to be framed.
pub(crate) struct Response {
    pub(crate) status: Status,
    pub(crate) header: Vec<u8>,
    pub(crate) body: Body,
}

impl Response {
    /// Bytes this response takes on the wire, frame prefix included.
    pub(crate) fn wire_len(&self) -> usize {
        protocol::frame::wire_len(self.header.len(), self.body.len())
    }

    /// An `Ok` response with `header` and no body.
    pub(crate) fn ok<T: Serialize>(header: &T) -> Self {
        Self::ok_with_body(header, Body::Empty)
    }

    pub(crate) fn ok_with_body<T: Serialize>(h: &T, body: Body) -> Self {
        match header::encode(h) {
            Ok(header) => Self {
                status: Status::Ok,
                header,
                body,
            },
            Err(e) => Self::error(Status::Internal, format!("response does not encode: {e}")),
        }
    }

    /// A non-`Ok` response carrying a sentence for humans.
    pub(crate) fn error(status: Status, message: impl Into<String>) -> Self {
        let header = header::encode(&ErrorResponse {
            message: message.into(),
        })
        // An ErrorResponse is a single string; encoding cannot fail, but never panic.
        .unwrap_or_default();
        Self {
            status,
            header,
            body: Body::Empty,
        }
    }
}

/// A request that failed: the status and the sentence that go back to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HandlerError {
    pub(crate) status: Status,
    pub(crate) message: String,
}

impl HandlerError {
    pub(crate) fn new(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Status::BadRequest, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(Status::Internal, message)
    }
}

impl From<HandlerError> for Response {
    fn from(e: HandlerError) -> Self {
        Response::error(e.status, e.message)
    }
}
