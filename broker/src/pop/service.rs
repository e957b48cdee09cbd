//! [`PopService`]: the lease tables of every receiving group and the work on them. The
//! methods that touch the store block; the server calls them on its blocking pool.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use commitlog::RecordRef;
use protocol::messages::QueueCommit;
use protocol::names::retry_topic;
use protocol::receive::{
    ChangeInvisibilityResponse, HandleRefused, Lease, LeaseInfoResponse, QueueLeases,
    ReceiptHandle, ReceiveRequest,
};
use tokio::sync::{watch, Notify};

use super::table::{GroupTable, Stale};
use super::PopError;
use crate::groups::ConsumerOffsets;
use crate::retry::{Redelivered, RetryService};
use crate::store::{GetRequest, GetStatus, MessageStore, QueueOffset, TagFilter};

/// Leases ended per group per pass of the timer, so one group with a mass expiry does not
/// hold its lock for long.
const EXPIRE_BATCH: usize = 256;
/// A copy that could not be written (a full disk) is tried again this much later.
const REDELIVER_RETRY_MS: u64 = 1_000;

/// What the work on leases needs from the broker.
pub(crate) struct Ctx<'a> {
    pub(crate) store: &'a MessageStore,
    pub(crate) offsets: &'a ConsumerOffsets,
    pub(crate) retry: &'a RetryService,
}

/// One received message: its record and its lease.
pub(crate) struct Received {
    pub(crate) record: RecordRef,
    pub(crate) lease: Lease,
}

/// The lease tables of every group that receives. Send + Sync.
pub(crate) struct PopService {
    /// Tells this broker run's handles from those of earlier runs.
    run: u64,
    max_in_flight: usize,
    epochs: AtomicU64,
    groups: RwLock<HashMap<String, Arc<GroupEntry>>>,
    /// Per existing topic someone waited on: woken by the store's dispatcher.
    topics: Arc<RwLock<HashMap<String, Arc<Notify>>>>,
    /// Wakes the lease timer when a deadline earlier than the one it sleeps to appears.
    pub(crate) timer: Notify,
    /// The deadline the timer sleeps to (`u64::MAX`: none).
    timer_deadline: AtomicU64,
    pub(crate) durable: Durable,
    /// Set once the lease timer and the ack writer run (at the first receive).
    pub(crate) started: AtomicBool,
}

/// One group's table and the wake-up of its receivers waiting for room.
pub(crate) struct GroupEntry {
    state: Mutex<GroupState>,
    /// Fired when leases end (room under the limit) or copies reach the retry topic.
    pub(crate) room: Notify,
    last_receive_ms: AtomicU64,
}

struct GroupState {
    table: GroupTable,
    /// The group's offsets reset epoch the table was built under: a reset rebuilds it.
    reset_epoch: u64,
    /// Where the next receive starts its round of the queues.
    rotate: usize,
    /// Queues with acks not yet in the consumer offsets: recorded by
    /// [`PopService::flush_acks`] once per offsets write rather than once per ack request.
    acked: Vec<u32>,
}

impl PopService {
    /// A service whose receivers are woken by `store`'s dispatcher.
    pub(crate) fn new(max_in_flight: u32, store: &MessageStore, now_ms: u64) -> Self {
        let topics: Arc<RwLock<HashMap<String, Arc<Notify>>>> = Arc::default();
        let weak = Arc::downgrade(&topics);
        store.on_dispatch(Arc::new(move |topic: &str, _queue, _max| {
            if let Some(map) = weak.upgrade() {
                if let Some(n) = map
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(topic)
                {
                    n.notify_waiters();
                }
            }
        }));
        Self {
            run: (now_ms << 12) ^ u64::from(std::process::id() & 0xFFF),
            max_in_flight: max_in_flight as usize,
            epochs: AtomicU64::new(0),
            groups: RwLock::new(HashMap::new()),
            topics,
            timer: Notify::new(),
            timer_deadline: AtomicU64::new(u64::MAX),
            durable: Durable::new(),
            started: AtomicBool::new(false),
        }
    }

    /// Whether `group` consumes by receive: it received within `within_ms` or still holds
    /// leases.
    pub(crate) fn is_receiving(&self, group: &str, now_ms: u64, within_ms: u64) -> bool {
        self.find(group).is_some_and(|e| {
            now_ms.saturating_sub(e.last_receive_ms.load(Ordering::Relaxed)) < within_ms
                || e.lock().table.in_flight() > 0
        })
    }

    /// The wake-up of a topic's new messages, for an existing topic.
    pub(crate) fn topic_waker(&self, store: &MessageStore, topic: &str) -> Option<Arc<Notify>> {
        if let Some(n) = self
            .topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
        {
            return Some(Arc::clone(n));
        }
        store.topic(topic)?;
        let mut map = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        Some(Arc::clone(map.entry(topic.to_owned()).or_default()))
    }

    /// The group's entry, created on first use.
    pub(crate) fn group(&self, group: &str) -> Arc<GroupEntry> {
        if let Some(e) = self.find(group) {
            return e;
        }
        let mut map = self.groups.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(group.to_owned()).or_insert_with(|| {
            Arc::new(GroupEntry {
                state: Mutex::new(GroupState {
                    table: GroupTable::new(self.max_in_flight),
                    reset_epoch: 0,
                    rotate: 0,
                    acked: Vec::new(),
                }),
                room: Notify::new(),
                last_receive_ms: AtomicU64::new(0),
            })
        }))
    }

    /// Names of the groups that received in this broker run.
    pub(crate) fn group_names(&self) -> Vec<String> {
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    fn find(&self, group: &str) -> Option<Arc<GroupEntry>> {
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(group)
            .cloned()
    }

    fn next_epoch(&self) -> u64 {
        self.epochs.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// `n` fresh epochs taken at once.
    fn next_epochs(&self, n: usize) -> std::ops::Range<u64> {
        let first = self.epochs.fetch_add(n as u64, Ordering::Relaxed) + 1;
        first..first + n as u64
    }

    /// Leases up to `max_count` messages (and `max_bytes`) of the request's topic and the
    /// group's retry topic, visiting queues round robin. Returns none when nothing is
    /// ready or the group is at its lease limit.
    ///
    /// # Errors
    /// A topic that does not exist or cannot be read; store failures.
    pub(crate) fn receive(
        &self,
        ctx: &Ctx<'_>,
        req: &ReceiveRequest,
        filter: &TagFilter,
        max_count: usize,
        max_bytes: usize,
        now_ms: u64,
    ) -> Result<Vec<Received>, PopError> {
        let entry = self.group(&req.group);
        entry.last_receive_ms.fetch_max(now_ms, Ordering::Relaxed);
        let Some(topic) = ctx.store.topic(&req.topic) else {
            return Err(crate::store::StoreError::TopicNotFound(req.topic.clone()).into());
        };
        let retry = retry_topic(&req.group);
        let queue_count = topic.queue_count as usize;
        let n = queue_count + usize::from(ctx.store.topic(&retry).is_some());
        let deadline = now_ms.saturating_add(req.invisible_ms);
        let mut st = entry.lock();
        self.check_reset(ctx, &req.group, &mut st);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut skipped_some: Vec<u32> = Vec::new();
        for i in 0..n {
            let left = max_count.saturating_sub(out.len());
            if left == 0 || bytes >= max_bytes {
                break;
            }
            let k = (st.rotate + i) % n;
            let (name, queue_id, f) = if k < queue_count {
                (
                    req.topic.as_str(),
                    u32::try_from(k).unwrap_or(u32::MAX),
                    filter,
                )
            } else {
                (retry.as_str(), 0, &TagFilter::All)
            };
            let q = st.table.queue(name, queue_id, || {
                ctx.offsets
                    .get(&req.group, name, queue_id)
                    .map(|c| (c.offset, c.acked_above))
            });
            // Message-group messages whose turn came (or whose lease ran out) go first:
            // they are in flight already, so they need no room.
            for offset in st.table.ready(q, left) {
                let Some(record) = read_at(ctx, name, queue_id, offset)? else {
                    st.table.drop_ready(q, offset);
                    continue;
                };
                let epoch = self.next_epoch();
                let Some(retries) = st.table.lease_ready(q, offset, epoch, deadline) else {
                    continue;
                };
                bytes += record.bytes().len();
                out.push(self.received(record, q, offset, epoch, retries, deadline));
            }
            let want = max_count.saturating_sub(out.len()).min(st.table.room());
            if want == 0 || bytes >= max_bytes {
                continue;
            }
            let cursor = st.table.cursor(q);
            let got = ctx.store.get_messages(GetRequest {
                topic: name,
                queue_id,
                from: QueueOffset::new(cursor),
                max_count: want,
                max_bytes: max_bytes - bytes,
                filter: f,
            })?;
            let scanned_to = match got.status {
                GetStatus::OffsetBelowMin { min } => {
                    tracing::warn!(group = %req.group, topic = name, queue_id, from = cursor, to = min.get(),
                        "messages removed by retention before the group received them");
                    min.get()
                }
                _ => got.next_offset.get(),
            };
            let mut offsets = Vec::with_capacity(got.messages.len());
            let mut records = Vec::with_capacity(got.messages.len());
            let mut groups = Vec::with_capacity(got.messages.len());
            for r in got.messages {
                let o = r.view().queue_offset();
                if o >= cursor && !st.table.is_skipped(q, o) {
                    groups.push(message_group(&r));
                    offsets.push(o);
                    records.push(r);
                }
            }
            if scanned_to.saturating_sub(cursor) > offsets.len() as u64 {
                skipped_some.push(q);
            }
            let epochs = self.next_epochs(offsets.len());
            let epochs: Vec<u64> = epochs.collect();
            let groups: Vec<Option<&str>> = groups.iter().map(Option::as_deref).collect();
            let leased = st
                .table
                .grant_grouped(q, scanned_to, &offsets, &epochs, &groups, deadline);
            let granted = records.into_iter().zip(offsets).zip(epochs).zip(leased);
            for (((record, offset), epoch), leased) in granted {
                // A parked message waits for its group's older one; it is not returned.
                if leased {
                    bytes += record.bytes().len();
                    out.push(self.received(record, q, offset, epoch, 0, deadline));
                }
            }
        }
        st.rotate = st.rotate.wrapping_add(1);
        // Filtered-out stretches are done: record them so a restart does not read them again.
        if !skipped_some.is_empty() {
            commit(ctx, &req.group, &st.table, &skipped_some)?;
        }
        drop(st);
        if !out.is_empty() {
            self.wake_timer_for(deadline);
        }
        Ok(out)
    }

    /// One received message: its record and a lease with a new handle. `retries`: the
    /// in-place redeliveries of a message-group message so far.
    fn received(
        &self,
        record: RecordRef,
        slot: u32,
        offset: u64,
        epoch: u64,
        retries: u32,
        deadline_ms: u64,
    ) -> Received {
        let attempt = record
            .view()
            .reconsume_times()
            .saturating_add(1)
            .saturating_add(retries);
        Received {
            lease: Lease {
                receipt_handle: ReceiptHandle::new(self.run, epoch, slot, offset),
                delivery_attempt: attempt,
                invisible_until_ms: deadline_ms,
            },
            record,
        }
    }

    /// Acks a batch of handles; returns those refused (stale or malformed). The acks
    /// reach the consumer offsets at the next [`PopService::flush_acks`].
    ///
    /// # Errors
    /// None today; kept for the callers' single error path.
    pub(crate) fn ack(
        &self,
        ctx: &Ctx<'_>,
        group: &str,
        handles: &[ReceiptHandle],
    ) -> Result<Vec<HandleRefused>, PopError> {
        let refuse = |i: usize, reason: &str| HandleRefused {
            index: u32::try_from(i).unwrap_or(u32::MAX),
            message: format!("receipt handle {} is not valid: {reason}", handles[i]),
        };
        let Some(entry) = self.find(group) else {
            return Ok((0..handles.len())
                .map(|i| refuse(i, "the group holds no leases"))
                .collect());
        };
        let mut refused = Vec::new();
        let mut st = entry.lock();
        self.check_reset(ctx, group, &mut st);
        let mut any = false;
        for (i, h) in handles.iter().enumerate() {
            match self.resolve(&st.table, h) {
                Err(reason) => refused.push(refuse(i, reason)),
                Ok(q) => match st.table.ack(q, h.offset(), h.epoch()) {
                    Ok(()) => {
                        any = true;
                        if !st.acked.contains(&q) {
                            st.acked.push(q);
                        }
                    }
                    Err(Stale) => refused.push(refuse(i, STALE)),
                },
            }
        }
        if any {
            drop(st);
            entry.room.notify_waiters();
        }
        Ok(refused)
    }

    /// Records the acks of every group in the consumer offsets. Called before each
    /// offsets write that answers acks, and before the last write at shutdown.
    ///
    /// # Errors
    /// The committed state refused the progress (never for a well-formed table).
    pub(crate) fn flush_acks(&self, ctx: &Ctx<'_>) -> Result<(), PopError> {
        let groups: Vec<(String, Arc<GroupEntry>)> = self
            .groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(g, e)| (g.clone(), Arc::clone(e)))
            .collect();
        for (group, entry) in groups {
            let mut st = entry.lock();
            self.check_reset(ctx, &group, &mut st);
            if st.acked.is_empty() {
                continue;
            }
            let acked = std::mem::take(&mut st.acked);
            commit(ctx, &group, &st.table, &acked)?;
        }
        Ok(())
    }

    /// Moves a lease's deadline to `invisible_ms` from now; returns its new handle.
    ///
    /// # Errors
    /// [`PopError::InvalidHandle`] for a stale or malformed handle.
    pub(crate) fn change(
        &self,
        ctx: &Ctx<'_>,
        group: &str,
        handle: &ReceiptHandle,
        invisible_ms: u64,
        now_ms: u64,
    ) -> Result<ChangeInvisibilityResponse, PopError> {
        let invalid = |reason| PopError::InvalidHandle {
            handle: *handle,
            reason,
        };
        let entry = self
            .find(group)
            .ok_or(invalid("the group holds no leases"))?;
        let mut st = entry.lock();
        self.check_reset(ctx, group, &mut st);
        let q = self.resolve(&st.table, handle).map_err(invalid)?;
        let epoch = self.next_epoch();
        let deadline = now_ms.saturating_add(invisible_ms);
        st.table
            .change(q, handle.offset(), handle.epoch(), epoch, deadline)
            .map_err(|Stale| invalid(STALE))?;
        drop(st);
        self.wake_timer_for(deadline);
        Ok(ChangeInvisibilityResponse {
            receipt_handle: ReceiptHandle::new(self.run, epoch, q, handle.offset()),
            invisible_until_ms: deadline,
        })
    }

    /// Sends a leased message to the group's dead-letter queue and ends its lease.
    ///
    /// # Errors
    /// [`PopError::InvalidHandle`]; the dead-letter write failed (the lease is kept, with
    /// a new handle nobody holds, and ends again at its old deadline).
    pub(crate) fn reject(
        &self,
        ctx: &Ctx<'_>,
        group: &str,
        handle: &ReceiptHandle,
    ) -> Result<(), PopError> {
        let invalid = |reason| PopError::InvalidHandle {
            handle: *handle,
            reason,
        };
        let entry = self
            .find(group)
            .ok_or(invalid("the group holds no leases"))?;
        let mut st = entry.lock();
        self.check_reset(ctx, group, &mut st);
        let q = self.resolve(&st.table, handle).map_err(invalid)?;
        let offset = handle.offset();
        let lease = st
            .table
            .begin_end(q, offset, handle.epoch(), self.next_epoch())
            .map_err(|Stale| invalid(STALE))?;
        let (topic, queue_id) = st.table.name(q);
        let topic = topic.to_owned();
        drop(st);
        let written = copy(ctx, group, &topic, queue_id, offset, true);
        let mut st = entry.lock();
        match written {
            Ok(_) => {
                st.table.end(q, offset);
                commit(ctx, group, &st.table, &[q])?;
                drop(st);
                entry.room.notify_waiters();
                Ok(())
            }
            Err(e) => {
                st.table
                    .unend(q, offset, self.next_epoch(), lease.deadline_ms);
                Err(e)
            }
        }
    }

    /// Ends every lease past its deadline: copies each message to the retry topic (or the
    /// dead-letter queue past the last attempt) and marks the original done. Returns how
    /// many ended.
    pub(crate) fn expire_due(&self, ctx: &Ctx<'_>, now_ms: u64) -> usize {
        let groups: Vec<(String, Arc<GroupEntry>)> = self
            .groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(g, e)| (g.clone(), Arc::clone(e)))
            .collect();
        let mut ended = 0;
        for (group, entry) in groups {
            loop {
                let n = self.expire_some(ctx, &group, &entry, now_ms);
                ended += n;
                if n < EXPIRE_BATCH {
                    break;
                }
            }
        }
        ended
    }

    fn expire_some(&self, ctx: &Ctx<'_>, group: &str, entry: &GroupEntry, now_ms: u64) -> usize {
        let max_retries = ctx
            .retry
            .group_max_reconsume_times(group)
            .unwrap_or(ctx.retry.config().max_reconsume_times);
        let mut st = entry.lock();
        let expired = st.table.expire(now_ms, EXPIRE_BATCH, self.next_epoch());
        let n = expired.len();
        let mut due: Vec<(u32, String, u32, u64, bool)> = Vec::with_capacity(n);
        for (q, o) in expired {
            // A message-group message is delivered again in place (a copy in the retry
            // topic would come after its group's later messages), until its attempts
            // run out; then it is dead-lettered.
            let dead = match st.table.fifo_retries(q, o) {
                Some(r) if r < max_retries => {
                    st.table.make_ready(q, o);
                    continue;
                }
                Some(_) => true,
                None => false,
            };
            let (t, id) = st.table.name(q);
            due.push((q, t.to_owned(), id, o, dead));
        }
        drop(st);
        if due.is_empty() {
            if n > 0 {
                entry.room.notify_waiters();
            }
            return n;
        }
        let results: Vec<_> = due
            .iter()
            .map(|(_, t, id, o, dead)| copy(ctx, group, t, *id, *o, *dead))
            .collect();
        let mut st = entry.lock();
        let mut touched: Vec<u32> = Vec::new();
        for ((q, t, id, o, _), result) in due.iter().zip(results) {
            match result {
                Ok(_) => {
                    st.table.end(*q, *o);
                    if !touched.contains(q) {
                        touched.push(*q);
                    }
                }
                Err(e) => {
                    tracing::warn!(%group, topic = %t, queue_id = id, offset = o, error = %e,
                        "lease expired but its message could not be redelivered; trying again");
                    let retry_at = now_ms.saturating_add(REDELIVER_RETRY_MS);
                    st.table.unend(*q, *o, self.next_epoch(), retry_at);
                }
            }
        }
        if let Err(e) = commit(ctx, group, &st.table, &touched) {
            tracing::warn!(%group, error = %e, "progress after lease expiry not recorded");
        }
        drop(st);
        entry.room.notify_waiters();
        n
    }

    /// The earliest deadline of any lease; records it as what the timer sleeps to.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        let groups: Vec<Arc<GroupEntry>> = self
            .groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let next = groups
            .iter()
            .filter_map(|e| e.lock().table.next_deadline())
            .min();
        self.timer_deadline
            .store(next.unwrap_or(u64::MAX), Ordering::Relaxed);
        next
    }

    fn wake_timer_for(&self, deadline_ms: u64) {
        if deadline_ms < self.timer_deadline.load(Ordering::Relaxed) {
            self.timer_deadline.store(deadline_ms, Ordering::Relaxed);
            self.timer.notify_one();
        }
    }

    /// In-flight leases of a group per queue.
    pub(crate) fn report(&self, group: &str) -> LeaseInfoResponse {
        let max_in_flight = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        let Some(entry) = self.find(group) else {
            return LeaseInfoResponse {
                receives: false,
                in_flight: 0,
                max_in_flight,
                queues: Vec::new(),
            };
        };
        let st = entry.lock();
        let mut queues: Vec<QueueLeases> = st
            .table
            .report()
            .into_iter()
            .map(|r| QueueLeases {
                topic: r.topic,
                queue_id: r.queue_id,
                in_flight: u32::try_from(r.in_flight).unwrap_or(u32::MAX),
                next_offset: r.cursor,
            })
            .collect();
        queues.sort_by(|a, b| (&a.topic, a.queue_id).cmp(&(&b.topic, b.queue_id)));
        LeaseInfoResponse {
            receives: true,
            in_flight: u32::try_from(st.table.in_flight()).unwrap_or(u32::MAX),
            max_in_flight,
            queues,
        }
    }

    /// The table slot a handle names; its lease is checked by the table's operation.
    fn resolve(&self, table: &GroupTable, handle: &ReceiptHandle) -> Result<u32, &'static str> {
        if handle.run() != self.run {
            return Err("it was issued before the broker restarted");
        }
        if handle.slot() as usize >= table.slots() {
            return Err("the group holds no lease on that queue");
        }
        Ok(handle.slot())
    }

    /// The topic and queue of a handle's message, while its lease is live.
    ///
    /// # Errors
    /// [`PopError::InvalidHandle`] for a handle of no live lease.
    pub(crate) fn locate(
        &self,
        group: &str,
        handle: &ReceiptHandle,
    ) -> Result<(String, u32), PopError> {
        let invalid = |reason| PopError::InvalidHandle {
            handle: *handle,
            reason,
        };
        let entry = self
            .find(group)
            .ok_or(invalid("the group holds no leases"))?;
        let st = entry.lock();
        let q = self.resolve(&st.table, handle).map_err(invalid)?;
        st.table
            .check(q, handle.offset(), handle.epoch())
            .map_err(|Stale| invalid(STALE))?;
        let (topic, queue_id) = st.table.name(q);
        Ok((topic.to_owned(), queue_id))
    }

    /// Rebuilds a group's table when its offsets were reset: leases of before are void.
    fn check_reset(&self, ctx: &Ctx<'_>, group: &str, st: &mut GroupState) {
        let epoch = ctx.offsets.reset_epoch(group);
        if epoch != st.reset_epoch {
            st.table = GroupTable::new(self.max_in_flight);
            st.acked.clear();
            st.reset_epoch = epoch;
        }
    }
}

const STALE: &str = "its lease expired, was changed or ended";

impl GroupEntry {
    fn lock(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Records the committed state of `queues` in the consumer offsets.
fn commit(ctx: &Ctx<'_>, group: &str, table: &GroupTable, queues: &[u32]) -> Result<(), PopError> {
    if queues.is_empty() {
        return Ok(());
    }
    let commits: Vec<QueueCommit> = queues
        .iter()
        .map(|q| {
            let (topic, queue_id) = table.name(*q);
            let (offset, acked_above) = table.committed(*q);
            QueueCommit {
                topic: topic.to_owned(),
                queue_id,
                offset,
                acked_above,
            }
        })
        .collect();
    ctx.offsets.commit(group, &commits)?;
    Ok(())
}

/// The message group a record carries, if any.
fn message_group(record: &RecordRef) -> Option<String> {
    protocol::properties::Properties::new(record.view().properties())
        .get(protocol::properties::MESSAGE_GROUP)
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
}

/// The record at (topic, queue, offset); `None` when retention removed it.
fn read_at(
    ctx: &Ctx<'_>,
    topic: &str,
    queue_id: u32,
    offset: u64,
) -> Result<Option<RecordRef>, PopError> {
    let got = ctx.store.get_messages(GetRequest {
        topic,
        queue_id,
        from: QueueOffset::new(offset),
        max_count: 1,
        max_bytes: usize::MAX,
        filter: &TagFilter::All,
    })?;
    Ok(got
        .messages
        .into_iter()
        .next()
        .filter(|r| r.view().queue_offset() == offset))
}

/// Copies the message at (topic, queue, offset) to the group's retry topic or dead-letter
/// queue. A message retention already removed has nothing left to copy.
fn copy(
    ctx: &Ctx<'_>,
    group: &str,
    topic: &str,
    queue_id: u32,
    offset: u64,
    reject: bool,
) -> Result<Option<Redelivered>, PopError> {
    let got = ctx.store.get_messages(GetRequest {
        topic,
        queue_id,
        from: QueueOffset::new(offset),
        max_count: 1,
        max_bytes: usize::MAX,
        filter: &TagFilter::All,
    })?;
    match got.messages.first() {
        Some(r) if r.view().queue_offset() == offset => {
            Ok(Some(ctx.retry.redeliver(group, r, reject)?))
        }
        _ => Ok(None),
    }
}

/// Acks are answered once written: one offsets write covers every ack recorded before it
/// started (group commit). Tickets count acks; `done` says through which ticket the state
/// is on disk, `failed` through which a write failed.
pub(crate) struct Durable {
    wanted: AtomicU64,
    pub(crate) kick: Notify,
    state: watch::Sender<Written>,
}

/// Progress of the offsets writes, for waiting acks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Written {
    done: u64,
    failed: u64,
    error: Option<Arc<str>>,
}

impl Durable {
    fn new() -> Self {
        Self {
            wanted: AtomicU64::new(0),
            kick: Notify::new(),
            state: watch::Sender::new(Written::default()),
        }
    }

    /// A ticket for state recorded just now; wakes the writer.
    pub(crate) fn ticket(&self) -> u64 {
        let t = self.wanted.fetch_add(1, Ordering::AcqRel) + 1;
        self.kick.notify_one();
        t
    }

    /// The last ticket handed out: what a write starting now covers.
    pub(crate) fn wanted(&self) -> u64 {
        self.wanted.load(Ordering::Acquire)
    }

    /// Reports a write covering tickets up to `through`.
    pub(crate) fn written(&self, through: u64, result: Result<(), String>) {
        self.state.send_modify(|w| match result {
            Ok(()) => w.done = w.done.max(through),
            Err(e) => {
                w.failed = w.failed.max(through);
                w.error = Some(e.into());
            }
        });
    }

    /// Waits until `ticket` is written (`Ok`) or its write failed (`Err` with why).
    pub(crate) async fn wait(&self, ticket: u64) -> Result<(), String> {
        let mut rx = self.state.subscribe();
        let w = rx
            .wait_for(|w| w.done >= ticket || w.failed >= ticket)
            .await
            .map_err(|e| e.to_string())?;
        if w.done >= ticket {
            Ok(())
        } else {
            Err(w.error.as_deref().unwrap_or("unknown").to_owned())
        }
    }
}
