//! Zero-copy reads: record handles that keep the segment mapping alive, and iteration.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::format::{classify, FormatError, RecordView, Slot};
use crate::segment::Segment;
use crate::shared::Inner;
use crate::sys::Mapping;
use crate::{Error, PhysicalOffset};

/// A CRC-checked record in the log. Cloning is cheap; the bytes stay valid (the segment
/// stays mapped) as long as any handle lives, even after retention removed the file.
#[derive(Clone)]
pub struct RecordRef {
    map: Arc<Mapping>,
    offset: PhysicalOffset,
    pos: usize,
    len: usize,
}

impl fmt::Debug for RecordRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordRef")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish()
    }
}

impl RecordRef {
    /// Where the record starts in the log.
    pub fn offset(&self) -> PhysicalOffset {
        self.offset
    }

    /// The whole encoded record (see [`crate::format`]).
    pub fn bytes(&self) -> &[u8] {
        // Validated when the handle was made; published bytes never become unavailable.
        self.map.bytes(self.pos, self.pos + self.len).unwrap_or(&[])
    }

    /// The decoded fields (already CRC-checked when the handle was made).
    pub fn view(&self) -> RecordView<'_> {
        match RecordView::decode_unchecked_crc(self.bytes()) {
            Ok(v) => v,
            // Unreachable: the bytes decoded when the handle was made and cannot change.
            Err(_) => RecordView::empty(),
        }
    }

    /// Encoded size in bytes.
    pub fn size(&self) -> u32 {
        u32::try_from(self.len).unwrap_or(u32::MAX)
    }

    /// Offset of the slot right after this record.
    pub fn next_offset(&self) -> PhysicalOffset {
        PhysicalOffset::new(self.offset.get() + self.len as u64)
    }
}

/// What lies at an offset.
enum At {
    Record(RecordRef),
    /// End-of-segment marker: continue at this offset.
    Skip(u64),
}

impl Inner {
    fn check_readable(&self, offset: u64) -> Result<u64, Error> {
        let min = self.min_offset.load(Ordering::SeqCst);
        if offset < min {
            return Err(Error::OffsetUnavailable {
                requested: PhysicalOffset::new(offset),
                min: PhysicalOffset::new(min),
            });
        }
        let visible = self.visible_offset();
        if offset >= visible {
            return Err(Error::OffsetNotWritten {
                requested: PhysicalOffset::new(offset),
                end: PhysicalOffset::new(visible),
            });
        }
        Ok(visible)
    }

    fn read_at(&self, seg: &Arc<Segment>, offset: u64, visible: u64) -> Result<At, Error> {
        let pos = (offset - seg.start.get()) as usize;
        let limit = (visible.min(seg.end()) - seg.start.get()) as usize;
        let off = PhysicalOffset::new(offset);
        let buf = seg.map.bytes(pos, limit).ok_or(Error::OffsetNotWritten {
            requested: off,
            end: PhysicalOffset::new(visible),
        })?;
        match classify(buf).map_err(|e| Error::format(seg.start, off, e))? {
            Slot::Record(view) => {
                if view.physical_offset() != offset {
                    let reason = FormatError::BadLength {
                        total_len: view.total_len(),
                        reason: "record stored at another offset",
                    };
                    return Err(Error::Corrupted {
                        segment: seg.start,
                        offset: off,
                        reason,
                    });
                }
                let len = view.total_len() as usize;
                Ok(At::Record(RecordRef {
                    map: Arc::clone(&seg.map),
                    offset: off,
                    pos,
                    len,
                }))
            }
            Slot::EndOfSegment => Ok(At::Skip(seg.end())),
            Slot::Unwritten => Err(Error::Corrupted {
                segment: seg.start,
                offset: off,
                reason: FormatError::Unwritten,
            }),
        }
    }

    pub(crate) fn read(&self, offset: PhysicalOffset) -> Result<RecordRef, Error> {
        let visible = self.check_readable(offset.get())?;
        let seg = self
            .segment_for(offset.get())
            .ok_or(Error::OffsetUnavailable {
                requested: offset,
                min: PhysicalOffset::new(self.min_offset.load(Ordering::SeqCst)),
            })?;
        match self.read_at(&seg, offset.get(), visible)? {
            At::Record(r) => Ok(r),
            At::Skip(_) => Err(Error::Corrupted {
                segment: seg.start,
                offset,
                reason: FormatError::EndOfSegment,
            }),
        }
    }
}

/// Reads records at chosen offsets, keeping the segment of the last read: a batch of
/// reads that mostly hit one segment (a pull) takes the segment-list lock once, not per
/// record. Each read is checked exactly like [`crate::CommitLog::read`].
pub struct Reader<'a> {
    inner: &'a Inner,
    seg: Option<Arc<Segment>>,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(inner: &'a Inner) -> Self {
        Reader { inner, seg: None }
    }

    /// Reads the record at `offset`, checking its CRC. Zero copy.
    ///
    /// # Errors
    /// As [`crate::CommitLog::read`].
    pub fn read(&mut self, offset: PhysicalOffset) -> Result<RecordRef, Error> {
        let at = offset.get();
        // Below the minimum fails here, so a cached segment removed by retention is never
        // read from (its mapping would still be valid memory).
        let visible = self.inner.check_readable(at)?;
        let cached = self
            .seg
            .as_ref()
            .is_some_and(|s| s.start.get() <= at && at < s.end());
        if !cached {
            self.seg = self.inner.segment_for(at);
        }
        let Some(seg) = &self.seg else {
            return Err(Error::OffsetUnavailable {
                requested: offset,
                min: PhysicalOffset::new(self.inner.min_offset.load(Ordering::SeqCst)),
            });
        };
        match self.inner.read_at(seg, at, visible)? {
            At::Record(r) => Ok(r),
            At::Skip(_) => Err(Error::Corrupted {
                segment: seg.start,
                offset,
                reason: FormatError::EndOfSegment,
            }),
        }
    }
}

/// Iterates records from an offset to the visible end (re-read on every step, so an
/// iterator can be resumed after more data arrives). Stops after the first error.
pub struct Iter {
    inner: Arc<Inner>,
    next: u64,
    seg: Option<Arc<Segment>>,
    failed: bool,
}

impl Iter {
    pub(crate) fn new(inner: Arc<Inner>, from: PhysicalOffset) -> Iter {
        Iter {
            inner,
            next: from.get(),
            seg: None,
            failed: false,
        }
    }

    /// Where the next record would start.
    pub fn position(&self) -> PhysicalOffset {
        PhysicalOffset::new(self.next)
    }

    fn step(&mut self) -> Result<Option<RecordRef>, Error> {
        loop {
            if self.next >= self.inner.visible_offset() {
                return Ok(None);
            }
            let visible = self.inner.check_readable(self.next)?;
            let cached = self
                .seg
                .as_ref()
                .is_some_and(|s| s.start.get() <= self.next && self.next < s.end());
            if !cached {
                self.seg = self.inner.segment_for(self.next);
            }
            let Some(seg) = self.seg.clone() else {
                return Err(Error::OffsetUnavailable {
                    requested: PhysicalOffset::new(self.next),
                    min: PhysicalOffset::new(self.inner.min_offset.load(Ordering::SeqCst)),
                });
            };
            match self.inner.read_at(&seg, self.next, visible)? {
                At::Record(r) => {
                    self.next = r.next_offset().get();
                    return Ok(Some(r));
                }
                At::Skip(to) => self.next = to,
            }
        }
    }
}

impl Iterator for Iter {
    type Item = Result<RecordRef, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(r) => r.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
