//! Group membership: heartbeat, leave, and the group report (members and lag).

use std::collections::BTreeMap;
use std::sync::Arc;

use protocol::messages::{
    Empty, GroupInfoRequest, GroupInfoResponse, HeartbeatRequest, LeaveGroupRequest, QueueLag,
};
use protocol::Frame;

use super::{blocking, check_group, decode, now_ms, queue_bounds, HandlerResult, Services};
use crate::server::response::Response;
use crate::store::disk::is_out_of_space;

pub(super) async fn heartbeat(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: HeartbeatRequest = decode(frame)?;
    check_group(&req.group)?;
    let s = Arc::clone(services);
    blocking(move || {
        // Created up front (as RocketMQ does) so members own the retry queue from their
        // first heartbeat, before any message is nacked. On a full disk the group joins
        // without it: a later heartbeat creates it, and the coordinator then assigns it.
        if let Err(e) = s.retry.ensure_retry_topic(&req.group) {
            if !is_out_of_space(&e) {
                return Err(e.into());
            }
            tracing::debug!(group = %req.group, error = %e, "retry topic not created yet: disk full");
        }
        let queue_count_of = |topic: &str| s.store.topic(topic).map(|t| t.queue_count);
        let mut resp = s.groups.heartbeat(&req, &queue_count_of, now_ms());
        resp.reset_epoch = s.offsets.reset_epoch(&req.group);
        Ok(Response::ok(&resp))
    })
    .await
}

pub(super) fn leave(services: &Services, frame: &Frame) -> HandlerResult {
    let req: LeaveGroupRequest = decode(frame)?;
    if services.groups.leave(&req.group, &req.client_id) {
        tracing::info!(group = %req.group, client = %req.client_id, "consumer left");
    }
    Ok(Response::ok(&Empty {}))
}

/// Members with their queues, and per queue the committed offset, the head and the lag:
/// every queue the group committed on or a member owns.
pub(super) async fn info(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: GroupInfoRequest = decode(frame)?;
    check_group(&req.group)?;
    let s = Arc::clone(services);
    blocking(move || {
        let members = s.groups.members(&req.group);
        let mut committed: BTreeMap<(String, u32), Option<u64>> = s
            .offsets
            .queues_of(&req.group)
            .into_iter()
            .map(|c| ((c.topic, c.queue_id), Some(c.offset)))
            .collect();
        for a in members.iter().flat_map(|m| &m.assignment) {
            for q in &a.queue_ids {
                committed.entry((a.topic.clone(), *q)).or_insert(None);
            }
        }
        let mut queues = Vec::with_capacity(committed.len());
        for ((topic, queue_id), offset) in committed {
            // A queue of a since-deleted topic has nothing left to consume.
            let (min, max) = queue_bounds(&s, &topic, queue_id).unwrap_or((0, 0));
            let from = offset.unwrap_or(min).max(min);
            queues.push(QueueLag {
                topic,
                queue_id,
                committed: offset,
                max_offset: max,
                lag: max.saturating_sub(from),
            });
        }
        Ok(Response::ok(&GroupInfoResponse {
            group: req.group,
            members,
            queues,
        }))
    })
    .await
}
