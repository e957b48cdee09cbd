//! The body of a send request: one or more messages, laid end to end.
//!
//! ```text
//! per message:
//! offset  size  field
//! 0       4     properties_len  u32
//! 4       4     body_len        u32
//! 8       8     born_timestamp_ms u64
//! 16      ..    properties      (see crate::properties)
//! ..      ..    body
//! ```
//! Little-endian. The header of the send request says how many messages follow; the
//! decoder checks that count and that the bytes end exactly with the last message.

use crate::ProtocolError;

const ENTRY_PREFIX: usize = 16;

/// One message of a batch, borrowed from the received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMessage<'a> {
    /// Property blob in [`crate::properties`] encoding.
    pub properties: &'a [u8],
    /// The payload.
    pub body: &'a [u8],
    /// When the producer made the message (wall-clock ms).
    pub born_timestamp_ms: u64,
}

/// Appends messages to a send body.
#[derive(Debug, Default, Clone)]
pub struct BatchWriter {
    buf: Vec<u8>,
    /// Messages in the batch.
    count: u32,
}

impl BatchWriter {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `bytes` of encoded messages.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            count: 0,
        }
    }

    /// Adds a message. Lengths are checked by the receiver against its limits; a body
    /// over 4 GiB cannot be expressed and is refused here.
    ///
    /// # Errors
    /// `Batch` when a length does not fit a `u32`.
    pub fn push(&mut self, msg: &BatchMessage<'_>) -> Result<(), ProtocolError> {
        let plen = u32::try_from(msg.properties.len())
            .map_err(|_| ProtocolError::Batch("properties over 4 GiB".into()))?;
        let blen = u32::try_from(msg.body.len())
            .map_err(|_| ProtocolError::Batch("body over 4 GiB".into()))?;
        self.buf
            .reserve(ENTRY_PREFIX + msg.properties.len() + msg.body.len());
        self.buf.extend_from_slice(&plen.to_le_bytes());
        self.buf.extend_from_slice(&blen.to_le_bytes());
        self.buf
            .extend_from_slice(&msg.born_timestamp_ms.to_le_bytes());
        self.buf.extend_from_slice(msg.properties);
        self.buf.extend_from_slice(msg.body);
        self.count += 1;
        Ok(())
    }

    /// Messages in the batch.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Encoded size of the batch.
    pub fn len_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Whether no message was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded batch, a send's body.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The encoded batch, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Empties the batch, keeping its buffer.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
    }
}

/// Decodes a whole batch, checking the count, each message against `max_body_bytes`, and
/// that nothing trails the last message.
///
/// # Errors
/// `Batch` naming the message and what is wrong with it.
pub fn decode(
    bytes: &[u8],
    count: u32,
    max_body_bytes: u32,
) -> Result<Vec<BatchMessage<'_>>, ProtocolError> {
    // Every message needs at least its prefix, so a lying count cannot make us allocate.
    if (count as usize).saturating_mul(ENTRY_PREFIX) > bytes.len() {
        return Err(ProtocolError::Batch(format!(
            "{count} messages announced but only {} bytes sent",
            bytes.len()
        )));
    }
    let mut out = Vec::with_capacity(count as usize);
    let mut rest = bytes;
    for i in 0..count {
        let (msg, tail) = decode_one(rest, i, max_body_bytes)?;
        out.push(msg);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(ProtocolError::Batch(format!(
            "{} bytes after the last of {count} messages",
            rest.len()
        )));
    }
    Ok(out)
}

fn decode_one(
    b: &[u8],
    index: u32,
    max_body_bytes: u32,
) -> Result<(BatchMessage<'_>, &[u8]), ProtocolError> {
    if b.len() < ENTRY_PREFIX {
        return Err(ProtocolError::Batch(format!(
            "message {index} is truncated"
        )));
    }
    let plen = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let blen = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&b[8..16]);
    if blen > max_body_bytes {
        return Err(ProtocolError::Batch(format!(
            "message {index} has a body of {blen} bytes, over the limit of {max_body_bytes}"
        )));
    }
    let blen = blen as usize;
    let rest = &b[ENTRY_PREFIX..];
    if rest.len() < plen.saturating_add(blen) {
        return Err(ProtocolError::Batch(format!(
            "message {index} is truncated"
        )));
    }
    let msg = BatchMessage {
        properties: &rest[..plen],
        body: &rest[plen..plen + blen],
        born_timestamp_ms: u64::from_le_bytes(ts),
    };
    Ok((msg, &rest[plen + blen..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_limits() {
        let mut w = BatchWriter::new();
        for body in [&b"one"[..], b"", b"three!"] {
            w.push(&BatchMessage {
                properties: b"p",
                body,
                born_timestamp_ms: 42,
            })
            .unwrap();
        }
        let msgs = decode(w.as_bytes(), 3, 16).unwrap();
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[2].body, b"three!");
        assert_eq!(msgs[0].born_timestamp_ms, 42);
        assert!(decode(w.as_bytes(), 2, 16).is_err(), "trailing message");
        assert!(decode(w.as_bytes(), 4, 16).is_err(), "missing message");
        assert!(decode(w.as_bytes(), 3, 5).is_err(), "body over the limit");
        assert!(decode(w.as_bytes(), u32::MAX, 16).is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128), count in 0u32..8) {
            let _ = decode(&bytes, count, 1024);
        }
    }
}
