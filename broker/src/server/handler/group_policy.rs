//! A consumer group's retry policy: set or reset it (saved before the answer), read it.

use std::sync::Arc;

use protocol::group_policy::{GetGroupPolicyRequest, GroupPolicyResponse, SetGroupPolicyRequest};
use protocol::Frame;

use super::{blocking, check_group, decode, HandlerResult, Services};
use crate::server::response::Response;

/// Sets (or with no policy removes) a group's retry policy; answers the policy now in
/// force. A policy out of range is a bad request naming what is wrong.
pub(super) async fn set(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: SetGroupPolicyRequest = decode(frame)?;
    check_group(&req.group)?;
    let s = Arc::clone(services);
    blocking(move || {
        let reset = req.policy.is_none();
        let had = s.retry.set_group_policy(&req.group, req.policy)?;
        if reset {
            tracing::info!(group = %req.group, had, "group retry policy reset to the broker's defaults");
        } else {
            tracing::info!(group = %req.group, policy = ?s.retry.group_policy(&req.group), "group retry policy set");
        }
        Ok(Response::ok(&policy_of(&s, req.group)))
    })
    .await
}

/// A group's own policy, if any, and the one in force.
pub(super) fn get(services: &Services, frame: &Frame) -> HandlerResult {
    let req: GetGroupPolicyRequest = decode(frame)?;
    check_group(&req.group)?;
    Ok(Response::ok(&policy_of(services, req.group)))
}

fn policy_of(services: &Services, group: String) -> GroupPolicyResponse {
    GroupPolicyResponse {
        policy: services.retry.group_policy(&group),
        effective: services.retry.effective_policy(&group),
        group,
    }
}
