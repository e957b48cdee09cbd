//! Committed progress of every (group, topic, queue), kept in memory and saved as a whole
//! to `<data>/config/offsets` by [`ConsumerOffsets::persist`].
//!
//! The file is JSON, written atomically (temp file, fsync, rename, fsync the folder):
//!
//! ```text
//! { "version": 1,
//!   "queues": [ { "group": "billing", "topic": "orders", "queue_id": 3,
//!                 "offset": 10, "acked_above": [ { "start": 11, "end": 1000 } ] } ] }
//! ```
//!
//! Losing commits made after the last persist only causes redelivery. A file that does
//! not parse is an error at open rather than a silent reset to zero, which would redeliver
//! everything.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use protocol::messages::{OffsetRange, QueueCommit};
use serde::{Deserialize, Serialize};

use super::ack::{self, Normalized};
use super::error::OffsetsError;
use crate::store::fsutil::atomic_write;

/// Version of the offsets file this code writes and reads.
pub const OFFSETS_FORMAT_VERSION: u32 = 1;

/// Committed offsets of all groups. Send + Sync; share it in an `Arc`.
#[derive(Debug)]
pub struct ConsumerOffsets {
    path: PathBuf,
    state: Mutex<State>,
    /// Serialises persists so an older snapshot never renames over a newer one.
    persist_lock: Mutex<()>,
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
        let dir = data_dir.join("config");
        fs::create_dir_all(&dir).map_err(|source| OffsetsError::Io {
            op: "create folder",
            path: dir.clone(),
            source,
        })?;
        let path = dir.join("offsets");
        let groups = match fs::read(&path) {
            Ok(bytes) => load(&path, &bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(OffsetsError::Io {
                    op: "read",
                    path,
                    source,
                })
            }
        };
        Ok(Self {
            path,
            state: Mutex::new(State {
                groups,
                changes: 0,
                reset_epochs: HashMap::new(),
            }),
            persist_lock: Mutex::new(()),
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
        let mut changed = false;
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
            match slot {
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    if *o.get() != new {
                        o.insert(new);
                        changed = true;
                    }
                }
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(new);
                    changed = true;
                }
            }
        }
        if changed {
            state.changes += 1;
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
        commit
    }

    /// Forgets every group's progress on a topic (after the topic is deleted).
    pub fn remove_topic(&self, topic: &str) {
        let mut state = self.lock();
        let mut changed = false;
        for topics in state.groups.values_mut() {
            changed |= topics.remove(topic).is_some();
        }
        state.groups.retain(|_, topics| !topics.is_empty());
        if changed {
            state.changes += 1;
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
        topics.values().map(BTreeMap::len).sum()
    }

    /// Whether something changed since the last successful [`ConsumerOffsets::persist`].
    pub fn is_dirty(&self) -> bool {
        self.lock().changes != self.persisted_changes.load(Ordering::Acquire)
    }

    /// Saves a snapshot atomically if anything changed since the last save.
    ///
    /// # Errors
    /// Encoding or I/O errors; the offsets stay dirty and the old file stays intact.
    pub fn persist(&self) -> Result<(), OffsetsError> {
        let _one_at_a_time = self
            .persist_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (bytes, changes) = {
            let state = self.lock();
            if state.changes == self.persisted_changes.load(Ordering::Acquire) {
                return Ok(());
            }
            (encode(&state)?, state.changes)
        };
        atomic_write(&self.path, &bytes).map_err(|source| OffsetsError::Save {
            path: self.path.clone(),
            source: Box::new(source),
        })?;
        self.persisted_changes.store(changes, Ordering::Release);
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
