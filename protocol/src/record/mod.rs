//! The record format of the commit log: what the broker writes and stores, and what a pull
//! response carries. Pure (no I/O, no mappings), so the client decodes records with exactly
//! the code the broker used to write them; `commitlog::format` re-exports it.
//!
//! All integers are little-endian and fixed width.
//!
//! # Record (version 1)
//!
//! | offset | size | field                | notes                                             |
//! |-------:|-----:|----------------------|---------------------------------------------------|
//! |      0 |    4 | `total_len` u32      | whole record, this field included                 |
//! |      4 |    4 | `magic` u32          | [`RECORD_MAGIC`]                                  |
//! |      8 |    4 | `crc` u32            | CRC32 (crc32fast) of bytes `12..total_len`        |
//! |     12 |    1 | `version` u8         | [`RECORD_VERSION`]                                |
//! |     13 |    1 | `flags` u8           | reserved, 0                                       |
//! |     14 |    2 | `topic_len` u16      | UTF-8 bytes                                       |
//! |     16 |    4 | `queue_id` u32       |                                                   |
//! |     20 |    8 | `queue_offset` u64   | logical offset in the consume queue               |
//! |     28 |    8 | `physical_offset` u64| where this record starts in the log               |
//! |     36 |    8 | `tag_hash` u64       | hash of the TAGS property, 0 = none               |
//! |     44 |    8 | `born_timestamp_ms`  | set by the producer                               |
//! |     52 |    8 | `store_timestamp_ms` | set by the broker                                 |
//! |     60 |    4 | `reconsume_times` u32|                                                   |
//! |     64 |    4 | `properties_len` u32 |                                                   |
//! |     68 |    4 | `body_len` u32       |                                                   |
//! |     72 |    n | topic, properties, body, in that order                                   |
//!
//! `total_len == 72 + topic_len + properties_len + body_len`; the next record starts right
//! after (no padding). Because the CRC covers the stored physical offset, a record copied to
//! the wrong place does not validate there.
//!
//! # End-of-segment marker
//!
//! | offset | size | field           | notes                                  |
//! |-------:|-----:|-----------------|----------------------------------------|
//! |      0 |    4 | `len` u32       | bytes left in the segment from here    |
//! |      4 |    4 | `magic` u32     | [`END_OF_SEGMENT_MAGIC`]               |
//!
//! A record never straddles two segments. When the next record does not fit, the writer puts
//! this marker in the tail and continues at the next segment. A tail shorter than the marker
//! stays zero; readers skip any tail shorter than [`END_OF_SEGMENT_LEN`]. A slot whose first
//! 8 bytes are zero is unwritten: the end of the data.
//!

mod codec;

pub use codec::{
    classify, encode_end_of_segment, encode_into, encoded_len, RecordIn, RecordView, Slot,
};

/// Identifies a record header.
pub const RECORD_MAGIC: u32 = 0xF3E0_4D51;
/// Identifies an end-of-segment marker.
pub const END_OF_SEGMENT_MAGIC: u32 = 0xF3E0_E05E;
/// Version of the record layout written by this code.
pub const RECORD_VERSION: u8 = 1;

/// Offset of `total_len` (see the table above for every field).
pub const TOTAL_LEN_AT: usize = 0;
/// Offset of `magic`.
pub const MAGIC_AT: usize = 4;
/// Offset of `crc`.
pub const CRC_AT: usize = 8;
/// The CRC covers everything from here to the end of the record.
pub const CRC_START: usize = 12;
/// Offset of `version`.
pub const VERSION_AT: usize = 12;
/// Offset of `flags`.
pub const FLAGS_AT: usize = 13;
/// Offset of `topic_len`.
pub const TOPIC_LEN_AT: usize = 14;
/// Offset of `queue_id`.
pub const QUEUE_ID_AT: usize = 16;
/// Offset of `queue_offset`.
pub const QUEUE_OFFSET_AT: usize = 20;
/// Offset of `physical_offset`.
pub const PHYSICAL_OFFSET_AT: usize = 28;
/// Offset of `tag_hash`.
pub const TAG_HASH_AT: usize = 36;
/// Offset of `born_timestamp_ms`.
pub const BORN_TS_AT: usize = 44;
/// Offset of `store_timestamp_ms`.
pub const STORE_TS_AT: usize = 52;
/// Offset of `reconsume_times`.
pub const RECONSUME_AT: usize = 60;
/// Offset of `properties_len`.
pub const PROPERTIES_LEN_AT: usize = 64;
/// Offset of `body_len`.
pub const BODY_LEN_AT: usize = 68;
/// Fixed part of every record.
pub const HEADER_LEN: usize = 72;
/// Size of the end-of-segment marker.
pub const END_OF_SEGMENT_LEN: usize = 8;
/// Longest topic name the layout can hold.
pub const MAX_TOPIC_LEN: usize = u16::MAX as usize;

const _: () = assert!(CRC_START == CRC_AT + 4);
const _: () = assert!(BODY_LEN_AT + 4 == HEADER_LEN);
const _: () = assert!(HEADER_LEN & 7 == 0); // keeps u64 fields of the header 8-aligned relative to its start
const _: () = assert!(END_OF_SEGMENT_LEN == MAGIC_AT + 4);
const _: () = assert!(END_OF_SEGMENT_LEN <= HEADER_LEN);

/// Why bytes do not decode as a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The buffer ends before the record (or header) does.
    #[error("need {needed} bytes, only {available} available")]
    Truncated {
        /// Bytes the record needs.
        needed: usize,
        /// Bytes there are.
        available: usize,
    },
    /// The slot's header is zero: the end of the data.
    #[error("slot is unwritten (zero header)")]
    Unwritten,
    /// The slot holds an end-of-segment marker.
    #[error("slot holds an end-of-segment marker, not a record")]
    EndOfSegment,
    /// Neither a record's nor a marker's magic.
    #[error("bad magic {found:#010x}")]
    BadMagic {
        /// The magic found.
        found: u32,
    },
    /// A record version this code cannot read.
    #[error("unsupported record version {found}")]
    UnsupportedVersion {
        /// The version found.
        found: u8,
    },
    /// The lengths in the header do not add up.
    #[error("inconsistent length: {reason} (total_len {total_len})")]
    BadLength {
        /// The header's total length.
        total_len: u32,
        /// Which lengths disagree.
        reason: &'static str,
    },
    /// The stored CRC does not match the bytes.
    #[error("checksum mismatch: stored {expected:#010x}, computed {actual:#010x}")]
    ChecksumMismatch {
        /// The CRC stored in the record.
        expected: u32,
        /// The CRC of the bytes.
        actual: u32,
    },
    /// The topic bytes are not UTF-8.
    #[error("topic is not valid UTF-8")]
    TopicNotUtf8,
    /// A field is longer than its length field can express.
    #[error("field too large: {field} is {len} bytes")]
    FieldTooLarge {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
}

pub(crate) fn u16_at(buf: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&buf[at..at + 2]);
    u16::from_le_bytes(a)
}

pub(crate) fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(a)
}

pub(crate) fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(a)
}
