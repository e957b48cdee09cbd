//! The dispatcher: follows the commit log's visible end and appends consume-queue entries.
//!
//! Used both live (by the thread that stored the records, right after storing them, with a
//! background thread as the safety net) and during recovery, where it
//! replays records whose entries may already exist. Per record it compares the record's
//! queue offset with the queue's next expected offset:
//! - equal: a new entry, batched per queue and appended once per round;
//! - lower: already indexed (replay); a mismatching entry pointing at an older record is
//!   replaced from that offset on, one pointing at a newer record wins;
//! - higher: a gap, which only a damaged or missing queue produces: an empty queue restarts
//!   at the record's offset (older records are gone), otherwise the round reports it so
//!   recovery can replay from the start of the log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, TryLockError};
use std::time::{Duration, Instant};

use commitlog::{PhysicalOffset, RecordRef, Signal};
use consumequeue::{ConsumeQueue, Entry, QueueOffset};

use super::disk::WriteRetry;
use super::{Shared, StoreError, StoreResult};

/// Hook called with `(topic, queue id, new max offset)` after a queue grew.
pub type DispatchListener = Arc<dyn Fn(&str, u32, u64) + Send + Sync>;

/// Records indexed per round before entries are appended and the offset published, to
/// bound memory and latency under a constant write load.
const MAX_RECORDS_PER_ROUND: usize = 16_384;
/// Backlogs up to this many bytes are indexed by the thread that wrote them; larger ones by
/// the dispatcher thread.
const INLINE_DISPATCH_MAX_BYTES: u64 = 64 * 1024;
/// How often the dispatcher thread looks for records left unindexed (and for shutdown).
const STOP_CHECK_MS: u64 = 50;

/// How a round treats gaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Normal operation: a gap in a non-empty queue is logged and the record skipped.
    Live,
    /// Replaying from the dispatch checkpoint: gaps are reported.
    Replay,
    /// Replaying from the log's first record: gaps are repaired by restarting the queue.
    FullReplay,
}

/// Result of one round.
#[derive(Debug, Default)]
pub(crate) struct Round {
    /// Whether the round stopped early because of the record limit.
    pub(crate) more: bool,
    /// Whether a gap was seen (Replay mode only).
    pub(crate) gap: bool,
}

struct Pending {
    queue_id: u32,
    cq: Arc<ConsumeQueue>,
    start: u64,
    entries: Vec<Entry>,
}

impl Pending {
    fn next(&self) -> u64 {
        self.start + self.entries.len() as u64
    }

    /// Drops the batch (already written or superseded) and starts a new one at `at`.
    fn restart(&mut self, at: u64, first: Entry) {
        self.start = at;
        self.entries.clear();
        self.entries.push(first);
    }
}

/// What the dispatcher knows when it meets a record: the input of [`decide`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seen {
    /// The record's queue offset.
    pub(crate) queue_offset: u64,
    /// The queue offset the queue expects next (its end, pending entries included).
    pub(crate) next: u64,
    /// Where the record sits in the commit log.
    pub(crate) physical_offset: u64,
    /// Commit-log offset of the entry already indexed at `queue_offset`, if any (looked up
    /// only when the record is behind the queue).
    pub(crate) indexed_physical: Option<u64>,
    /// The queue's minimum offset.
    pub(crate) queue_min: u64,
    /// The queue holds no entry and none is pending.
    pub(crate) queue_empty: bool,
    pub(crate) mode: Mode,
}

/// What to do with a record, decided by [`decide`] and applied by `Shared::index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// The expected offset: a new entry.
    Append,
    /// Behind the queue and indexed already (replay), or the index holds a newer record
    /// there: nothing to do.
    AlreadyIndexed,
    /// Behind the queue, where the index points at an older record: the log wins, the
    /// queue is cut at the record's offset and continues with it.
    ReplaceFrom,
    /// Ahead of an empty queue: the earlier records are gone from the log; the queue
    /// restarts at the record's offset.
    RestartEmpty,
    /// Ahead of the queue in a full replay: the queue restarts at the record's offset.
    RestartAfterGap,
    /// Ahead of the queue otherwise: a gap, reported (and the record skipped).
    Gap,
}

/// The dispatcher's rule for one record, without I/O (see the module docs).
pub(crate) fn decide(s: &Seen) -> Action {
    use std::cmp::Ordering as Cmp;
    match s.queue_offset.cmp(&s.next) {
        Cmp::Equal => Action::Append,
        Cmp::Less => match s.indexed_physical {
            Some(at) if at < s.physical_offset && s.queue_offset >= s.queue_min => {
                Action::ReplaceFrom
            }
            _ => Action::AlreadyIndexed,
        },
        Cmp::Greater if s.queue_empty && s.mode != Mode::Replay => Action::RestartEmpty,
        Cmp::Greater if s.mode == Mode::FullReplay => Action::RestartAfterGap,
        Cmp::Greater => Action::Gap,
    }
}

/// The dispatcher's state: how far the log is indexed, the round lock, the wake-ups of
/// `wait_for_message` and of the dispatcher thread.
#[derive(Default)]
pub(crate) struct DispatchState {
    /// Commit-log offset up to which records are indexed in consume queues.
    pub(crate) dispatched: AtomicU64,
    /// Serializes dispatch rounds with topic deletion and checkpoints.
    pub(crate) round: Mutex<()>,
    /// Bumped after every dispatch round; `wait_for_message` sleeps on it.
    generation: Mutex<u64>,
    cond: Condvar,
    pub(crate) listeners: RwLock<Vec<DispatchListener>>,
    /// An inline dispatch failed: writers leave dispatching to the dispatcher thread until
    /// it succeeds again.
    failing: AtomicBool,
    /// A checkpoint holds `round` (writers wait for it instead of leaving their records
    /// to it).
    checkpointing: AtomicBool,
    /// Commit-log minimum the consume queues were last trimmed to.
    pub(crate) trimmed_below: AtomicU64,
    /// The last attempt to create a spare arena failed (logged once per transition).
    spare_failing: AtomicBool,
    /// Wakes the dispatcher thread (large backlogs, failed inline rounds) and stops it;
    /// once stopped, the store refuses writes.
    pub(crate) signal: Signal,
    /// Replication: index only below the commit log's confirm watermark (`replica.rs`).
    pub(crate) gated: AtomicBool,
}

/// Per topic: whether records are dispatched at all (`None` = unknown topic) and from which
/// commit-log offset (earlier records belong to a deleted topic of the same name).
struct TopicPending {
    created_at: Option<u64>,
    queues: Vec<Pending>,
}

impl Shared {
    /// Body of the dispatcher thread. Writers index small writes themselves right after
    /// storing them ([`Shared::dispatch_now`]) and wake this thread for large ones; it also
    /// catches up after a failed inline round (with a growing back-off), and flushes and
    /// trims the consume queues.
    pub(crate) fn run_dispatcher(self: Arc<Self>) {
        let interval = Duration::from_millis(self.config.flush_interval_ms);
        let check = Duration::from_millis(STOP_CHECK_MS.min(self.config.flush_interval_ms));
        let mut last_flush = Instant::now();
        let mut failures = 0u32;
        let mut checkpoint_retry = WriteRetry::new("consume-queue checkpoint");
        let mut pause = check;
        while self.dispatch.signal.wait_timeout(pause) {
            let mut behind = false;
            if self.readable_end() > self.dispatch.dispatched.load(Ordering::Acquire) {
                match self.dispatch_until(last_flush + interval) {
                    Ok(more) => {
                        behind = more;
                        failures = 0;
                        self.dispatch.failing.store(false, Ordering::Release);
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        self.disk
                            .report_if_full(&e, 0, "indexing into consume queues");
                        tracing::error!(error = %e, "dispatch failed; retrying");
                    }
                }
            }
            if last_flush.elapsed() >= interval && checkpoint_retry.due(&self.disk) {
                last_flush = Instant::now();
                self.periodic_upkeep(&mut checkpoint_retry);
            }
            // Behind: go on at once (a stop still ends the loop); after failures, back off.
            pause = if behind {
                Duration::ZERO
            } else {
                check * (1 + failures.min(20))
            };
        }
    }

    /// [`Shared::dispatch_all`] that gives up at `deadline`, so that a sustained write
    /// load cannot starve checkpoints; returns whether records were left.
    fn dispatch_until(&self, deadline: Instant) -> StoreResult<bool> {
        loop {
            let before = self.dispatch.dispatched.load(Ordering::Acquire);
            let round = self.dispatch_round(Mode::Live)?;
            if self.caught_up(before, &round) {
                return Ok(false);
            }
            if Instant::now() >= deadline {
                return Ok(true);
            }
        }
    }

    /// Trims, checkpoints, keeps a spare arena and repairs damaged queues. Failures are
    /// logged once per transition and retried on the next tick.
    fn periodic_upkeep(&self, checkpoint_retry: &mut WriteRetry) {
        if let Err(e) = self.trim_queues() {
            tracing::error!(error = %e, "consume queue trim failed");
        }
        // A full disk fails checkpoints until space returns: back off, log once per streak.
        match self.checkpoint() {
            Ok(()) => checkpoint_retry.succeeded(),
            Err(e) => checkpoint_retry.failed(&e, 0, &self.disk),
        }
        let spare = self.queues.store().ensure_spare();
        if let Err(e) = &spare {
            self.disk
                .report_if_full(e, 0, "creating a consume-queue arena");
        }
        match &spare {
            Ok(()) if self.dispatch.spare_failing.swap(false, Ordering::AcqRel) => {
                tracing::info!("consume-queue arena created: index space available again");
            }
            Err(e) if !self.dispatch.spare_failing.swap(true, Ordering::AcqRel) => {
                tracing::warn!(error = %e, "cannot create a consume-queue arena; sends needing index space are refused until disk space is freed");
            }
            _ => {}
        }
        for (topic, queue_id) in self.damaged_queues() {
            if let Err(e) = self.repair_queue(&topic, queue_id) {
                tracing::debug!(topic, queue_id, error = %e, "consume queue repair failed; retrying");
            }
        }
        // A key index being rebuilt takes at most this long per tick, so dispatching
        // large backlogs (left to this thread) goes on meanwhile.
        self.catch_up_keys(Some(Duration::from_millis(250)));
    }

    /// Indexes what is readable now. A small backlog (the usual write of one or a few
    /// requests) is indexed on the calling thread, right after it stored the records (and,
    /// under `Sync`, after they became durable): the message reaches its consume queue and
    /// wakes held pulls without a hand-off to another thread. A large one goes to the
    /// dispatcher thread, so indexing runs beside the next append instead of delaying it.
    /// If another thread is indexing, that thread picks these records up before it stops.
    /// After a failure the dispatcher thread takes over until it succeeds again, so a
    /// persistent error (e.g. a full disk under the consume queues) is retried with
    /// back-off, not on every write.
    pub(crate) fn dispatch_now(&self) {
        let backlog = self
            .readable_end()
            .saturating_sub(self.dispatch.dispatched.load(Ordering::Acquire));
        if backlog == 0 {
            return;
        }
        if backlog > INLINE_DISPATCH_MAX_BYTES || self.dispatch.failing.load(Ordering::Acquire) {
            self.kick_dispatcher();
            return;
        }
        let result = loop {
            let guard = match self.dispatch.round.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                // A checkpoint holds the lock for a sync and indexes nothing: wait for it,
                // so the message is readable once acknowledged.
                Err(TryLockError::WouldBlock)
                    if self.dispatch.checkpointing.load(Ordering::Acquire) =>
                {
                    self.dispatch
                        .round
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                }
                // The holder re-checks the readable end after its round (here or in
                // `dispatch_all`), so it indexes these records too.
                Err(TryLockError::WouldBlock) => return,
            };
            let before = self.dispatch.dispatched.load(Ordering::Acquire);
            let round = self.dispatch_round_locked(&guard, Mode::Live);
            drop(guard);
            match round {
                Err(e) => break Err(e),
                Ok(round) if self.caught_up(before, &round) => break Ok(()),
                Ok(_) => {}
            }
        };
        if let Err(e) = result {
            self.dispatch.failing.store(true, Ordering::Release);
            tracing::error!(error = %e, "dispatch failed; the dispatcher thread retries");
            self.kick_dispatcher();
        }
    }

    fn kick_dispatcher(&self) {
        self.dispatch.signal.wake();
    }

    /// Dispatches everything readable, including records that become readable while a
    /// round runs (another writer may have left them to this thread).
    pub(crate) fn dispatch_all(&self) -> StoreResult<()> {
        loop {
            let before = self.dispatch.dispatched.load(Ordering::Acquire);
            let round = self.dispatch_round(Mode::Live)?;
            if self.caught_up(before, &round) {
                return Ok(());
            }
        }
    }

    /// Whether a round that started at `before` leaves nothing to do. Checked after the
    /// round lock is released: a writer that found it taken meanwhile left its records to
    /// this thread. A round that made no progress also stops, rather than spinning; the
    /// dispatcher thread tries again later.
    fn caught_up(&self, before: u64, round: &Round) -> bool {
        let after = self.dispatch.dispatched.load(Ordering::Acquire);
        !round.more && (after == before || self.readable_end() <= after)
    }

    /// Indexes records from the dispatched offset towards the visible end.
    pub(crate) fn dispatch_round(&self, mode: Mode) -> StoreResult<Round> {
        let guard = self
            .dispatch
            .round
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let started = Instant::now();
        let round = self.dispatch_round_locked(&guard, mode);
        if let Some(observe) = &self.config.on_dispatch_round {
            (observe.0)(started.elapsed());
        }
        round
    }

    /// One round; `_held` proves the caller holds the round lock.
    fn dispatch_round_locked(&self, _held: &MutexGuard<'_, ()>, mode: Mode) -> StoreResult<Round> {
        let from = PhysicalOffset::new(self.dispatch.dispatched.load(Ordering::Acquire));
        let limit = self.readable_end();
        let mut iter = self.log.iter_from(from);
        let mut pending: HashMap<String, TopicPending> = HashMap::new();
        let mut round = Round::default();
        let mut count = 0;
        let mut failure = None;
        let mut stopped_at = None;
        // The key index follows in the same pass, unless it is catching up on its own.
        let mut keys = self.keys.as_ref().and_then(|k| k.writer(from.get()));
        for item in iter.by_ref() {
            match item {
                Ok(rec) if rec.next_offset().get() > limit => {
                    stopped_at = Some(rec.offset());
                    break;
                }
                Ok(rec) => {
                    if let Some(k) = keys.as_mut() {
                        k.add(&rec);
                    }
                    if let Err(e) = self.index(&rec, mode, &mut pending, &mut round) {
                        // One queue's failure never stops the others: it is rebuilt from
                        // the log later, and its records are skipped meanwhile.
                        let v = rec.view();
                        self.mark_damaged(v.topic(), v.queue_id(), &e);
                    }
                }
                Err(e) => {
                    failure = Some(StoreError::from(e));
                    break;
                }
            }
            count += 1;
            if count >= MAX_RECORDS_PER_ROUND {
                round.more = true;
                break;
            }
        }
        // A failed record is retried next round: publish only what precedes it.
        let end = match &failure {
            Some(_) => None,
            None => Some(stopped_at.unwrap_or_else(|| iter.position())),
        };
        // Before the dispatched offset moves: lookups never see the index behind it.
        if let Some(k) = keys {
            k.finish(end.map(PhysicalOffset::get));
        }
        self.commit(pending);
        match (failure, end) {
            (Some(e), _) => Err(e),
            (None, Some(end)) => {
                self.dispatch
                    .dispatched
                    .fetch_max(end.get(), Ordering::AcqRel);
                self.wake_waiters();
                Ok(round)
            }
            (None, None) => Ok(round),
        }
    }

    fn index(
        &self,
        rec: &RecordRef,
        mode: Mode,
        pending: &mut HashMap<String, TopicPending>,
        round: &mut Round,
    ) -> StoreResult<()> {
        let view = rec.view();
        let topic = view.topic();
        let tp = match pending.get_mut(topic) {
            Some(tp) => tp,
            None => pending
                .entry(topic.to_owned())
                .or_insert_with(|| TopicPending {
                    created_at: self
                        .topics
                        .with(topic, |t| t.map(|t| t.created_at_physical)),
                    queues: Vec::new(),
                }),
        };
        if tp.created_at.is_none_or(|c| rec.offset().get() < c) {
            return Ok(());
        }
        let queue_id = view.queue_id();
        if self.is_damaged(topic, queue_id) {
            return Ok(());
        }
        let p = match tp.queues.iter().position(|p| p.queue_id == queue_id) {
            Some(i) => &mut tp.queues[i],
            None => {
                let cq = self.queues.get_or_open(topic, queue_id)?;
                let start = cq.max_offset().get();
                tp.queues.push(Pending {
                    queue_id,
                    cq,
                    start,
                    entries: Vec::new(),
                });
                let last = tp.queues.len() - 1;
                &mut tp.queues[last]
            }
        };
        let entry = Entry {
            physical_offset: rec.offset().get(),
            size: rec.size(),
            tag_hash: view.tag_hash(),
        };
        let qo = view.queue_offset();
        let next = p.next();
        // The entry already indexed at `qo`, looked up only for a record behind the queue.
        let indexed = if qo >= next {
            None
        } else if qo >= p.start {
            p.entries.get((qo - p.start) as usize).copied()
        } else {
            p.cq.get(QueueOffset::new(qo))
        };
        let seen = Seen {
            queue_offset: qo,
            next,
            physical_offset: entry.physical_offset,
            indexed_physical: indexed.map(|e| e.physical_offset),
            queue_min: p.cq.min_offset().get(),
            queue_empty: p.entries.is_empty() && p.cq.min_offset() == p.cq.max_offset(),
            mode,
        };
        let cq_err = |e| StoreError::cq(topic, queue_id, e);
        match decide(&seen) {
            Action::Append => p.entries.push(entry),
            Action::AlreadyIndexed => {}
            Action::ReplaceFrom => {
                // The index points at an older record for this offset: the log wins.
                p.cq.append_batch(QueueOffset::new(p.start), &p.entries)
                    .map_err(cq_err)?;
                p.cq.truncate_to(QueueOffset::new(qo)).map_err(cq_err)?;
                p.restart(qo, entry);
            }
            Action::RestartEmpty => {
                p.cq.reset(QueueOffset::new(qo)).map_err(cq_err)?;
                p.restart(qo, entry);
            }
            Action::RestartAfterGap => {
                tracing::warn!(
                    topic,
                    queue_id,
                    expected = next,
                    found = qo,
                    "consume queue gap; restarting the queue"
                );
                p.cq.append_batch(QueueOffset::new(p.start), &p.entries)
                    .map_err(cq_err)?;
                p.cq.reset(QueueOffset::new(qo)).map_err(cq_err)?;
                p.restart(qo, entry);
            }
            Action::Gap => {
                round.gap = true;
                if mode == Mode::Live {
                    tracing::error!(
                        topic,
                        queue_id,
                        expected = next,
                        found = qo,
                        "consume queue gap; record skipped"
                    );
                }
            }
        }
        Ok(())
    }

    /// Appends every pending batch and tells listeners which queues grew. A queue that
    /// fails is marked damaged (logged, rebuilt later); the others go on.
    fn commit(&self, pending: HashMap<String, TopicPending>) {
        let listeners = self
            .dispatch
            .listeners
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for (topic, tp) in pending {
            for p in tp.queues.into_iter().filter(|p| !p.entries.is_empty()) {
                match p.cq.append_batch(QueueOffset::new(p.start), &p.entries) {
                    Ok(()) => {
                        let max = p.cq.max_offset().get();
                        for l in &listeners {
                            l(&topic, p.queue_id, max);
                        }
                    }
                    Err(e) => {
                        self.mark_damaged(
                            &topic,
                            p.queue_id,
                            &StoreError::cq(&topic, p.queue_id, e),
                        );
                    }
                }
            }
        }
    }

    fn wake_waiters(&self) {
        let mut generation = self
            .dispatch
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *generation = generation.wrapping_add(1);
        self.dispatch.cond.notify_all();
    }

    pub(crate) fn wait_for_message(
        &self,
        topic: &str,
        queue_id: u32,
        offset: QueueOffset,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut generation = self
            .dispatch
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            // Checked under the lock the dispatcher bumps after growing queues: no lost wakeup.
            if self
                .queues
                .get(topic, queue_id)
                .is_some_and(|q| q.max_offset() > offset)
            {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            generation = self
                .dispatch
                .cond
                .wait_timeout(generation, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Makes the consume queues durable up to the dispatched offset and journals it
    /// (nothing is written when nothing changed).
    pub(crate) fn checkpoint(&self) -> StoreResult<()> {
        // Set before taking the lock, so a writer that finds it taken knows to wait.
        self.dispatch.checkpointing.store(true, Ordering::Release);
        // Under the round lock: the queue ends read must match the dispatched offset.
        let round = self
            .dispatch
            .round
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let dispatched = self.dispatch.dispatched.load(Ordering::Acquire);
        let result = self
            .queues
            .store()
            .checkpoint(dispatched)
            .map(|_| ())
            .map_err(StoreError::Queues);
        drop(round);
        self.dispatch.checkpointing.store(false, Ordering::Release);
        // Outside the round lock: sends never wait for the key index's msyncs. Its own
        // trouble never holds up the consume queues' checkpoints: it is replayed from its
        // previous checkpoint at the next start.
        if let Some(Err(e)) = self
            .keys
            .as_ref()
            .map(super::key_index::KeyIndex::checkpoint)
        {
            self.disk
                .report_if_full(&e, 0, "checkpointing the key index");
            tracing::warn!(error = %e, "key index checkpoint failed; retrying");
        }
        result
    }

    /// Frees consume-queue blocks below the commit log's minimum. Work is done only when
    /// the minimum advanced since the last trim (retention deleted segments).
    pub(crate) fn trim_queues(&self) -> StoreResult<()> {
        self.trim_keys()?;
        let min = self.log.min_offset().get();
        if min <= self.dispatch.trimmed_below.load(Ordering::Acquire) {
            return Ok(());
        }
        for q in self.queues.all() {
            q.delete_below_physical(min)
                .map_err(|e| StoreError::cq(q.topic(), q.queue_id(), e))?;
        }
        self.dispatch.trimmed_below.fetch_max(min, Ordering::AcqRel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{decide, Action, Mode, Seen};

    /// A record at queue offset `at` of a queue expecting 10 next, minimum 0, not empty.
    fn seen(at: u64) -> Seen {
        Seen {
            queue_offset: at,
            next: 10,
            physical_offset: 5_000,
            indexed_physical: None,
            queue_min: 0,
            queue_empty: false,
            mode: Mode::Live,
        }
    }

    #[test]
    fn the_expected_offset_is_appended_in_every_mode() {
        for mode in [Mode::Live, Mode::Replay, Mode::FullReplay] {
            assert_eq!(decide(&Seen { mode, ..seen(10) }), Action::Append);
        }
    }

    #[test]
    fn a_replayed_record_already_indexed_is_left_alone() {
        let same = Seen {
            indexed_physical: Some(5_000),
            ..seen(7)
        };
        assert_eq!(decide(&same), Action::AlreadyIndexed);
        // The index points at a newer record (the queue was rewritten later): it wins.
        let newer = Seen {
            indexed_physical: Some(9_000),
            ..seen(7)
        };
        assert_eq!(decide(&newer), Action::AlreadyIndexed);
        // Below the queue's minimum: nothing to replace.
        let trimmed = Seen {
            indexed_physical: Some(1_000),
            queue_min: 8,
            ..seen(7)
        };
        assert_eq!(decide(&trimmed), Action::AlreadyIndexed);
    }

    #[test]
    fn an_index_pointing_at_an_older_record_is_replaced_from_that_offset() {
        let older = Seen {
            indexed_physical: Some(1_000),
            ..seen(7)
        };
        assert_eq!(decide(&older), Action::ReplaceFrom);
    }

    #[test]
    fn a_record_ahead_of_an_empty_queue_restarts_it_except_in_checkpoint_replay() {
        let empty = Seen {
            queue_empty: true,
            ..seen(15)
        };
        assert_eq!(decide(&empty), Action::RestartEmpty);
        let full = Seen {
            mode: Mode::FullReplay,
            ..empty
        };
        assert_eq!(decide(&full), Action::RestartEmpty);
        let replay = Seen {
            mode: Mode::Replay,
            ..empty
        };
        assert_eq!(decide(&replay), Action::Gap);
    }

    #[test]
    fn a_gap_is_repaired_only_in_a_full_replay() {
        assert_eq!(decide(&seen(15)), Action::Gap);
        let replay = Seen {
            mode: Mode::Replay,
            ..seen(15)
        };
        assert_eq!(decide(&replay), Action::Gap);
        let full = Seen {
            mode: Mode::FullReplay,
            ..seen(15)
        };
        assert_eq!(decide(&full), Action::RestartAfterGap);
    }
}
