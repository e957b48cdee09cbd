//! Group membership: heartbeats, following the assignment, committing and leaving.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use protocol::messages::{
    CommitOffsetRequest, GetTopicRequest, HeartbeatRequest, LeaveGroupRequest, QueryOffsetRequest,
    QueueAssignment, QueueCommit, SearchOffsetRequest,
};
use protocol::names::RETRY_PREFIX;
use protocol::Status;

use super::ack::AckTracker;
use super::queue::{run_puller, QueueShared};
use super::{Mode, Shared, StartFrom};
use crate::error::Result;

/// How often a member heartbeats while queues of its target assignment are still held by
/// another member (at most the heartbeat interval).
const PENDING_RETRY: Duration = Duration::from_millis(200);

/// When to heartbeat next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Queues were released: tell the broker right away so their new owners get them.
    Now,
    /// Some queues are still held elsewhere: ask again shortly.
    Soon,
    /// After the heartbeat interval.
    Later,
}

/// One heartbeat, reporting the queues held; applies the assignment in the reply.
pub(crate) async fn heartbeat_once(shared: &Arc<Shared>) -> Result<Next> {
    retry_unreleased(shared).await;
    let req = HeartbeatRequest {
        group: shared.group.clone(),
        client_id: shared.conn.client_id().to_string(),
        subscriptions: shared.subscriptions.clone(),
        max_reconsume_times: shared.opts.max_reconsume_times,
        held: held(shared)?,
    };
    let (resp, _) = shared.conn.call(&req, &[]).await?;
    follow_reset(shared, resp.reset_epoch);
    let wanted: BTreeSet<(String, u32)> = resp
        .assignment
        .iter()
        .flat_map(|a| a.queue_ids.iter().map(|q| (a.topic.clone(), *q)))
        .collect();
    let released = apply_assignment(shared, &wanted).await?;
    // An ordered member opens a granted queue only once it holds the queue's lock.
    let waiting_for_locks = matches!(shared.mode, Mode::Ordered)
        && shared.queues.lock().map_err(|_| poisoned())?.len() < wanted.len();
    Ok(if released {
        Next::Now
    } else if resp.pending_queues > 0 || waiting_for_locks {
        Next::Soon
    } else {
        Next::Later
    })
}

pub(crate) async fn heartbeat_loop(shared: Arc<Shared>, mut next: Next) {
    loop {
        let wait = match next {
            Next::Now => Duration::ZERO,
            Next::Soon => PENDING_RETRY.min(shared.opts.heartbeat_interval),
            Next::Later => shared.opts.heartbeat_interval,
        };
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = shared.heartbeat_now.notified() => {}
        }
        next = match super::assign_queues(&shared).await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(group = %shared.group, error = %e, "heartbeat failed");
                Next::Later
            }
        };
    }
}

/// The queues this member holds, for the heartbeat: those it pulls from, and those it
/// dropped but whose final commit has not reached the broker yet (their new owner must
/// not start from the older commit).
fn held(shared: &Shared) -> Result<Vec<QueueAssignment>> {
    let mut by_topic: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (topic, q) in shared.queues.lock().map_err(|_| poisoned())?.keys() {
        by_topic.entry(topic.clone()).or_default().push(*q);
    }
    for c in shared.unreleased.lock().map_err(|_| poisoned())?.iter() {
        by_topic
            .entry(c.topic.clone())
            .or_default()
            .push(c.queue_id);
    }
    Ok(by_topic
        .into_iter()
        .map(|(topic, mut queue_ids)| {
            queue_ids.sort_unstable();
            queue_ids.dedup();
            QueueAssignment { topic, queue_ids }
        })
        .collect())
}

/// Sends the final commits of dropped queues that failed before. A refusal because the
/// group's offsets were reset discards them: the reset supersedes them.
pub(crate) async fn retry_unreleased(shared: &Shared) {
    let commits: Vec<QueueCommit> = match shared.unreleased.lock() {
        Ok(mut v) => std::mem::take(&mut *v),
        Err(_) => return,
    };
    if commits.is_empty() {
        return;
    }
    if let Err((keep, e)) = send_final_commits(shared, commits).await {
        tracing::warn!(group = %shared.group, queues = keep.len(), error = %e, "final commit of dropped queues failed, will retry");
        keep_unreleased(shared, keep);
    }
}

/// Sends the final commits of dropped queues; on failure returns those to try again and
/// why. Only a failure
/// that may pass (no answer, a busy broker) keeps a queue held: a commit the broker
/// refuses (the topic was deleted, the queue shrank below it, the offsets were reset)
/// would be refused forever, and holding its queue for it would stop the queue's new
/// owner from ever starting. Such a queue is released without its last acks, which are
/// then delivered again (at-least-once).
async fn send_final_commits(
    shared: &Shared,
    commits: Vec<QueueCommit>,
) -> std::result::Result<(), (Vec<QueueCommit>, crate::Error)> {
    let refused = match send_commits(shared, commits.clone()).await {
        Ok(()) => return Ok(()),
        Err(e) if e.is_retriable() => return Err((commits, e)),
        Err(e) => e,
    };
    if let [c] = commits.as_slice() {
        tracing::warn!(group = %shared.group, topic = %c.topic, queue = c.queue_id, error = %refused, "final commit refused; queue released without it");
        return Ok(());
    }
    // The broker refuses a commit whole: find the queues it refuses one by one.
    let mut keep = Vec::new();
    let mut last = None;
    for c in commits {
        match send_commits(shared, vec![c.clone()]).await {
            Ok(()) => {}
            Err(e) if e.is_retriable() => {
                keep.push(c);
                last = Some(e);
            }
            Err(e) => {
                tracing::warn!(group = %shared.group, topic = %c.topic, queue = c.queue_id, error = %e, "final commit refused; queue released without it");
            }
        }
    }
    match last {
        Some(e) => Err((keep, e)),
        None => Ok(()),
    }
}

fn keep_unreleased(shared: &Shared, commits: Vec<QueueCommit>) {
    if let Ok(mut v) = shared.unreleased.lock() {
        for c in commits {
            // A later commit of the same queue replaces an earlier one.
            v.retain(|o| (o.topic.as_str(), o.queue_id) != (c.topic.as_str(), c.queue_id));
            v.push(c);
        }
    }
}

/// After a reset of the group's offsets (a new non-zero epoch), drops every queue without
/// committing, so that the assignment that follows starts them from the reset offsets.
/// What was acked but not yet committed is delivered again. Epoch 0 means no reset since
/// the broker started (for example after a broker restart): nothing to follow.
fn follow_reset(shared: &Shared, epoch: u64) {
    let old = shared.reset_epoch.swap(epoch, Ordering::AcqRel);
    if epoch == 0 || epoch == old {
        return;
    }
    let dropped: Vec<Arc<QueueShared>> = match shared.queues.lock() {
        Ok(mut map) => map.drain().map(|(_, q)| q).collect(),
        Err(_) => return,
    };
    if !dropped.is_empty() {
        tracing::info!(group = %shared.group, epoch, "group offsets were reset; restarting queues");
    }
    for q in dropped {
        q.revoked.store(true, Ordering::Release);
        q.cancel.cancel();
    }
}

/// Drops lost queues (after committing them) and starts new ones from their committed
/// position. Returns whether queues were dropped (and their commits sent).
pub(crate) async fn apply_assignment(
    shared: &Arc<Shared>,
    wanted: &BTreeSet<(String, u32)>,
) -> Result<bool> {
    let (lost, current): (Vec<_>, BTreeSet<_>) = {
        let mut map = shared.queues.lock().map_err(|_| poisoned())?;
        let lost_keys: Vec<_> = map
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        let lost = lost_keys.iter().filter_map(|k| map.remove(k)).collect();
        (lost, map.keys().cloned().collect())
    };
    if !lost.is_empty() {
        for q in &lost {
            // An ordered worker finishes (and acks) the message it is handling first.
            let _idle = q.busy.lock().await;
            q.revoked.store(true, Ordering::Release);
            q.cancel.cancel();
        }
        let commits: Vec<QueueCommit> = lost.iter().filter_map(|q| q.take_commit(true)).collect();
        if let Err((keep, e)) = send_final_commits(shared, commits).await {
            // Still reported as held until the commit lands, so that no new owner starts
            // from the older commit and delivers again what was acked here.
            keep_unreleased(shared, keep);
            return Err(e);
        }
        if matches!(shared.mode, Mode::Ordered) {
            super::push::unlock_queues(shared, &lost).await;
        }
    }
    let unreleased: BTreeSet<(String, u32)> = shared
        .unreleased
        .lock()
        .map_err(|_| poisoned())?
        .iter()
        .map(|c| (c.topic.clone(), c.queue_id))
        .collect();
    // Granted back before its last commit landed: opened once that commit did, so that
    // it starts from it.
    let to_open: Vec<(String, u32)> = wanted
        .difference(&current)
        .filter(|k| !unreleased.contains(*k))
        .cloned()
        .collect();
    // An ordered member takes the queue's lock before it reads where to start: the old
    // owner commits before it unlocks, so the start includes its every ack.
    let locks = match shared.mode {
        Mode::Ordered => Some(super::push::lock_queues(shared, &to_open).await),
        _ => None,
    };
    for (topic, queue_id) in &to_open {
        if shared.cancel.is_cancelled() {
            break;
        }
        let lock = match &locks {
            Some(held) => match held.get(&(topic.clone(), *queue_id)) {
                Some(lock) => Some(*lock),
                // Still locked by its old owner: asked again at the next heartbeat.
                None => continue,
            },
            None => None,
        };
        let q = open_queue(shared, topic, *queue_id).await?;
        if let Some(lock) = lock {
            *q.lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(lock);
        }
        let puller = run_puller(
            Arc::clone(&q),
            Arc::clone(shared),
            shared.tag_expr_of(topic),
        );
        shared
            .queues
            .lock()
            .map_err(|_| poisoned())?
            .insert((topic.clone(), *queue_id), q);
        tokio::spawn(puller);
    }
    Ok(!lost.is_empty())
}

fn poisoned() -> crate::Error {
    crate::Error::InvalidArgument("consumer state poisoned by a panic".into())
}

/// Builds a queue's tracker from the group's committed position, or the start policy.
async fn open_queue(shared: &Arc<Shared>, topic: &str, queue_id: u32) -> Result<Arc<QueueShared>> {
    let req = QueryOffsetRequest {
        group: shared.group.clone(),
        topic: topic.to_string(),
        queue_id,
    };
    let committed = match &shared.mode {
        Mode::Broadcast(progress) => progress.get(topic, queue_id),
        _ => shared.conn.call(&req, &[]).await?.0.committed,
    };
    let tracker = match committed {
        Some(c) => AckTracker::new(c.offset, &c.acked_above),
        None => AckTracker::new(start_offset(shared, topic, queue_id).await?, &[]),
    };
    let cancel = shared.cancel.child_token();
    Ok(Arc::new(QueueShared::new(
        topic.to_string(),
        queue_id,
        tracker,
        cancel,
    )))
}

async fn start_offset(shared: &Shared, topic: &str, queue_id: u32) -> Result<u64> {
    // Retries are always consumed from the start: nothing in them is ever stale.
    let policy = if topic.starts_with(RETRY_PREFIX) {
        StartFrom::Earliest
    } else {
        shared.opts.start_from
    };
    match policy {
        StartFrom::TimestampMs(ts) => {
            let req = SearchOffsetRequest {
                topic: topic.to_string(),
                queue_id,
                timestamp_ms: ts,
            };
            Ok(shared.conn.call(&req, &[]).await?.0.offset)
        }
        StartFrom::Earliest | StartFrom::Latest => {
            let req = GetTopicRequest {
                topic: topic.to_string(),
            };
            let (resp, _) = shared.conn.call(&req, &[]).await?;
            let q = resp.topic.queues.iter().find(|q| q.queue_id == queue_id);
            Ok(match (policy, q) {
                (_, None) => 0,
                (StartFrom::Latest, Some(q)) => q.max_offset,
                (_, Some(q)) => q.min_offset,
            })
        }
    }
}

pub(crate) async fn commit_loop(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            () = tokio::time::sleep(shared.opts.commit_interval) => {}
            () = shared.commit_now.notified() => {}
        }
        if let Err(e) = commit_changed(&shared, false).await {
            tracing::warn!(group = %shared.group, error = %e, "commit failed, will retry");
        }
    }
}

/// Commits every owned queue whose position changed (`force`: every owned queue).
pub(crate) async fn commit_changed(shared: &Shared, force: bool) -> Result<()> {
    let queues: Vec<Arc<QueueShared>> = shared
        .queues
        .lock()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    let commits: Vec<_> = queues.iter().filter_map(|q| q.take_commit(force)).collect();
    let result = send_commits(shared, commits).await;
    if result.is_err() {
        for q in &queues {
            q.mark_dirty();
        }
    }
    result
}

async fn send_commits(
    shared: &Shared,
    commits: Vec<protocol::messages::QueueCommit>,
) -> Result<()> {
    if commits.is_empty() {
        return Ok(());
    }
    if let Mode::Broadcast(progress) = &shared.mode {
        return progress.save(commits).await;
    }
    let req = CommitOffsetRequest {
        group: shared.group.clone(),
        commits,
        reset_epoch: Some(shared.reset_epoch.load(Ordering::Acquire)),
    };
    let result = shared.conn.call(&req, &[]).await.map(|_| ());
    if matches!(&result, Err(e) if e.status() == Some(Status::OffsetsReset)) {
        // Learn the new epoch (and drop the stale positions) now rather than later.
        shared.heartbeat_now.notify_one();
    }
    result
}

pub(crate) async fn leave(shared: &Shared) -> Result<()> {
    if matches!(shared.mode, Mode::Broadcast(_)) {
        // Never joined: a broadcast instance is not a member on the broker.
        return Ok(());
    }
    let req = LeaveGroupRequest {
        group: shared.group.clone(),
        client_id: shared.conn.client_id().to_string(),
    };
    shared.conn.call(&req, &[]).await.map(|_| ())
}
