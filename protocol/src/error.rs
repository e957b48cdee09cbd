use thiserror::Error;

/// Everything that can be wrong with bytes received from the other side.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: u64, max: u64 },
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    #[error("bad frame magic {found:#06x}: the peer does not speak FerroMQ")]
    BadMagic { found: u16 },
    #[error("unsupported protocol version {found} (this side speaks {supported})")]
    UnsupportedVersion {
        found: u8,
        supported: u8,
        request_id: u64,
    },
    #[error("unknown request code {0}")]
    UnknownCode(u16),
    #[error("unknown response status {0}")]
    UnknownStatus(u16),
    #[error("header does not decode: {0}")]
    Header(#[from] bincode::error::DecodeError),
    #[error("header does not encode: {0}")]
    HeaderEncode(#[from] bincode::error::EncodeError),
    #[error("malformed message batch: {0}")]
    Batch(String),
    #[error("malformed properties: {0}")]
    Properties(&'static str),
}
