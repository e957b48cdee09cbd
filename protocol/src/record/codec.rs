//! Encoding and decoding of records and end-of-segment markers.

use super::{
    u16_at, u32_at, u64_at, FormatError, BODY_LEN_AT, BORN_TS_AT, CRC_AT, CRC_START,
    END_OF_SEGMENT_LEN, END_OF_SEGMENT_MAGIC, FLAGS_AT, HEADER_LEN, MAGIC_AT, MAX_TOPIC_LEN,
    PHYSICAL_OFFSET_AT, PROPERTIES_LEN_AT, QUEUE_ID_AT, QUEUE_OFFSET_AT, RECONSUME_AT,
    RECORD_MAGIC, RECORD_VERSION, STORE_TS_AT, TAG_HASH_AT, TOPIC_LEN_AT, TOTAL_LEN_AT, VERSION_AT,
};

/// A record to append. Borrowed so appending never copies the payload twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordIn<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The queue within the topic.
    pub queue_id: u32,
    /// The record's offset in that queue.
    pub queue_offset: u64,
    /// Hash of the TAGS property (0 = no tag), stored so consume queues rebuild cheaply.
    pub tag_hash: u64,
    /// When the producer made the message.
    pub born_timestamp_ms: u64,
    /// When the broker stored it.
    pub store_timestamp_ms: u64,
    /// How often it was sent back for redelivery.
    pub reconsume_times: u32,
    /// Opaque to the log; the encoding belongs to `protocol::properties`.
    pub properties: &'a [u8],
    /// The payload.
    pub body: &'a [u8],
}

/// Encoded size of `rec`.
///
/// # Errors
/// [`FormatError::FieldTooLarge`] when a field or the whole record exceeds the layout.
pub fn encoded_len(rec: &RecordIn<'_>) -> Result<usize, FormatError> {
    if rec.topic.len() > MAX_TOPIC_LEN {
        return Err(FormatError::FieldTooLarge {
            field: "topic",
            len: rec.topic.len(),
        });
    }
    let total = HEADER_LEN + rec.topic.len() + rec.properties.len() + rec.body.len();
    if u32::try_from(total).is_err() {
        return Err(FormatError::FieldTooLarge {
            field: "record",
            len: total,
        });
    }
    Ok(total)
}

fn put_u16(dst: &mut [u8], at: usize, v: u16) {
    dst[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(dst: &mut [u8], at: usize, v: u32) {
    dst[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(dst: &mut [u8], at: usize, v: u64) {
    dst[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Header, topic and properties up to this size are assembled on the stack so the CRC
/// runs as two calls (each call costs a fixed reduction, which dominates small records).
const STACK_HEAD: usize = 256;

/// Encodes `rec` stored at `physical_offset` into the front of `dst` and returns its length.
/// Writes straight into the destination (the segment mapping): no heap buffer.
///
/// # Errors
/// [`FormatError::FieldTooLarge`] as for [`encoded_len`]; [`FormatError::Truncated`] when
/// `dst` is too short.
pub fn encode_into(
    rec: &RecordIn<'_>,
    physical_offset: u64,
    dst: &mut [u8],
) -> Result<usize, FormatError> {
    let total = encoded_len(rec)?;
    if dst.len() < total {
        return Err(FormatError::Truncated {
            needed: total,
            available: dst.len(),
        });
    }
    // The CRC is computed from the sources, never from `dst`: the destination (fresh
    // mapped pages, likely not in cache) is only written, so the CPU does not stall on
    // its cache misses.
    let dst = &mut dst[..total];
    let topic_end = HEADER_LEN + rec.topic.len();
    let head_len = topic_end + rec.properties.len();
    if head_len <= STACK_HEAD {
        let mut h = [0u8; STACK_HEAD];
        put_header(&mut h, rec, physical_offset, total)?;
        h[HEADER_LEN..topic_end].copy_from_slice(rec.topic.as_bytes());
        h[topic_end..head_len].copy_from_slice(rec.properties);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&h[CRC_START..head_len]);
        crc.update(rec.body);
        put_u32(&mut h, CRC_AT, crc.finalize());
        dst[..head_len].copy_from_slice(&h[..head_len]);
    } else {
        let mut h = [0u8; HEADER_LEN];
        put_header(&mut h, rec, physical_offset, total)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&h[CRC_START..]);
        crc.update(rec.topic.as_bytes());
        crc.update(rec.properties);
        crc.update(rec.body);
        put_u32(&mut h, CRC_AT, crc.finalize());
        dst[..HEADER_LEN].copy_from_slice(&h);
        dst[HEADER_LEN..topic_end].copy_from_slice(rec.topic.as_bytes());
        dst[topic_end..head_len].copy_from_slice(rec.properties);
    }
    dst[head_len..].copy_from_slice(rec.body);
    Ok(total)
}

/// Writes the fixed header (CRC left zero) into the front of `h`.
fn put_header(
    h: &mut [u8],
    rec: &RecordIn<'_>,
    physical_offset: u64,
    total: usize,
) -> Result<(), FormatError> {
    put_u32(h, TOTAL_LEN_AT, field_len(total, "record")?);
    put_u32(h, MAGIC_AT, RECORD_MAGIC);
    h[VERSION_AT] = RECORD_VERSION;
    h[FLAGS_AT] = 0;
    // Checked against MAX_TOPIC_LEN in encoded_len.
    put_u16(
        h,
        TOPIC_LEN_AT,
        u16::try_from(rec.topic.len()).unwrap_or(u16::MAX),
    );
    put_u32(h, QUEUE_ID_AT, rec.queue_id);
    put_u64(h, QUEUE_OFFSET_AT, rec.queue_offset);
    put_u64(h, PHYSICAL_OFFSET_AT, physical_offset);
    put_u64(h, TAG_HASH_AT, rec.tag_hash);
    put_u64(h, BORN_TS_AT, rec.born_timestamp_ms);
    put_u64(h, STORE_TS_AT, rec.store_timestamp_ms);
    put_u32(h, RECONSUME_AT, rec.reconsume_times);
    put_u32(
        h,
        PROPERTIES_LEN_AT,
        field_len(rec.properties.len(), "properties")?,
    );
    put_u32(h, BODY_LEN_AT, field_len(rec.body.len(), "body")?);
    Ok(())
}

fn field_len(len: usize, field: &'static str) -> Result<u32, FormatError> {
    u32::try_from(len).map_err(|_| FormatError::FieldTooLarge { field, len })
}

/// Writes an end-of-segment marker covering all of `tail` (if it has room for one).
pub fn encode_end_of_segment(tail: &mut [u8]) {
    if tail.len() < END_OF_SEGMENT_LEN {
        return;
    }
    let len = u32::try_from(tail.len()).unwrap_or(u32::MAX);
    put_u32(tail, TOTAL_LEN_AT, len);
    put_u32(tail, MAGIC_AT, END_OF_SEGMENT_MAGIC);
}

/// What a slot in a segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot<'a> {
    /// A valid record (CRC checked).
    Record(RecordView<'a>),
    /// The rest of the segment is unused; continue at the next segment.
    EndOfSegment,
    /// Zero header: nothing was written here.
    Unwritten,
}

/// Classifies the bytes at the start of `buf`, which must extend to the end of the segment
/// (or of the readable data). A tail too short for a marker counts as end of segment.
///
/// # Errors
/// Any [`FormatError`] describing why the slot is neither a record, a marker nor unwritten.
pub fn classify(buf: &[u8]) -> Result<Slot<'_>, FormatError> {
    if buf.len() < END_OF_SEGMENT_LEN {
        return Ok(Slot::EndOfSegment);
    }
    match RecordView::decode(buf) {
        Ok(view) => Ok(Slot::Record(view)),
        Err(FormatError::Unwritten) => Ok(Slot::Unwritten),
        Err(FormatError::EndOfSegment) => Ok(Slot::EndOfSegment),
        Err(e) => Err(e),
    }
}

static EMPTY: [u8; HEADER_LEN] = [0; HEADER_LEN];

/// A decoded, CRC-checked record borrowing its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    buf: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// Decodes the record at the start of `buf`: checks length, magic, version and CRC.
    ///
    /// # Errors
    /// A [`FormatError`] saying what is wrong; never panics on any input.
    pub fn decode(buf: &'a [u8]) -> Result<RecordView<'a>, FormatError> {
        let view = Self::decode_unchecked_crc(buf)?;
        let expected = u32_at(view.buf, CRC_AT);
        let actual = crc32fast::hash(&view.buf[CRC_START..]);
        if expected != actual {
            return Err(FormatError::ChecksumMismatch { expected, actual });
        }
        Ok(view)
    }

    /// A view of a zeroed header; only for unreachable fallbacks (accessors on it return
    /// zeros and empty slices).
    #[doc(hidden)]
    pub fn empty() -> RecordView<'static> {
        RecordView { buf: &EMPTY }
    }

    /// Structural checks only; for bytes that already passed [`RecordView::decode`] (the
    /// commit log's record handles, whose bytes cannot change).
    ///
    /// # Errors
    /// A [`FormatError`] for a truncated or malformed header.
    pub fn decode_unchecked_crc(buf: &'a [u8]) -> Result<RecordView<'a>, FormatError> {
        if buf.len() < END_OF_SEGMENT_LEN {
            return Err(FormatError::Truncated {
                needed: END_OF_SEGMENT_LEN,
                available: buf.len(),
            });
        }
        let total_len = u32_at(buf, TOTAL_LEN_AT);
        let magic = u32_at(buf, MAGIC_AT);
        if total_len == 0 && magic == 0 {
            return Err(FormatError::Unwritten);
        }
        if magic == END_OF_SEGMENT_MAGIC {
            return Err(FormatError::EndOfSegment);
        }
        if magic != RECORD_MAGIC {
            return Err(FormatError::BadMagic { found: magic });
        }
        let total = total_len as usize;
        if total < HEADER_LEN {
            return Err(FormatError::BadLength {
                total_len,
                reason: "shorter than the header",
            });
        }
        if buf.len() < total {
            return Err(FormatError::Truncated {
                needed: total,
                available: buf.len(),
            });
        }
        let buf = &buf[..total];
        if buf[VERSION_AT] != RECORD_VERSION {
            return Err(FormatError::UnsupportedVersion {
                found: buf[VERSION_AT],
            });
        }
        let fields = usize::from(u16_at(buf, TOPIC_LEN_AT)) as u64
            + u64::from(u32_at(buf, PROPERTIES_LEN_AT))
            + u64::from(u32_at(buf, BODY_LEN_AT));
        if fields + HEADER_LEN as u64 != total as u64 {
            return Err(FormatError::BadLength {
                total_len,
                reason: "field lengths do not add up",
            });
        }
        let view = RecordView { buf };
        if std::str::from_utf8(view.topic_bytes()).is_err() {
            return Err(FormatError::TopicNotUtf8);
        }
        Ok(view)
    }

    /// The topic's bytes: compares a topic without another UTF-8 check.
    pub fn topic_bytes(&self) -> &'a [u8] {
        &self.buf[HEADER_LEN..HEADER_LEN + usize::from(u16_at(self.buf, TOPIC_LEN_AT))]
    }
    fn properties_range(&self) -> (usize, usize) {
        let start = HEADER_LEN + usize::from(u16_at(self.buf, TOPIC_LEN_AT));
        (start, start + u32_at(self.buf, PROPERTIES_LEN_AT) as usize)
    }

    /// The whole encoded record.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
    /// Encoded length: the next record starts this many bytes later.
    /// Size of the whole record, header included.
    pub fn total_len(&self) -> u32 {
        u32_at(self.buf, TOTAL_LEN_AT)
    }
    /// The stored CRC.
    pub fn crc(&self) -> u32 {
        u32_at(self.buf, CRC_AT)
    }
    /// The topic.
    pub fn topic(&self) -> &'a str {
        // Validated in decode; the fallback is unreachable.
        std::str::from_utf8(self.topic_bytes()).unwrap_or("")
    }
    /// The queue within the topic.
    pub fn queue_id(&self) -> u32 {
        u32_at(self.buf, QUEUE_ID_AT)
    }
    /// The record's offset in its queue.
    pub fn queue_offset(&self) -> u64 {
        u64_at(self.buf, QUEUE_OFFSET_AT)
    }
    /// Where the record was written in the commit log.
    pub fn physical_offset(&self) -> u64 {
        u64_at(self.buf, PHYSICAL_OFFSET_AT)
    }
    /// Hash of the TAGS property (0 = no tag).
    pub fn tag_hash(&self) -> u64 {
        u64_at(self.buf, TAG_HASH_AT)
    }
    /// When the producer made the message.
    pub fn born_timestamp_ms(&self) -> u64 {
        u64_at(self.buf, BORN_TS_AT)
    }
    /// When the broker stored it.
    pub fn store_timestamp_ms(&self) -> u64 {
        u64_at(self.buf, STORE_TS_AT)
    }
    /// How often it was sent back for redelivery.
    pub fn reconsume_times(&self) -> u32 {
        u32_at(self.buf, RECONSUME_AT)
    }
    /// The property blob (`protocol::properties` encoding).
    pub fn properties(&self) -> &'a [u8] {
        let (start, end) = self.properties_range();
        &self.buf[start..end]
    }
    /// The payload.
    pub fn body(&self) -> &'a [u8] {
        &self.buf[self.properties_range().1..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(body: &'a [u8]) -> RecordIn<'a> {
        RecordIn {
            topic: "orders",
            queue_id: 3,
            queue_offset: 42,
            tag_hash: 0xDEAD_BEEF,
            born_timestamp_ms: 1_700_000_000_000,
            store_timestamp_ms: 1_700_000_000_001,
            reconsume_times: 2,
            properties: b"TAGS\x01a",
            body,
        }
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let rec = sample(b"hello");
        let mut buf = vec![0u8; encoded_len(&rec).unwrap()];
        let n = encode_into(&rec, 4096, &mut buf).unwrap();
        let v = RecordView::decode(&buf).unwrap();
        assert_eq!(n as u32, v.total_len());
        assert_eq!(v.topic(), "orders");
        assert_eq!(v.queue_id(), 3);
        assert_eq!(v.queue_offset(), 42);
        assert_eq!(v.physical_offset(), 4096);
        assert_eq!(v.tag_hash(), 0xDEAD_BEEF);
        assert_eq!(v.born_timestamp_ms(), 1_700_000_000_000);
        assert_eq!(v.store_timestamp_ms(), 1_700_000_000_001);
        assert_eq!(v.reconsume_times(), 2);
        assert_eq!(v.properties(), b"TAGS\x01a");
        assert_eq!(v.body(), b"hello");
    }

    #[test]
    fn zero_bytes_are_unwritten_and_marker_is_end_of_segment() {
        assert_eq!(classify(&[0u8; 100]).unwrap(), Slot::Unwritten);
        let mut tail = [0u8; 30];
        encode_end_of_segment(&mut tail);
        assert_eq!(classify(&tail).unwrap(), Slot::EndOfSegment);
        assert_eq!(classify(&[1u8; 7]).unwrap(), Slot::EndOfSegment);
    }

    #[test]
    fn flipped_body_byte_fails_checksum() {
        let rec = sample(b"hello");
        let mut buf = vec![0u8; encoded_len(&rec).unwrap()];
        encode_into(&rec, 0, &mut buf).unwrap();
        let last = buf.len() - 1;
        buf[last] ^= 1;
        assert!(matches!(
            RecordView::decode(&buf),
            Err(FormatError::ChecksumMismatch { .. })
        ));
    }
}
