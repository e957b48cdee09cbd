//! The timer's on-disk formats, no I/O.
//!
//! A slot file, `<data>/timer/slots/<due second, 20 digits>`, holds the timers due in
//! that wall-clock second, in arrival order (not due order: a slot is sorted when loaded,
//! which is cheap because a slot is one second of timers):
//!
//! ```text
//! header (8 bytes):  0 magic "FMQT" | 4 u32 version
//! entry (40 bytes, repeated):
//!   off size field
//!    0   8  due_ms          wall-clock ms the timer is due
//!    8   8  queue_offset    the timer message's offset in `%TIMER%` queue 0
//!   16   8  physical        its commit-log offset
//!   24   4  size            its record size (with `physical`, its message id)
//!   28   4  topic_id        index of its real topic in `<data>/timer/topics`
//!   32   1  kind            1 = timer, 2 = tombstone (recalled), 3 = delivered
//!   33   3  zero
//!   36   4  crc32           CRC32 of bytes 0..36
//! ```
//! Little-endian. An entry that fails its CRC or is cut short ends the file's readable
//! part: only a torn append leaves one, and the entries past the checkpoint are indexed
//! again from the commit log at start-up.

/// Magic at the start of a slot file.
pub(crate) const MAGIC: [u8; 4] = *b"FMQT";
/// Version of the slot file format.
pub(crate) const VERSION: u32 = 1;
/// Bytes of a slot file's header.
pub(crate) const HEADER_LEN: usize = 8;

const DUE_AT: usize = 0;
const QUEUE_OFFSET_AT: usize = 8;
const PHYSICAL_AT: usize = 16;
const SIZE_AT: usize = 24;
const TOPIC_AT: usize = 28;
const KIND_AT: usize = 32;
const CRC_AT: usize = 36;
/// Bytes of one entry.
pub(crate) const ENTRY_LEN: usize = 40;
const _: () = assert!(CRC_AT + 4 == ENTRY_LEN);
const _: () = assert!(KIND_AT < CRC_AT);

/// What an entry says about its timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// A pending timer.
    Timer = 1,
    /// The timer of the same queue offset was recalled.
    Tombstone = 2,
    /// The timer of the same queue offset was delivered (so a restart within its second
    /// does not deliver it again).
    Delivered = 3,
}

impl TryFrom<u8> for Kind {
    type Error = u8;

    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            1 => Ok(Self::Timer),
            2 => Ok(Self::Tombstone),
            3 => Ok(Self::Delivered),
            other => Err(other),
        }
    }
}

/// One slot entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Entry {
    pub(crate) due_ms: u64,
    pub(crate) queue_offset: u64,
    pub(crate) physical: u64,
    pub(crate) size: u32,
    pub(crate) topic_id: u32,
    pub(crate) kind: Kind,
}

impl Entry {
    /// The entry's bytes.
    pub(crate) fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[DUE_AT..DUE_AT + 8].copy_from_slice(&self.due_ms.to_le_bytes());
        b[QUEUE_OFFSET_AT..QUEUE_OFFSET_AT + 8].copy_from_slice(&self.queue_offset.to_le_bytes());
        b[PHYSICAL_AT..PHYSICAL_AT + 8].copy_from_slice(&self.physical.to_le_bytes());
        b[SIZE_AT..SIZE_AT + 4].copy_from_slice(&self.size.to_le_bytes());
        b[TOPIC_AT..TOPIC_AT + 4].copy_from_slice(&self.topic_id.to_le_bytes());
        b[KIND_AT] = self.kind as u8;
        let crc = crc32fast::hash(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes one entry; `None` when its CRC or kind is wrong.
    pub(crate) fn decode(b: &[u8; ENTRY_LEN]) -> Option<Self> {
        let u64_at = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(x)
        };
        let u32_at = |at: usize| {
            let mut x = [0u8; 4];
            x.copy_from_slice(&b[at..at + 4]);
            u32::from_le_bytes(x)
        };
        if crc32fast::hash(&b[..CRC_AT]) != u32_at(CRC_AT) {
            return None;
        }
        Some(Self {
            due_ms: u64_at(DUE_AT),
            queue_offset: u64_at(QUEUE_OFFSET_AT),
            physical: u64_at(PHYSICAL_AT),
            size: u32_at(SIZE_AT),
            topic_id: u32_at(TOPIC_AT),
            kind: Kind::try_from(b[KIND_AT]).ok()?,
        })
    }
}

/// The header of a new slot file.
pub(crate) fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4..].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// Checks a slot file's header.
///
/// # Errors
/// A static reason: wrong magic or version, or too short.
pub(crate) fn check_header(b: &[u8]) -> Result<(), &'static str> {
    if b.len() < HEADER_LEN {
        return Err("shorter than its header");
    }
    if b[..4] != MAGIC {
        return Err("not a timer slot file (bad magic)");
    }
    if b[4..8] != VERSION.to_le_bytes() {
        return Err("a slot format version this broker does not read");
    }
    Ok(())
}

/// The entries of a slot file's bytes after its header, up to the first torn or damaged
/// one.
pub(crate) fn decode_entries(body: &[u8]) -> Vec<Entry> {
    body.chunks_exact(ENTRY_LEN)
        .map_while(|c| {
            let mut b = [0u8; ENTRY_LEN];
            b.copy_from_slice(c);
            Entry::decode(&b)
        })
        .collect()
}

/// The name of a slot file.
pub(crate) fn slot_name(second: u64) -> String {
    format!("{second:020}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn entry(q: u64) -> Entry {
        Entry {
            due_ms: 1_700_000_000_123,
            queue_offset: q,
            physical: 1 << 40,
            size: 321,
            topic_id: 7,
            kind: Kind::Timer,
        }
    }

    #[test]
    fn entries_round_trip_and_a_damaged_one_ends_the_readable_part() {
        let mut body = Vec::new();
        for q in 0..3 {
            body.extend_from_slice(&entry(q).encode());
        }
        assert_eq!(decode_entries(&body), vec![entry(0), entry(1), entry(2)]);
        body[ENTRY_LEN + 3] ^= 1;
        assert_eq!(decode_entries(&body), vec![entry(0)]);
        // A torn tail is ignored.
        assert_eq!(decode_entries(&body[..ENTRY_LEN + 10]), vec![entry(0)]);
    }

    #[test]
    fn headers_are_checked() {
        assert!(check_header(&header()).is_ok());
        assert!(check_header(b"FMQX\x01\0\0\0").is_err());
        assert!(check_header(b"FMQT\x02\0\0\0").is_err());
        assert!(check_header(b"FM").is_err());
    }
}
