//! Replica mode: appending a master's raw records at their own offsets, sealing a segment
//! when the master says so, and the master's side, reading raw byte ranges to send.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::format::{classify, FormatError, RecordView, Slot};
use crate::shared::{lock, Inner};
use crate::sys::Mapping;
use crate::{Error, PhysicalOffset};

/// Whole records of the log, as stored, borrowed from the segment mapping (zero copy; the
/// mapping stays alive while the chunk lives).
#[derive(Clone)]
pub struct RawChunk {
    map: Option<Arc<Mapping>>,
    offset: PhysicalOffset,
    pos: usize,
    len: usize,
    seal: bool,
}

impl std::fmt::Debug for RawChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawChunk")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("seal", &self.seal)
            .finish()
    }
}

impl RawChunk {
    /// Where the first byte belongs in the log.
    pub fn offset(&self) -> PhysicalOffset {
        self.offset
    }
    /// The records' bytes (possibly empty).
    pub fn bytes(&self) -> &[u8] {
        self.map
            .as_ref()
            .and_then(|m| m.bytes(self.pos, self.pos + self.len))
            .unwrap_or(&[])
    }
    /// The segment ends right after these bytes: the next chunk starts a new segment.
    pub fn seal(&self) -> bool {
        self.seal
    }
    /// Offset right after the chunk (the next segment's start when sealed).
    pub fn end(&self, segment_size: u64) -> PhysicalOffset {
        if self.seal {
            let next = (self.offset.get() / segment_size + 1) * segment_size;
            PhysicalOffset::new(next)
        } else {
            PhysicalOffset::new(self.offset.get() + self.len as u64)
        }
    }
}

impl Inner {
    /// Appends whole records written elsewhere at `at`, all or nothing: `at` must be the
    /// write offset, every record must pass its CRC, carry its own offset and end inside
    /// the active segment. Returns the new end.
    pub(crate) fn append_raw(&self, at: u64, bytes: &[u8]) -> Result<u64, Error> {
        let seg_size = self.cfg.segment_size_bytes as usize;
        let mut w = lock(&self.writer);
        self.check_poison()?;
        let expected = self.write_offset.load(Ordering::SeqCst);
        if at != expected {
            return Err(Error::ReplicaOffsetMismatch {
                expected: PhysicalOffset::new(expected),
                got: PhysicalOffset::new(at),
            });
        }
        let seg_start = w.seg.start;
        let mut count = 0;
        let mut i = 0;
        while i < bytes.len() {
            let offset = at + i as u64;
            let corrupt = |reason| Error::format(seg_start, PhysicalOffset::new(offset), reason);
            let view = match classify(&bytes[i..]) {
                Ok(Slot::Record(v)) => v,
                Ok(Slot::EndOfSegment) => return Err(corrupt(FormatError::EndOfSegment)),
                Ok(Slot::Unwritten) => return Err(corrupt(FormatError::Unwritten)),
                Err(e) => return Err(corrupt(e)),
            };
            let len = view.total_len() as usize;
            if view.physical_offset() != offset {
                return Err(corrupt(FormatError::BadLength {
                    total_len: view.total_len(),
                    reason: "record stored at another offset",
                }));
            }
            if w.pos + i + len > seg_size {
                return Err(Error::RecordStraddlesSegment {
                    segment: seg_start,
                    offset: PhysicalOffset::new(offset),
                    len: len as u64,
                });
            }
            i += len;
            count += 1;
        }
        if bytes.is_empty() {
            return Ok(at);
        }
        let start = w.pos;
        let Some(dst) = w.map.unpublished_mut(start, start + bytes.len()) else {
            return Err(Error::RecordStraddlesSegment {
                segment: seg_start,
                offset: PhysicalOffset::new(at),
                len: bytes.len() as u64,
            });
        };
        dst.copy_from_slice(bytes);
        w.pos += bytes.len();
        let end_pos = w.pos;
        w.map.publish(end_pos);
        let end = seg_start.get() + end_pos as u64;
        self.write_offset.store(end, Ordering::SeqCst);
        drop(w);
        self.after_append(end, count);
        Ok(end)
    }

    /// Ends the active segment at `at` (the write offset) with this log's own
    /// end-of-segment marker and continues in the next one, as the master did.
    pub(crate) fn seal_segment(&self, at: u64) -> Result<u64, Error> {
        let mut w = lock(&self.writer);
        self.check_poison()?;
        let expected = self.write_offset.load(Ordering::SeqCst);
        if at != expected {
            return Err(Error::ReplicaOffsetMismatch {
                expected: PhysicalOffset::new(expected),
                got: PhysicalOffset::new(at),
            });
        }
        self.ensure_spares(&mut w, 1)?;
        self.roll(&mut w)?;
        let end = w.seg.start.get();
        self.write_offset.store(end, Ordering::SeqCst);
        Ok(end)
    }

    /// Whole records from `from` (a record boundary) up to `until` and the write offset,
    /// about `max_bytes` (at least one record when there is one), never crossing a
    /// segment end; `seal` when the segment ends at `from + len`.
    pub(crate) fn raw_chunk(
        &self,
        from: u64,
        until: u64,
        max_bytes: usize,
    ) -> Result<RawChunk, Error> {
        let write = self.write_offset.load(Ordering::SeqCst);
        let min = self.min_offset.load(Ordering::SeqCst);
        let off = PhysicalOffset::new(from);
        if from < min {
            return Err(Error::OffsetUnavailable {
                requested: off,
                min: PhysicalOffset::new(min),
            });
        }
        if from > write {
            return Err(Error::OffsetNotWritten {
                requested: off,
                end: PhysicalOffset::new(write),
            });
        }
        let empty = RawChunk {
            map: None,
            offset: off,
            pos: 0,
            len: 0,
            seal: false,
        };
        let hard_end = write.min(until);
        let Some(seg) = self.segment_for(from) else {
            return Ok(empty);
        };
        let pos = (from - seg.start.get()) as usize;
        let published = seg.map.published();
        let limit = (hard_end.min(seg.end()) - seg.start.get()) as usize;
        let mut p = pos;
        let mut seal = false;
        while p < limit.min(published) {
            let buf = seg.map.bytes(p, published).unwrap_or(&[]);
            if buf.len() < crate::format::END_OF_SEGMENT_LEN {
                seal = true;
                break;
            }
            match RecordView::decode_unchecked_crc(buf) {
                Ok(v) => {
                    let len = v.total_len() as usize;
                    if p + len > limit || (p > pos && p + len - pos > max_bytes) {
                        break;
                    }
                    p += len;
                }
                Err(FormatError::EndOfSegment) => {
                    seal = true;
                    break;
                }
                Err(e) => {
                    return Err(Error::format(
                        seg.start,
                        PhysicalOffset::new(seg.start.get() + p as u64),
                        e,
                    ))
                }
            }
        }
        // A segment filled to its last byte carries no marker; the next record cannot fit.
        if p == seg.size() as usize {
            seal = true;
        }
        Ok(RawChunk {
            map: Some(Arc::clone(&seg.map)),
            offset: off,
            pos,
            len: p - pos,
            seal,
        })
    }
}
