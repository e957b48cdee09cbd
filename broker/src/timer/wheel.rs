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
//! and after the caller made the delivered copies durable (`save`'s hook). A crash
//! before a save re-indexes the timers after `indexed_next` (a duplicate entry is
//! dropped when its slot loads) and redelivers the current second: at-least-once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::TimerError;
use super::format::{Entry, Kind};
use super::slots::{live, SlotDir};
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

/// The pending timers, on disk, and the current second in memory.
#[derive(Debug)]
pub(crate) struct Wheel {
    slots: SlotDir,
    checkpoint_path: PathBuf,
    topics_path: PathBuf,
    ckpt: Checkpoint,
    /// The checkpoint as last written.
    saved: Checkpoint,
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
            checkpoint_path,
            topics_path,
            ckpt,
            saved: ckpt,
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

    /// Saves the checkpoint: syncs the slot files, runs `make_durable` (the caller flushes
    /// the delivered copies), writes the checkpoint, removes delivered seconds' files.
    ///
    /// # Errors
    /// Any step failed; the checkpoint is then unchanged on disk.
    pub(crate) fn save(
        &mut self,
        make_durable: impl FnOnce() -> Result<(), TimerError>,
    ) -> Result<(), TimerError> {
        if !self.dirty {
            return Ok(());
        }
        make_durable()?;
        let mut by_second: BTreeMap<u64, Vec<Entry>> = BTreeMap::new();
        for (second, mark) in std::mem::take(&mut self.marks) {
            // A finished second's file goes anyway.
            if !self.to_remove.contains(&second) {
                by_second.entry(second).or_default().push(mark);
            }
        }
        for (second, marks) in by_second {
            self.slots.append(second, &marks)?;
        }
        self.slots.sync()?;
        self.write_checkpoint(self.ckpt)?;
        self.dirty = false;
        for s in std::mem::take(&mut self.to_remove) {
            self.slots.remove(s)?;
        }
        Ok(())
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

    fn write_checkpoint(&mut self, ckpt: Checkpoint) -> Result<(), TimerError> {
        let bytes = serde_json::to_vec(&ckpt).unwrap_or_default();
        atomic_write(&self.checkpoint_path, &bytes)
            .map_err(|e| TimerError::store("saving", "timer checkpoint", e))?;
        self.saved = ckpt;
        Ok(())
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
        if self.saved.indexed_next <= e.queue_offset {
            self.write_checkpoint(Checkpoint {
                indexed_next: self.ckpt.indexed_next,
                ..self.saved
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
