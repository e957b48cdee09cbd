//! Committed offsets: commit, query, reset.

use std::sync::Arc;

use protocol::messages::{
    CommitOffsetRequest, Empty, QueryOffsetRequest, QueryOffsetResponse, QueueCommit,
    ResetOffsetRequest, ResetOffsetResponse, ResetTarget,
};
use protocol::time::now_ms;
use protocol::{Frame, Status};

use super::{blocking, check_group, decode, queue_bounds, HandlerResult, Services};
use crate::groups::OffsetsError;
use crate::server::response::{HandlerError, Response};

/// Records a group's progress. A commit past a queue's head would skip messages that do
/// not exist yet, so it is refused whole.
pub(super) async fn commit(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: CommitOffsetRequest = decode(frame)?;
    check_group(&req.group)?;
    let s = Arc::clone(services);
    blocking(move || {
        for c in &req.commits {
            let (_, max) = queue_bounds(&s, &c.topic, c.queue_id)?;
            let highest = c
                .acked_above
                .iter()
                .map(|r| r.end)
                .fold(c.offset, u64::max);
            if highest > max {
                return Err(HandlerError::new(
                    Status::OffsetOutOfRange,
                    format!(
                        "commit of offset {highest} on {}/{} is beyond the queue's max offset {max}",
                        c.topic, c.queue_id
                    ),
                ));
            }
        }
        s.groups.touch(&req.group, now_ms());
        s.offsets
            .commit_fenced(&req.group, req.reset_epoch, &req.commits)
            .map_err(|e| match e {
                OffsetsError::ResetSince { .. } => {
                    HandlerError::new(Status::OffsetsReset, e.to_string())
                }
                e => HandlerError::bad_request(e.to_string()),
            })?;
        Ok(Response::ok(&Empty {}))
    })
    .await
}

pub(super) fn query(services: &Services, frame: &Frame) -> HandlerResult {
    let req: QueryOffsetRequest = decode(frame)?;
    let committed = services.offsets.get(&req.group, &req.topic, req.queue_id);
    Ok(Response::ok(&QueryOffsetResponse { committed }))
}

/// Moves a group's position on every queue of a topic. Refused while the group has live
/// members unless forced; a forced reset starts a new reset epoch first, so that live
/// members' later commits of their old positions are refused and they restart their
/// queues from the reset offsets when their next heartbeat shows the new epoch.
pub(super) async fn reset(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: ResetOffsetRequest = decode(frame)?;
    check_group(&req.group)?;
    if !req.force && services.groups.has_live_members(&req.group) {
        return Err(HandlerError::new(
            Status::GroupHasMembers,
            format!(
                "group {} has live members; stop them first or force the reset",
                req.group
            ),
        ));
    }
    let s = Arc::clone(services);
    blocking(move || {
        let topic = s.store.topic(&req.topic).ok_or_else(|| {
            HandlerError::new(
                Status::TopicNotFound,
                format!("topic {} does not exist", req.topic),
            )
        })?;
        s.offsets.begin_reset(&req.group, now_ms());
        let mut queues: Vec<QueueCommit> = Vec::with_capacity(topic.queue_count as usize);
        for queue_id in 0..topic.queue_count {
            let (min, max) = queue_bounds(&s, &req.topic, queue_id)?;
            let offset = match req.to {
                ResetTarget::Earliest => min,
                ResetTarget::Latest => max,
                ResetTarget::TimestampMs(ts) => s
                    .store
                    .search_offset_by_time(&req.topic, queue_id, ts)?
                    .get(),
            };
            queues.push(s.offsets.reset(&req.group, &req.topic, queue_id, offset));
        }
        tracing::info!(group = %req.group, topic = %req.topic, to = ?req.to, "offsets reset");
        Ok(Response::ok(&ResetOffsetResponse { queues }))
    })
    .await
}
