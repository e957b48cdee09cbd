//! Group membership: heartbeat, leave, the group report (members and lag), and deleting a
//! group (by request, or when idle past `group_idle_expiry_ms`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use protocol::messages::{
    DeleteGroupRequest, DeleteGroupResponse, Empty, GroupInfoRequest, GroupInfoResponse,
    HeartbeatRequest, LeaveGroupRequest, QueueLag,
};
use protocol::names::{dlq_topic, retry_topic, DLQ_PREFIX, RETRY_PREFIX};
use protocol::time::now_ms;
use protocol::{Frame, Status};

use super::{blocking, check_group, decode, queue_bounds, HandlerResult, Services};
use crate::server::response::{HandlerError, Response};
use crate::server::session::Session;

pub(super) async fn heartbeat(
    services: &Arc<Services>,
    conn: &Session,
    frame: &Frame,
) -> HandlerResult {
    let req: HeartbeatRequest = decode(frame)?;
    check_group(&req.group)?;
    super::receive::check_offset_mode(services, &req.group)?;
    let (group, client_id) = (req.group.clone(), req.client_id.clone());
    let s = Arc::clone(services);
    let response = blocking(move || {
        // Joining writes nothing: the group's retry topic is created by its first nack,
        // and members are assigned its queue at their next heartbeat after that.
        let queue_count_of = |topic: &str| s.store.topic(topic).map(|t| t.queue_count);
        let mut resp = s.groups.heartbeat(&req, &queue_count_of, now_ms());
        resp.reset_epoch = s.offsets.reset_epoch(&req.group);
        Ok(Response::ok(&resp))
    })
    .await?;
    if services.groups.bind_connection(&group, &client_id, conn.id) {
        watch_connection(services, conn, group, client_id);
    }
    Ok(response)
}

/// Drops the member as soon as the connection it heartbeats on closes, so that a killed
/// consumer's queues move at once rather than after the session timeout.
fn watch_connection(services: &Arc<Services>, conn: &Session, group: String, client: String) {
    let s = Arc::clone(services);
    let closed = conn.closed.clone();
    let id = conn.id;
    services.tracker.spawn(async move {
        closed.cancelled().await;
        if s.shutdown.is_cancelled() {
            return;
        }
        if s.groups.connection_closed(&group, &client, id) {
            s.queue_locks.release_member(&group, &client);
            tracing::info!(%group, %client, "consumer connection closed; its queues move now");
        }
    });
}

pub(super) fn leave(services: &Services, frame: &Frame) -> HandlerResult {
    let req: LeaveGroupRequest = decode(frame)?;
    services
        .queue_locks
        .release_member(&req.group, &req.client_id);
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

pub(super) async fn delete(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: DeleteGroupRequest = decode(frame)?;
    check_group(&req.group)?;
    if !req.force && services.groups.has_live_members(&req.group) {
        return Err(HandlerError::new(
            Status::GroupHasMembers,
            format!(
                "group {} has live members; stop them first or force the delete",
                req.group
            ),
        ));
    }
    let s = Arc::clone(services);
    blocking(move || {
        // A group known only by its retry policy is still a group to delete.
        let policy = s.retry.group_policy(&req.group).is_some();
        let resp = delete_group(&s, &req.group)?;
        if resp.members == 0 && resp.offsets == 0 && resp.topics.is_empty() && !policy {
            return Err(HandlerError::new(
                Status::NotFound,
                format!("group {} is unknown to this broker", req.group),
            ));
        }
        tracing::info!(group = %req.group, members = resp.members, offsets = resp.offsets, topics = ?resp.topics, "group deleted");
        Ok(Response::ok(&resp))
    })
    .await
}

/// Removes everything the broker keeps for a group: its members (a forced delete; they
/// join afresh at their next heartbeat), its committed offsets, its retry and
/// dead-letter topics and its retry policy. Blocking (topic removal and file writes).
///
/// # Errors
/// Store failures removing a topic or saving the offsets or policies; what was removed before stays
/// removed, and a repeated delete finishes the rest.
pub(crate) fn delete_group(
    services: &Services,
    group: &str,
) -> Result<DeleteGroupResponse, HandlerError> {
    let members = services.groups.remove_group(group);
    services.queue_locks.release_group(group);
    let offsets = services.offsets.remove_group(group);
    let mut topics = Vec::new();
    for topic in [retry_topic(group), dlq_topic(group)] {
        if services.store.delete_topic(&topic)? {
            services.offsets.remove_topic(&topic);
            services.long_polling.notify_topic(&topic);
            topics.push(topic);
        }
    }
    services.retry.remove_group_policy(group)?;
    if offsets > 0 || !topics.is_empty() {
        services
            .offsets
            .persist()
            .map_err(|e| HandlerError::new(Status::StorageError, e.to_string()))?;
    }
    Ok(DeleteGroupResponse {
        members: u32::try_from(members.len()).unwrap_or(u32::MAX),
        offsets: u32::try_from(offsets).unwrap_or(u32::MAX),
        topics,
    })
}

/// Groups the broker holds something of (offsets or a retry or dead-letter topic) that
/// have had no live member and no commit for `expiry_ms`; `started_ms` stands in for the
/// last sign of life of groups not seen since the broker started.
pub(crate) fn idle_groups(
    services: &Services,
    expiry_ms: u64,
    started_ms: u64,
    now_ms: u64,
) -> Vec<String> {
    let mut names: BTreeSet<String> = services.offsets.groups().into_iter().collect();
    for t in services.store.topics() {
        let group = t
            .name
            .strip_prefix(RETRY_PREFIX)
            .or_else(|| t.name.strip_prefix(DLQ_PREFIX));
        names.extend(group.map(str::to_string));
    }
    names
        .into_iter()
        .filter(|g| !services.groups.has_live_members(g))
        .filter(|g| {
            let last = services
                .groups
                .idle_since_ms(g)
                .unwrap_or(0)
                .max(started_ms);
            now_ms.saturating_sub(last) >= expiry_ms
        })
        .collect()
}
