//! Byte layout of the key index files; no I/O here.
//!
//! An index file `<data>/index/<first commit-log offset, 20 digits>.kix` is a header, a
//! table of hash slots, then fixed-width entries, all little endian (RocketMQ's IndexFile
//! layout):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `FMKI` |
//! | 4 | 2 | version (1) |
//! | 6 | 2 | reserved, 0 |
//! | 8 | 4 | `slot_count` |
//! | 12 | 4 | `max_entries` |
//! | 16 | 4 | `entry_count`: entries written |
//! | 20 | 4 | reserved, 0 |
//! | 24 | 8 | `first_phys`: commit-log offset the file starts indexing at |
//! | 32 | 8 | `end_phys`: records below it are indexed (here or in older files) |
//! | 40 | 8 | `min_ts`: smallest store timestamp (ms) of an entry |
//! | 48 | 8 | `max_ts`: largest store timestamp (ms) of an entry |
//! | 56 | 4 | CRC32 of bytes 0..56 |
//! | 60 | 4 | reserved, 0 |
//! | 64 | 4 × `slot_count` | slots: 1 + the newest entry whose hash falls in the slot, 0 = none |
//! | … | 24 × `max_entries` | entries |
//!
//! An entry (24 bytes): `key_hash` u32 | `prev` u32 (1 + the previous entry of the same
//! slot, always an older entry, 0 = none) | commit-log offset u64 | store timestamp ms u64.
//! A key's chain is walked newest first; entries whose hash differs are skipped and the
//! message itself is always checked (topic and key) before it is served, so slot and hash
//! collisions cost time, never correctness.
//!
//! The checkpoint `<data>/index/checkpoint` (32 bytes, replaced atomically) names the
//! durable state: magic `FMKC` | version u16 | reserved u16 | `next` u64 (records below it
//! are indexed) | `file_start` u64 (the newest file, `u64::MAX` = none) | `entry_count` u32
//! of that file | CRC32 of bytes 0..28.

use std::path::{Path, PathBuf};

/// Header length.
pub(crate) const HEADER_LEN: usize = 64;
/// One slot.
pub(crate) const SLOT_LEN: usize = 4;
/// One entry.
pub(crate) const ENTRY_LEN: usize = 24;
const MAGIC: [u8; 4] = *b"FMKI";
const VERSION: u16 = 1;
const HEADER_CRC_AT: usize = 56;

const CHECKPOINT_MAGIC: [u8; 4] = *b"FMKC";
/// Checkpoint length.
pub(crate) const CHECKPOINT_LEN: usize = 32;
const CHECKPOINT_CRC_AT: usize = 28;
/// `file_start` of a checkpoint taken while no index file exists.
pub(crate) const NO_FILE: u64 = u64::MAX;

/// File-name suffix of index files.
pub(crate) const SUFFIX: &str = ".kix";
/// Name of the checkpoint file.
pub(crate) const CHECKPOINT_NAME: &str = "checkpoint";

const _: () = assert!(HEADER_CRC_AT + 8 == HEADER_LEN);
const _: () = assert!(CHECKPOINT_CRC_AT + 4 == CHECKPOINT_LEN);

/// Why bytes do not decode.
pub(crate) type FormatError = &'static str;

/// An index file's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) slot_count: u32,
    pub(crate) max_entries: u32,
    pub(crate) entry_count: u32,
    pub(crate) first_phys: u64,
    pub(crate) end_phys: u64,
    pub(crate) min_ts: u64,
    pub(crate) max_ts: u64,
}

impl Header {
    /// A file with no entries yet.
    pub(crate) fn empty(slot_count: u32, max_entries: u32, first_phys: u64) -> Self {
        Self {
            slot_count,
            max_entries,
            entry_count: 0,
            first_phys,
            end_phys: first_phys,
            min_ts: u64::MAX,
            max_ts: 0,
        }
    }

    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[8..12].copy_from_slice(&self.slot_count.to_le_bytes());
        b[12..16].copy_from_slice(&self.max_entries.to_le_bytes());
        b[16..20].copy_from_slice(&self.entry_count.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_phys.to_le_bytes());
        b[32..40].copy_from_slice(&self.end_phys.to_le_bytes());
        b[40..48].copy_from_slice(&self.min_ts.to_le_bytes());
        b[48..56].copy_from_slice(&self.max_ts.to_le_bytes());
        let crc = crc32fast::hash(&b[..HEADER_CRC_AT]);
        b[HEADER_CRC_AT..HEADER_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < HEADER_LEN {
            return Err("short header");
        }
        if b[0..4] != MAGIC {
            return Err("bad magic");
        }
        if u16_at(b, 4) != VERSION {
            return Err("unknown version");
        }
        if crc32fast::hash(&b[..HEADER_CRC_AT]) != u32_at(b, HEADER_CRC_AT) {
            return Err("header checksum mismatch");
        }
        let h = Self {
            slot_count: u32_at(b, 8),
            max_entries: u32_at(b, 12),
            entry_count: u32_at(b, 16),
            first_phys: u64_at(b, 24),
            end_phys: u64_at(b, 32),
            min_ts: u64_at(b, 40),
            max_ts: u64_at(b, 48),
        };
        if h.slot_count == 0 || h.max_entries == 0 || h.entry_count > h.max_entries {
            return Err("impossible counts");
        }
        if h.end_phys < h.first_phys {
            return Err("end before start");
        }
        Ok(h)
    }

    /// Whether an entry stored at `ts` may lie in this file: false only when the file has
    /// entries and all are outside `[from, to]`.
    pub(crate) fn may_hold(&self, from_ms: u64, to_ms: u64) -> bool {
        self.entry_count == 0 || (self.max_ts >= from_ms && self.min_ts <= to_ms)
    }
}

/// Bytes of a file with this geometry.
pub(crate) fn file_len(slot_count: u32, max_entries: u32) -> u64 {
    entry_at(slot_count, max_entries)
}

/// Byte offset of slot `i`.
pub(crate) fn slot_at(i: u32) -> u64 {
    HEADER_LEN as u64 + SLOT_LEN as u64 * u64::from(i)
}

/// Byte offset of entry `i` (`i == max_entries` gives the file length).
pub(crate) fn entry_at(slot_count: u32, i: u32) -> u64 {
    slot_at(slot_count) + ENTRY_LEN as u64 * u64::from(i)
}

/// One entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) key_hash: u32,
    /// 1 + the previous entry of the same slot; 0 = none.
    pub(crate) prev: u32,
    pub(crate) phys: u64,
    pub(crate) ts: u64,
}

impl Entry {
    pub(crate) fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[0..4].copy_from_slice(&self.key_hash.to_le_bytes());
        b[4..8].copy_from_slice(&self.prev.to_le_bytes());
        b[8..16].copy_from_slice(&self.phys.to_le_bytes());
        b[16..24].copy_from_slice(&self.ts.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8; ENTRY_LEN]) -> Self {
        Self {
            key_hash: u32_at(b, 0),
            prev: u32_at(b, 4),
            phys: u64_at(b, 8),
            ts: u64_at(b, 16),
        }
    }
}

/// The durable state of the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Records below this commit-log offset are indexed.
    pub(crate) next: u64,
    /// The newest file's start, [`NO_FILE`] when there is none.
    pub(crate) file_start: u64,
    /// Entries of the newest file made durable.
    pub(crate) entry_count: u32,
}

impl Checkpoint {
    pub(crate) fn encode(&self) -> [u8; CHECKPOINT_LEN] {
        let mut b = [0u8; CHECKPOINT_LEN];
        b[0..4].copy_from_slice(&CHECKPOINT_MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[8..16].copy_from_slice(&self.next.to_le_bytes());
        b[16..24].copy_from_slice(&self.file_start.to_le_bytes());
        b[24..28].copy_from_slice(&self.entry_count.to_le_bytes());
        let crc = crc32fast::hash(&b[..CHECKPOINT_CRC_AT]);
        b[CHECKPOINT_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() != CHECKPOINT_LEN {
            return Err("wrong length");
        }
        if b[0..4] != CHECKPOINT_MAGIC {
            return Err("bad magic");
        }
        if u16_at(b, 4) != VERSION {
            return Err("unknown version");
        }
        if crc32fast::hash(&b[..CHECKPOINT_CRC_AT]) != u32_at(b, CHECKPOINT_CRC_AT) {
            return Err("checksum mismatch");
        }
        Ok(Self {
            next: u64_at(b, 8),
            file_start: u64_at(b, 16),
            entry_count: u32_at(b, 24),
        })
    }
}

/// The hash of `key` under `topic`: 64-bit FNV-1a over topic, a separator byte that UTF-8
/// never holds, and key, folded to 32 bits. Stored on disk: never change it.
pub(crate) fn key_hash(topic: &str, key: &str) -> u32 {
    const BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let step = |h: u64, b: &u8| (h ^ u64::from(*b)).wrapping_mul(PRIME);
    let h = topic.as_bytes().iter().fold(BASIS, step);
    let h = key.as_bytes().iter().fold(step(h, &0xFF), step);
    (h ^ (h >> 32)) as u32
}

/// `<dir>/<start, 20 digits>.kix`.
pub(crate) fn file_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:020}{SUFFIX}"))
}

/// The start offset an index file's name carries.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut r = [0u8; 4];
    r.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(r)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut r = [0u8; 8];
    r.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(r)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_a_flipped_bit_is_caught() {
        let mut h = Header::empty(16, 100, 4096);
        h.entry_count = 3;
        h.end_phys = 9000;
        h.min_ts = 5;
        h.max_ts = 7;
        let mut b = h.encode();
        assert_eq!(Header::decode(&b).unwrap(), h);
        b[33] ^= 1;
        assert!(Header::decode(&b).is_err());
    }

    #[test]
    fn checkpoint_round_trips_and_a_torn_one_is_refused() {
        let c = Checkpoint {
            next: 77,
            file_start: NO_FILE,
            entry_count: 0,
        };
        let b = c.encode();
        assert_eq!(Checkpoint::decode(&b).unwrap(), c);
        assert!(Checkpoint::decode(&b[..20]).is_err());
    }

    #[test]
    fn the_hash_separates_topic_from_key_and_names_round_trip() {
        assert_ne!(key_hash("ab", "c"), key_hash("a", "bc"));
        assert_eq!(key_hash("t", "k"), key_hash("t", "k"));
        let p = file_path(Path::new("/x"), 123);
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_file_name(name), Some(123));
        assert_eq!(parse_file_name("123.kix"), None);
    }
}
