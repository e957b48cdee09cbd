use thiserror::Error;

/// Everything that can be wrong with bytes received from the other side.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame over the receiver's limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The frame's claimed length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A frame that contradicts itself.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// The bytes are not a FerroMQ frame.
    #[error("bad frame magic {found:#06x}: the peer does not speak FerroMQ")]
    BadMagic {
        /// The two bytes where the magic belongs.
        found: u16,
    },
    /// A frame of another protocol version; it was skipped whole, and its request id is known.
    #[error("unsupported protocol version {found} (this side speaks {supported})")]
    UnsupportedVersion {
        /// The frame's version.
        found: u8,
        /// The version this side speaks.
        supported: u8,
        /// The skipped frame's request id, to address the refusal to.
        request_id: u64,
    },
    /// A request code this side does not know.
    #[error("unknown request code {0}")]
    UnknownCode(u16),
    /// A response status this side does not know.
    #[error("unknown response status {0}")]
    UnknownStatus(u16),
    /// A header that does not decode as its request or response type.
    #[error("header does not decode: {0}")]
    Header(#[from] bincode::error::DecodeError),
    /// A header that does not encode.
    #[error("header does not encode: {0}")]
    HeaderEncode(#[from] bincode::error::EncodeError),
    /// A send body that is not a well-formed batch.
    #[error("malformed message batch: {0}")]
    Batch(String),
    /// A property blob that is not well formed.
    #[error("malformed properties: {0}")]
    Properties(&'static str),
}
