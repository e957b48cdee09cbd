//! The files behind the topic table: `config/topics.snap` and `config/topics.jnl` (format
//! in [`super::topics_format`]), with one writer at a time and a shared fsync.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use super::fsutil::{atomic_write, sync_dir};
use super::topic_config::TopicConfig;
use super::topics_format::{decode_frames, decode_snapshot, encode_snapshot, Change};
use super::{StoreError, StoreResult};

/// The journal may grow to this many bytes, or twice the snapshot, before compaction.
const MIN_COMPACT_BYTES: u64 = 8 * 1024;

/// The journal file, its writer and its shared fsync.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    writer: Mutex<Writer>,
    /// The sequence number of the last change written (not necessarily synced).
    written_seq: AtomicU64,
    sync: Mutex<SyncState>,
    synced: Condvar,
}

#[derive(Debug)]
struct Writer {
    file: File,
    path: PathBuf,
    snapshot_path: PathBuf,
    len: u64,
    snapshot_len: u64,
    seq: u64,
}

#[derive(Debug)]
struct SyncState {
    /// A second handle on the journal, so that syncing never waits for the writer.
    file: File,
    synced_seq: u64,
    syncing: bool,
    /// Set by a failed write cleanup, sync or compaction: the file's state is unknown,
    /// so every later change is refused until the broker reopens the store.
    failed: Option<String>,
}

/// The writer, held while one change is made (see [`Journal::writer`]).
pub(crate) struct WriterGuard<'a> {
    journal: &'a Journal,
    w: MutexGuard<'a, Writer>,
}

impl Journal {
    /// Opens (creating) the journal in `dir` and returns the table it describes: the
    /// snapshot (or, without one, the legacy file `read_legacy` reads, made the snapshot)
    /// with the journal replayed over it. A torn tail of the journal is cut off.
    ///
    /// # Errors
    /// I/O errors; `CorruptedFile` for a damaged snapshot or a journal damaged mid-file.
    pub(crate) fn open(
        dir: &Path,
        read_legacy: impl FnOnce(&Path) -> StoreResult<Option<BTreeMap<String, TopicConfig>>>,
    ) -> StoreResult<(Self, BTreeMap<String, TopicConfig>)> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io("creating folder", dir, e))?;
        let snapshot_path = dir.join("topics.snap");
        let path = dir.join("topics.jnl");
        let legacy = dir.join("topics");
        let (mut topics, snapshot_len) = match std::fs::read(&snapshot_path) {
            Ok(bytes) => {
                let topics =
                    decode_snapshot(&bytes).map_err(|reason| StoreError::CorruptedFile {
                        path: snapshot_path.clone(),
                        reason,
                    })?;
                remove_legacy(&legacy, dir)?;
                (topics, bytes.len() as u64)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match read_legacy(&legacy)? {
                Some(topics) => {
                    let bytes = encode_snapshot(&topics);
                    atomic_write(&snapshot_path, &bytes)?;
                    remove_legacy(&legacy, dir)?;
                    tracing::info!(
                        topics = topics.len(),
                        "topics file migrated to a journal and snapshot"
                    );
                    (topics, bytes.len() as u64)
                }
                None => (BTreeMap::new(), 0),
            },
            Err(e) => return Err(StoreError::io("reading", &snapshot_path, e)),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| StoreError::io("opening", &path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| StoreError::io("reading", &path, e))?;
        let frames = decode_frames(&bytes).map_err(|reason| StoreError::CorruptedFile {
            path: path.clone(),
            reason,
        })?;
        for c in frames.changes {
            c.apply(&mut topics);
        }
        if frames.good_len < bytes.len() {
            tracing::warn!(path = %path.display(), kept = frames.good_len, dropped = bytes.len() - frames.good_len, "cutting a torn tail off the topics journal");
            file.set_len(frames.good_len as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| StoreError::io("truncating", &path, e))?;
        }
        let sync_file = file
            .try_clone()
            .map_err(|e| StoreError::io("opening", &path, e))?;
        let journal = Self {
            path: path.clone(),
            writer: Mutex::new(Writer {
                file,
                path,
                snapshot_path,
                len: frames.good_len as u64,
                snapshot_len,
                seq: 0,
            }),
            written_seq: AtomicU64::new(0),
            sync: Mutex::new(SyncState {
                file: sync_file,
                synced_seq: 0,
                syncing: false,
                failed: None,
            }),
            synced: Condvar::new(),
        };
        let mut w = journal.writer()?;
        if w.wants_compaction() {
            w.compact(&encode_snapshot(&topics));
        }
        drop(w);
        Ok((journal, topics))
    }

    /// The writer; one change at a time.
    ///
    /// # Errors
    /// `Io` after an earlier failure left the journal in an unknown state.
    pub(crate) fn writer(&self) -> StoreResult<WriterGuard<'_>> {
        let w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(reason) = &self.lock_sync().failed {
            return Err(failed_error(&w.path, reason));
        }
        Ok(WriterGuard { journal: self, w })
    }

    /// Waits until change `seq` is durable, syncing the journal unless another thread is
    /// already doing so; one sync covers every change written before it started.
    ///
    /// # Errors
    /// `Io` when the sync failed (then every later change is refused too).
    pub(crate) fn sync_to(&self, seq: u64) -> StoreResult<()> {
        let mut s = self.lock_sync();
        loop {
            if s.synced_seq >= seq {
                return Ok(());
            }
            if let Some(reason) = &s.failed {
                return Err(failed_error(&self.path, reason));
            }
            if s.syncing {
                s = self.synced.wait(s).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            s.syncing = true;
            let target = self.written_seq.load(Ordering::Acquire);
            let file = s.file.try_clone();
            drop(s);
            let result = file.and_then(|f| f.sync_data());
            s = self.lock_sync();
            s.syncing = false;
            match result {
                Ok(()) => s.synced_seq = s.synced_seq.max(target),
                Err(e) => s.failed = Some(format!("syncing the topics journal failed: {e}")),
            }
            self.synced.notify_all();
        }
    }

    fn lock_sync(&self) -> MutexGuard<'_, SyncState> {
        self.sync.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fail(&self, reason: String) {
        tracing::error!(%reason, "topics journal refuses further changes until restart");
        self.lock_sync().failed = Some(reason);
        self.synced.notify_all();
    }
}

impl WriterGuard<'_> {
    /// Appends one change (not yet durable: see [`Journal::sync_to`]) and returns its
    /// sequence number. A failed write leaves the journal as it was.
    ///
    /// # Errors
    /// `Io` (ENOSPC included) from the write.
    pub(crate) fn append(&mut self, change: &Change) -> StoreResult<u64> {
        let mut frame = Vec::with_capacity(64);
        change.encode(&mut frame);
        if let Err(e) = self.w.file.write_all(&frame) {
            // Cut off whatever part of the frame made it, so the next frame follows a
            // whole one; if even that fails the journal's end is unknown.
            if let Err(cut) = self.w.file.set_len(self.w.len) {
                self.journal
                    .fail(format!("cutting a failed append failed: {cut}"));
            }
            return Err(StoreError::io("appending to", &self.w.path, e));
        }
        self.w.len += frame.len() as u64;
        self.w.seq += 1;
        self.journal
            .written_seq
            .store(self.w.seq, Ordering::Release);
        Ok(self.w.seq)
    }

    /// Whether the journal has grown enough past the snapshot to be folded into it.
    pub(crate) fn wants_compaction(&self) -> bool {
        self.w.len > 2 * self.w.snapshot_len.max(MIN_COMPACT_BYTES)
    }

    /// Replaces the snapshot with `snapshot` (the whole table as it is now) and empties
    /// the journal. A failed snapshot write keeps the journal as it is: nothing is lost,
    /// the next change tries again.
    pub(crate) fn compact(&mut self, snapshot: &[u8]) {
        if let Err(e) = atomic_write(&self.w.snapshot_path, snapshot) {
            tracing::warn!(error = %e, "writing the topics snapshot failed; the journal keeps growing");
            return;
        }
        // Emptied durably before the next append: otherwise a crash could leave new
        // frames over the start of old ones.
        if let Err(e) = self.w.file.set_len(0).and_then(|()| self.w.file.sync_all()) {
            self.journal
                .fail(format!("emptying the topics journal failed: {e}"));
            return;
        }
        self.w.len = 0;
        self.w.snapshot_len = snapshot.len() as u64;
        // The snapshot is durable and holds every change written so far.
        let mut s = self.journal.lock_sync();
        s.synced_seq = s.synced_seq.max(self.w.seq);
        drop(s);
        self.journal.synced.notify_all();
    }
}

fn failed_error(path: &Path, reason: &str) -> StoreError {
    StoreError::io(
        "changing",
        path,
        std::io::Error::other(format!("{reason}; restart the broker")),
    )
}

/// Removes the pre-journal topics file once the snapshot holds what it held.
fn remove_legacy(legacy: &Path, dir: &Path) -> StoreResult<()> {
    match std::fs::remove_file(legacy) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("removing", legacy, e)),
    }
}
