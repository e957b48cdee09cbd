//! The scheduler thread: moves parked copies from the schedule topics to their real topic
//! once due.
//!
//! A round walks every level: it reads the level's queue from its progress offset and
//! delivers the due head messages in order, stopping at the first one not yet due (a
//! level has one delay, so its queue is in due order). After a round that delivered
//! something it flushes the commit log, so the delivered copies are durable, and only then
//! saves the progress. It then sleeps until the earliest head is due or a new message
//! lands in a schedule topic (the store's dispatch hook), never polling.

use std::sync::Arc;
use std::time::Duration;

use commitlog::RecordRef;
use consumequeue::QueueOffset;
use protocol::names::RETRY_PREFIX;

use protocol::time::now_ms;

use super::copy::{parked, unpark};
use super::error::RetryError;
use super::progress::ScheduleProgress;
use super::shared::Shared;
use super::topics::schedule_topic;
use crate::store::disk::{is_out_of_space, WriteRetry};
use crate::store::{GetRequest, GetStatus, PutMessage, StoreError, TagFilter};

/// Messages read from a level per step.
const READ_BATCH: usize = 64;
const READ_MAX_BYTES: usize = 4 << 20;
/// Pause before trying again after the store refused a read or write.
const BACKOFF_MS: u64 = 1_000;
/// About the size of the progress file: what a failed save needs to fit again.
const PROGRESS_FILE_BYTES: u64 = 4 << 10;

/// The thread body. Returns the result of the final progress save.
pub(crate) fn run(
    shared: &Arc<Shared>,
    mut progress: ScheduleProgress,
    levels: &[u32],
) -> Result<(), RetryError> {
    let topics: Vec<String> = levels.iter().map(|l| schedule_topic(*l)).collect();
    // A full disk fails the save on every round: back off and log once per streak.
    let mut save_retry = WriteRetry::new("saving retry-schedule progress");
    while !shared.waker.is_stopped() {
        let now = now_ms();
        let mut next_wake: Option<u64> = None;
        for topic in &topics {
            if let Some(at) = serve_level(shared, &mut progress, topic, now) {
                next_wake = Some(next_wake.map_or(at, |w| w.min(at)));
            }
        }
        if progress.is_dirty() {
            let disk = shared.store.disk();
            if save_retry.due(disk) {
                match save(shared, &mut progress) {
                    Ok(()) => save_retry.succeeded(),
                    Err(e) => save_retry.failed(&e, PROGRESS_FILE_BYTES, disk),
                }
            }
            if progress.is_dirty() {
                let retry_at = now.saturating_add(BACKOFF_MS);
                next_wake = Some(next_wake.map_or(retry_at, |w| w.min(retry_at)));
            }
        }
        // A wake sent during the round is kept: the wait returns at once.
        let pause = next_wake.map_or(Duration::MAX, |at| {
            Duration::from_millis(at.saturating_sub(now_ms()))
        });
        if !shared.waker.wait_timeout(pause) {
            break;
        }
    }
    save(shared, &mut progress)
}

/// Makes delivered copies durable, then records that they were delivered.
fn save(shared: &Shared, progress: &mut ScheduleProgress) -> Result<(), RetryError> {
    if !progress.is_dirty() {
        return Ok(());
    }
    shared
        .store
        .commit_log()
        .flush()
        .map_err(|e| RetryError::Store {
            op: "flushing delivered retries before saving progress of",
            target: "schedule topics".into(),
            source: Box::new(StoreError::from(e)),
        })?;
    progress.save()
}

/// Delivers the due messages of one level. Returns when to look again (the head's due
/// time, or a back-off after an error); `None` when the level is empty.
fn serve_level(
    shared: &Shared,
    progress: &mut ScheduleProgress,
    topic: &str,
    now: u64,
) -> Option<u64> {
    // A level nobody used yet has no topic.
    shared.store.topic(topic)?;
    loop {
        let from = progress.next(topic);
        let got = match shared.store.get_messages(GetRequest {
            topic,
            queue_id: 0,
            from: QueueOffset::new(from),
            max_count: READ_BATCH,
            max_bytes: READ_MAX_BYTES,
            filter: &TagFilter::All,
        }) {
            Ok(got) => got,
            Err(e) => {
                tracing::warn!(topic, error = %e, "reading a schedule topic failed");
                return Some(now.saturating_add(BACKOFF_MS));
            }
        };
        match got.status {
            GetStatus::Found => {
                let step = deliver_due(shared, topic, &got.messages, now);
                if let Some(next) = step.next_offset {
                    progress.set(topic, next);
                }
                if step.wake_at.is_some() {
                    return step.wake_at;
                }
            }
            GetStatus::OffsetBelowMin { min } => {
                tracing::warn!(
                    topic,
                    from,
                    min = min.get(),
                    "parked retries were removed by retention before they were due"
                );
                progress.set(topic, min.get());
            }
            GetStatus::OffsetPastMax => {
                // The queue lost its tail in a crash: go on from its end.
                progress.set(topic, got.max_offset.get());
                return None;
            }
            GetStatus::NoMatchedMessage | GetStatus::NoNewMessage => {
                progress.set(topic, got.next_offset.get().max(from));
                return None;
            }
        }
    }
}

struct Step {
    /// Progress after the messages handled (delivered or skipped as malformed).
    next_offset: Option<u64>,
    /// Set when the level must wait: for its head to be due, or after an error.
    wake_at: Option<u64>,
}

/// Delivers the leading due messages of `records`, batching runs with one destination.
fn deliver_due(shared: &Shared, topic: &str, records: &[RecordRef], now: u64) -> Step {
    let mut step = Step {
        next_offset: None,
        wake_at: None,
    };
    let mut run: Vec<(Vec<u8>, &RecordRef)> = Vec::new();
    let mut run_dest: Option<(String, u32)> = None;
    for rec in records {
        let view = rec.view();
        let item = match parked(view.properties()) {
            Ok(p) if p.due_at_ms > now => {
                step.wake_at = Some(p.due_at_ms);
                break;
            }
            Ok(p) => unpark(view.properties())
                .map(|props| ((p.real_topic.to_string(), p.real_queue_id), props))
                .map_err(|_| "malformed properties"),
            Err(reason) => Err(reason),
        };
        match item {
            Ok((dest, props)) => {
                if run_dest.as_ref() != Some(&dest) {
                    if let Err(wake) = flush_run(shared, run_dest.take(), &mut run, &mut step) {
                        step.wake_at = Some(wake);
                        return step;
                    }
                    run_dest = Some(dest);
                }
                run.push((props, rec));
            }
            Err(reason) => {
                // Not ours or damaged: it could never be delivered, and must not block
                // the level behind it. What came before it is delivered first.
                if let Err(wake) = flush_run(shared, run_dest.take(), &mut run, &mut step) {
                    step.wake_at = Some(wake);
                    return step;
                }
                tracing::error!(
                    topic,
                    queue_offset = view.queue_offset(),
                    reason,
                    "skipping a schedule-topic message without a valid destination"
                );
                step.next_offset = Some(view.queue_offset() + 1);
            }
        }
    }
    if let Err(wake) = flush_run(shared, run_dest, &mut run, &mut step) {
        step.wake_at = Some(wake);
    }
    step
}

/// Puts a run of copies into their real topic; on success advances `step` past them.
fn flush_run(
    shared: &Shared,
    dest: Option<(String, u32)>,
    run: &mut Vec<(Vec<u8>, &RecordRef)>,
    step: &mut Step,
) -> Result<(), u64> {
    let (Some((topic, queue_id)), Some(last)) = (dest, run.last()) else {
        return Ok(());
    };
    let last_offset = last.1.view().queue_offset();
    let result = deliver(shared, &topic, queue_id, run);
    match result {
        Ok(()) => {
            step.next_offset = Some(last_offset + 1);
            run.clear();
            Ok(())
        }
        Err(e) => {
            // The disk monitor logs a full disk once; each refused attempt would repeat it.
            if is_out_of_space(&e) {
                tracing::debug!(topic, error = %e, "due retries wait for disk space");
            } else {
                tracing::warn!(topic, error = %e, "delivering due retries failed; will retry");
            }
            Err(now_ms().saturating_add(BACKOFF_MS))
        }
    }
}

fn deliver(
    shared: &Shared,
    topic: &str,
    queue_id: u32,
    run: &[(Vec<u8>, &RecordRef)],
) -> Result<(), RetryError> {
    if topic.starts_with(RETRY_PREFIX) && shared.store.topic(topic).is_none() {
        // A nack creates the retry topic before parking its copy, so a missing one means
        // the group was deleted since: its retries go with it.
        tracing::info!(
            topic,
            dropped = run.len(),
            "retries of a deleted group dropped"
        );
        return Ok(());
    }
    shared.ensure_topic(topic)?;
    // The topic may have been recreated with fewer queues; queue 0 always exists.
    let queue_id = match shared.store.topic(topic) {
        Some(t) if queue_id < t.queue_count => queue_id,
        _ => 0,
    };
    let msgs: Vec<PutMessage<'_>> = run
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
    shared.put(topic, queue_id, &msgs, "delivering due retries into")
}
