//! HA stream frames between brokers (binary, little-endian; `../shared/cluster.md` §2).
//!
//! Every frame starts:
//!
//! | off | size | field                                                        |
//! |----:|-----:|--------------------------------------------------------------|
//! |   0 |    4 | `len` u32: bytes after this field                            |
//! |   4 |    2 | `magic` u16 [`MAGIC`] ("FH")                                 |
//! |   6 |    1 | `version` u8 = [`VERSION`]                                   |
//! |   7 |    1 | `kind` u8 ([`Kind`])                                         |
//!
//! Bodies, offsets from the frame start (u64 unless said otherwise):
//! - Hello (replica → master): 8 `ack_mode` u8 (0 received, 1 durable), 12 `segment_size`
//!   u32, 16 `broker_id`, 24 `nonce_c` (32 bytes), 56 `last_epoch`, 64
//!   `last_epoch_master`, 72 `end_offset`, 80 `min_offset`.
//! - Challenge (master → replica): 8 `broker_id`, 16 `nonce_s` (32), 48 `epoch`, 56
//!   `write_offset`, 64 `min_offset`, 72 `confirm`, 80 `segment_size` u32, 84 `k` u32,
//!   88 `k` epoch entries of 24 bytes, then a u16-prefixed client address, then `mac_s` (32).
//! - Proof (replica → master): 8 `start_offset` (`u64::MAX`: refused), 16 `mac_c` (32).
//! - Verdict (master → replica): 8 `code` u16, 12 `epoch`, 20 `stream_from`, 28.. reason.
//! - Data (master → replica): 8 `offset`, 16 `epoch`, 24 `epoch_start`, 32 `confirm`,
//!   40 `flags` u16 (bit 0 SEAL), 48.. whole records exactly as stored.
//! - Ack (replica → master): 8 `received`, 16 `durable`, 24 `epoch`.
//! - State (master → replica, heartbeat): 8 `epoch`, 16 `write_offset`, 24 `confirm`.

use std::io::{self, IoSlice, Read, Write};

/// "FH".
pub(crate) const MAGIC: u16 = 0x4846;
/// Frame layout version.
pub(crate) const VERSION: u8 = 1;
/// Bytes of the common header, `len` included.
pub(crate) const HEADER_LEN: usize = 8;
/// Largest `len` accepted: a Data frame of one maximal record, with room to spare.
pub(crate) const MAX_LEN: usize = 16 << 20;
/// Fixed part of a Data frame.
pub(crate) const DATA_HEADER_LEN: usize = 48;
/// Data flag: the segment ends after this frame's records.
pub(crate) const FLAG_SEAL: u16 = 1;

/// Frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Hello = 1,
    Challenge = 2,
    Proof = 3,
    Verdict = 4,
    Data = 5,
    Ack = 6,
    State = 7,
}

impl TryFrom<u8> for Kind {
    type Error = io::Error;
    fn try_from(v: u8) -> io::Result<Kind> {
        Ok(match v {
            1 => Kind::Hello,
            2 => Kind::Challenge,
            3 => Kind::Proof,
            4 => Kind::Verdict,
            5 => Kind::Data,
            6 => Kind::Ack,
            7 => Kind::State,
            other => return Err(bad(format!("unknown HA frame kind {other}"))),
        })
    }
}

pub(crate) fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A whole frame: its kind and all its bytes (header included, so offsets match the tables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) kind: Kind,
    pub(crate) bytes: Vec<u8>,
}

impl Frame {
    /// A frame of `kind` with `body_len` zero bytes after the header, to fill with `put_*`.
    pub(crate) fn new(kind: Kind, body_len: usize) -> Frame {
        let mut bytes = vec![0u8; HEADER_LEN + body_len];
        let len = u32::try_from(bytes.len() - 4).unwrap_or(u32::MAX);
        bytes[0..4].copy_from_slice(&len.to_le_bytes());
        bytes[4..6].copy_from_slice(&MAGIC.to_le_bytes());
        bytes[6] = VERSION;
        bytes[7] = kind as u8;
        Frame { kind, bytes }
    }

    /// Appends bytes, growing `len`.
    pub(crate) fn extend(&mut self, more: &[u8]) {
        self.bytes.extend_from_slice(more);
        let len = u32::try_from(self.bytes.len() - 4).unwrap_or(u32::MAX);
        self.bytes[0..4].copy_from_slice(&len.to_le_bytes());
    }

    pub(crate) fn put_u64(&mut self, at: usize, v: u64) {
        self.bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn put_u32(&mut self, at: usize, v: u32) {
        self.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn put_u16(&mut self, at: usize, v: u16) {
        self.bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }

    /// The field at `at`; a frame too short for it is an error, never a panic.
    pub(crate) fn u64_at(&self, at: usize) -> io::Result<u64> {
        let b = self.slice(at, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    pub(crate) fn u32_at(&self, at: usize) -> io::Result<u32> {
        let b = self.slice(at, 4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(u32::from_le_bytes(a))
    }
    pub(crate) fn u16_at(&self, at: usize) -> io::Result<u16> {
        let b = self.slice(at, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub(crate) fn slice(&self, at: usize, len: usize) -> io::Result<&[u8]> {
        at.checked_add(len)
            .and_then(|end| self.bytes.get(at..end))
            .ok_or_else(|| bad(format!("{:?} frame too short", self.kind)))
    }

    pub(crate) fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.bytes)
    }
}

/// Writes a Data frame: the fixed part, then `records` straight from the mapping.
pub(crate) fn write_data(
    w: &mut impl Write,
    head: [u64; 4],
    flags: u16,
    records: &[u8],
) -> io::Result<()> {
    let mut f = Frame::new(Kind::Data, DATA_HEADER_LEN - HEADER_LEN);
    for (i, v) in head.iter().enumerate() {
        f.put_u64(8 + 8 * i, *v);
    }
    f.put_u16(40, flags);
    let len = u32::try_from(f.bytes.len() - 4 + records.len())
        .map_err(|_| bad("data frame too large"))?;
    f.put_u32(0, len);
    let mut bufs = [IoSlice::new(&f.bytes), IoSlice::new(records)];
    let mut bufs = &mut bufs[..];
    while !bufs.is_empty() {
        let n = w.write_vectored(bufs)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

/// Reads one frame, checking magic, version, kind and length.
pub(crate) fn read_frame(r: &mut impl Read) -> io::Result<Frame> {
    let mut head = [0u8; HEADER_LEN];
    r.read_exact(&mut head)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if !(HEADER_LEN - 4..=MAX_LEN).contains(&len) {
        return Err(bad(format!("HA frame length {len} out of range")));
    }
    if u16::from_le_bytes([head[4], head[5]]) != MAGIC {
        return Err(bad("not an HA frame (bad magic)"));
    }
    if head[6] != VERSION {
        return Err(bad(format!("HA frame version {} not spoken here", head[6])));
    }
    let kind = Kind::try_from(head[7])?;
    let mut bytes = vec![0u8; 4 + len];
    bytes[..HEADER_LEN].copy_from_slice(&head);
    r.read_exact(&mut bytes[HEADER_LEN..])?;
    Ok(Frame { kind, bytes })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_refused() {
        let mut f = Frame::new(Kind::Ack, 24);
        f.put_u64(8, 7);
        f.put_u64(16, 5);
        f.put_u64(24, 3);
        let mut wire = Vec::new();
        f.write_to(&mut wire).unwrap();
        let back = read_frame(&mut &wire[..]).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.u64_at(8).unwrap(), 7);
        assert!(back.u64_at(28).is_err());
        let mut data = Vec::new();
        write_data(&mut data, [1, 2, 3, 4], FLAG_SEAL, b"records").unwrap();
        let d = read_frame(&mut &data[..]).unwrap();
        assert_eq!(
            (d.kind, d.u64_at(16).unwrap(), d.u16_at(40).unwrap()),
            (Kind::Data, 2, 1)
        );
        assert_eq!(&d.bytes[DATA_HEADER_LEN..], b"records");
        for i in 4..8 {
            let mut broken = wire.clone();
            broken[i] ^= 0xFF;
            assert!(read_frame(&mut &broken[..]).is_err(), "byte {i}");
        }
        let mut huge = wire.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_frame(&mut &huge[..]).is_err());
        assert!(read_frame(&mut &wire[..wire.len() - 1]).is_err());
    }
}
