//! Header encoding: bincode's standard configuration over serde, with a decode limit so a
//! hostile length prefix inside a header cannot make the receiver allocate without bound.

use serde::{de::DeserializeOwned, Serialize};

use crate::ProtocolError;

/// No decoded header may claim more than this many bytes of memory.
const HEADER_DECODE_LIMIT: usize = 16 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<HEADER_DECODE_LIMIT>()
}

/// Encodes a header value.
///
/// # Errors
/// Only if the value cannot be represented (never for the types in [`crate::messages`]).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ProtocolError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

/// Decodes a header value; trailing bytes are an error.
///
/// # Errors
/// `Header` when the bytes do not decode as `T`, `Malformed` when bytes are left over.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtocolError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())?;
    if used != bytes.len() {
        return Err(ProtocolError::Malformed("trailing bytes after the header"));
    }
    Ok(value)
}
