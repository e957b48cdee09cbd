//! The epoch file: which master wrote which range of the log. Pure: no I/O.
//!
//! | offset   | size | field               | notes                                        |
//! |---------:|-----:|---------------------|----------------------------------------------|
//! |        0 |    4 | `magic` u32         | [`EPOCH_MAGIC`]                              |
//! |        4 |    1 | `version` u8        | [`EPOCH_VERSION`]                            |
//! |        5 |    3 | reserved            | 0                                            |
//! |        8 |    4 | `count` u32         | entries                                      |
//! |       12 |    4 | `crc` u32           | CRC32 of bytes `0..12` and all entries       |
//! | 16+24·i  |    8 | `epoch` u64         | strictly increasing                          |
//! |       +8 |    8 | `start_offset` u64  | first byte of the epoch; strictly increasing |
//! |      +16 |    8 | `master_id` u64     | broker that opened it                        |

use super::FormatError;

/// Identifies an epoch file.
pub const EPOCH_MAGIC: u32 = 0xF3E0_E90C;
/// Version of the epoch-file layout written by this code.
pub const EPOCH_VERSION: u8 = 1;
/// Size of the fixed header.
pub const EPOCH_HEADER_LEN: usize = 16;
/// Size of one entry.
pub const EPOCH_ENTRY_LEN: usize = 24;
const COUNT_AT: usize = 8;
const CRC_AT: usize = 12;
const _: () = assert!(CRC_AT + 4 == EPOCH_HEADER_LEN);

/// One master's reign: it wrote every byte from `start_offset` up to the next entry's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EpochEntry {
    /// The epoch number.
    pub epoch: u64,
    /// First byte of the log written in this epoch.
    pub start_offset: u64,
    /// Broker that opened the epoch.
    pub master_id: u64,
}

/// The file's bytes for `entries` (which the caller keeps ordered).
pub fn encode_epochs(entries: &[EpochEntry]) -> Vec<u8> {
    let mut b = vec![0u8; EPOCH_HEADER_LEN + EPOCH_ENTRY_LEN * entries.len()];
    b[0..4].copy_from_slice(&EPOCH_MAGIC.to_le_bytes());
    b[4] = EPOCH_VERSION;
    let count = u32::try_from(entries.len()).unwrap_or(u32::MAX);
    b[COUNT_AT..COUNT_AT + 4].copy_from_slice(&count.to_le_bytes());
    for (i, e) in entries.iter().enumerate() {
        let at = EPOCH_HEADER_LEN + EPOCH_ENTRY_LEN * i;
        b[at..at + 8].copy_from_slice(&e.epoch.to_le_bytes());
        b[at + 8..at + 16].copy_from_slice(&e.start_offset.to_le_bytes());
        b[at + 16..at + 24].copy_from_slice(&e.master_id.to_le_bytes());
    }
    let crc = epochs_crc(&b);
    b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    b
}

fn epochs_crc(b: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&b[..CRC_AT]);
    h.update(&b[EPOCH_HEADER_LEN..]);
    h.finalize()
}

/// Decodes an epoch file, checking its CRC and that epochs and starts strictly increase.
///
/// # Errors
/// A [`FormatError`] when the bytes are not a valid epoch file; never panics.
pub fn decode_epochs(b: &[u8]) -> Result<Vec<EpochEntry>, FormatError> {
    if b.len() < EPOCH_HEADER_LEN {
        return Err(FormatError::Truncated {
            needed: EPOCH_HEADER_LEN,
            available: b.len(),
        });
    }
    let magic = u32_at(b, 0);
    if magic != EPOCH_MAGIC {
        return Err(FormatError::BadMagic { found: magic });
    }
    if b[4] != EPOCH_VERSION {
        return Err(FormatError::UnsupportedVersion { found: b[4] });
    }
    let count = u32_at(b, COUNT_AT);
    let needed = (count as usize)
        .checked_mul(EPOCH_ENTRY_LEN)
        .and_then(|n| n.checked_add(EPOCH_HEADER_LEN))
        .ok_or(FormatError::BadLength {
            total_len: count,
            reason: "epoch count overflows",
        })?;
    if b.len() != needed {
        return Err(FormatError::Truncated {
            needed,
            available: b.len(),
        });
    }
    let expected = u32_at(b, CRC_AT);
    let actual = epochs_crc(b);
    if expected != actual {
        return Err(FormatError::ChecksumMismatch { expected, actual });
    }
    let mut out: Vec<EpochEntry> = Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        let at = EPOCH_HEADER_LEN + EPOCH_ENTRY_LEN * i;
        let e = EpochEntry {
            epoch: u64_at(b, at),
            start_offset: u64_at(b, at + 8),
            master_id: u64_at(b, at + 16),
        };
        if let Some(prev) = out.last() {
            if e.epoch <= prev.epoch || e.start_offset <= prev.start_offset {
                return Err(FormatError::BadLength {
                    total_len: count,
                    reason: "epoch entries out of order",
                });
            }
        }
        out.push(e);
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn e(epoch: u64, start_offset: u64, master_id: u64) -> EpochEntry {
        EpochEntry {
            epoch,
            start_offset,
            master_id,
        }
    }

    #[test]
    fn epoch_file_round_trips() {
        for entries in [vec![], vec![e(1, 0, 7)], vec![e(1, 0, 7), e(3, 900, 8)]] {
            let b = encode_epochs(&entries);
            assert_eq!(decode_epochs(&b).unwrap(), entries);
        }
    }

    #[test]
    fn damaged_epoch_files_are_refused() {
        let good = encode_epochs(&[e(1, 0, 7), e(2, 100, 8)]);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            assert!(decode_epochs(&bad).is_err(), "flipped byte {i} accepted");
        }
        assert!(decode_epochs(&good[..good.len() - 1]).is_err());
        let mut huge = good.clone();
        huge[COUNT_AT..COUNT_AT + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_epochs(&huge).is_err());
    }

    #[test]
    fn entries_out_of_order_are_refused() {
        let b = encode_epochs(&[e(2, 0, 7), e(2, 100, 8)]);
        assert!(decode_epochs(&b).is_err());
        let b = encode_epochs(&[e(1, 100, 7), e(2, 100, 8)]);
        assert!(decode_epochs(&b).is_err());
    }
}
