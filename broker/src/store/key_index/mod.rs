//! The key index (RocketMQ's IndexFile): finds the messages that carry a key, by topic and
//! key, newest first, without scanning the log.
//!
//! Files of hash slots and linked entries ([`format`]) under `<data>/index/`, each of a
//! bounded size, rolled when full, removed once retention removed every record they
//! point at. The dispatcher writes them as it indexes the log (an entry per key of each
//! record, through the mapping, allocated on disk in 1 MiB steps first: no syscall per
//! message); its checkpoint msyncs the files and then records the durable state in
//! `<data>/index/checkpoint`. At open, files newer than the checkpoint are dropped, the
//! newest one is cut to its checkpointed entries (its slots rebuilt and every link
//! checked) and the log after the checkpoint is indexed again. A file that fails its
//! checks, at open or during a lookup, gets the whole index rebuilt from the commit log;
//! lookups meanwhile answer a clear error instead of a partial answer. Every message is
//! checked (topic, key, time) before it is returned, so collisions are harmless.
//!
//! Nothing exists on disk until the first message with a key is indexed.

mod file;
mod format;
mod fuzz;
mod map;
mod store;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockWriteGuard};

use commitlog::storage::Storage;
use commitlog::{CommitLog, PhysicalOffset, RecordRef};
use protocol::properties::{Properties, KEYS};

use file::{Damaged, IndexFile, Queued};
use format::Checkpoint;

use super::{StoreError, StoreResult};

pub use fuzz::fuzz_decode_and_open;
pub use store::KeyMatches;

/// Records indexed per catch-up step, between which dispatch rounds may run.
const CATCH_UP_RECORDS: usize = 65_536;
/// Entries a writer queues before it appends them (with their slots prefetched).
const QUEUED_ENTRIES: usize = 4096;

/// Key-index settings (part of [`super::StoreConfig`]).
#[derive(Clone, Debug)]
pub struct KeyIndexConfig {
    /// Index the keys of stored messages and answer lookups by key. Default true; the
    /// broker's `--key-index on|off`.
    pub enabled: bool,
    /// Hash slots per index file. Default 1,048,576 (4 MiB of slots).
    pub slot_count: u32,
    /// Entries (one per key of a message) per index file before the next file starts.
    /// Default 4,194,304 (96 MiB of entries).
    pub max_entries_per_file: u32,
    /// Bits of the key hash kept; fewer force hash collisions (tests). Default 32.
    pub(crate) hash_bits: u32,
}

impl Default for KeyIndexConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            slot_count: 1 << 20,
            max_entries_per_file: 4 << 20,
            hash_bits: 32,
        }
    }
}

impl KeyIndexConfig {
    pub(crate) fn validate(&self) -> StoreResult<()> {
        if self.slot_count == 0 || self.max_entries_per_file == 0 {
            return Err(StoreError::InvalidConfig(
                "key index slot_count and max_entries_per_file must be > 0".into(),
            ));
        }
        if self.max_entries_per_file == u32::MAX {
            return Err(StoreError::InvalidConfig(
                "key index max_entries_per_file must be below 2^32 - 1".into(),
            ));
        }
        Ok(())
    }

    fn hash(&self, topic: &str, key: &str) -> u32 {
        let h = format::key_hash(topic, key);
        match self.hash_bits {
            32.. => h,
            bits => h & ((1u32 << bits) - 1),
        }
    }
}

/// The keys of a message as the client's `with_keys` writes them: space separated.
pub(crate) fn keys_of(properties: &[u8]) -> impl Iterator<Item = &str> {
    Properties::new(properties)
        .get(KEYS)
        .unwrap_or_default()
        .split_ascii_whitespace()
}

/// A lookup: the messages of `topic` carrying `key`, stored within `[from_ms, to_ms]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lookup<'a> {
    pub(crate) topic: &'a str,
    pub(crate) key: &'a str,
    pub(crate) from_ms: u64,
    pub(crate) to_ms: u64,
}

/// The index: files, how far the log is indexed, and what went wrong.
pub(crate) struct KeyIndex {
    dir: PathBuf,
    config: KeyIndexConfig,
    storage: Arc<dyn Storage>,
    state: RwLock<State>,
    /// A lookup found a damaged file: the dispatcher thread rebuilds the index.
    damaged: AtomicBool,
    /// Serializes checkpoints, trims and rebuilds, which replace the checkpoint file or
    /// remove index files; held without the state lock while files are msynced.
    checkpointing: Mutex<()>,
}

struct State {
    /// Oldest first; entries of the last one are appended.
    files: Vec<IndexFile>,
    /// Records below this commit-log offset are indexed.
    next: u64,
    /// Why indexing stopped (a full disk, say); cleared once it caught up again.
    failure: Option<String>,
    /// Files were created or removed since the last checkpoint: the folder needs a sync.
    dir_changed: bool,
    /// The checkpoint last written.
    written: Option<Checkpoint>,
    /// Entries of the current writer not yet appended (kept to reuse its memory).
    queued: Vec<Queued>,
}

impl State {
    fn empty(next: u64) -> Self {
        Self {
            files: Vec::new(),
            next,
            failure: None,
            dir_changed: false,
            written: None,
            queued: Vec::new(),
        }
    }

    fn checkpoint(&self) -> Checkpoint {
        self.files.last().map_or(
            Checkpoint {
                next: self.next,
                file_start: format::NO_FILE,
                entry_count: 0,
            },
            |f| Checkpoint {
                next: self.next,
                file_start: f.header().first_phys,
                entry_count: f.header().entry_count,
            },
        )
    }
}

impl KeyIndex {
    /// Opens the index under `<data>/index` for a log holding `[log_min, log_end)`; `None`
    /// when it is disabled. Damage is repaired by starting over: the index is then rebuilt
    /// by [`KeyIndex::catch_up`]. Never fails the store's open: trouble shows in lookups.
    pub(crate) fn open(
        config: KeyIndexConfig,
        data_dir: &Path,
        storage: Arc<dyn Storage>,
        log_min: u64,
        log_end: u64,
    ) -> Option<Self> {
        if !config.enabled {
            return None;
        }
        let dir = data_dir.join("index");
        let state = match load(&dir, &*storage, log_min, log_end) {
            Ok(state) => state,
            Err(damage) => {
                tracing::warn!(
                    path = %damage.path.display(),
                    reason = %damage.reason,
                    "key index damaged; rebuilding it from the commit log"
                );
                let mut state = State::empty(log_min);
                if let Err(e) = remove_all(&dir, &*storage) {
                    state.failure = Some(format!("cannot remove the damaged key index: {e}"));
                }
                state
            }
        };
        Some(Self {
            dir,
            config,
            storage,
            state: RwLock::new(state),
            damaged: AtomicBool::new(false),
            checkpointing: Mutex::new(()),
        })
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer for a dispatch round starting at log offset `from`; `None` while the
    /// index is behind that point (catching up or failed), when the round must leave it.
    pub(crate) fn writer(&self, from: u64) -> Option<Writer<'_>> {
        let state = self.write();
        if state.next < from || state.failure.is_some() {
            return None;
        }
        Some(Writer {
            index: self,
            state,
            stopped: false,
        })
    }

    /// Whether the index is behind `dispatched` and needs [`KeyIndex::catch_up`].
    pub(crate) fn is_behind(&self, dispatched: u64) -> bool {
        self.damaged.load(Ordering::Acquire)
            || self
                .state
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .next
                < dispatched
    }

    /// Indexes up to [`CATCH_UP_RECORDS`] records between the index's end and `until` (the
    /// dispatched offset); first starts over if a lookup found damage. The caller holds the
    /// dispatch round lock, so no round writes meanwhile. Returns whether it caught up.
    ///
    /// # Errors
    /// Reading the log, or writing the index (also recorded for lookups to report).
    pub(crate) fn catch_up(&self, log: &CommitLog, until: u64) -> StoreResult<bool> {
        let _files = self.files_lock();
        let mut state = self.write();
        if self.damaged.swap(false, Ordering::AcqRel) {
            state.files.clear();
            state.next = log.min_offset().get();
            state.dir_changed = true;
            if let Err(e) = remove_all(&self.dir, &*self.storage) {
                state.failure = Some(format!("cannot remove the damaged key index: {e}"));
                self.damaged.store(true, Ordering::Release);
                return Err(e);
            }
            state.written = None;
        }
        state.next = state.next.max(log.min_offset().get());
        let mut w = Writer {
            index: self,
            state,
            stopped: false,
        };
        let mut iter = log.iter_from(PhysicalOffset::new(w.state.next));
        let mut reached = false;
        for _ in 0..CATCH_UP_RECORDS {
            match iter.next() {
                Some(Ok(rec)) if rec.offset().get() < until => w.add(&rec),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(_)) | None => {
                    reached = true;
                    break;
                }
            }
            if w.stopped {
                break;
            }
        }
        let stopped = w.stopped;
        let end = if reached {
            until
        } else {
            iter.position().get().min(until)
        };
        w.finish(Some(end));
        let mut state = self.write();
        if stopped {
            let reason = state.failure.clone().unwrap_or_default();
            return Err(StoreError::KeyIndexBehind {
                indexed: state.next,
                end: until,
                reason,
            });
        }
        let done = state.next >= until;
        if done && state.failure.take().is_some() {
            tracing::info!("key index caught up with the commit log");
        }
        Ok(done)
    }

    fn files_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.checkpointing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the index durable up to its end: msyncs changed files, then replaces the
    /// checkpoint (nothing when nothing changed). The msyncs run without the state lock,
    /// so dispatching (and sends) never wait for the index's disk writes.
    ///
    /// # Errors
    /// Sync or write failures.
    pub(crate) fn checkpoint(&self) -> StoreResult<()> {
        let _files = self.files_lock();
        let (jobs, ckpt, dir_changed) = {
            let mut state = self.write();
            let jobs: Vec<_> = state
                .files
                .iter_mut()
                .filter_map(IndexFile::sync_job)
                .collect();
            let ckpt = state.checkpoint();
            if jobs.is_empty() && state.written == Some(ckpt) && !state.dir_changed {
                return Ok(());
            }
            (jobs, ckpt, state.dir_changed)
        };
        if !self.dir.exists() {
            // Nothing was ever indexed: the index costs no files yet.
            return Ok(());
        }
        let synced = jobs.iter().try_for_each(|j| j.run(&*self.storage));
        let written = synced.and_then(|()| self.write_checkpoint(ckpt, dir_changed));
        let mut state = self.write();
        match written {
            Ok(()) => {
                state.written = Some(ckpt);
                state.dir_changed &= !dir_changed;
                Ok(())
            }
            Err(e) => {
                // Synced again next time.
                for f in &mut state.files {
                    if jobs.iter().any(|j| j.path == f.path()) {
                        f.dirty = true;
                    }
                }
                Err(e)
            }
        }
    }

    fn checkpoint_locked(&self, state: &mut State) -> StoreResult<()> {
        for j in state.files.iter_mut().filter_map(IndexFile::sync_job) {
            j.run(&*self.storage)?;
        }
        let ckpt = state.checkpoint();
        if !self.dir.exists() {
            return Ok(());
        }
        self.write_checkpoint(ckpt, state.dir_changed)?;
        state.written = Some(ckpt);
        state.dir_changed = false;
        Ok(())
    }

    fn write_checkpoint(&self, ckpt: Checkpoint, dir_changed: bool) -> StoreResult<()> {
        if dir_changed {
            self.storage
                .sync_dir(&self.dir)
                .map_err(|e| StoreError::io("syncing folder", &self.dir, e))?;
        }
        let path = self.dir.join(format::CHECKPOINT_NAME);
        self.storage
            .write_atomic(&path, &ckpt.encode())
            .map_err(|e| StoreError::io("writing key index checkpoint", &path, e))
    }

    /// Removes files every record of which lies below `log_min` (removed by retention).
    ///
    /// # Errors
    /// Removing a file or writing the checkpoint.
    pub(crate) fn trim(&self, log_min: u64) -> StoreResult<()> {
        let _files = self.files_lock();
        let mut state = self.write();
        let dead = state
            .files
            .iter()
            .take_while(|f| f.header().end_phys <= log_min)
            .count();
        if dead == 0 {
            return Ok(());
        }
        let removed: Vec<IndexFile> = state.files.drain(..dead).collect();
        state.dir_changed = true;
        // The checkpoint must not name a removed file: it is replaced first.
        if state.files.is_empty() {
            self.checkpoint_locked(&mut state)?;
        }
        for f in removed {
            let path = f.path().to_path_buf();
            drop(f);
            self.storage
                .remove(&path)
                .map_err(|e| StoreError::io("removing key index file", &path, e))?;
        }
        Ok(())
    }

    /// Calls `visit` with the commit-log offset of each message indexed under `q`'s
    /// topic and key within its time range, newest first, each offset once, until it
    /// breaks. `dispatched` is the store's dispatched offset: an index behind it refuses.
    ///
    /// # Errors
    /// `KeyIndexBehind` while it catches up or after a write failure; `KeyIndexDamaged`
    /// when a file fails its checks (the index is then rebuilt).
    pub(crate) fn lookup(
        &self,
        q: &Lookup<'_>,
        dispatched: u64,
        mut visit: impl FnMut(u64) -> ControlFlow<()>,
    ) -> StoreResult<()> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        if self.damaged.load(Ordering::Acquire) || state.next < dispatched {
            let reason = match &state.failure {
                Some(f) => f.clone(),
                None => "it is being built from the commit log".into(),
            };
            return Err(StoreError::KeyIndexBehind {
                indexed: state.next,
                end: dispatched,
                reason,
            });
        }
        let hash = self.config.hash(q.topic, q.key);
        let mut seen = HashSet::new();
        for f in state.files.iter().rev() {
            if !f.header().may_hold(q.from_ms, q.to_ms) {
                continue;
            }
            let mut stop = false;
            f.walk(hash, q.from_ms, q.to_ms, |e| {
                // A message with the same key twice has two entries.
                if seen.insert(e.phys) {
                    stop = visit(e.phys).is_break();
                }
                !stop
            })
            .map_err(|d| self.found_damage(d))?;
            if stop {
                break;
            }
        }
        Ok(())
    }

    fn found_damage(&self, d: Damaged) -> StoreError {
        tracing::warn!(path = %d.path.display(), reason = %d.reason, "key index damaged; rebuilding it from the commit log");
        self.damaged.store(true, Ordering::Release);
        StoreError::KeyIndexDamaged {
            path: d.path,
            reason: d.reason,
        }
    }
}

/// Appends the keys of records in log order; holds the index's write lock.
pub(crate) struct Writer<'a> {
    index: &'a KeyIndex,
    state: RwLockWriteGuard<'a, State>,
    /// A write failed: records from the failed one on are left to the catch-up.
    stopped: bool,
}

impl Writer<'_> {
    /// Indexes the keys of `rec` unless it is indexed already. Its entries are queued and
    /// appended in batches (see [`IndexFile::append_batch`]); every batch is appended
    /// before the writer lets go of the index.
    pub(crate) fn add(&mut self, rec: &RecordRef) {
        let at = rec.offset().get();
        if self.stopped || at < self.state.next {
            return;
        }
        let view = rec.view();
        // The property blob is read once; the keys string is split twice (count, then add).
        let keys = Properties::new(view.properties())
            .get(KEYS)
            .unwrap_or_default();
        let count = keys.split_ascii_whitespace().count();
        if count > 0 {
            let n = u32::try_from(count)
                .unwrap_or(u32::MAX)
                .min(self.index.config.max_entries_per_file);
            if let Err(e) = self.room(at, n) {
                self.stop(at, &e);
                return;
            }
            let (topic, ts) = (view.topic(), view.store_timestamp_ms());
            let config = &self.index.config;
            let queued = &mut self.state.queued;
            for key in keys.split_ascii_whitespace().take(n as usize) {
                queued.push(Queued {
                    key_hash: config.hash(topic, key),
                    phys: at,
                    ts,
                });
            }
            if queued.len() >= QUEUED_ENTRIES {
                self.append_queued();
            }
        }
        self.state.next = rec.next_offset().get();
    }

    /// Appends the queued entries to the newest file, which has room for them.
    fn append_queued(&mut self) {
        let state = &mut *self.state;
        if let Some(f) = state.files.last_mut() {
            f.append_batch(&state.queued);
        }
        state.queued.clear();
    }

    /// Room for `n` entries in the newest file beside those queued, starting a new one at
    /// `at` (after appending the queued ones to the old one) if needed.
    fn room(&mut self, at: u64, n: u32) -> StoreResult<()> {
        let storage = &*self.index.storage;
        let queued = u32::try_from(self.state.queued.len()).unwrap_or(u32::MAX);
        if let Some(f) = self.state.files.last_mut() {
            if f.reserve(storage, queued.saturating_add(n))? {
                return Ok(());
            }
        }
        self.append_queued();
        if let Some(f) = self.state.files.last_mut() {
            f.set_end(at);
            f.publish();
        }
        let dir = &self.index.dir;
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io("creating folder", dir, e))?;
        let c = &self.index.config;
        let mut f = IndexFile::create(storage, dir, at, c.slot_count, c.max_entries_per_file)?;
        self.state.dir_changed = true;
        let fits = f.reserve(storage, n);
        self.state.files.push(f);
        match fits {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::InvalidConfig(
                "a record has more keys than an index file holds".into(),
            )),
            Err(e) => Err(e),
        }
    }

    fn stop(&mut self, at: u64, e: &StoreError) {
        // Queued entries belong to records before `at`, and room was made for them.
        self.append_queued();
        if self.state.failure.is_none() {
            tracing::error!(error = %e, "key index write failed; lookups by key are refused until it catches up");
        }
        self.state.failure = Some(e.to_string());
        self.state.next = at;
        self.stopped = true;
    }

    /// Ends a round that indexed every record below `end` (`None`: the round failed
    /// and its end is unknown) and publishes the newest file's header.
    pub(crate) fn finish(mut self, end: Option<u64>) {
        self.append_queued();
        if let (false, Some(end)) = (self.stopped, end) {
            self.state.next = self.state.next.max(end);
        }
        let next = self.state.next;
        if let Some(f) = self.state.files.last_mut() {
            f.set_end(next);
            f.publish();
        }
    }
}

impl Drop for Writer<'_> {
    /// A writer left without [`Writer::finish`] (an error return) still appends what it
    /// queued: the index's end already counts those records.
    fn drop(&mut self) {
        self.append_queued();
    }
}

/// Reads the index as its checkpoint left it (see the module docs).
fn load(dir: &Path, storage: &dyn Storage, log_min: u64, log_end: u64) -> Result<State, Damaged> {
    let damaged = |reason: String| Damaged {
        path: dir.to_path_buf(),
        reason,
    };
    let mut starts = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries.flatten() {
                if let Some(start) = e.file_name().to_str().and_then(format::parse_file_name) {
                    starts.push(start);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::empty(log_min)),
        Err(e) => return Err(damaged(format!("cannot list the folder: {e}"))),
    }
    starts.sort_unstable();
    let ckpt_path = dir.join(format::CHECKPOINT_NAME);
    let ckpt = match std::fs::read(&ckpt_path) {
        Ok(b) => Checkpoint::decode(&b).map_err(|r| Damaged {
            path: ckpt_path.clone(),
            reason: r.into(),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && starts.is_empty() => {
            return Ok(State::empty(log_min));
        }
        Err(e) => return Err(damaged(format!("cannot read the checkpoint: {e}"))),
    };
    if ckpt.next > log_end {
        return Err(damaged(format!(
            "checkpoint at {} is past the commit log's end {log_end}",
            ckpt.next
        )));
    }
    let mut state = State::empty(ckpt.next.max(log_min));
    for start in starts {
        let path = format::file_path(dir, start);
        if ckpt.file_start == format::NO_FILE || start > ckpt.file_start {
            // Created after the checkpoint: its records are indexed again.
            storage
                .remove(&path)
                .map_err(|e| damaged(format!("cannot remove {}: {e}", path.display())))?;
            state.dir_changed = true;
            continue;
        }
        let newest = start == ckpt.file_start;
        let entries = newest.then_some(ckpt.entry_count);
        let mut f = match IndexFile::open(storage, &path, start, entries)? {
            Ok(f) => f,
            Err(e) => return Err(damaged(e.to_string())),
        };
        if newest {
            f.rebuild_slots(ckpt.next)?;
        }
        state.files.push(f);
    }
    if state.files.last().map(|f| f.header().first_phys) != Some(ckpt.file_start)
        && ckpt.file_start != format::NO_FILE
    {
        return Err(damaged("the checkpoint names a missing file".into()));
    }
    state.written = Some(ckpt);
    Ok(state)
}

/// Removes every index file and the checkpoint (a rebuild starts from nothing).
fn remove_all(dir: &Path, storage: &dyn Storage) -> StoreResult<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io("listing", dir, e)),
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if format::parse_file_name(&name).is_some() || name == format::CHECKPOINT_NAME {
            let path = e.path();
            storage
                .remove(&path)
                .map_err(|err| StoreError::io("removing key index file", &path, err))?;
        }
    }
    storage
        .sync_dir(dir)
        .map_err(|e| StoreError::io("syncing folder", dir, e))
}
