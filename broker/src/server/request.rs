//! Reading a request: its header, decoded into the request type of its code.

use protocol::{header, Frame};
use serde::de::DeserializeOwned;

use super::response::HandlerError;

/// Decodes a request header, naming the request type when it does not decode.
pub(crate) fn decode<T: DeserializeOwned>(frame: &Frame) -> Result<T, HandlerError> {
    header::decode(&frame.header).map_err(|e| {
        let name = std::any::type_name::<T>()
            .rsplit("::")
            .next()
            .unwrap_or("request");
        HandlerError::bad_request(format!("malformed {name} header: {e}"))
    })
}
