//! Frames: the unit of transfer on a connection.
//!
//! ```text
//! offset  size  field
//! 0       4     frame_len    u32, bytes after this field (20 + header_len + body_len)
//! 4       2     magic        0x464D ("FM")
//! 6       1     version      PROTOCOL_VERSION
//! 7       1     kind         0 = request, 1 = response
//! 8       2     code         RequestCode of a request, Status of a response
//! 10      2     flags        reserved, 0
//! 12      8     request_id   chosen by the requester, echoed by the response
//! 20      4     header_len   u32
//! 24      ..    header       bincode (serde, standard config)
//! ..      ..    body         raw bytes, the rest of the frame
//! ```
//! All integers are little-endian. The length is checked against the limit before any
//! buffer is grown for the frame, so a peer that claims 4 GiB costs nothing.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::ProtocolError;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// The first two bytes after the length prefix of every frame ("FM").
pub const MAGIC: u16 = 0x464D;

const LEN_SIZE: usize = 4;
const MAGIC_OFFSET: usize = 4;
const VERSION_OFFSET: usize = 6;
const KIND_OFFSET: usize = 7;
const CODE_OFFSET: usize = 8;
const REQUEST_ID_OFFSET: usize = 12;
const HEADER_LEN_OFFSET: usize = 20;
/// Most buffer space reserved beyond what a partial frame has delivered so far.
const RESERVE_AHEAD: usize = 1 << 20;
/// Bytes before the header: the whole fixed part of a frame.
pub const PREFIX_LEN: usize = 24;
const _: () = assert!(HEADER_LEN_OFFSET + 4 == PREFIX_LEN);

/// Bytes a frame takes on the wire, length prefix included.
pub const fn wire_len(header_len: usize, body_len: usize) -> usize {
    PREFIX_LEN + header_len + body_len
}

/// Whether the bytes at the start of `buf` (a frame's beginning) carry FerroMQ's magic;
/// `true` while too few have arrived to tell. Lets a receiver tell an oversized frame,
/// worth answering, from input that is not FerroMQ at all.
pub fn starts_with_magic(buf: &[u8]) -> bool {
    match buf.get(MAGIC_OFFSET..MAGIC_OFFSET + 2) {
        Some(m) => u16::from_le_bytes([m[0], m[1]]) == MAGIC,
        None => true,
    }
}

/// The request id of the frame at the start of `buf`, once enough of it has arrived; lets
/// a receiver address an answer to a frame it refuses to read whole.
pub fn peek_request_id(buf: &[u8]) -> Option<u64> {
    buf.get(REQUEST_ID_OFFSET..REQUEST_ID_OFFSET + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
}

/// Size limits, checked before allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame accepted, prefix included. Default 64 MiB.
    pub max_frame_bytes: u32,
    /// Largest message body. Default 4 MiB.
    pub max_message_bytes: u32,
    /// Most messages in one send. Default 4096.
    pub max_batch_messages: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 << 20,
            max_message_bytes: 4 << 20,
            max_batch_messages: 4096,
        }
    }
}

/// Whether a frame asks or answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A request; its code is a [`crate::RequestCode`].
    Request = 0,
    /// A response; its code is a [`crate::Status`].
    Response = 1,
}

impl TryFrom<u8> for FrameKind {
    type Error = ProtocolError;

    fn try_from(value: u8) -> Result<Self, ProtocolError> {
        match value {
            0 => Ok(Self::Request),
            1 => Ok(Self::Response),
            _ => Err(ProtocolError::Malformed("unknown frame kind")),
        }
    }
}

/// A decoded frame. `header` and `body` share the receive buffer; nothing is copied.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Request or response.
    pub kind: FrameKind,
    /// The request code or the response status, as on the wire.
    pub code: u16,
    /// Chosen by the requester, echoed by the response.
    pub request_id: u64,
    /// The bincode-encoded header.
    pub header: Bytes,
    /// The raw body.
    pub body: Bytes,
}

impl Frame {
    /// Writes the fixed prefix and the header of a frame whose body of `body_len` bytes
    /// the caller sends next (possibly straight from a mapped file).
    ///
    /// # Errors
    /// `FrameTooLarge` if the frame would not fit a `u32` length.
    pub fn encode_head(
        dst: &mut BytesMut,
        kind: FrameKind,
        code: u16,
        request_id: u64,
        header: &[u8],
        body_len: usize,
    ) -> Result<(), ProtocolError> {
        let frame_len = (PREFIX_LEN - LEN_SIZE) + header.len() + body_len;
        let frame_len = u32::try_from(frame_len).map_err(|_| ProtocolError::FrameTooLarge {
            len: frame_len as u64,
            max: u64::from(u32::MAX),
        })?;
        let header_len = u32::try_from(header.len())
            .map_err(|_| ProtocolError::Malformed("header over 4 GiB"))?;
        dst.reserve(PREFIX_LEN + header.len());
        dst.put_u32_le(frame_len);
        dst.put_u16_le(MAGIC);
        dst.put_u8(PROTOCOL_VERSION);
        dst.put_u8(kind as u8);
        dst.put_u16_le(code);
        dst.put_u16_le(0);
        dst.put_u64_le(request_id);
        dst.put_u32_le(header_len);
        dst.put_slice(header);
        Ok(())
    }

    /// Encodes a whole frame into `dst`.
    ///
    /// # Errors
    /// As [`Frame::encode_head`].
    pub fn encode(
        dst: &mut BytesMut,
        kind: FrameKind,
        code: u16,
        request_id: u64,
        header: &[u8],
        body: &[u8],
    ) -> Result<(), ProtocolError> {
        Self::encode_head(dst, kind, code, request_id, header, body.len())?;
        dst.put_slice(body);
        Ok(())
    }
}

/// Cuts frames out of a receive buffer; keeps partial frames buffered until complete.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame_bytes: u32,
}

impl FrameDecoder {
    /// A decoder refusing frames over `max_frame_bytes` (prefix included).
    pub fn new(max_frame_bytes: u32) -> Self {
        Self { max_frame_bytes }
    }

    /// Decodes the next complete frame, or `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// A frame over the limit, a bad magic, a version this side does not speak (with the
    /// request id so that an error response can still be addressed), or an inconsistent
    /// header length. After an error the connection is out of sync and should be closed
    /// once the error has been reported.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        if buf.len() < LEN_SIZE {
            return Ok(None);
        }
        let frame_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let total = u64::from(frame_len) + LEN_SIZE as u64;
        if total > u64::from(self.max_frame_bytes) {
            return Err(ProtocolError::FrameTooLarge {
                len: total,
                max: u64::from(self.max_frame_bytes),
            });
        }
        if (frame_len as usize) < PREFIX_LEN - LEN_SIZE {
            return Err(ProtocolError::Malformed(
                "frame shorter than its fixed prefix",
            ));
        }
        let total = total as usize;
        // The magic is checked as soon as it has arrived, not once the whole frame has:
        // garbage whose first bytes read as a plausible length is refused at once instead
        // of being buffered up to the frame limit.
        if buf.len() >= MAGIC_OFFSET + 2 {
            let magic = u16::from_le_bytes([buf[MAGIC_OFFSET], buf[MAGIC_OFFSET + 1]]);
            if magic != MAGIC {
                return Err(ProtocolError::BadMagic { found: magic });
            }
        }
        if buf.len() < total {
            // Grows with the data that arrives, never ahead of it by more than
            // RESERVE_AHEAD: a peer claiming a large frame and sending little of it costs
            // little.
            buf.reserve((total - buf.len()).min(RESERVE_AHEAD));
            return Ok(None);
        }
        let request_id = read_u64(&buf[REQUEST_ID_OFFSET..]);
        let version = buf[VERSION_OFFSET];
        if version != PROTOCOL_VERSION {
            buf.advance(total);
            return Err(ProtocolError::UnsupportedVersion {
                found: version,
                supported: PROTOCOL_VERSION,
                request_id,
            });
        }
        let kind = FrameKind::try_from(buf[KIND_OFFSET])?;
        let code = u16::from_le_bytes([buf[CODE_OFFSET], buf[CODE_OFFSET + 1]]);
        let header_len = u32::from_le_bytes([
            buf[HEADER_LEN_OFFSET],
            buf[HEADER_LEN_OFFSET + 1],
            buf[HEADER_LEN_OFFSET + 2],
            buf[HEADER_LEN_OFFSET + 3],
        ]) as usize;
        if header_len > total - PREFIX_LEN {
            return Err(ProtocolError::Malformed("header longer than the frame"));
        }
        let mut frame = buf.split_to(total).freeze();
        frame.advance(PREFIX_LEN);
        let header = frame.split_to(header_len);
        Ok(Some(Frame {
            kind,
            code,
            request_id,
            header,
            body: frame,
        }))
    }
}

fn read_u64(b: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[..8]);
    u64::from_le_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(header: &[u8], body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        Frame::encode(&mut b, FrameKind::Request, 30, 77, header, body).unwrap();
        b
    }

    #[test]
    fn round_trip_and_partial_frames_wait_for_more() {
        let dec = FrameDecoder::new(1 << 20);
        let full = encoded(b"head", b"body bytes");
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert!(dec.decode(&mut part).unwrap().is_none(), "cut at {cut}");
        }
        let mut buf = full.clone();
        buf.extend_from_slice(&encoded(b"", b"second"));
        let f = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!((f.kind, f.code, f.request_id), (FrameKind::Request, 30, 77));
        assert_eq!(&f.header[..], b"head");
        assert_eq!(&f.body[..], b"body bytes");
        let g = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&g.body[..], b"second");
        assert!(buf.is_empty());
    }

    #[test]
    fn an_oversized_frame_can_be_answered_from_its_first_bytes() {
        let full = encoded(b"head", b"body");
        assert_eq!(full.len(), wire_len(4, 4));
        assert!(starts_with_magic(&full) && starts_with_magic(&full[..5]));
        assert_eq!(peek_request_id(&full), Some(77));
        assert_eq!(peek_request_id(&full[..19]), None);
        assert!(!starts_with_magic(b"GET / HTTP/1.1"));
    }

    #[test]
    fn a_frame_claiming_4_gib_is_refused_without_allocating() {
        let dec = FrameDecoder::new(1 << 20);
        let mut buf = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
        let cap = buf.capacity();
        assert!(matches!(
            dec.decode(&mut buf),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
        assert_eq!(buf.capacity(), cap);
    }

    #[test]
    fn bad_magic_version_and_header_length_are_errors() {
        let dec = FrameDecoder::new(1 << 20);
        let mut b = encoded(b"h", b"");
        b[MAGIC_OFFSET] ^= 0xFF;
        assert!(matches!(
            dec.decode(&mut b),
            Err(ProtocolError::BadMagic { .. })
        ));
        let mut b = encoded(b"h", b"");
        b[VERSION_OFFSET] = 9;
        assert!(matches!(
            dec.decode(&mut b),
            Err(ProtocolError::UnsupportedVersion {
                found: 9,
                request_id: 77,
                ..
            })
        ));
        let mut b = encoded(b"h", b"");
        b[HEADER_LEN_OFFSET] = 200;
        assert!(matches!(
            dec.decode(&mut b),
            Err(ProtocolError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let dec = FrameDecoder::new(4096);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = dec.decode(&mut buf) {}
        }
    }
}
