//! [`TimerService`]: scheduling, recall, and the thread that indexes new timers and
//! delivers due ones.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use protocol::messages::{DeliverAt, RecallStatus};
use protocol::names::{RETRY_PREFIX, TIMER_TOPIC};
use protocol::time::now_ms;

use super::error::TimerError;
use super::format::{Entry, Kind};
use super::props;
use super::saver::{Leftover, Saver};
use super::wheel::{RecallOutcome, SaveSnapshot, Wheel};
use crate::store::disk::is_out_of_space;
use crate::store::{
    GetRequest, GetStatus, MessageId, MessageStore, PhysicalOffset, PutMessage, QueueOffset,
    RecordRef, TagFilter, TopicConfig, TopicScope,
};

/// Default of `--max-timer-delay-ms`: 7 days.
pub const DEFAULT_MAX_TIMER_DELAY_MS: u64 = 7 * 24 * 3600 * 1000;
/// `%TIMER%` messages indexed per read.
const INDEX_BATCH: usize = 1024;
const INDEX_MAX_BYTES: usize = 16 << 20;
/// Reads of `%TIMER%` between two deliveries while a backlog is indexed.
const INDEX_SLICE_BATCHES: usize = 4;
/// Due timers delivered per step (the wheel's lock is held meanwhile).
const DELIVER_BATCH: usize = 512;
/// How often delivery progress is checkpointed while timers are being delivered.
const SAVE_EVERY_MS: u64 = 500;
/// How often a begun save looks whether the flusher has made its copies durable.
const SAVE_POLL_MS: u64 = 20;
/// Pause before trying again after the store refused a read or a write.
const BACKOFF_MS: u64 = 1_000;
/// How long a recall waits for its timer to be indexed (dispatch runs just behind sends).
const RECALL_INDEX_WAIT: Duration = Duration::from_secs(2);

/// Settings of the timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// Furthest a delivery time may lie ahead, ms. Default 7 days.
    pub max_delay_ms: u64,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            max_delay_ms: DEFAULT_MAX_TIMER_DELAY_MS,
        }
    }
}

/// Where a scheduled message waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    /// Its id; the delivered copy carries it as `ORIGIN_MSG_ID`.
    pub msg_id: MessageId,
    /// The queue it will be delivered to.
    pub queue_id: u32,
    /// When it is due.
    pub deliver_at_ms: u64,
    /// What [`TimerService::recall`] takes.
    pub recall_handle: String,
}

/// Timer messages. See the module doc for the design.
#[derive(Debug)]
pub struct TimerService {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<MessageStore>,
    config: TimerConfig,
    wheel: Mutex<Wheel>,
    saver: Saver,
    wake: Mutex<WakeState>,
    cond: Condvar,
}

#[derive(Debug, Default, Clone, Copy)]
struct WakeState {
    stop: bool,
    seq: u64,
}

impl TimerService {
    /// Opens the wheel under `<data>/timer`, creates `%TIMER%` (one queue) unless it
    /// exists, and starts the timer thread. Close it (or drop it) before the store.
    ///
    /// # Errors
    /// Corrupt or unreadable timer files; the store refused to create `%TIMER%`; the
    /// thread did not start.
    pub fn start(store: Arc<MessageStore>, config: TimerConfig) -> Result<Self, TimerError> {
        if store.topic(TIMER_TOPIC).is_none() {
            store
                .create_topic_scoped(TopicScope::Internal, TopicConfig::new(TIMER_TOPIC, 1))
                .map_err(|e| TimerError::store("creating topic", TIMER_TOPIC, e))?;
        }
        let dir = store.config().data_dir.join("timer");
        let wheel = Wheel::open(&dir, now_ms())?;
        let inner = Arc::new(Inner {
            store: Arc::clone(&store),
            config,
            wheel: Mutex::new(wheel),
            saver: Saver::start()?,
            wake: Mutex::new(WakeState::default()),
            cond: Condvar::new(),
        });
        let weak = Arc::downgrade(&inner);
        store.on_dispatch(Arc::new(move |topic: &str, _queue, _max| {
            if topic == TIMER_TOPIC {
                if let Some(i) = weak.upgrade() {
                    i.poke();
                }
            }
        }));
        let worker = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("ferromq-timer".into())
            .spawn(move || worker.run())
            .map_err(|e| TimerError::io("start the timer thread for", dir, e))?;
        Ok(Self {
            inner,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> TimerConfig {
        self.inner.config
    }

    /// The due time of a send received now: a past time means now.
    ///
    /// # Errors
    /// `DelayTooLong` past the maximum delay.
    pub fn due_time(&self, at: DeliverAt) -> Result<u64, TimerError> {
        let now = now_ms();
        let due = match at {
            DeliverAt::TimestampMs(t) => t.max(now),
            DeliverAt::DelayMs(d) => now.saturating_add(d),
        };
        let delay_ms = due - now;
        if delay_ms > self.inner.config.max_delay_ms {
            return Err(TimerError::DelayTooLong {
                deliver_at_ms: due,
                delay_ms,
                max_delay_ms: self.inner.config.max_delay_ms,
            });
        }
        Ok(due)
    }

    /// Stores `msgs` (already validated for `topic`) in `%TIMER%`, due at `due_ms` in
    /// queue `queue_id` of `topic`. Durable under the store's flush policy on return.
    /// Blocking.
    ///
    /// # Errors
    /// The store refused the write.
    pub fn schedule(
        &self,
        topic: &str,
        queue_id: u32,
        msgs: &[PutMessage<'_>],
        due_ms: u64,
    ) -> Result<Vec<Scheduled>, TimerError> {
        let blobs: Vec<Vec<u8>> = msgs
            .iter()
            .map(|m| props::waiting(m.properties, topic, queue_id, due_ms))
            .collect();
        let waiting: Vec<PutMessage<'_>> = msgs
            .iter()
            .zip(&blobs)
            .map(|(m, p)| PutMessage {
                properties: p,
                ..*m
            })
            .collect();
        let stored = self
            .inner
            .store
            .put_batch_scoped(TopicScope::Internal, TIMER_TOPIC, 0, &waiting)
            .map_err(|e| TimerError::store("storing timers of", topic, e))?;
        Ok(stored
            .into_iter()
            .map(|r| Scheduled {
                msg_id: r.msg_id,
                queue_id,
                deliver_at_ms: due_ms,
                recall_handle: r.msg_id.to_text(),
            })
            .collect())
    }

    /// Recalls a timer message of `topic` by its handle: a tombstone on disk before the
    /// answer, so it is never delivered, even after a crash. Blocking.
    ///
    /// # Errors
    /// A handle that does not decode (`BadHandle`) or names no timer message of `topic`
    /// (`NotFound`); I/O errors writing the tombstone.
    pub fn recall(&self, topic: &str, handle: &str) -> Result<RecallStatus, TimerError> {
        let bad = |reason| TimerError::BadHandle {
            handle: handle.chars().take(64).collect(),
            reason,
        };
        let not_found = || TimerError::NotFound {
            handle: handle.chars().take(64).collect(),
            topic: topic.to_string(),
        };
        let id: MessageId = handle.parse().map_err(|_| bad("not a timer message id"))?;
        let store = &self.inner.store;
        let rec = store.get_by_id(id).map_err(|_| not_found())?;
        let view = rec.view();
        if view.topic() != TIMER_TOPIC {
            return Err(not_found());
        }
        let w = props::parse(view.properties()).map_err(|_| not_found())?;
        if w.real_topic != topic {
            return Err(not_found());
        }
        let q = view.queue_offset();
        store.wait_for_message(TIMER_TOPIC, 0, QueueOffset::new(q), RECALL_INDEX_WAIT);
        let mut wheel = self.inner.lock_wheel();
        // The tombstone's checkpoint covers slot files a save may still be syncing.
        self.inner.saver.wait_idle();
        if q >= wheel.indexed_next() {
            self.inner.index_new(&mut wheel, usize::MAX)?;
        }
        match wheel.recall(q, w.due_ms)? {
            Some(RecallOutcome::Recalled) => Ok(RecallStatus::Recalled),
            Some(RecallOutcome::AlreadyRecalled) => Ok(RecallStatus::AlreadyRecalled),
            Some(RecallOutcome::AlreadyDelivered) => Ok(RecallStatus::AlreadyDelivered),
            None => Err(not_found()),
        }
    }

    /// Timer messages waiting, all topics.
    pub fn pending_total(&self) -> u64 {
        self.inner.lock_wheel().pending_total()
    }

    /// Timer messages waiting for `topic`.
    pub fn pending_of(&self, topic: &str) -> u64 {
        self.inner.lock_wheel().pending_of(topic)
    }

    /// Timer messages waiting, per topic.
    pub fn pending_by_topic(&self) -> Vec<(String, u64)> {
        let wheel = self.inner.lock_wheel();
        wheel
            .pending_by_topic()
            .map(|(t, n)| (t.to_string(), n))
            .collect()
    }

    /// Stops the thread after a last checkpoint, letting go of the store. Idempotent.
    pub fn close(&self) {
        {
            let mut w = self
                .inner
                .wake
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            w.stop = true;
        }
        self.inner.cond.notify_all();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            if t.join().is_err() {
                // Nothing is lost: the next start redelivers from the last checkpoint.
                tracing::error!("timer thread panicked");
            }
        }
    }
}

impl Drop for TimerService {
    fn drop(&mut self) {
        self.close();
    }
}

impl Inner {
    fn lock_wheel(&self) -> MutexGuard<'_, Wheel> {
        self.wheel.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn poke(&self) {
        self.wake.lock().unwrap_or_else(PoisonError::into_inner).seq += 1;
        self.cond.notify_all();
    }

    fn run(&self) {
        let mut last_save = now_ms();
        let mut saving: Option<(SaveSnapshot, u64)> = None;
        loop {
            let seen = *self.wake.lock().unwrap_or_else(PoisonError::into_inner);
            if seen.stop {
                break;
            }
            let mut wheel = self.lock_wheel();
            let mut wake_at = match self.step(&mut wheel) {
                Ok(next) => next,
                Err(e) => {
                    if !matches!(&e, TimerError::Store { source, .. } if is_out_of_space(source)) {
                        tracing::warn!(error = %e, "timer step failed; will retry");
                    }
                    Some(now_ms().saturating_add(BACKOFF_MS))
                }
            };
            let now = now_ms();
            // A save never waits on the disk on this thread: it takes the progress, notes
            // where the log ends (every copy delivered so far lies below), and once the
            // flusher has made that much durable hands the slot syncs and the checkpoint
            // write to the save thread.
            let saver_busy = self.saver.is_busy();
            if saving.is_none()
                && !saver_busy
                && wheel.is_dirty()
                && now >= last_save.saturating_add(SAVE_EVERY_MS)
            {
                let end = self.store.commit_log().write_offset().get();
                saving = wheel.begin_save().map(|snapshot| (snapshot, end));
            }
            if let Some((snapshot, end)) = saving.take() {
                if self.store.commit_log().flushed_offset().get() >= end {
                    last_save = now;
                    match wheel.prepare_save(snapshot) {
                        Ok(save) => {
                            if let Err(save) = self.saver.submit(save) {
                                let mut left = Leftover::default();
                                if let Err(e) = save.write(&mut left.unsynced, &mut left.remove) {
                                    tracing::warn!(error = %e, "timer checkpoint not saved");
                                }
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "timer checkpoint not saved"),
                    }
                } else {
                    saving = Some((snapshot, end));
                }
            }
            if wheel.is_dirty() || saving.is_some() {
                let at = if saving.is_some() || saver_busy {
                    now + SAVE_POLL_MS
                } else {
                    last_save.saturating_add(SAVE_EVERY_MS).max(now + 1)
                };
                wake_at = Some(wake_at.map_or(at, |w| w.min(at)));
            }
            drop(wheel);
            self.wait(seen.seq, wake_at);
        }
        let mut left = self.saver.close();
        let mut wheel = self.lock_wheel();
        if let Some((snapshot, _)) = saving {
            wheel.abandon_save(snapshot);
        }
        if let Err(e) = self.save(&mut wheel, &mut left) {
            tracing::warn!(error = %e, "timer checkpoint not saved at close");
        }
    }

    /// Indexes new timers and delivers due ones; returns when to look again.
    fn step(&self, wheel: &mut Wheel) -> Result<Option<u64>, TimerError> {
        // A backlog of new timers (a burst of sends) is indexed a slice at a time, with
        // the due ones delivered in between, so it never holds up timers falling due.
        while !self.index_new(wheel, INDEX_SLICE_BATCHES)? {
            self.deliver_due(wheel)?;
        }
        self.deliver_due(wheel)?;
        Ok(wheel.next_due_ms())
    }

    /// Delivers every timer due now.
    fn deliver_due(&self, wheel: &mut Wheel) -> Result<(), TimerError> {
        loop {
            let now = now_ms();
            let due = wheel.take_due(now, DELIVER_BATCH)?;
            if due.is_empty() {
                return Ok(());
            }
            let done = self.deliver(&due);
            let (ok, rest) = due.split_at(done.as_ref().map_or_else(|(n, _)| *n, |()| due.len()));
            wheel.delivered(ok);
            if let Err((_, e)) = done {
                wheel.put_back(rest.to_vec());
                return Err(e);
            }
        }
    }

    fn save(&self, wheel: &mut Wheel, left: &mut Leftover) -> Result<(), TimerError> {
        wheel.save_carrying(
            || {
                self.store
                    .commit_log()
                    .flush()
                    .map_err(|e| TimerError::store("flushing delivered timers", "", e.into()))
            },
            &mut left.unsynced,
            &mut left.remove,
        )
    }

    /// Reads `%TIMER%` from the wheel's index position into slot files, at most
    /// `max_batches` reads; `true` once caught up with the log.
    fn index_new(&self, wheel: &mut Wheel, max_batches: usize) -> Result<bool, TimerError> {
        for _ in 0..max_batches {
            let from = wheel.indexed_next();
            let got = self
                .store
                .get_messages(GetRequest {
                    topic: TIMER_TOPIC,
                    queue_id: 0,
                    from: QueueOffset::new(from),
                    max_count: INDEX_BATCH,
                    max_bytes: INDEX_MAX_BYTES,
                    filter: &TagFilter::All,
                })
                .map_err(|e| TimerError::store("reading", TIMER_TOPIC, e))?;
            match got.status {
                GetStatus::Found => {
                    let mut entries = Vec::with_capacity(got.messages.len());
                    for rec in &got.messages {
                        let view = rec.view();
                        match props::parse(view.properties()) {
                            Ok(w) => entries.push(Entry {
                                due_ms: w.due_ms,
                                queue_offset: view.queue_offset(),
                                physical: rec.offset().get(),
                                size: rec.size(),
                                topic_id: wheel.topic_id(w.real_topic)?,
                                kind: Kind::Timer,
                            }),
                            Err(reason) => tracing::error!(
                                queue_offset = view.queue_offset(),
                                reason,
                                "skipping a timer message without a valid destination"
                            ),
                        }
                    }
                    wheel.add(&entries, got.next_offset.get())?;
                    if got.messages.len() < INDEX_BATCH {
                        return Ok(true);
                    }
                }
                GetStatus::OffsetBelowMin { min } => {
                    tracing::error!(
                        from,
                        min = min.get(),
                        "timer messages were removed by retention before they were indexed"
                    );
                    wheel.add(&[], min.get())?;
                }
                GetStatus::OffsetPastMax => {
                    wheel.reset_indexed(got.max_offset.get());
                    return Ok(true);
                }
                GetStatus::NoMatchedMessage | GetStatus::NoNewMessage => return Ok(true),
            }
        }
        Ok(false)
    }

    /// Delivers `due` to their real queues, in order, batching runs with one destination.
    /// On failure, how many were handled before it, and why.
    fn deliver(&self, due: &[Entry]) -> Result<(), (usize, TimerError)> {
        let mut i = 0;
        while i < due.len() {
            let run_start = i;
            let mut copies: Vec<(Vec<u8>, RecordRef)> = Vec::new();
            let mut dest: Option<(String, u32)> = None;
            while i < due.len() {
                match self.read_due(&due[i]) {
                    // Delivered first, what came before the unreadable one.
                    None if dest.is_some() => break,
                    None => i += 1,
                    Some((d, blob, rec)) => {
                        if dest.as_ref().is_some_and(|cur| *cur != d) {
                            break;
                        }
                        dest = Some(d);
                        copies.push((blob, rec));
                        i += 1;
                    }
                }
            }
            if let Some((topic, queue_id)) = dest {
                self.put(&topic, queue_id, &copies)
                    .map_err(|e| (run_start, e))?;
            }
        }
        Ok(())
    }

    /// The destination and delivered properties of a due timer; `None` (logged) when its
    /// message is gone or is not a timer message (it could never be delivered).
    fn read_due(&self, e: &Entry) -> Option<((String, u32), Vec<u8>, RecordRef)> {
        let id = MessageId::new(PhysicalOffset::new(e.physical), e.size);
        let rec = match self.store.get_by_id(id) {
            Ok(r) => r,
            Err(err) => {
                tracing::error!(msg_id = %id, error = %err, "a due timer message is gone");
                return None;
            }
        };
        let view = rec.view();
        if view.topic() != TIMER_TOPIC || view.queue_offset() != e.queue_offset {
            tracing::error!(msg_id = %id, "a timer slot names a message that is not its timer");
            return None;
        }
        let w = props::parse(view.properties()).ok()?;
        let dest = (w.real_topic.to_string(), w.real_queue_id);
        let blob = props::delivered(view.properties(), &id.to_text()).ok()?;
        Some((dest, blob, rec))
    }

    fn put(
        &self,
        topic: &str,
        queue_id: u32,
        copies: &[(Vec<u8>, RecordRef)],
    ) -> Result<(), TimerError> {
        let Some(t) = self.store.topic(topic) else {
            // The topic (or, for a retry, the group) was deleted while its timers waited.
            let what = if topic.starts_with(RETRY_PREFIX) {
                "retries of a deleted group"
            } else {
                "timers of a deleted topic"
            };
            tracing::info!(topic, dropped = copies.len(), "{what} dropped");
            return Ok(());
        };
        // The topic may have been recreated with fewer queues; queue 0 always exists.
        let queue_id = if queue_id < t.queue_count {
            queue_id
        } else {
            0
        };
        let msgs: Vec<PutMessage<'_>> = copies
            .iter()
            .map(|(props, rec)| {
                let view = rec.view();
                PutMessage {
                    properties: props,
                    body: view.body(),
                    born_timestamp_ms: view.born_timestamp_ms(),
                    reconsume_times: view.reconsume_times(),
                }
            })
            .collect();
        self.store
            .put_batch_scoped(TopicScope::Internal, topic, queue_id, &msgs)
            .map(drop)
            .map_err(|e| TimerError::store("delivering due timers into", topic, e))
    }

    /// Sleeps until poked after `seen`, stopped, or the wall clock reaches `deadline_ms`.
    fn wait(&self, seen: u64, deadline_ms: Option<u64>) {
        let mut state = self.wake.lock().unwrap_or_else(PoisonError::into_inner);
        while !state.stop && state.seq == seen {
            match deadline_ms {
                None => {
                    state = self
                        .cond
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                Some(d) => {
                    let now = now_ms();
                    if now >= d {
                        return;
                    }
                    state = self
                        .cond
                        .wait_timeout(state, Duration::from_millis(d - now))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }
}
