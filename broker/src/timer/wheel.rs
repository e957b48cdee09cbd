//! The timer wheel: the pending set on disk, one slot per due second, and the one slot
//! being delivered in memory.
//!
//! State: the checkpoint (`<data>/timer/checkpoint`, atomic JSON) says how far the
//! `%TIMER%` queue is indexed into slot files (`indexed_next`) and which seconds are
//! delivered (`done_before_sec`, the current second). Only the current second's timers
//! are in memory, sorted by due time, so memory follows one second of timers, never the
//! pending set. The wheel does no store I/O: the service feeds it new timers and delivers
//! what it hands out, and it is driven by a clock passed in, so tests can run it against
//! a model.
//!
//! Crash safety: the checkpoint is written only after the slot files it covers are synced
//! and after the caller made the delivered copies durable (`save`'s hook, or the service
//! waiting for the flusher between `begin_save` and `prepare_save`). The syncs and the
//! checkpoint write (`SaveWrite`) can run on another thread while delivery goes on. A crash
//! before a save re-indexes the timers after `indexed_next` (a duplicate entry is
//! dropped when its slot loads) and redelivers the current second: at-least-once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::error::TimerError;
use super::format::{Entry, Kind};
use super::slots::{self, live, SlotDir, Unsynced};
use crate::store::fsutil::atomic_write;

const CHECKPOINT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Checkpoint {
    version: u32,
    /// The first `%TIMER%` queue offset not yet in a slot file.
    indexed_next: u64,
    /// Seconds below this one are delivered (their files may be removed).
    done_before_sec: u64,
}

/// What a recall found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecallOutcome {
    /// Removed for good (a tombstone is on disk).
    Recalled,
    /// Recalled earlier.
    AlreadyRecalled,
    /// Delivered already (or due in a second already delivered).
    AlreadyDelivered,
}

/// The current second, loaded.
#[derive(Debug, Default)]
struct Current {
    second: u64,
    pending: BTreeMap<(u64, u64), Entry>,
    delivered: HashSet<u64>,
    recalled: HashSet<u64>,
}

/// The checkpoint file and what it last received, shared by the wheel (recalls write
/// it) and whichever thread writes a save.
#[derive(Debug)]
struct CheckpointFile {
    path: PathBuf,
    saved: Mutex<Checkpoint>,
}

impl CheckpointFile {
    fn saved(&self) -> Checkpoint {
        *self.saved.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `next(last written)`, atomically. The index position never moves back: a
    /// recall may have written a later one with its tombstone.
    fn write(&self, next: impl FnOnce(Checkpoint) -> Checkpoint) -> Result<(), TimerError> {
        let mut saved = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
        let mut ckpt = next(*saved);
        ckpt.indexed_next = ckpt.indexed_next.max(saved.indexed_next);
        let bytes = serde_json::to_vec(&ckpt).unwrap_or_default();
        atomic_write(&self.path, &bytes)
            .map_err(|e| TimerError::store("saving", "timer checkpoint", e))?;
        *saved = ckpt;
        Ok(())
    }
}

/// What a save makes durable, taken by [`Wheel::prepare_save`]: the slot files written
/// since the last save, then the checkpoint, then the files of delivered seconds go.
#[derive(Debug)]
pub(crate) struct SaveWrite {
    unsynced: Unsynced,
    ckpt: Checkpoint,
    remove: Vec<PathBuf>,
    checkpoint: Arc<CheckpointFile>,
}

impl SaveWrite {
    /// Syncs `carry` (what an earlier failed save left) and this save's files, writes the
    /// checkpoint, removes delivered seconds' files (those left by an earlier failure in
    /// `remove` too).
    ///
    /// # Errors
    /// Any step failed: the checkpoint is then unchanged on disk and what is left to do
    /// stays in `carry` and `remove`, for the next save.
    pub(crate) fn write(
        self,
        carry: &mut Unsynced,
        remove: &mut Vec<PathBuf>,
    ) -> Result<(), TimerError> {
        carry.absorb(self.unsynced);
        remove.extend(self.remove);
        carry.sync()?;
        let ckpt = self.ckpt;
        self.checkpoint.write(|_| ckpt)?;
        while let Some(path) = remove.last() {
            slots::remove_file(path)?;
            remove.pop();
        }
        Ok(())
    }
}

/// Delivery progress taken by [`Wheel::begin_save`], written by [`Wheel::finish_save`].
#[derive(Debug)]
pub(crate) struct SaveSnapshot {
    ckpt: Checkpoint,
    marks: Vec<(u64, Entry)>,
    remove: Vec<u64>,
}

/// The pending timers, on disk, and the current second in memory.
#[derive(Debug)]
pub(crate) struct Wheel {
    slots: SlotDir,
    checkpoint: Arc<CheckpointFile>,
    topics_path: PathBuf,
    ckpt: Checkpoint,
    /// Seconds at or after the current one that have a slot file.
    seconds: BTreeSet<u64>,
    current: Option<Current>,
    /// Delivered seconds whose files go once the checkpoint past them is saved.
    to_remove: Vec<u64>,
    /// Delivery marks not yet written: written at the next save, after the delivered
    /// copies are durable, so a mark never outlives its copy.
    marks: Vec<(u64, Entry)>,
    /// Delivery progress not yet in the checkpoint.
    dirty: bool,
    /// Real topic names by id, and ids by name (`<data>/timer/topics`).
    topic_names: Vec<String>,
    topic_ids: HashMap<String, u32>,
    pending_by_topic: HashMap<u32, u64>,
}

impl Wheel {
    /// Opens the wheel under `dir` (`<data>/timer`). Reads every pending slot once to count
    /// the pending timers per topic: start-up follows the pending set, never history.
    ///
    /// # Errors
    /// I/O errors; a corrupt checkpoint, topic table or slot header.
    pub(crate) fn open(dir: &Path, now_ms: u64) -> Result<Self, TimerError> {
        let checkpoint_path = dir.join("checkpoint");
        let topics_path = dir.join("topics");
        let ckpt = read_json::<Checkpoint>(&checkpoint_path)?.unwrap_or(Checkpoint {
            version: CHECKPOINT_VERSION,
            indexed_next: 0,
            done_before_sec: now_ms / 1000,
        });
        if ckpt.version != CHECKPOINT_VERSION {
            return Err(TimerError::Corrupt {
                path: checkpoint_path,
                reason: format!("format version {}", ckpt.version),
            });
        }
        let topic_names: Vec<String> = read_json(&topics_path)?.unwrap_or_default();
        let topic_ids = topic_names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), u32::try_from(i).unwrap_or(u32::MAX)))
            .collect();
        let (mut slots, mut seconds) = SlotDir::open(&dir.join("slots"))?;
        // Files of delivered seconds left by a crash between checkpoint and removal.
        let stale: Vec<u64> = seconds.range(..ckpt.done_before_sec).copied().collect();
        for s in stale {
            slots.remove(s)?;
            seconds.remove(&s);
        }
        let mut pending_by_topic = HashMap::new();
        for s in &seconds {
            for e in live(&slots.read(*s)?).alive {
                *pending_by_topic.entry(e.topic_id).or_insert(0) += 1;
            }
        }
        Ok(Self {
            slots,
            checkpoint: Arc::new(CheckpointFile {
                path: checkpoint_path,
                saved: Mutex::new(ckpt),
            }),
            topics_path,
            ckpt,
            seconds,
            current: None,
            to_remove: Vec::new(),
            marks: Vec::new(),
            dirty: false,
            topic_names,
            topic_ids,
            pending_by_topic,
        })
    }

    /// The first `%TIMER%` queue offset not yet indexed.
    pub(crate) fn indexed_next(&self) -> u64 {
        self.ckpt.indexed_next
    }

    /// Moves the index position to `next` even backwards: the `%TIMER%` queue lost its
    /// tail in a crash, and new timers take those offsets again.
    pub(crate) fn reset_indexed(&mut self, next: u64) {
        self.ckpt.indexed_next = next;
        self.dirty = true;
    }

    /// All pending timers.
    pub(crate) fn pending_total(&self) -> u64 {
        self.pending_by_topic.values().sum()
    }

    /// Pending timers per real topic.
    pub(crate) fn pending_by_topic(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.pending_by_topic
            .iter()
            .filter(|(_, n)| **n > 0)
            .filter_map(|(id, n)| Some((self.topic_names.get(*id as usize)?.as_str(), *n)))
    }

    /// Pending timers of one topic.
    pub(crate) fn pending_of(&self, topic: &str) -> u64 {
        self.topic_ids
            .get(topic)
            .and_then(|id| self.pending_by_topic.get(id))
            .copied()
            .unwrap_or(0)
    }

    /// The id of a real topic, adding it to the table (saved at once) if new.
    ///
    /// # Errors
    /// Saving the table failed.
    pub(crate) fn topic_id(&mut self, topic: &str) -> Result<u32, TimerError> {
        if let Some(id) = self.topic_ids.get(topic) {
            return Ok(*id);
        }
        let id = u32::try_from(self.topic_names.len()).map_err(|_| TimerError::Corrupt {
            path: self.topics_path.clone(),
            reason: "too many topics".into(),
        })?;
        self.topic_names.push(topic.to_string());
        let bytes = serde_json::to_vec(&self.topic_names).unwrap_or_default();
        if let Err(e) = atomic_write(&self.topics_path, &bytes) {
            self.topic_names.pop();
            return Err(TimerError::store("saving", "timer topic table", e));
        }
        self.topic_ids.insert(topic.to_string(), id);
        Ok(id)
    }

    /// Indexes timers (kind `Timer`, in queue-offset order) up to `next` (exclusive). A
    /// timer due before the current second goes into the current second: due now.
    ///
    /// # Errors
    /// Slot writes failed; nothing after the failing one is indexed.
    pub(crate) fn add(&mut self, entries: &[Entry], next: u64) -> Result<(), TimerError> {
        let now_sec = self.ckpt.done_before_sec;
        let mut by_second: BTreeMap<u64, Vec<Entry>> = BTreeMap::new();
        for e in entries {
            by_second
                .entry((e.due_ms / 1000).max(now_sec))
                .or_default()
                .push(*e);
        }
        for (second, list) in by_second {
            self.slots.append(second, &list)?;
            self.seconds.insert(second);
            for e in &list {
                *self.pending_by_topic.entry(e.topic_id).or_insert(0) += 1;
            }
            if let Some(cur) = self.current.as_mut().filter(|c| c.second == second) {
                for e in list {
                    cur.pending.insert((e.due_ms, e.queue_offset), e);
                }
            }
        }
        self.ckpt.indexed_next = self.ckpt.indexed_next.max(next);
        self.dirty = true;
        Ok(())
    }

    /// Takes out the timers due at `now_ms`, in due order, at most `max`; moves past
    /// finished seconds. Give them back with [`Self::delivered`] or [`Self::put_back`].
    ///
    /// # Errors
    /// Reading a slot failed.
    pub(crate) fn take_due(&mut self, now_ms: u64, max: usize) -> Result<Vec<Entry>, TimerError> {
        loop {
            let cur = self.load_current()?;
            let mut out = Vec::new();
            while out.len() < max {
                match cur.pending.first_key_value() {
                    Some((&(due, _), _)) if due <= now_ms => {
                        if let Some((_, e)) = cur.pending.pop_first() {
                            out.push(e);
                        }
                    }
                    _ => break,
                }
            }
            if !out.is_empty() || !cur.pending.is_empty() {
                return Ok(out);
            }
            let second = cur.second;
            if now_ms < (second + 1) * 1000 {
                return Ok(out);
            }
            // The second is over and delivered: the next one with timers, or now.
            let next = self
                .seconds
                .range(second + 1..)
                .next()
                .copied()
                .unwrap_or(u64::MAX)
                .min(now_ms / 1000);
            self.current = None;
            if self.seconds.remove(&second) {
                self.to_remove.push(second);
            }
            self.ckpt.done_before_sec = next;
            self.dirty = true;
        }
    }

    fn load_current(&mut self) -> Result<&mut Current, TimerError> {
        let second = self.ckpt.done_before_sec;
        if self.current.as_ref().map(|c| c.second) != Some(second) {
            let state = live(&self.slots.read(second)?);
            self.current = Some(Current {
                second,
                pending: state
                    .alive
                    .into_iter()
                    .map(|e| ((e.due_ms, e.queue_offset), e))
                    .collect(),
                delivered: state.delivered.into_iter().collect(),
                recalled: state.recalled.into_iter().collect(),
            });
        }
        self.current.as_mut().ok_or(TimerError::Closed)
    }

    /// Records that `entries` (from [`Self::take_due`]) were delivered.
    pub(crate) fn delivered(&mut self, entries: &[Entry]) {
        for e in entries {
            if let Some(n) = self.pending_by_topic.get_mut(&e.topic_id) {
                *n = n.saturating_sub(1);
            }
            if let Some(cur) = self.current.as_mut() {
                cur.delivered.insert(e.queue_offset);
                self.marks.push((
                    cur.second,
                    Entry {
                        kind: Kind::Delivered,
                        ..*e
                    },
                ));
            }
        }
        self.dirty = true;
    }

    /// Gives back timers that could not be delivered now.
    pub(crate) fn put_back(&mut self, entries: Vec<Entry>) {
        if let Some(cur) = self.current.as_mut() {
            for e in entries {
                cur.pending.insert((e.due_ms, e.queue_offset), e);
            }
        }
    }

    /// When there is next something to do at or after `now_ms`: the earliest due timer
    /// of the current second, or the end of that second when later seconds have timers.
    /// `None` when nothing is pending.
    pub(crate) fn next_due_ms(&self) -> Option<u64> {
        let cur = self.current.as_ref()?;
        if let Some(((due, _), _)) = cur.pending.first_key_value() {
            return Some(*due);
        }
        let next = self.seconds.range(cur.second + 1..).next()?;
        Some(next.max(&(cur.second + 1)) * 1000)
    }

    /// Whether delivery or indexing progress is not yet in the checkpoint.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Saves the checkpoint: [`Self::begin_save`], `make_durable` (the caller flushes the
    /// delivered copies), then [`Self::finish_save`].
    ///
    /// # Errors
    /// Any step failed; the checkpoint is then unchanged on disk and the progress is kept
    /// for the next save.
    #[cfg(test)]
    pub(crate) fn save(
        &mut self,
        make_durable: impl FnOnce() -> Result<(), TimerError>,
    ) -> Result<(), TimerError> {
        self.save_carrying(make_durable, &mut Unsynced::default(), &mut Vec::new())
    }

    /// [`Self::save`], also finishing what earlier failed saves left (`carry`, `remove`;
    /// see [`SaveWrite::write`]). Nothing new to save still finishes those.
    ///
    /// # Errors
    /// As [`Self::save`].
    pub(crate) fn save_carrying(
        &mut self,
        make_durable: impl FnOnce() -> Result<(), TimerError>,
        carry: &mut Unsynced,
        remove: &mut Vec<PathBuf>,
    ) -> Result<(), TimerError> {
        let Some(snapshot) = self.begin_save() else {
            carry.sync()?;
            while let Some(path) = remove.last() {
                slots::remove_file(path)?;
                remove.pop();
            }
            return Ok(());
        };
        if let Err(e) = make_durable() {
            self.abandon_save(snapshot);
            return Err(e);
        }
        self.prepare_save(snapshot)?.write(carry, remove)
    }

    /// Takes the progress not yet in the checkpoint, to be written by
    /// [`Self::finish_save`] once every copy delivered so far is durable. Delivery goes on
    /// meanwhile; what it records goes to the next save. `None` when nothing is new.
    pub(crate) fn begin_save(&mut self) -> Option<SaveSnapshot> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        Some(SaveSnapshot {
            ckpt: self.ckpt,
            marks: std::mem::take(&mut self.marks),
            remove: std::mem::take(&mut self.to_remove),
        })
    }

    /// Writes a snapshot from [`Self::begin_save`] on this thread: [`Self::prepare_save`]
    /// then [`SaveWrite::write`]. The caller has made the copies delivered before the
    /// snapshot durable.
    ///
    /// # Errors
    /// Any step failed; the checkpoint is then unchanged on disk.
    #[cfg(test)]
    pub(crate) fn finish_save(&mut self, snapshot: SaveSnapshot) -> Result<(), TimerError> {
        self.prepare_save(snapshot)?
            .write(&mut Unsynced::default(), &mut Vec::new())
    }

    /// Appends a snapshot's delivery marks to their slot files and takes everything the
    /// save must make durable, for [`SaveWrite::write`] (which may run on another thread
    /// while delivery goes on).
    ///
    /// # Errors
    /// A mark could not be appended; the snapshot's progress is then kept for the next
    /// save.
    pub(crate) fn prepare_save(&mut self, snapshot: SaveSnapshot) -> Result<SaveWrite, TimerError> {
        let mut by_second: BTreeMap<u64, Vec<Entry>> = BTreeMap::new();
        for (second, mark) in &snapshot.marks {
            // A finished second's file goes anyway.
            if !snapshot.remove.contains(second) {
                by_second.entry(*second).or_default().push(*mark);
            }
        }
        let appended = by_second
            .iter()
            .try_for_each(|(second, marks)| self.slots.append(*second, marks));
        if let Err(e) = appended {
            // A mark written twice is harmless: a slot's delivered set is a set.
            self.abandon_save(snapshot);
            return Err(e);
        }
        Ok(SaveWrite {
            unsynced: self.slots.take_unsynced(),
            ckpt: snapshot.ckpt,
            remove: snapshot
                .remove
                .iter()
                .map(|s| self.slots.path_of(*s))
                .collect(),
            checkpoint: Arc::clone(&self.checkpoint),
        })
    }

    /// Gives a snapshot's progress back to the wheel, for the next save.
    pub(crate) fn abandon_save(&mut self, snapshot: SaveSnapshot) {
        let mut marks = snapshot.marks;
        marks.append(&mut self.marks);
        self.marks = marks;
        let mut remove = snapshot.remove;
        remove.append(&mut self.to_remove);
        self.to_remove = remove;
        self.dirty = true;
    }

    /// Recalls the timer at `queue_offset` due at `due_ms`: a tombstone, synced, in its
    /// slot file.
    ///
    /// # Errors
    /// I/O errors; `Ok(None)` when no such timer is indexed.
    pub(crate) fn recall(
        &mut self,
        queue_offset: u64,
        due_ms: u64,
    ) -> Result<Option<RecallOutcome>, TimerError> {
        let key = (due_ms, queue_offset);
        if let Some(cur) = self.current.as_mut() {
            let second = cur.second;
            if let Some(e) = cur.pending.remove(&key) {
                cur.recalled.insert(queue_offset);
                self.tombstone(second, e)?;
                return Ok(Some(RecallOutcome::Recalled));
            }
            if cur.delivered.contains(&queue_offset) {
                return Ok(Some(RecallOutcome::AlreadyDelivered));
            }
            if cur.recalled.contains(&queue_offset) {
                return Ok(Some(RecallOutcome::AlreadyRecalled));
            }
        }
        let second = due_ms / 1000;
        if second < self.ckpt.done_before_sec {
            // Due in a delivered second, and not held back in the current one.
            return Ok(Some(RecallOutcome::AlreadyDelivered));
        }
        let state = live(&self.slots.read(second)?);
        if state.recalled.contains(&queue_offset) {
            return Ok(Some(RecallOutcome::AlreadyRecalled));
        }
        if state.delivered.contains(&queue_offset) {
            return Ok(Some(RecallOutcome::AlreadyDelivered));
        }
        match state
            .alive
            .into_iter()
            .find(|e| e.queue_offset == queue_offset)
        {
            Some(e) => {
                self.tombstone(second, e)?;
                Ok(Some(RecallOutcome::Recalled))
            }
            None => Ok(None),
        }
    }

    /// Writes a tombstone durably. The index position is saved with it (the slot files
    /// are synced, and the delivered seconds stay as last saved): were the timer indexed
    /// again after a crash, it could land in a later slot than its tombstone.
    fn tombstone(&mut self, second: u64, e: Entry) -> Result<(), TimerError> {
        let stone = Entry {
            kind: Kind::Tombstone,
            ..e
        };
        self.slots.append(second, &[stone])?;
        self.slots.sync()?;
        if self.checkpoint.saved().indexed_next <= e.queue_offset {
            let indexed_next = self.ckpt.indexed_next;
            self.checkpoint.write(|saved| Checkpoint {
                indexed_next,
                ..saved
            })?;
        }
        if let Some(n) = self.pending_by_topic.get_mut(&e.topic_id) {
            *n = n.saturating_sub(1);
        }
        Ok(())
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, TimerError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| TimerError::Corrupt {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TimerError::io("read", path, e)),
    }
}

#[cfg(test)]
#[path = "wheel_tests.rs"]
mod tests;
