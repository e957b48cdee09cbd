//! The public handle: open, the API other crates use, and shutdown.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::flush::CLEAN_SHUTDOWN_FILE;
use crate::format::{Meta, MetaKind, RecordIn};
use crate::lock::DirLock;
use crate::read::{Iter, Reader, RecordRef};
use crate::recovery::{recover, RecoveryReport};
use crate::retention::RetentionReport;
use crate::shared::Inner;
use crate::{Config, Error, FlushPolicy, PhysicalOffset};

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Where the record starts.
    pub offset: PhysicalOffset,
    /// Its encoded size in bytes (the next record starts at `offset + size`).
    pub size: u32,
}

/// Counters for tests and monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Records appended.
    pub appends: u64,
    /// `append` / `append_batch` calls.
    pub append_calls: u64,
    /// Completed flushes (one msync pass each, however many waiters shared it).
    pub flushes: u64,
    /// Segments created synchronously by the writer.
    pub segments_created: u64,
    /// Segments created ahead of need by the background thread.
    pub segments_precreated: u64,
    /// Segments removed by retention.
    pub segments_removed: u64,
}

/// The segmented, memory-mapped commit log. `Send + Sync`; share it with `Arc`.
#[derive(Debug)]
pub struct CommitLog {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
    _lock: DirLock,
}

impl CommitLog {
    /// Opens (creating if needed) the log in `config.dir`, recovering it.
    ///
    /// # Errors
    /// [`Error::Locked`] if another log holds the folder, [`Error::InvalidConfig`],
    /// [`Error::DiskFull`] or [`Error::Io`].
    pub fn open(config: Config) -> Result<(CommitLog, RecoveryReport), Error> {
        config.validate()?;
        std::fs::create_dir_all(&config.dir)
            .map_err(|e| Error::io(&config.dir, "create folder", e))?;
        let dir_lock = DirLock::acquire(&config.dir, "lock")?;
        let mut rec = recover(&config)?;
        if config.small_folios() {
            // After the recovery scan, which reads with readahead: pages of the active
            // segment faulted in from here on (its unwritten rest) are single pages.
            rec.writer.map.keep_folios_small();
        }
        let inner = Arc::new(Inner::new(
            config,
            rec.segments,
            rec.writer,
            rec.end,
            rec.end,
            rec.epochs,
        ));
        let mut threads = Vec::new();
        let flusher = Arc::clone(&inner);
        threads.push(spawn("ferromq-flusher", move || flusher.run_flusher())?);
        if inner.cfg.preallocate {
            let pre = Arc::clone(&inner);
            threads.push(spawn("ferromq-prealloc", move || pre.run_preallocator())?);
            inner.prealloc.signal.wake();
        }
        Ok((
            CommitLog {
                inner,
                threads,
                _lock: dir_lock,
            },
            rec.report,
        ))
    }

    /// Appends one record: [`CommitLog::write_batch`] of one, then under
    /// `FlushPolicy::Sync` [`CommitLog::wait_durable`] on its end.
    ///
    /// # Errors
    /// [`Error::RecordTooLarge`], [`Error::DiskFull`] (nothing written; retry once space
    /// is back), [`Error::Poisoned`] after a failed flush.
    pub fn append(&self, rec: &RecordIn<'_>) -> Result<Appended, Error> {
        self.inner.append_one(rec)
    }

    /// [`CommitLog::write_batch`], then under `FlushPolicy::Sync` [`CommitLog::wait_durable`]
    /// on the batch's end: for callers that append from one thread and want the policy's
    /// guarantee on return.
    ///
    /// # Errors
    /// As [`CommitLog::append`].
    pub fn append_batch(&self, recs: &[RecordIn<'_>]) -> Result<Vec<Appended>, Error> {
        self.inner.append_batch(recs)
    }

    /// Appends a batch under one lock acquisition and returns at once, whatever the flush
    /// policy: callers that hold a lock of their own across the append wait afterwards,
    /// outside it, with [`CommitLog::wait_durable`] on the returned end, so concurrent
    /// writers share one flush. Records never straddle segments. On error nothing of the
    /// batch is written or visible.
    ///
    /// # Errors
    /// As [`CommitLog::append`] ([`Error::Poisoned`] only from an earlier failed flush).
    pub fn write_batch(
        &self,
        recs: &[RecordIn<'_>],
    ) -> Result<(Vec<Appended>, PhysicalOffset), Error> {
        let (out, end) = self.inner.write_batch(recs)?;
        Ok((out, PhysicalOffset::new(end)))
    }

    /// Reads the record at `offset`, checking its CRC. Zero copy.
    ///
    /// # Errors
    /// [`Error::OffsetUnavailable`] below the minimum, [`Error::OffsetNotWritten`] at or past
    /// the visible end, [`Error::ChecksumMismatch`] / [`Error::Corrupted`] otherwise.
    pub fn read(&self, offset: PhysicalOffset) -> Result<RecordRef, Error> {
        self.inner.read(offset)
    }

    /// A reader for many reads at chosen offsets (cheaper than [`CommitLog::read`] each).
    pub fn reader(&self) -> Reader<'_> {
        Reader::new(&self.inner)
    }

    /// Iterates records from `offset` (a record boundary) to the visible end.
    pub fn iter_from(&self, offset: PhysicalOffset) -> Iter {
        Iter::new(Arc::clone(&self.inner), offset)
    }

    /// Start of the oldest record still held (retention moves it up).
    pub fn min_offset(&self) -> PhysicalOffset {
        PhysicalOffset::new(self.inner.min_offset.load(Ordering::SeqCst))
    }
    /// End of the appended data.
    pub fn write_offset(&self) -> PhysicalOffset {
        PhysicalOffset::new(self.inner.write_offset.load(Ordering::SeqCst))
    }
    /// End of the durable data.
    pub fn flushed_offset(&self) -> PhysicalOffset {
        PhysicalOffset::new(self.inner.flush.flushed_offset.load(Ordering::SeqCst))
    }
    /// What readers may see: the write offset (`Async`) or the flushed offset (`Sync`).
    /// The one visibility rule: the broker indexes and serves records up to here.
    pub fn visible_offset(&self) -> PhysicalOffset {
        PhysicalOffset::new(self.inner.visible_offset())
    }

    /// Blocks until the visible offset is beyond `beyond` or `timeout` passes; returns it.
    pub fn wait_visible(&self, beyond: PhysicalOffset, timeout: Duration) -> PhysicalOffset {
        self.inner.wait_visible(beyond, timeout)
    }

    /// Blocks until everything below `end` is durable, sharing flushes with other callers.
    ///
    /// # Errors
    /// [`Error::Poisoned`] or the I/O error of the failed flush.
    pub fn wait_durable(&self, end: PhysicalOffset) -> Result<(), Error> {
        self.inner.flush_to(end.get())
    }

    /// Makes everything appended so far durable.
    ///
    /// # Errors
    /// As [`CommitLog::wait_durable`].
    pub fn flush(&self) -> Result<(), Error> {
        self.inner
            .flush_to(self.inner.write_offset.load(Ordering::SeqCst))
    }

    /// Applies the configured retention now (also done periodically in the background).
    ///
    /// # Errors
    /// [`Error::Io`] when a file cannot be removed.
    pub fn apply_retention(&self, now_ms: u64) -> Result<RetentionReport, Error> {
        self.inner.apply_retention(now_ms)
    }

    /// The counters since open.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        Stats {
            appends: c.appends.load(Ordering::Relaxed),
            append_calls: c.append_calls.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
            segments_created: c.segments_created.load(Ordering::Relaxed),
            segments_precreated: c.segments_precreated.load(Ordering::Relaxed),
            segments_removed: c.segments_removed.load(Ordering::Relaxed),
        }
    }

    /// The flush policy the log was opened with.
    pub fn flush_policy(&self) -> FlushPolicy {
        self.inner.cfg.flush
    }

    /// The folder this log lives in.
    pub fn dir(&self) -> &std::path::Path {
        &self.inner.cfg.dir
    }

    /// Appends whole records written by a master, byte-exact at their own offsets: `at`
    /// must equal the write offset, every record must pass its CRC, carry offset
    /// `at + position` and end inside the active segment. All or nothing. Returns the new
    /// write offset; durability and visibility follow the flush policy as for
    /// [`CommitLog::write_batch`].
    ///
    /// # Errors
    /// [`Error::ReplicaOffsetMismatch`], [`Error::ChecksumMismatch`], [`Error::Corrupted`]
    /// (a bad or foreign record), [`Error::RecordStraddlesSegment`], [`Error::Poisoned`].
    pub fn append_raw(&self, at: PhysicalOffset, bytes: &[u8]) -> Result<PhysicalOffset, Error> {
        self.inner
            .append_raw(at.get(), bytes)
            .map(PhysicalOffset::new)
    }

    /// Ends the active segment at `at` (the write offset) with an end-of-segment marker and
    /// continues at the next segment's start, which it returns: the master's segment ended
    /// there.
    ///
    /// # Errors
    /// [`Error::ReplicaOffsetMismatch`], [`Error::DiskFull`], [`Error::Poisoned`].
    pub fn seal_segment(&self, at: PhysicalOffset) -> Result<PhysicalOffset, Error> {
        self.inner.seal_segment(at.get()).map(PhysicalOffset::new)
    }

    /// Whole records from `from` (a record boundary) to at most `until` and the write
    /// offset (not only the visible one: a master sends what replicas must confirm), about
    /// `max_bytes` of them but at least one, never across a segment end. Zero copy.
    ///
    /// # Errors
    /// [`Error::OffsetUnavailable`] below the minimum, [`Error::OffsetNotWritten`] past
    /// the write offset, [`Error::Corrupted`] when `from` is no record boundary.
    pub fn raw_chunk(
        &self,
        from: PhysicalOffset,
        until: PhysicalOffset,
        max_bytes: usize,
    ) -> Result<crate::RawChunk, Error> {
        self.inner.raw_chunk(from.get(), until.get(), max_bytes)
    }

    /// Cuts the log back to end at `offset`, crash-safely: a durable intent first, then
    /// the segment holding `offset` is replaced by one holding only the bytes below it,
    /// later segments are removed, the flushed, confirm and checkpoint offsets and the
    /// epoch history are lowered. A crash anywhere leaves an intent that the next open
    /// finishes, so nothing at or above `offset` is ever recovered. Records read earlier
    /// stay valid (they keep their mapping of the replaced file).
    ///
    /// # Errors
    /// [`Error::NotRecordBoundary`], [`Error::OffsetUnavailable`],
    /// [`Error::OffsetNotWritten`], [`Error::Io`] (the intent stays; reopen finishes).
    pub fn truncate_to(&self, offset: PhysicalOffset) -> Result<(), Error> {
        self.inner.truncate_to(offset.get())
    }

    /// Makes `(epoch, write offset, master_id)` the newest entry of the durable epoch
    /// history, before the first byte of that epoch is written.
    ///
    /// # Errors
    /// [`Error::EpochOutOfOrder`] unless `epoch` is above the newest one; [`Error::Io`].
    pub fn begin_epoch(&self, epoch: u64, master_id: u64) -> Result<crate::EpochEntry, Error> {
        self.inner.begin_epoch(epoch, master_id)
    }

    /// The epoch history, oldest first.
    pub fn epochs(&self) -> Vec<crate::EpochEntry> {
        crate::shared::lock(&self.inner.epochs).clone()
    }

    /// End of the bytes the whole replication sync set holds (0 until the owner sets it).
    pub fn confirm_offset(&self) -> PhysicalOffset {
        PhysicalOffset::new(self.inner.confirm_offset.load(Ordering::SeqCst))
    }

    /// Raises the confirm watermark to `to`, clamped to the write offset; it never moves
    /// down except through [`CommitLog::truncate_to`]. Wakes
    /// [`CommitLog::wait_confirmed`]. Returns the watermark.
    pub fn advance_confirm(&self, to: PhysicalOffset) -> PhysicalOffset {
        PhysicalOffset::new(self.inner.advance_confirm(to.get()))
    }

    /// Blocks until the confirm watermark is beyond `beyond` or `timeout` passes; returns it.
    pub fn wait_confirmed(&self, beyond: PhysicalOffset, timeout: Duration) -> PhysicalOffset {
        PhysicalOffset::new(self.inner.wait_confirmed(beyond.get(), timeout))
    }

    /// The size of every segment file.
    pub fn segment_size_bytes(&self) -> u64 {
        self.inner.cfg.segment_size_bytes
    }

    /// Flushes, stops the background threads and writes the clean-shutdown marker so the
    /// next open skips the scan. Without `close` (a crash, or plain drop) the next open scans.
    ///
    /// # Errors
    /// The flush or marker write failed; the next open then recovers by scanning.
    pub fn close(mut self) -> Result<(), Error> {
        self.stop_threads();
        self.inner
            .flush_to(self.inner.write_offset.load(Ordering::SeqCst))?;
        self.inner.write_checkpoint()?;
        let end = self.inner.write_offset.load(Ordering::SeqCst);
        let meta = Meta {
            kind: MetaKind::CleanShutdown,
            offset: end,
        };
        let path = self.inner.meta_path(CLEAN_SHUTDOWN_FILE);
        self.inner
            .cfg
            .storage
            .write_atomic(&path, &meta.encode())
            .map_err(|e| Error::io(&path, "write clean-shutdown marker", e))
    }

    fn stop_threads(&mut self) {
        self.inner.flush.signal.stop();
        self.inner.prealloc.signal.stop();
        for t in self.threads.drain(..) {
            // A panicked background thread has nothing left to clean up.
            let _ = t.join();
        }
    }
}

impl Drop for CommitLog {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, Error> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map_err(|e| Error::io(std::path::PathBuf::from(name), "spawn thread", e))
}
