//! Committed progress of every (group, topic, queue), kept in memory and saved by
//! [`ConsumerOffsets::persist`] to `<data>/config/offsets` (a snapshot) and
//! `<data>/config/offsets.jnl` (what changed since).
//!
//! The snapshot is JSON, written atomically (temp file, fsync, rename, fsync the folder):
//!
//! ```text
//! { "version": 1,
//!   "queues": [ { "group": "billing", "topic": "orders", "queue_id": 3,
//!                 "offset": 10, "acked_above": [ { "start": 11, "end": 1000 } ] } ] }
//! ```
//!
//! A persist appends only the queues that changed since the last one, as one CRC frame
//! (see `store::journal_frame`) of kind 1 whose payload is a JSON list of
//! [`JournalEntry`] (no `offset`: the entry was removed), and syncs the journal. Once the
//! journal would pass twice the snapshot's size the persist writes a new snapshot and
//! empties the journal instead; the batch is appended first, so a journal left behind by
//! a crash in between replays over the new snapshot without changing it.
//!
//! Losing commits made after the last persist only causes redelivery. A file that does
//! not parse is an error at open rather than a silent reset to zero, which would redeliver
//! everything.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use protocol::messages::{OffsetRange, QueueCommit};
use serde::{Deserialize, Serialize};

use super::ack::{self, Normalized};
use super::error::OffsetsError;
use commitlog::storage::{RealFs, Storage};

use crate::store::fsutil::atomic_write_on;
use crate::store::journal_frame::{encode_frame, split_frames};

/// Kind byte of a journal frame holding a batch of entries.
const KIND_BATCH: u8 = 1;
/// The journal may grow to this many bytes, or twice the snapshot, before compaction.
const MIN_COMPACT_BYTES: u64 = 64 * 1024;

/// Version of the offsets file this code writes and reads.
pub const OFFSETS_FORMAT_VERSION: u32 = 1;

/// Committed offsets of all groups. Send + Sync; share it in an `Arc`.
#[derive(Debug)]
pub struct ConsumerOffsets {
    path: PathBuf,
    state: Mutex<State>,
    /// Where snapshots are written: the real file system, or a fault-injecting seam.
    storage: Arc<dyn Storage>,
    /// The journal; its lock serialises persists so an older snapshot never renames over
    /// a newer one and batches are appended in order.
    journal: Mutex<Journal>,
    /// The change counter of the last snapshot on disk.
    persisted_changes: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// group -> topic -> queue id -> progress, in canonical form (see [`ack`]).
    groups: BTreeMap<String, BTreeMap<String, BTreeMap<u32, Progress>>>,
    /// Bumped by every change; compared with `persisted_changes` for dirty tracking.
    changes: u64,
    /// group -> epoch of its last reset since start (see [`ConsumerOffsets::begin_reset`]).
    /// Not saved: after a restart no member holds state a reset must invalidate.
    reset_epochs: HashMap<String, u64>,
    /// (group, topic, queue) changed since the last persist.
    dirty: BTreeSet<(String, String, u32)>,
}

#[derive(Debug)]
struct Journal {
    path: PathBuf,
    /// Opened at the first append.
    file: Option<File>,
    len: u64,
    snapshot_len: u64,
    /// A failed append could not be cut off: the next persist rewrites the snapshot.
    must_compact: bool,
}

/// One queue's progress in the journal; no `offset` means it was removed.
#[derive(Debug, Serialize, Deserialize)]
struct JournalEntry {
    group: String,
    topic: String,
    queue_id: u32,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    acked_above: Vec<OffsetRange>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Progress {
    offset: u64,
    acked_above: Vec<OffsetRange>,
}

#[derive(Serialize, Deserialize)]
struct FileHeader {
    version: u32,
}

#[derive(Serialize, Deserialize)]
struct FileBody {
    version: u32,
    queues: Vec<FileEntry>,
}

#[derive(Serialize, Deserialize)]
struct FileEntry {
    group: String,
    topic: String,
    queue_id: u32,
    offset: u64,
    acked_above: Vec<OffsetRange>,
}

impl ConsumerOffsets {
    /// Loads `<data_dir>/config/offsets`, creating the folder if needed; no file means no
    /// commits yet.
    ///
    /// # Errors
    /// I/O errors, a file that does not parse, has an unknown version or holds an invalid
    /// range.
    pub fn open(data_dir: &Path) -> Result<Self, OffsetsError> {
        Self::open_on(data_dir, Arc::new(RealFs))
    }

    /// [`ConsumerOffsets::open`], saving through `storage` (the store's file-system seam).
    ///
    /// # Errors
    /// As for `open`.
    pub fn open_on(data_dir: &Path, storage: Arc<dyn Storage>) -> Result<Self, OffsetsError> {
        let dir = data_dir.join("config");
        fs::create_dir_all(&dir).map_err(|source| OffsetsError::Io {
            op: "create folder",
            path: dir.clone(),
            source,
        })?;
        let path = dir.join("offsets");
        let (mut groups, snapshot_len) = match fs::read(&path) {
            Ok(bytes) => (load(&path, &bytes)?, bytes.len() as u64),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (BTreeMap::new(), 0),
            Err(source) => {
                return Err(OffsetsError::Io {
                    op: "read",
                    path,
                    source,
                })
            }
        };
        let journal_path = dir.join("offsets.jnl");
        let len = replay_journal(&journal_path, &mut groups)?;
        Ok(Self {
            path,
            state: Mutex::new(State {
                groups,
                changes: 0,
                reset_epochs: HashMap::new(),
                dirty: BTreeSet::new(),
            }),
            journal: Mutex::new(Journal {
                path: journal_path,
                file: None,
                len,
                snapshot_len,
                // Without a snapshot, the first save writes one.
                must_compact: snapshot_len == 0,
            }),
            storage,
            persisted_changes: AtomicU64::new(0),
        })
    }

    /// The file this saves to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a group's progress on some queues, replacing what was there. Each commit is
    /// normalised (see [`ack`]); beyond [`ack::MAX_ACK_RANGES`] ranges the highest are
    /// dropped, which can only cause redelivery. All commits apply or none does.
    ///
    /// # Errors
    /// [`OffsetsError::InvalidRange`] for a range that ends before it starts.
    pub fn commit(&self, group: &str, commits: &[QueueCommit]) -> Result<(), OffsetsError> {
        self.commit_fenced(group, None, commits)
    }

    /// As [`ConsumerOffsets::commit`], for a member that last saw the group's reset epoch
    /// `seen_epoch`: refused when the group was reset since, so that a member still
    /// holding its old position cannot undo the reset.
    ///
    /// # Errors
    /// As [`ConsumerOffsets::commit`]; [`OffsetsError::ResetSince`] for a stale member.
    pub fn commit_fenced(
        &self,
        group: &str,
        seen_epoch: Option<u64>,
        commits: &[QueueCommit],
    ) -> Result<(), OffsetsError> {
        let normalized = commits
            .iter()
            .map(|c| {
                ack::normalize(c.offset, &c.acked_above)
                    .map(|n| (c, n))
                    .map_err(|bad| OffsetsError::InvalidRange {
                        group: group.to_string(),
                        topic: c.topic.clone(),
                        queue_id: c.queue_id,
                        start: bad.start,
                        end: bad.end,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut state = self.lock();
        // Checked under the same lock as the reset, so a commit is either before the
        // reset (and overwritten by it) or refused.
        let current = state.reset_epochs.get(group).copied().unwrap_or(0);
        if let Some(seen) = seen_epoch.filter(|seen| current != 0 && *seen != current) {
            return Err(OffsetsError::ResetSince {
                group: group.to_string(),
                seen,
                current,
            });
        }
        let mut changed = Vec::new();
        for (c, n) in normalized {
            let Normalized {
                offset,
                acked_above,
                dropped_ranges,
            } = n;
            if dropped_ranges > 0 {
                tracing::warn!(
                    group,
                    topic = %c.topic,
                    queue_id = c.queue_id,
                    dropped_ranges,
                    "too many acked ranges; the highest are forgotten and will be redelivered"
                );
            }
            let new = Progress {
                offset,
                acked_above,
            };
            let slot = state
                .groups
                .entry(group.to_string())
                .or_default()
                .entry(c.topic.clone())
                .or_default()
                .entry(c.queue_id);
            let differs = match slot {
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    let differs = *o.get() != new;
                    if differs {
                        o.insert(new);
                    }
                    differs
                }
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(new);
                    true
                }
            };
            if differs {
                changed.push((group.to_string(), c.topic.clone(), c.queue_id));
            }
        }
        if !changed.is_empty() {
            state.changes += 1;
            state.dirty.extend(changed);
        }
        Ok(())
    }

    /// Starts a reset of `group`'s offsets: a new epoch, unique also across restarts (at
    /// least `now_ms`), which members learn by heartbeat; commits made under an older
    /// epoch are refused from now on. Returns the epoch.
    pub fn begin_reset(&self, group: &str, now_ms: u64) -> u64 {
        let mut state = self.lock();
        let slot = state.reset_epochs.entry(group.to_string()).or_insert(0);
        *slot = (*slot + 1).max(now_ms);
        *slot
    }

    /// The epoch of `group`'s last reset since start; 0 if none.
    pub fn reset_epoch(&self, group: &str) -> u64 {
        self.lock().reset_epochs.get(group).copied().unwrap_or(0)
    }

    /// A group's progress on one queue; `None` if it never committed there.
    pub fn get(&self, group: &str, topic: &str, queue_id: u32) -> Option<QueueCommit> {
        let state = self.lock();
        let p = state.groups.get(group)?.get(topic)?.get(&queue_id)?;
        Some(to_commit(topic, queue_id, p))
    }

    /// Every queue a group committed on, sorted by topic and queue id.
    pub fn queues_of(&self, group: &str) -> Vec<QueueCommit> {
        let state = self.lock();
        state
            .groups
            .get(group)
            .into_iter()
            .flatten()
            .flat_map(|(topic, queues)| queues.iter().map(|(q, p)| to_commit(topic, *q, p)))
            .collect()
    }

    /// Groups that committed anything, sorted.
    pub fn groups(&self) -> Vec<String> {
        self.lock().groups.keys().cloned().collect()
    }

    /// Moves a group's position on a queue to `offset`, forgetting acked ranges (`mq group
    /// reset`). Checking that the group has no live members is the caller's business.
    pub fn reset(&self, group: &str, topic: &str, queue_id: u32, offset: u64) -> QueueCommit {
        let p = Progress {
            offset,
            acked_above: Vec::new(),
        };
        let commit = to_commit(topic, queue_id, &p);
        let mut state = self.lock();
        state
            .groups
            .entry(group.to_string())
            .or_default()
            .entry(topic.to_string())
            .or_default()
            .insert(queue_id, p);
        state.changes += 1;
        state
            .dirty
            .insert((group.to_string(), topic.to_string(), queue_id));
        commit
    }

    /// Forgets every group's progress on a topic (after the topic is deleted).
    pub fn remove_topic(&self, topic: &str) {
        let mut state = self.lock();
        let mut removed = Vec::new();
        for (group, topics) in &mut state.groups {
            if let Some(queues) = topics.remove(topic) {
                removed.extend(
                    queues
                        .into_keys()
                        .map(|q| (group.clone(), topic.to_string(), q)),
                );
            }
        }
        state.groups.retain(|_, topics| !topics.is_empty());
        if !removed.is_empty() {
            state.changes += 1;
            state.dirty.extend(removed);
        }
    }

    /// Forgets a group's progress on every queue (and its reset epoch). Returns how many
    /// queues it had a committed offset on.
    pub fn remove_group(&self, group: &str) -> usize {
        let mut state = self.lock();
        state.reset_epochs.remove(group);
        let Some(topics) = state.groups.remove(group) else {
            return 0;
        };
        state.changes += 1;
        let removed: Vec<_> = topics
            .iter()
            .flat_map(|(t, queues)| queues.keys().map(|q| (group.to_string(), t.clone(), *q)))
            .collect();
        let n = removed.len();
        state.dirty.extend(removed);
        n
    }

    /// Whether something changed since the last successful [`ConsumerOffsets::persist`].
    pub fn is_dirty(&self) -> bool {
        self.lock().changes != self.persisted_changes.load(Ordering::Acquire)
    }

    /// Saves what changed since the last save: appended to the journal and synced, or,
    /// once the journal has grown past twice the snapshot, as a new snapshot.
    ///
    /// # Errors
    /// Encoding or I/O errors; the changes stay dirty (the next persist saves them) and
    /// what was saved before stays intact.
    pub fn persist(&self) -> Result<(), OffsetsError> {
        let mut journal = self.journal.lock().unwrap_or_else(PoisonError::into_inner);
        let (frame, keys, changes, snapshot) = {
            let mut state = self.lock();
            if state.changes == self.persisted_changes.load(Ordering::Acquire) {
                return Ok(());
            }
            let keys = std::mem::take(&mut state.dirty);
            let frame = match encode_batch(&state, &keys) {
                Ok(f) => f,
                Err(e) => {
                    state.dirty.extend(keys);
                    return Err(e);
                }
            };
            let limit = 2 * journal.snapshot_len.max(MIN_COMPACT_BYTES);
            let snapshot = if journal.must_compact || journal.len + frame.len() as u64 > limit {
                match encode(&state) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        state.dirty.extend(keys);
                        return Err(e);
                    }
                }
            } else {
                None
            };
            (frame, keys, state.changes, snapshot)
        };
        if let Err(e) = self.save(&mut journal, &frame, snapshot.as_deref()) {
            self.lock().dirty.extend(keys);
            return Err(e);
        }
        self.persisted_changes.store(changes, Ordering::Release);
        Ok(())
    }

    /// Appends `frame` to the journal; then either syncs it, or (with a snapshot) writes
    /// the snapshot and empties the journal.
    fn save(
        &self,
        journal: &mut Journal,
        frame: &[u8],
        snapshot: Option<&[u8]>,
    ) -> Result<(), OffsetsError> {
        let io_err = |op, path: &Path, source| OffsetsError::Io {
            op,
            path: path.to_path_buf(),
            source,
        };
        if journal.file.is_none() {
            let f = OpenOptions::new()
                .append(true)
                .create(true)
                .open(&journal.path)
                .map_err(|e| io_err("open", &journal.path, e))?;
            journal.file = Some(f);
        }
        let Some(file) = journal.file.as_mut() else {
            return Ok(());
        };
        if let Err(e) = file.write_all(frame) {
            if file.set_len(journal.len).is_err() {
                journal.must_compact = true;
            }
            return Err(io_err("append to", &journal.path, e));
        }
        journal.len += frame.len() as u64;
        let Some(snapshot) = snapshot else {
            return file
                .sync_data()
                .map_err(|e| io_err("sync", &journal.path, e));
        };
        atomic_write_on(self.storage.as_ref(), &self.path, snapshot).map_err(|source| {
            OffsetsError::Save {
                path: self.path.clone(),
                source: Box::new(source),
            }
        })?;
        journal.snapshot_len = snapshot.len() as u64;
        // Emptied durably before the next append, so new frames never sit over old ones.
        file.set_len(0)
            .and_then(|()| file.sync_all())
            .map_err(|e| {
                journal.must_compact = true;
                io_err("empty", &journal.path, e)
            })?;
        journal.len = 0;
        journal.must_compact = false;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Updates never panic half-way, so a poisoned lock still guards consistent data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn to_commit(topic: &str, queue_id: u32, p: &Progress) -> QueueCommit {
    QueueCommit {
        topic: topic.to_string(),
        queue_id,
        offset: p.offset,
        acked_above: p.acked_above.clone(),
    }
}

fn encode(state: &State) -> Result<Vec<u8>, OffsetsError> {
    let queues = state
        .groups
        .iter()
        .flat_map(|(group, topics)| {
            topics.iter().flat_map(move |(topic, queues)| {
                queues.iter().map(move |(queue_id, p)| FileEntry {
                    group: group.clone(),
                    topic: topic.clone(),
                    queue_id: *queue_id,
                    offset: p.offset,
                    acked_above: p.acked_above.clone(),
                })
            })
        })
        .collect();
    let body = FileBody {
        version: OFFSETS_FORMAT_VERSION,
        queues,
    };
    serde_json::to_vec(&body).map_err(OffsetsError::Encode)
}

type Groups = BTreeMap<String, BTreeMap<String, BTreeMap<u32, Progress>>>;

/// The journal frame for the entries `keys` as they are in `state` now.
fn encode_batch(
    state: &State,
    keys: &BTreeSet<(String, String, u32)>,
) -> Result<Vec<u8>, OffsetsError> {
    let entries: Vec<JournalEntry> = keys
        .iter()
        .map(|(group, topic, queue_id)| {
            let p = state
                .groups
                .get(group)
                .and_then(|t| t.get(topic))
                .and_then(|q| q.get(queue_id));
            JournalEntry {
                group: group.clone(),
                topic: topic.clone(),
                queue_id: *queue_id,
                offset: p.map(|p| p.offset),
                acked_above: p.map(|p| p.acked_above.clone()).unwrap_or_default(),
            }
        })
        .collect();
    let mut body = vec![KIND_BATCH];
    serde_json::to_writer(&mut body, &entries).map_err(OffsetsError::Encode)?;
    let mut frame = Vec::with_capacity(body.len() + 8);
    encode_frame(&mut frame, &body);
    Ok(frame)
}

/// Applies the journal at `path` (if any) over `groups`, cutting off a torn tail.
/// Returns the journal's length in bytes.
fn replay_journal(path: &Path, groups: &mut Groups) -> Result<u64, OffsetsError> {
    let corrupt = |reason: String| OffsetsError::CorruptJournal {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(OffsetsError::Io {
                op: "open",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|source| OffsetsError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        })?;
    let (bodies, good_len) = split_frames(&bytes).map_err(corrupt)?;
    for body in bodies {
        let Some((&KIND_BATCH, payload)) = body.split_first() else {
            return Err(corrupt(format!("unknown frame kind {:?}", body.first())));
        };
        let entries: Vec<JournalEntry> =
            serde_json::from_slice(payload).map_err(|e| corrupt(e.to_string()))?;
        for e in entries {
            let queues = groups.entry(e.group.clone()).or_default();
            match e.offset {
                Some(offset) => {
                    queues.entry(e.topic).or_default().insert(
                        e.queue_id,
                        Progress {
                            offset,
                            acked_above: e.acked_above,
                        },
                    );
                }
                None => {
                    if let Some(q) = queues.get_mut(&e.topic) {
                        q.remove(&e.queue_id);
                        if q.is_empty() {
                            queues.remove(&e.topic);
                        }
                    }
                }
            }
            if groups.get(&e.group).is_some_and(BTreeMap::is_empty) {
                groups.remove(&e.group);
            }
        }
    }
    if good_len < bytes.len() {
        tracing::warn!(path = %path.display(), kept = good_len, dropped = bytes.len() - good_len, "cutting a torn tail off the offsets journal");
        file.set_len(good_len as u64)
            .and_then(|()| file.sync_all())
            .map_err(|source| OffsetsError::Io {
                op: "truncate",
                path: path.to_path_buf(),
                source,
            })?;
    }
    Ok(good_len as u64)
}

fn load(path: &Path, bytes: &[u8]) -> Result<Groups, OffsetsError> {
    let corrupt = |source| OffsetsError::Corrupt {
        path: path.to_path_buf(),
        source,
    };
    let header: FileHeader = serde_json::from_slice(bytes).map_err(corrupt)?;
    if header.version != OFFSETS_FORMAT_VERSION {
        return Err(OffsetsError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: header.version,
            supported: OFFSETS_FORMAT_VERSION,
        });
    }
    let body: FileBody = serde_json::from_slice(bytes).map_err(corrupt)?;
    let mut groups = Groups::new();
    for e in body.queues {
        let n =
            ack::normalize(e.offset, &e.acked_above).map_err(|bad| OffsetsError::CorruptEntry {
                path: path.to_path_buf(),
                group: e.group.clone(),
                topic: e.topic.clone(),
                queue_id: e.queue_id,
                reason: format!(
                    "acked range {}..{} ends before it starts",
                    bad.start, bad.end
                ),
            })?;
        groups
            .entry(e.group)
            .or_default()
            .entry(e.topic)
            .or_default()
            .insert(
                e.queue_id,
                Progress {
                    offset: n.offset,
                    acked_above: n.acked_above,
                },
            );
    }
    Ok(groups)
}

#[cfg(test)]
#[path = "consumer_offsets_tests.rs"]
mod tests;
