//! FerroMQ's wire protocol, shared by the broker and the client.
//!
//! A connection carries length-prefixed [`frame`]s. Each frame names a request code (or a
//! response status), a request id so that many requests can be in flight on one connection
//! and answered out of order, a header encoded with bincode, and a raw body that is never
//! re-encoded: message batches on send, commit-log records on pull. Those records are
//! laid out by [`record`], the codec the broker writes them with and the client reads them
//! with.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

/// Ties a request type to its code and response type ([`messages::Request`]); every
/// module of requests uses this one definition.
macro_rules! request {
    ($req:ty, $code:ident, $resp:ty) => {
        impl Request for $req {
            const CODE: RequestCode = RequestCode::$code;
            type Response = $resp;
        }
    };
}

pub mod auth;
pub mod batch;
pub mod cluster;
mod code;
mod error;
pub mod frame;
pub mod group_policy;
pub mod hash;
pub mod header;
pub mod messages;
pub mod names;
pub mod ordered;
pub mod properties;
pub mod receive;
pub mod record;
pub mod tags;
pub mod time;
pub mod tx;

pub use code::{RequestCode, Status};
pub use error::ProtocolError;
pub use frame::{Frame, FrameDecoder, FrameKind, Limits, PROTOCOL_VERSION};
pub use messages::Request;
