//! Checkpoint, clean-shutdown and truncation-intent files: one offset, self-checking.

use super::FormatError;

/// Identifies a meta file.
pub const META_MAGIC: u32 = 0xF3E0_C4EC;
/// Version of the meta layout written by this code.
pub const META_VERSION: u8 = 1;
/// Size of a meta file.
pub const META_LEN: usize = 20;
const KIND_AT: usize = 5;
const OFFSET_AT: usize = 8;
const CRC_AT: usize = 16;
const _: () = assert!(CRC_AT + 4 == META_LEN);

/// Which file a [`Meta`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKind {
    /// Everything below `offset` was durable when written; recovery scans from here.
    Checkpoint,
    /// The log was closed cleanly with its end at `offset`; recovery may skip the scan.
    CleanShutdown,
    /// A truncation to `offset` began; every open finishes it before scanning.
    Truncate,
}

impl TryFrom<u8> for MetaKind {
    type Error = FormatError;
    fn try_from(v: u8) -> Result<Self, FormatError> {
        match v {
            1 => Ok(MetaKind::Checkpoint),
            2 => Ok(MetaKind::CleanShutdown),
            3 => Ok(MetaKind::Truncate),
            _ => Err(FormatError::BadLength {
                total_len: u32::from(v),
                reason: "unknown meta kind",
            }),
        }
    }
}

impl From<MetaKind> for u8 {
    fn from(k: MetaKind) -> u8 {
        match k {
            MetaKind::Checkpoint => 1,
            MetaKind::CleanShutdown => 2,
            MetaKind::Truncate => 3,
        }
    }
}

/// Content of a checkpoint or clean-shutdown file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Which file this is.
    pub kind: MetaKind,
    /// The durable end (checkpoint) or the log's end (clean shutdown).
    pub offset: u64,
}

impl Meta {
    /// The file's bytes, CRC included.
    pub fn encode(&self) -> [u8; META_LEN] {
        let mut b = [0u8; META_LEN];
        b[0..4].copy_from_slice(&META_MAGIC.to_le_bytes());
        b[4] = META_VERSION;
        b[KIND_AT] = u8::from(self.kind);
        b[OFFSET_AT..OFFSET_AT + 8].copy_from_slice(&self.offset.to_le_bytes());
        let crc = crc32fast::hash(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// # Errors
    /// A [`FormatError`] when the bytes are not a valid meta file.
    pub fn decode(b: &[u8]) -> Result<Meta, FormatError> {
        if b.len() != META_LEN {
            return Err(FormatError::Truncated {
                needed: META_LEN,
                available: b.len(),
            });
        }
        let magic = u32_at(b, 0);
        if magic != META_MAGIC {
            return Err(FormatError::BadMagic { found: magic });
        }
        if b[4] != META_VERSION {
            return Err(FormatError::UnsupportedVersion { found: b[4] });
        }
        let expected = u32_at(b, CRC_AT);
        let actual = crc32fast::hash(&b[..CRC_AT]);
        if expected != actual {
            return Err(FormatError::ChecksumMismatch { expected, actual });
        }
        Ok(Meta {
            kind: MetaKind::try_from(b[KIND_AT])?,
            offset: u64_at(b, OFFSET_AT),
        })
    }
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(a)
}
