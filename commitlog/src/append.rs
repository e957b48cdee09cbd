//! The append path: one writer under one mutex, encoding straight into the mapping.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use crate::format::{encode_end_of_segment, encode_into, encoded_len, FormatError, RecordIn};
use crate::segment::{now_ms, Segment};
use crate::shared::{lock, Inner, Writer};
use crate::sys::MapWriter;
use crate::{Appended, Error, FlushPolicy, PhysicalOffset};

impl Inner {
    fn record_len(&self, rec: &RecordIn<'_>) -> Result<usize, Error> {
        let max = u64::from(self.cfg.max_record_bytes).min(self.cfg.segment_size_bytes);
        let len = encoded_len(rec).map_err(|e| match e {
            FormatError::FieldTooLarge { len, .. } => Error::RecordTooLarge {
                size: len as u64,
                max,
            },
            other => Error::Corrupted {
                segment: PhysicalOffset::new(0),
                offset: PhysicalOffset::new(0),
                reason: other,
            },
        })?;
        if len as u64 > max {
            return Err(Error::RecordTooLarge {
                size: len as u64,
                max,
            });
        }
        Ok(len)
    }

    /// Appends all of `recs` or nothing and returns at once, durable or not.
    pub(crate) fn write_batch(&self, recs: &[RecordIn<'_>]) -> Result<(Vec<Appended>, u64), Error> {
        let mut out = Vec::with_capacity(recs.len());
        let end = self.append_with(recs, |a| out.push(a))?;
        self.after_append(end, recs.len());
        Ok((out, end))
    }

    /// [`Inner::write_batch`], then under `Sync` the one durability wait.
    pub(crate) fn append_batch(&self, recs: &[RecordIn<'_>]) -> Result<Vec<Appended>, Error> {
        let (out, end) = self.write_batch(recs)?;
        self.wait_if_sync(end)?;
        Ok(out)
    }

    pub(crate) fn append_one(&self, rec: &RecordIn<'_>) -> Result<Appended, Error> {
        let mut out = None;
        let end = self.append_with(std::slice::from_ref(rec), |a| out = Some(a))?;
        self.after_append(end, 1);
        self.wait_if_sync(end)?;
        out.ok_or(Error::InvalidConfig {
            reason: "append produced no record".to_owned(),
        })
    }

    fn wait_if_sync(&self, end: u64) -> Result<(), Error> {
        match self.cfg.flush {
            FlushPolicy::Async { .. } => Ok(()),
            FlushPolicy::Sync => self.flush_to(end),
        }
    }

    /// Writes the batch under the writer lock and publishes it at once; returns the new end.
    fn append_with(
        &self,
        recs: &[RecordIn<'_>],
        mut sink: impl FnMut(Appended),
    ) -> Result<u64, Error> {
        let seg_size = self.cfg.segment_size_bytes as usize;
        // Size checks and roll planning happen before anything is written, so every error
        // leaves the log untouched (all-or-nothing).
        let mut rolls = 0;
        let mut w = lock(&self.writer);
        self.check_poison()?;
        let mut pos = w.pos;
        for rec in recs {
            let len = self.record_len(rec)?;
            if pos + len > seg_size {
                rolls += 1;
                pos = 0;
            }
            pos += len;
        }
        self.ensure_spares(&mut w, rolls)?;
        for rec in recs {
            let len = self.record_len(rec)?;
            if w.pos + len > seg_size {
                self.roll(&mut w)?;
            }
            let offset = w.seg.start.get() + w.pos as u64;
            let start = w.pos;
            let seg_start = w.seg.start;
            let Some(dst) = w.map.unpublished_mut(start, start + len) else {
                return Err(lost_invariant(&w, offset));
            };
            encode_into(rec, offset, dst)
                .map_err(|e| Error::format(seg_start, PhysicalOffset::new(offset), e))?;
            w.pos += len;
            // Fits in u32: record_len caps it at segment_size_bytes <= 4 GiB.
            sink(Appended {
                offset: PhysicalOffset::new(offset),
                size: len as u32,
            });
        }
        let end_pos = w.pos;
        w.map.publish(end_pos);
        let end = w.seg.start.get() + end_pos as u64;
        self.write_offset.store(end, Ordering::SeqCst);
        Ok(end)
    }

    /// Counts the append, wakes readers (under `Async` the record is visible now; under
    /// `Sync` the flush wakes them) and the flusher once enough bytes are dirty.
    pub(crate) fn after_append(&self, end: u64, count: usize) {
        self.counters
            .appends
            .fetch_add(count as u64, Ordering::Relaxed);
        self.counters.append_calls.fetch_add(1, Ordering::Relaxed);
        if let FlushPolicy::Async { .. } = self.cfg.flush {
            self.notify_visible();
        }
        let dirty = end.saturating_sub(self.flush.flushed_offset.load(Ordering::Relaxed));
        if dirty >= self.cfg.flush_dirty_bytes {
            self.flush.signal.wake();
        }
    }

    /// Seals the active segment with an end-of-segment marker and activates the next spare.
    pub(crate) fn roll(&self, w: &mut Writer) -> Result<(), Error> {
        let offset = w.seg.start.get() + w.pos as u64;
        let (seg, map) = w
            .spares
            .pop_front()
            .ok_or_else(|| lost_invariant(w, offset))?;
        let size = w.seg.size() as usize;
        let pos = w.pos;
        if let Some(tail) = w.map.unpublished_mut(pos, size) {
            encode_end_of_segment(tail);
        }
        w.map.publish(size);
        w.seg.touch(now_ms());
        self.segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&seg));
        w.seg = seg;
        w.map = map;
        w.pos = 0;
        if self.cfg.preallocate {
            self.prealloc.signal.wake();
        }
        Ok(())
    }

    /// Makes sure `n` segments are ready after the active one, creating them if needed.
    /// On error (disk full) nothing was written and created spares are kept for later.
    pub(crate) fn ensure_spares(&self, w: &mut Writer, n: usize) -> Result<(), Error> {
        while w.spares.len() < n {
            let start = w
                .spares
                .back()
                .map_or_else(|| w.seg.end(), |(s, _)| s.end());
            let spare = self.take_or_create(start)?;
            w.spares.push_back(spare);
        }
        Ok(())
    }

    /// The pre-created segment at `start` if the background thread made it, else a new one.
    fn take_or_create(&self, start: u64) -> Result<(Arc<Segment>, MapWriter), Error> {
        if let Some(ready) = self.take_ready(start) {
            return Ok(ready);
        }
        let mut next = lock(&self.prealloc.next_start);
        // The background thread may have finished while we waited for the lock.
        if let Some(ready) = self.take_ready(start) {
            return Ok(ready);
        }
        let mut created = Segment::create(
            self.cfg.storage.as_ref(),
            &self.cfg.dir,
            PhysicalOffset::new(start),
            self.cfg.segment_size_bytes,
        )?;
        if self.cfg.small_folios() {
            created.1.keep_folios_small();
        }
        *next = created.0.end();
        self.counters
            .segments_created
            .fetch_add(1, Ordering::Relaxed);
        Ok(created)
    }

    fn take_ready(&self, start: u64) -> Option<(Arc<Segment>, MapWriter)> {
        let mut ready = lock(&self.prealloc.ready);
        if ready.as_ref().is_some_and(|(s, _)| s.start.get() == start) {
            return ready.take();
        }
        None
    }
}

fn lost_invariant(w: &Writer, offset: u64) -> Error {
    Error::Corrupted {
        segment: w.seg.start,
        offset: PhysicalOffset::new(offset),
        reason: FormatError::BadLength {
            total_len: 0,
            reason: "writer position outside the segment",
        },
    }
}
