//! Cutting the log back to an earlier record boundary (a replica dropping a divergent
//! tail), crash-safe: a durable intent first, so that every later open finishes the cut,
//! and never a stale tail that recovery could take for valid records (RocketMQ #10666).
//!
//! The segment holding the cut is replaced by a fresh file holding only the bytes below
//! it, renamed over the old one: readers that still hold records of the old file keep
//! their mapping of the old inode, so no mapped byte anybody can see ever changes.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use crate::flush::CHECKPOINT_FILE;
use crate::format::{classify, Meta, MetaKind, Slot};
use crate::segment::{segment_path, Segment};
use crate::shared::{lock, Inner};
use crate::{Config, Error, PhysicalOffset};

/// File name of the truncation intent inside the log folder.
pub(crate) const TRUNCATE_FILE: &str = "truncate";
/// Suffix of a replacement segment before it is renamed into place.
pub(crate) const REPLACEMENT_SUFFIX: &str = ".truncating";

/// The pending truncation point, if a truncation was interrupted.
pub(crate) fn pending(cfg: &Config) -> Option<u64> {
    let bytes = std::fs::read(cfg.dir.join(TRUNCATE_FILE)).ok()?;
    let meta = Meta::decode(&bytes).ok()?;
    (meta.kind == MetaKind::Truncate).then_some(meta.offset)
}

/// Removes the intent once the cut is complete and durable.
pub(crate) fn finish_intent(cfg: &Config) -> Result<(), Error> {
    let path = cfg.dir.join(TRUNCATE_FILE);
    if !path.exists() {
        return Ok(());
    }
    cfg.storage
        .remove(&path)
        .map_err(|e| Error::io(&path, "remove truncation intent", e))?;
    cfg.storage
        .sync_dir(&cfg.dir)
        .map_err(|e| Error::io(&cfg.dir, "sync folder", e))
}

/// Removes replacement segments left by a crash before their rename.
pub(crate) fn remove_leftovers(cfg: &Config) -> Result<(), Error> {
    let rd = std::fs::read_dir(&cfg.dir).map_err(|e| Error::io(&cfg.dir, "list folder", e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(&cfg.dir, "list folder", e))?;
        if entry
            .file_name()
            .to_string_lossy()
            .ends_with(REPLACEMENT_SUFFIX)
        {
            let path = entry.path();
            cfg.storage
                .remove(&path)
                .map_err(|e| Error::io(&path, "remove replacement leftover", e))?;
        }
    }
    Ok(())
}

impl Inner {
    /// Whether `t` may be cut at: a segment start, the write offset, or a slot holding a
    /// record stored at `t` (or an end-of-segment marker).
    fn check_boundary(&self, t: u64, write: u64) -> Result<(), Error> {
        let at = PhysicalOffset::new(t);
        let min = self.min_offset.load(Ordering::SeqCst);
        if t < min {
            return Err(Error::OffsetUnavailable {
                requested: at,
                min: PhysicalOffset::new(min),
            });
        }
        if t > write {
            return Err(Error::OffsetNotWritten {
                requested: at,
                end: PhysicalOffset::new(write),
            });
        }
        if t == write {
            return Ok(());
        }
        let not = |reason: String| Error::NotRecordBoundary { offset: at, reason };
        let seg = self
            .segment_for(t)
            .ok_or_else(|| not("no segment holds it".to_owned()))?;
        if seg.start.get() == t {
            return Ok(());
        }
        let pos = (t - seg.start.get()) as usize;
        let buf = seg.map.bytes(pos, seg.map.published()).unwrap_or(&[]);
        match classify(buf) {
            Ok(Slot::Record(v)) if v.physical_offset() == t => Ok(()),
            Ok(Slot::EndOfSegment) => Ok(()),
            Ok(other) => Err(not(format!("slot holds {other:?}"))),
            Err(e) => Err(not(e.to_string())),
        }
    }

    /// Cuts the log to end at `t`. The caller guarantees nobody reads above `t` meanwhile
    /// (the broker is a replica and holds its dispatch lock); readers holding records of
    /// the replaced file keep valid bytes either way.
    pub(crate) fn truncate_to(&self, t: u64) -> Result<(), Error> {
        let mut w = lock(&self.writer);
        self.check_poison()?;
        let write = self.write_offset.load(Ordering::SeqCst);
        self.check_boundary(t, write)?;
        let storage = self.cfg.storage.as_ref();
        let intent = self.meta_path(TRUNCATE_FILE);
        let meta = Meta {
            kind: MetaKind::Truncate,
            offset: t,
        };
        storage
            .write_atomic(&intent, &meta.encode())
            .map_err(|e| Error::io(&intent, "write truncation intent", e))?;
        // Take the flush leadership so no flush publishes an end above `t` meanwhile.
        let _flush = self.hold_flushing();
        self.flush.flushed_offset.fetch_min(t, Ordering::SeqCst);
        self.lower_checkpoint(t)?;
        self.lower_confirm(t);
        if t < write {
            self.replace_tail(&mut w, t)?;
        }
        self.write_offset.store(t, Ordering::SeqCst);
        self.cut_epochs(t)?;
        drop(w);
        finish_intent(&self.cfg)
    }

    fn lower_checkpoint(&self, t: u64) -> Result<(), Error> {
        let mut last = lock(&self.flush.checkpointed);
        if *last <= t {
            return Ok(());
        }
        let path = self.meta_path(CHECKPOINT_FILE);
        let meta = Meta {
            kind: MetaKind::Checkpoint,
            offset: t,
        };
        self.cfg
            .storage
            .write_atomic(&path, &meta.encode())
            .map_err(|e| Error::io(&path, "write checkpoint", e))?;
        *last = t;
        Ok(())
    }

    /// Replaces the segment holding `t` by one holding only its bytes below `t`, and
    /// removes every later segment, spare and pre-created one.
    fn replace_tail(&self, w: &mut crate::shared::Writer, t: u64) -> Result<(), Error> {
        let storage = self.cfg.storage.as_ref();
        let size = self.cfg.segment_size_bytes;
        let old = self
            .segment_for(t)
            .ok_or_else(|| Error::NotRecordBoundary {
                offset: PhysicalOffset::new(t),
                reason: "no segment holds it".to_owned(),
            })?;
        let start = old.start.get();
        let pos = (t - start) as usize;
        let path = segment_path(&self.cfg.dir, PhysicalOffset::new(start));
        let mut tmp = path.clone().into_os_string();
        tmp.push(REPLACEMENT_SUFFIX);
        let tmp = std::path::PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let file = storage
            .create_segment(&tmp, size)
            .map_err(|e| Error::io(&tmp, "create replacement segment", e))?;
        let (seg, mut map) = Segment::map(
            file,
            path.clone(),
            PhysicalOffset::new(start),
            crate::segment::now_ms(),
        )?;
        if pos > 0 {
            let src = old.map.bytes(0, pos).unwrap_or(&[]);
            let Some(dst) = map.unpublished_mut(0, pos) else {
                return Err(Error::NotRecordBoundary {
                    offset: PhysicalOffset::new(t),
                    reason: "beyond the segment".to_owned(),
                });
            };
            dst.copy_from_slice(src);
            let m = Arc::clone(map.mapping());
            storage
                .sync_mapped(&tmp, 0, src, &mut || m.sync(0, pos))
                .map_err(|e| Error::io(&tmp, "sync replacement segment", e))?;
        }
        map.publish(pos);
        if self.cfg.small_folios() {
            map.keep_folios_small();
        }
        storage
            .rename(&tmp, &path)
            .map_err(|e| Error::io(&path, "rename replacement segment", e))?;
        self.sync_dir()?;
        let mut doomed: Vec<std::path::PathBuf> = Vec::new();
        {
            let mut segs = self
                .segments
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let keep = segs.partition_point(|s| s.start.get() < start);
            doomed.extend(segs.drain(keep..).skip(1).map(|s| s.path.clone()));
            segs.push(Arc::clone(&seg));
        }
        doomed.extend(w.spares.drain(..).map(|(s, _)| s.path.clone()));
        {
            let mut next = lock(&self.prealloc.next_start);
            if let Some((s, _)) = lock(&self.prealloc.ready).take() {
                doomed.push(s.path.clone());
            }
            *next = seg.end();
        }
        w.seg = seg;
        w.map = map;
        w.pos = pos;
        for p in &doomed {
            if *p != path {
                storage
                    .remove(p)
                    .map_err(|e| Error::io(p, "remove segment beyond the cut", e))?;
            }
        }
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), Error> {
        self.cfg
            .storage
            .sync_dir(&self.cfg.dir)
            .map_err(|e| Error::io(&self.cfg.dir, "sync folder", e))
    }
}

/// Keeps the flush leadership (`FlushState::flushing`) for the guard's life.
pub(crate) struct FlushHold<'a> {
    inner: &'a Inner,
}

impl Drop for FlushHold<'_> {
    fn drop(&mut self) {
        *lock(&self.inner.flush.flushing) = false;
        self.inner.flush.done.notify_all();
    }
}

impl Inner {
    fn hold_flushing(&self) -> FlushHold<'_> {
        let mut flushing = lock(&self.flush.flushing);
        while *flushing {
            flushing = self
                .flush
                .done
                .wait(flushing)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *flushing = true;
        FlushHold { inner: self }
    }
}
