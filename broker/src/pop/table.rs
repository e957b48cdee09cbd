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

use std::collections::{BTreeMap, BTreeSet, HashMap};

use protocol::messages::OffsetRange;

use crate::groups::ack::{self, MAX_ACK_RANGES};

/// Deadline of an ending lease: never in the expiry index.
const ENDING: u64 = u64::MAX;

/// One lease: the epoch its receipt handle must carry and when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) epoch: u64,
    pub(crate) deadline_ms: u64,
}

/// A handle that names no current lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stale;

#[derive(Debug)]
struct QueueState {
    topic: String,
    queue_id: u32,
    cursor: u64,
    /// Acked ranges of the committed state at or above the cursor (canonical, sorted).
    skip: Vec<OffsetRange>,
    in_flight: BTreeMap<u64, Lease>,
}

/// In-flight leases of one group over all the queues it receives from.
#[derive(Debug)]
pub(crate) struct GroupTable {
    queues: Vec<QueueState>,
    index: HashMap<(String, u32), u32>,
    /// (deadline, queue index, offset) of every lease that is not ending.
    expiry: BTreeSet<(u64, u32, u64)>,
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
            expiry: BTreeSet::new(),
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
        if let Some(i) = self.index.get(&(topic.to_owned(), queue_id)) {
            return *i;
        }
        let (cursor, skip) = committed().unwrap_or((0, Vec::new()));
        let i = u32::try_from(self.queues.len()).unwrap_or(u32::MAX);
        self.queues.push(QueueState {
            topic: topic.to_owned(),
            queue_id,
            cursor,
            skip,
            in_flight: BTreeMap::new(),
        });
        self.index.insert((topic.to_owned(), queue_id), i);
        i
    }

    /// The index of (topic, queue) if it was ever used.
    pub(crate) fn find(&self, topic: &str, queue_id: u32) -> Option<u32> {
        self.index.get(&(topic.to_owned(), queue_id)).copied()
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
        ack::is_acked(0, &s.skip, offset)
    }

    /// Leases `offsets` (each at or above the cursor and below `scanned_to`, ascending,
    /// none skipped) with `epochs[i]` until `deadline_ms`, and moves the cursor to
    /// `scanned_to`: what lies between was read and not leased, so it is done.
    pub(crate) fn grant(
        &mut self,
        q: u32,
        scanned_to: u64,
        offsets: &[u64],
        epochs: &[u64],
        deadline_ms: u64,
    ) {
        let s = &mut self.queues[q as usize];
        for (o, e) in offsets.iter().zip(epochs) {
            debug_assert!(*o >= s.cursor && *o < scanned_to);
            s.in_flight.insert(
                *o,
                Lease {
                    epoch: *e,
                    deadline_ms,
                },
            );
            self.expiry.insert((deadline_ms, q, *o));
        }
        self.in_flight += offsets.len();
        s.cursor = s.cursor.max(scanned_to);
        let cursor = s.cursor;
        s.skip.retain(|r| r.end > cursor);
    }

    /// The live (not ending) lease at `offset` if it carries `epoch`.
    pub(crate) fn check(&self, q: u32, offset: u64, epoch: u64) -> Result<Lease, Stale> {
        match self
            .queues
            .get(q as usize)
            .and_then(|s| s.in_flight.get(&offset))
        {
            Some(l) if l.epoch == epoch && l.deadline_ms != ENDING => Ok(*l),
            _ => Err(Stale),
        }
    }

    /// Ends a lease for good (acked).
    pub(crate) fn ack(&mut self, q: u32, offset: u64, epoch: u64) -> Result<(), Stale> {
        let l = self.check(q, offset, epoch)?;
        self.expiry.remove(&(l.deadline_ms, q, offset));
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
        let l = self.check(q, offset, epoch)?;
        self.expiry.remove(&(l.deadline_ms, q, offset));
        self.expiry.insert((deadline_ms, q, offset));
        self.queues[q as usize].in_flight.insert(
            offset,
            Lease {
                epoch: new_epoch,
                deadline_ms,
            },
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
        self.expiry.remove(&(l.deadline_ms, q, offset));
        self.mark_ending(q, offset, ending_epoch);
        Ok(l)
    }

    /// Starts ending up to `max` leases whose deadline is at or before `now_ms`, earliest
    /// first; returns (queue, offset) of each.
    pub(crate) fn expire(&mut self, now_ms: u64, max: usize, ending_epoch: u64) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.expiry.first() {
                Some(&(d, q, o)) if d <= now_ms => {
                    self.expiry.pop_first();
                    self.mark_ending(q, o, ending_epoch);
                    out.push((q, o));
                }
                _ => break,
            }
        }
        out
    }

    /// Ends an ending lease: its copy was written, the offset is done.
    pub(crate) fn end(&mut self, q: u32, offset: u64) {
        if matches!(self.queues.get(q as usize).and_then(|s| s.in_flight.get(&offset)), Some(l) if l.deadline_ms == ENDING)
        {
            self.remove(q, offset);
        }
    }

    /// An ending lease whose copy could not be written: held by nobody until
    /// `deadline_ms`, when it expires again.
    pub(crate) fn unend(&mut self, q: u32, offset: u64, epoch: u64, deadline_ms: u64) {
        if let Some(l) = self
            .queues
            .get_mut(q as usize)
            .and_then(|s| s.in_flight.get_mut(&offset))
        {
            if l.deadline_ms == ENDING {
                *l = Lease { epoch, deadline_ms };
                self.expiry.insert((deadline_ms, q, offset));
            }
        }
    }

    /// The earliest deadline of a live lease.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.expiry.first().map(|e| e.0)
    }

    /// The committed state of a queue: everything below the floor and inside the ranges
    /// is done. Past [`MAX_ACK_RANGES`] gaps the highest are left out, which only causes
    /// redelivery after a restart.
    pub(crate) fn committed(&self, q: u32) -> (u64, Vec<OffsetRange>) {
        let s = &self.queues[q as usize];
        let floor = s
            .in_flight
            .keys()
            .next()
            .copied()
            .unwrap_or(s.cursor)
            .min(s.cursor);
        let mut ranges = Vec::new();
        let mut prev = floor;
        for o in s.in_flight.keys().take(MAX_ACK_RANGES + 1) {
            if *o > prev {
                ranges.push(OffsetRange {
                    start: prev,
                    end: *o,
                });
            }
            prev = o + 1;
        }
        if s.in_flight.len() <= MAX_ACK_RANGES + 1 {
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
                in_flight: s.in_flight.len(),
                cursor: s.cursor,
            })
            .collect()
    }

    fn mark_ending(&mut self, q: u32, offset: u64, ending_epoch: u64) {
        if let Some(l) = self.queues[q as usize].in_flight.get_mut(&offset) {
            *l = Lease {
                epoch: ending_epoch,
                deadline_ms: ENDING,
            };
        }
    }

    fn remove(&mut self, q: u32, offset: u64) {
        if self.queues[q as usize].in_flight.remove(&offset).is_some() {
            self.in_flight -= 1;
        }
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
