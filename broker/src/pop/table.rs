//! The lease table of one group: pure state, no I/O, checked against a model below.
//!
//! Per queue it keeps a *cursor* (the next offset never handed out in this broker run)
//! and the *in-flight* leases below it. Everything below the cursor that is not in flight
//! is done: acked, rejected, skipped by the tag filter, or copied to the retry topic when
//! its lease expired. So the committed state is derived, never tracked apart: the floor is
//! the lowest in-flight offset (or the cursor), the acked set the gaps between in-flight
//! offsets. At load, the ranges the committed state already holds above its floor are
//! kept as `skip` until the cursor passes them, so a restart hands out only what was not
//! acked.
//!
//! A lease whose deadline passed, or that was rejected, is *ending*: its epoch changes
//! (every handle of it is refused) while the service writes its copy to the retry topic or
//! the dead-letter queue; then it is ended (done), or, if the write failed, leased again
//! to nobody with a new deadline so the write is retried when that passes.
//!
//! Messages that carry a *message group* are served first in, first out per (queue,
//! message group): only the group's oldest unfinished message is leased; the later ones
//! are *parked* (held by nobody, never due) until it ends. A lease of such a message that
//! runs out does not go to the retry topic (its copy would come after the group's later
//! messages): the slot becomes *ready* again in place, for the next receive, with one
//! more attempt. Parked and ready slots count as in flight, so the committed floor never
//! passes them.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use protocol::messages::OffsetRange;

use crate::groups::ack::{self, MAX_ACK_RANGES};

/// Deadline of an ending lease: never due.
const ENDING: u64 = u64::MAX;
/// Deadline of a message-group slot waiting behind the group's older message.
const PARKED: u64 = u64::MAX - 1;
/// Deadline of a message-group slot that the next receive hands out again.
const READY: u64 = u64::MAX - 2;
/// Epoch of a parked or ready slot: no handle carries it.
const NOBODY: u64 = u64::MAX;
/// Epoch of a slot whose lease is over (epochs handed out start at 1).
const DONE: u64 = 0;
/// Done slots a queue may keep beyond one per live lease before it compacts, and stale
/// due-time entries beyond two per lease before that index is rebuilt. Tiny under test so
/// that the model test goes through both.
const SLACK: usize = if cfg!(test) { 1 } else { 64 };

/// One lease: the epoch its receipt handle must carry and when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) epoch: u64,
    pub(crate) deadline_ms: u64,
}

/// A handle that names no current lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stale;

/// A leased offset; `epoch == DONE` once its lease is over and it waits to be dropped.
#[derive(Debug, Clone, Copy)]
struct Slot {
    offset: u64,
    lease: Lease,
}

#[derive(Debug)]
struct QueueState {
    topic: String,
    queue_id: u32,
    cursor: u64,
    /// Acked ranges of the committed state at or above the cursor (canonical, sorted).
    skip: Vec<OffsetRange>,
    /// Leases by ascending offset (grants only ever append above the cursor). The front
    /// is always live, so the committed floor is read off it; done slots in the middle
    /// are dropped in bulk once they outnumber the live ones.
    slots: VecDeque<Slot>,
    done_slots: usize,
    /// Message-group slots by offset: their group and failed attempts in place.
    fifo: HashMap<u64, Fifo>,
    /// Per message group, its unfinished offsets in order; the front one is leased or
    /// ready, the others parked.
    groups: HashMap<String, VecDeque<u64>>,
    /// Ready slots, handed out by the next receive.
    ready: BTreeSet<u64>,
}

#[derive(Debug, Clone)]
struct Fifo {
    group: String,
    /// Leases of it that ran out (its in-place redeliveries so far).
    retries: u32,
}

impl QueueState {
    fn live(&self) -> usize {
        self.slots.len() - self.done_slots
    }

    fn position(&self, offset: u64) -> Option<usize> {
        // Slots are usually one per offset from the front (a filter or a compaction
        // leaves gaps): try that place first, search only when it misses.
        let front = self.slots.front()?.offset;
        let guess = usize::try_from(offset.checked_sub(front)?).ok()?;
        if self.slots.get(guess).is_some_and(|s| s.offset == offset) {
            return Some(guess);
        }
        self.slots.binary_search_by_key(&offset, |s| s.offset).ok()
    }

    fn get(&self, offset: u64) -> Option<Lease> {
        let i = self.position(offset)?;
        let l = self.slots[i].lease;
        (l.epoch != DONE).then_some(l)
    }

    fn get_mut(&mut self, offset: u64) -> Option<&mut Lease> {
        let i = self.position(offset)?;
        let l = &mut self.slots[i].lease;
        (l.epoch != DONE).then_some(l)
    }

    /// Marks the lease at `offset` done; returns whether there was one.
    fn remove(&mut self, offset: u64) -> bool {
        let Some(l) = self.get_mut(offset) else {
            return false;
        };
        l.epoch = DONE;
        self.done_slots += 1;
        while self.slots.front().is_some_and(|s| s.lease.epoch == DONE) {
            self.slots.pop_front();
            self.done_slots -= 1;
        }
        if self.done_slots > self.live() + SLACK {
            self.slots.retain(|s| s.lease.epoch != DONE);
            self.done_slots = 0;
        }
        true
    }
}

/// Due-time index entry: the lease at (queue, offset) if it still carries `epoch`.
/// Entries are not removed when a lease ends or changes; they are skipped when found
/// stale, and the index is rebuilt when stale ones outnumber the live leases.
#[derive(Debug, Clone, Copy)]
struct Due {
    q: u32,
    offset: u64,
    epoch: u64,
}

/// In-flight leases of one group over all the queues it receives from.
#[derive(Debug)]
pub(crate) struct GroupTable {
    queues: Vec<QueueState>,
    /// topic -> (queue id, index into `queues`).
    index: HashMap<String, Vec<(u32, u32)>>,
    /// Deadline -> leases granted or changed to it (one entry per grant, not per lease).
    expiry: BTreeMap<u64, Vec<Due>>,
    expiry_len: usize,
    in_flight: usize,
    max_in_flight: usize,
}

/// One queue's line of the lease report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueReport {
    pub(crate) topic: String,
    pub(crate) queue_id: u32,
    pub(crate) in_flight: usize,
    pub(crate) cursor: u64,
}

impl GroupTable {
    pub(crate) fn new(max_in_flight: usize) -> Self {
        Self {
            queues: Vec::new(),
            index: HashMap::new(),
            expiry: BTreeMap::new(),
            expiry_len: 0,
            in_flight: 0,
            max_in_flight,
        }
    }

    /// The index of (topic, queue), created from the committed `(floor, acked ranges)`
    /// (`None`: nothing committed, start at 0) on first use.
    pub(crate) fn queue(
        &mut self,
        topic: &str,
        queue_id: u32,
        committed: impl FnOnce() -> Option<(u64, Vec<OffsetRange>)>,
    ) -> u32 {
        if let Some(i) = self.find(topic, queue_id) {
            return i;
        }
        let (cursor, skip) = committed().unwrap_or((0, Vec::new()));
        let i = u32::try_from(self.queues.len()).unwrap_or(u32::MAX);
        self.queues.push(QueueState {
            topic: topic.to_owned(),
            queue_id,
            cursor,
            skip,
            slots: VecDeque::new(),
            done_slots: 0,
            fifo: HashMap::new(),
            groups: HashMap::new(),
            ready: BTreeSet::new(),
        });
        self.index
            .entry(topic.to_owned())
            .or_default()
            .push((queue_id, i));
        i
    }

    /// The index of (topic, queue) if it was ever used.
    pub(crate) fn find(&self, topic: &str, queue_id: u32) -> Option<u32> {
        self.index
            .get(topic)?
            .iter()
            .find(|(id, _)| *id == queue_id)
            .map(|(_, i)| *i)
    }

    /// How many queue slots the table has (a handle's slot is below this).
    pub(crate) fn slots(&self) -> usize {
        self.queues.len()
    }

    pub(crate) fn name(&self, q: u32) -> (&str, u32) {
        let s = &self.queues[q as usize];
        (&s.topic, s.queue_id)
    }

    pub(crate) fn cursor(&self, q: u32) -> u64 {
        self.queues[q as usize].cursor
    }

    /// Leases that may still be granted before the limit.
    pub(crate) fn room(&self) -> usize {
        self.max_in_flight.saturating_sub(self.in_flight)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether `offset` is acked by the committed state loaded at start.
    pub(crate) fn is_skipped(&self, q: u32, offset: u64) -> bool {
        let s = &self.queues[q as usize];
        !s.skip.is_empty() && ack::is_acked(0, &s.skip, offset)
    }

    /// Leases `offsets` (each at or above the cursor and below `scanned_to`, ascending,
    /// none skipped) with `epochs[i]` (never 0) until `deadline_ms`, and moves the cursor
    /// to `scanned_to`: what lies between was read and not leased, so it is done.
    /// (The model tests' entry point; receives go through [`GroupTable::grant_grouped`].)
    #[cfg(test)]
    pub(crate) fn grant(
        &mut self,
        q: u32,
        scanned_to: u64,
        offsets: &[u64],
        epochs: &[u64],
        deadline_ms: u64,
    ) {
        let groups = vec![None; offsets.len()];
        self.grant_grouped(q, scanned_to, offsets, epochs, &groups, deadline_ms);
    }

    /// As [`GroupTable::grant`] for offsets that may carry a message group
    /// (`groups[i]`): one whose group has an unfinished older message is parked instead of
    /// leased. Returns, per offset, whether it was leased.
    pub(crate) fn grant_grouped(
        &mut self,
        q: u32,
        scanned_to: u64,
        offsets: &[u64],
        epochs: &[u64],
        groups: &[Option<&str>],
        deadline_ms: u64,
    ) -> Vec<bool> {
        let s = &mut self.queues[q as usize];
        let mut due = Vec::with_capacity(offsets.len());
        let mut leased = Vec::with_capacity(offsets.len());
        for ((o, e), g) in offsets.iter().zip(epochs).zip(groups) {
            debug_assert!(*o >= s.cursor && *o < scanned_to && *e != DONE);
            debug_assert!(s.slots.back().is_none_or(|b| b.offset < *o));
            let parked = match g {
                None => false,
                Some(g) => {
                    let line = s.groups.entry((*g).to_owned()).or_default();
                    line.push_back(*o);
                    s.fifo.insert(
                        *o,
                        Fifo {
                            group: (*g).to_owned(),
                            retries: 0,
                        },
                    );
                    line.len() > 1
                }
            };
            let lease = if parked {
                Lease {
                    epoch: NOBODY,
                    deadline_ms: PARKED,
                }
            } else {
                due.push(Due {
                    q,
                    offset: *o,
                    epoch: *e,
                });
                Lease {
                    epoch: *e,
                    deadline_ms,
                }
            };
            s.slots.push_back(Slot { offset: *o, lease });
            leased.push(!parked);
        }
        self.in_flight += offsets.len();
        s.cursor = s.cursor.max(scanned_to);
        let cursor = s.cursor;
        if !s.skip.is_empty() {
            s.skip.retain(|r| r.end > cursor);
        }
        self.add_due(deadline_ms, due);
        leased
    }

    /// Up to `max` ready message-group slots of a queue, oldest first.
    pub(crate) fn ready(&self, q: u32, max: usize) -> Vec<u64> {
        self.queues[q as usize]
            .ready
            .iter()
            .take(max)
            .copied()
            .collect()
    }

    /// Leases a ready slot with `epoch` until `deadline_ms`; returns its in-place
    /// redeliveries so far (`None`: it was not ready).
    pub(crate) fn lease_ready(
        &mut self,
        q: u32,
        offset: u64,
        epoch: u64,
        deadline_ms: u64,
    ) -> Option<u32> {
        let s = &mut self.queues[q as usize];
        if !s.ready.remove(&offset) {
            return None;
        }
        let retries = s.fifo.get(&offset).map_or(0, |f| f.retries);
        if let Some(l) = s.get_mut(offset) {
            *l = Lease { epoch, deadline_ms };
        }
        self.add_due(deadline_ms, vec![Due { q, offset, epoch }]);
        Some(retries)
    }

    /// For an ending lease of a message-group message: its in-place redeliveries so far
    /// (`None`: it has no message group).
    pub(crate) fn fifo_retries(&self, q: u32, offset: u64) -> Option<u32> {
        self.queues[q as usize].fifo.get(&offset).map(|f| f.retries)
    }

    /// Makes an ending message-group lease ready again in place, one attempt more.
    pub(crate) fn make_ready(&mut self, q: u32, offset: u64) {
        let s = &mut self.queues[q as usize];
        let Some(l) = s.get_mut(offset) else { return };
        if l.deadline_ms != ENDING {
            return;
        }
        *l = Lease {
            epoch: NOBODY,
            deadline_ms: READY,
        };
        if let Some(f) = s.fifo.get_mut(&offset) {
            f.retries = f.retries.saturating_add(1);
        }
        s.ready.insert(offset);
    }

    /// Ends a ready slot whose message is gone (removed by retention).
    pub(crate) fn drop_ready(&mut self, q: u32, offset: u64) {
        if self.queues[q as usize].ready.remove(&offset) {
            self.remove(q, offset);
        }
    }

    /// The live (not ending) lease at `offset` if it carries `epoch`.
    pub(crate) fn check(&self, q: u32, offset: u64, epoch: u64) -> Result<Lease, Stale> {
        match self.queues.get(q as usize).and_then(|s| s.get(offset)) {
            Some(l) if l.epoch == epoch && l.deadline_ms < READY => Ok(l),
            _ => Err(Stale),
        }
    }

    /// Ends a lease for good (acked).
    pub(crate) fn ack(&mut self, q: u32, offset: u64, epoch: u64) -> Result<(), Stale> {
        self.check(q, offset, epoch)?;
        self.remove(q, offset);
        Ok(())
    }

    /// Moves a lease's deadline; the lease takes `new_epoch`, so the old handle is refused.
    pub(crate) fn change(
        &mut self,
        q: u32,
        offset: u64,
        epoch: u64,
        new_epoch: u64,
        deadline_ms: u64,
    ) -> Result<(), Stale> {
        self.check(q, offset, epoch)?;
        if let Some(l) = self.queues[q as usize].get_mut(offset) {
            *l = Lease {
                epoch: new_epoch,
                deadline_ms,
            };
        }
        self.add_due(
            deadline_ms,
            vec![Due {
                q,
                offset,
                epoch: new_epoch,
            }],
        );
        Ok(())
    }

    /// Starts ending a lease that carries `epoch` (a reject): its handles are refused.
    pub(crate) fn begin_end(
        &mut self,
        q: u32,
        offset: u64,
        epoch: u64,
        ending_epoch: u64,
    ) -> Result<Lease, Stale> {
        let l = self.check(q, offset, epoch)?;
        self.mark_ending(q, offset, ending_epoch);
        Ok(l)
    }

    /// Starts ending up to `max` leases whose deadline is at or before `now_ms`, earliest
    /// first; returns (queue, offset) of each.
    pub(crate) fn expire(&mut self, now_ms: u64, max: usize, ending_epoch: u64) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(entry) = self.expiry.first_entry() else {
                break;
            };
            let d = *entry.key();
            if d > now_ms {
                break;
            }
            let mut dues = entry.remove();
            let mut taken = 0;
            for due in &dues {
                if out.len() == max {
                    break;
                }
                taken += 1;
                if self.is_due(due, d) {
                    self.mark_ending(due.q, due.offset, ending_epoch);
                    out.push((due.q, due.offset));
                }
            }
            self.expiry_len -= taken;
            if taken < dues.len() {
                dues.drain(..taken);
                self.expiry.insert(d, dues);
            }
        }
        out
    }

    /// Ends an ending lease: its copy was written, the offset is done.
    pub(crate) fn end(&mut self, q: u32, offset: u64) {
        if matches!(self.queues.get(q as usize).and_then(|s| s.get(offset)), Some(l) if l.deadline_ms == ENDING)
        {
            self.remove(q, offset);
        }
    }

    /// An ending lease whose copy could not be written: held by nobody until
    /// `deadline_ms`, when it expires again.
    pub(crate) fn unend(&mut self, q: u32, offset: u64, epoch: u64, deadline_ms: u64) {
        let Some(l) = self
            .queues
            .get_mut(q as usize)
            .and_then(|s| s.get_mut(offset))
        else {
            return;
        };
        if l.deadline_ms == ENDING {
            *l = Lease { epoch, deadline_ms };
            self.add_due(deadline_ms, vec![Due { q, offset, epoch }]);
        }
    }

    /// The earliest deadline of a live lease. Drops the stale index entries it passes.
    pub(crate) fn next_deadline(&mut self) -> Option<u64> {
        loop {
            let mut entry = self.expiry.first_entry()?;
            let d = *entry.key();
            let dues = entry.get_mut();
            let stale = dues
                .iter()
                .position(|due| {
                    let s = &self.queues[due.q as usize];
                    matches!(s.get(due.offset), Some(l) if l.epoch == due.epoch && l.deadline_ms == d)
                })
                .unwrap_or(dues.len());
            if stale == dues.len() {
                self.expiry_len -= dues.len();
                entry.remove();
                continue;
            }
            if stale > 0 {
                dues.drain(..stale);
                self.expiry_len -= stale;
            }
            return Some(d);
        }
    }

    /// The committed state of a queue: everything below the floor and inside the ranges
    /// is done. Past [`MAX_ACK_RANGES`] gaps the highest are left out, which only causes
    /// redelivery after a restart.
    pub(crate) fn committed(&self, q: u32) -> (u64, Vec<OffsetRange>) {
        let s = &self.queues[q as usize];
        // The front slot is always live (see `QueueState::remove`).
        let floor = s.slots.front().map_or(s.cursor, |f| f.offset).min(s.cursor);
        let mut ranges = Vec::new();
        let mut prev = floor;
        let live = s.slots.iter().filter(|x| x.lease.epoch != DONE);
        for o in live.map(|x| x.offset).take(MAX_ACK_RANGES + 1) {
            if o > prev {
                ranges.push(OffsetRange {
                    start: prev,
                    end: o,
                });
            }
            prev = o + 1;
        }
        if s.live() <= MAX_ACK_RANGES + 1 {
            if s.cursor > prev {
                ranges.push(OffsetRange {
                    start: prev,
                    end: s.cursor,
                });
            }
            ranges.extend(s.skip.iter().copied());
        }
        match ack::normalize(floor, &ranges) {
            Ok(n) => (n.offset, n.acked_above),
            // The ranges are built ascending and non-empty; never reached, and even then
            // committing only the floor is safe (redelivery, not loss).
            Err(_) => (floor, Vec::new()),
        }
    }

    /// Per queue: in-flight leases and cursor.
    pub(crate) fn report(&self) -> Vec<QueueReport> {
        self.queues
            .iter()
            .map(|s| QueueReport {
                topic: s.topic.clone(),
                queue_id: s.queue_id,
                in_flight: s.live(),
                cursor: s.cursor,
            })
            .collect()
    }

    fn is_due(&self, due: &Due, deadline_ms: u64) -> bool {
        matches!(self.queues[due.q as usize].get(due.offset),
            Some(l) if l.epoch == due.epoch && l.deadline_ms == deadline_ms)
    }

    fn add_due(&mut self, deadline_ms: u64, mut due: Vec<Due>) {
        if due.is_empty() {
            return;
        }
        self.expiry_len += due.len();
        match self.expiry.get_mut(&deadline_ms) {
            Some(v) => v.append(&mut due),
            None => {
                self.expiry.insert(deadline_ms, due);
            }
        }
        if self.expiry_len > 2 * self.in_flight + 2 * SLACK {
            self.rebuild_expiry();
        }
    }

    /// Drops the stale entries of the due-time index: it then holds one per live lease.
    fn rebuild_expiry(&mut self) {
        let mut expiry: BTreeMap<u64, Vec<Due>> = BTreeMap::new();
        let mut len = 0;
        for (q, s) in self.queues.iter().enumerate() {
            let q = u32::try_from(q).unwrap_or(u32::MAX);
            for slot in &s.slots {
                let l = slot.lease;
                if l.epoch != DONE && l.deadline_ms < READY {
                    expiry.entry(l.deadline_ms).or_default().push(Due {
                        q,
                        offset: slot.offset,
                        epoch: l.epoch,
                    });
                    len += 1;
                }
            }
        }
        self.expiry = expiry;
        self.expiry_len = len;
    }

    fn mark_ending(&mut self, q: u32, offset: u64, ending_epoch: u64) {
        if let Some(l) = self.queues[q as usize].get_mut(offset) {
            *l = Lease {
                epoch: ending_epoch,
                deadline_ms: ENDING,
            };
        }
    }

    fn remove(&mut self, q: u32, offset: u64) {
        if self.queues[q as usize].remove(offset) {
            self.in_flight -= 1;
            self.release_next(q, offset);
        }
    }

    /// After a message-group message ended: the group's next message becomes ready.
    fn release_next(&mut self, q: u32, offset: u64) {
        let s = &mut self.queues[q as usize];
        let Some(f) = s.fifo.remove(&offset) else {
            return;
        };
        s.ready.remove(&offset);
        let Some(line) = s.groups.get_mut(&f.group) else {
            return;
        };
        line.retain(|o| *o != offset);
        let Some(&next) = line.front() else {
            s.groups.remove(&f.group);
            return;
        };
        if let Some(l) = s.get_mut(next) {
            if l.deadline_ms == PARKED {
                *l = Lease {
                    epoch: NOBODY,
                    deadline_ms: READY,
                };
                s.ready.insert(next);
            }
        }
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "table_fifo_tests.rs"]
mod fifo_tests;
