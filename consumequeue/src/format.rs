//! On-disk format of consume-queue segments. Pure: no I/O.
//!
//! A queue lives in `<data>/consumequeue/<topic>/<queue id>/`. It is a sequence of segment
//! files, each holding a fixed number of entries (the segment's capacity, recovered from its
//! length on open). A segment is named after the logical offset of its first entry as 20
//! zero-padded decimal digits plus a version suffix: `00000000000000300000.cq1`.
//!
//! Segments have no header: entry `n` of the queue sits at byte `20 * (n - base)` of the
//! segment whose base is the greatest one `<= n`, so a lookup is pure arithmetic. The format
//! version lives in the file name suffix (`.cq1`) so that a future layout can coexist with, or
//! be refused next to, this one without a header read.
//!
//! Entry layout (little endian):
//!
//! | offset | size | field             | meaning                                         |
//! |-------:|-----:|-------------------|-------------------------------------------------|
//! | 0      | 8    | `physical_offset` | commit-log offset of the record                 |
//! | 8      | 4    | `size`            | encoded record size in bytes, always > 0         |
//! | 12     | 8    | `tag_hash`        | 64-bit hash of the record's tag, 0 = no tag      |
//!
//! Files are preallocated (sparse) to full size, so unwritten slots read as zeros. An all-zero
//! entry is an empty slot; a real entry never is, because its size is never zero. Recovery
//! finds the end of a queue as the first empty slot.

use std::path::Path;

/// Bytes per entry.
pub const ENTRY_SIZE: usize = 20;
/// Offset of the physical-offset field.
pub const PHYSICAL_OFFSET_AT: usize = 0;
/// Offset of the size field.
pub const SIZE_AT: usize = 8;
/// Offset of the tag-hash field.
pub const TAG_HASH_AT: usize = 12;
/// Format version, recorded as the file-name suffix.
pub const VERSION: u8 = 1;
/// File-name suffix of version-1 segments.
pub const SEGMENT_SUFFIX: &str = ".cq1";
/// Digits of the base offset in a segment file name.
pub const NAME_DIGITS: usize = 20;

const _: () = assert!(TAG_HASH_AT + 8 == ENTRY_SIZE);
const _: () = assert!(SIZE_AT + 4 == TAG_HASH_AT);
const _: () = assert!(PHYSICAL_OFFSET_AT + 8 == SIZE_AT);

/// One consume-queue entry: where a record lives in the commit log and its tag hash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Entry {
    /// Commit-log offset of the record.
    pub physical_offset: u64,
    /// Encoded record size in bytes.
    pub size: u32,
    /// Hash of the record's tag; 0 when it has none.
    pub tag_hash: u64,
}

impl Entry {
    /// Whether these bytes are an unwritten slot.
    pub fn is_empty_slot(bytes: &[u8; ENTRY_SIZE]) -> bool {
        bytes.iter().all(|b| *b == 0)
    }

    /// Encodes to the on-disk layout.
    pub fn encode(&self) -> [u8; ENTRY_SIZE] {
        let mut out = [0u8; ENTRY_SIZE];
        out[PHYSICAL_OFFSET_AT..SIZE_AT].copy_from_slice(&self.physical_offset.to_le_bytes());
        out[SIZE_AT..TAG_HASH_AT].copy_from_slice(&self.size.to_le_bytes());
        out[TAG_HASH_AT..ENTRY_SIZE].copy_from_slice(&self.tag_hash.to_le_bytes());
        out
    }

    /// Decodes the on-disk layout. Every bit pattern is a valid entry; callers check for the
    /// empty slot with [`Entry::is_empty_slot`] first.
    pub fn decode(bytes: &[u8; ENTRY_SIZE]) -> Self {
        let mut p = [0u8; 8];
        p.copy_from_slice(&bytes[PHYSICAL_OFFSET_AT..SIZE_AT]);
        let mut s = [0u8; 4];
        s.copy_from_slice(&bytes[SIZE_AT..TAG_HASH_AT]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&bytes[TAG_HASH_AT..ENTRY_SIZE]);
        Self {
            physical_offset: u64::from_le_bytes(p),
            size: u32::from_le_bytes(s),
            tag_hash: u64::from_le_bytes(t),
        }
    }

    /// End of the record in the commit log (exclusive).
    pub fn physical_end(&self) -> u64 {
        self.physical_offset.saturating_add(u64::from(self.size))
    }
}

/// File name of the segment whose first entry has logical offset `base`.
pub fn segment_file_name(base: u64) -> String {
    format!("{base:0width$}{SEGMENT_SUFFIX}", width = NAME_DIGITS)
}

/// What a file name in a queue folder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A current-version segment starting at this logical offset.
    Segment(u64),
    /// Looks like a segment of another format version.
    OtherVersion,
    /// Not ours (temp files, editor droppings); ignored.
    Unrelated,
}

/// Classifies a file name found in a queue folder.
pub fn parse_file_name(path: &Path) -> FileKind {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return FileKind::Unrelated;
    };
    let Some((digits, rest)) = name.split_at_checked(NAME_DIGITS) else {
        return FileKind::Unrelated;
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return FileKind::Unrelated;
    }
    if rest == SEGMENT_SUFFIX {
        return digits
            .parse::<u64>()
            .map_or(FileKind::Unrelated, FileKind::Segment);
    }
    if rest.starts_with(".cq") {
        FileKind::OtherVersion
    } else {
        FileKind::Unrelated
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn file_names_round_trip() {
        let name = segment_file_name(300_000);
        assert_eq!(name, "00000000000000300000.cq1");
        assert_eq!(
            parse_file_name(Path::new(&name)),
            FileKind::Segment(300_000)
        );
        assert_eq!(
            parse_file_name(Path::new("00000000000000000000.cq2")),
            FileKind::OtherVersion
        );
        assert_eq!(parse_file_name(Path::new("x.tmp")), FileKind::Unrelated);
        assert_eq!(parse_file_name(Path::new("é")), FileKind::Unrelated);
    }

    #[test]
    fn zero_entry_is_empty_slot() {
        assert!(Entry::is_empty_slot(&[0; ENTRY_SIZE]));
        let e = Entry {
            physical_offset: 0,
            size: 1,
            tag_hash: 0,
        };
        assert!(!Entry::is_empty_slot(&e.encode()));
    }

    proptest! {
        #[test]
        fn entry_round_trips(p in any::<u64>(), s in any::<u32>(), t in any::<u64>()) {
            let e = Entry { physical_offset: p, size: s, tag_hash: t };
            prop_assert_eq!(Entry::decode(&e.encode()), e);
        }
    }
}
