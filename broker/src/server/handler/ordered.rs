//! Queue locks of ordered consumers: lock (or renew) and unlock a batch of queues.

use protocol::messages::QueueAssignment;
use protocol::ordered::{
    LockBatchRequest, LockBatchResponse, UnlockBatchRequest, UnlockBatchResponse,
};
use protocol::time::now_ms;
use protocol::Frame;

use super::{check_group, decode, HandlerResult, Services};
use crate::server::response::Response;

pub(super) fn lock(services: &Services, frame: &Frame) -> HandlerResult {
    let req: LockBatchRequest = decode(frame)?;
    check_group(&req.group)?;
    let locked =
        services
            .queue_locks
            .lock(&req.group, &req.client_id, &flatten(&req.queues), now_ms());
    Ok(Response::ok(&LockBatchResponse {
        locked: group_by_topic(locked),
        lease_ms: services.queue_locks.lease_ms(),
    }))
}

pub(super) fn unlock(services: &Services, frame: &Frame) -> HandlerResult {
    let req: UnlockBatchRequest = decode(frame)?;
    check_group(&req.group)?;
    let released = services
        .queue_locks
        .unlock(&req.group, &req.client_id, &flatten(&req.queues));
    Ok(Response::ok(&UnlockBatchResponse {
        released: u32::try_from(released).unwrap_or(u32::MAX),
    }))
}

fn flatten(queues: &[QueueAssignment]) -> Vec<(String, u32)> {
    queues
        .iter()
        .flat_map(|a| a.queue_ids.iter().map(|q| (a.topic.clone(), *q)))
        .collect()
}

fn group_by_topic(queues: Vec<(String, u32)>) -> Vec<QueueAssignment> {
    let mut out: Vec<QueueAssignment> = Vec::new();
    for (topic, q) in queues {
        match out.iter_mut().find(|a| a.topic == topic) {
            Some(a) => a.queue_ids.push(q),
            None => out.push(QueueAssignment {
                topic,
                queue_ids: vec![q],
            }),
        }
    }
    out
}
