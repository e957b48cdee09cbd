//! User and access-rule management (`mq user ...`, `mq acl ...`). Changes write the users
//! file, so they run on the blocking pool. Only administrators get here when auth is on
//! (the gate); with auth off anyone may, like every other request.

use std::sync::Arc;

use protocol::auth::{
    AclEntry, AclListRequest, AclListResponse, AclRemoveRequest, AclSetRequest, UserAddRequest,
    UserAddResponse, UserEntry, UserListRequest, UserListResponse, UserRemoveRequest,
};
use protocol::messages::Empty;
use protocol::Frame;

use super::{blocking, decode, HandlerResult, Services};
use crate::security::{AclRule, Action, Decision, Resource, SecurityError};
use crate::server::gate::status_of;
use crate::server::response::{HandlerError, Response};

impl From<SecurityError> for HandlerError {
    fn from(e: SecurityError) -> Self {
        HandlerError::new(status_of(&e), e.to_string())
    }
}

pub(super) async fn user_add(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: UserAddRequest = decode(frame)?;
    let s = Arc::clone(services);
    let name = req.name.clone();
    let secret = blocking(move || Ok(s.security.add_user(&name, req.admin)?)).await?;
    Ok(Response::ok(&UserAddResponse {
        access_key: req.name,
        secret_key: secret,
    }))
}

pub(super) fn user_list(services: &Services, frame: &Frame) -> HandlerResult {
    let _: UserListRequest = decode(frame)?;
    let users = services
        .security
        .users()
        .iter()
        .map(|u| UserEntry {
            access_key: u.access_key.clone(),
            admin: u.admin,
            rules: u32::try_from(u.rules.len()).unwrap_or(u32::MAX),
        })
        .collect();
    Ok(Response::ok(&UserListResponse { users }))
}

pub(super) async fn user_remove(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: UserRemoveRequest = decode(frame)?;
    let s = Arc::clone(services);
    blocking(move || Ok(s.security.remove_user(&req.name)?)).await?;
    Ok(Response::ok(&Empty {}))
}

/// Parses a rule as it travels into the broker's type, with a sentence when it is wrong.
fn parse_rule(entry: &AclEntry) -> Result<AclRule, HandlerError> {
    let bad = |e: String| HandlerError::bad_request(e);
    let resource: Resource = entry.resource.parse().map_err(bad)?;
    let mut actions = entry
        .actions
        .iter()
        .map(|a| a.parse::<Action>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    actions.sort();
    actions.dedup();
    if actions.is_empty() {
        return Err(bad(
            "a rule needs at least one action (pub, sub, admin)".into()
        ));
    }
    let decision: Decision = entry.decision.parse().map_err(bad)?;
    Ok(AclRule {
        resource,
        actions,
        decision,
    })
}

pub(super) async fn acl_set(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: AclSetRequest = decode(frame)?;
    let rule = parse_rule(&req.rule)?;
    let s = Arc::clone(services);
    blocking(move || Ok(s.security.set_rule(&req.rule.user, rule)?)).await?;
    Ok(Response::ok(&Empty {}))
}

pub(super) fn acl_list(services: &Services, frame: &Frame) -> HandlerResult {
    let req: AclListRequest = decode(frame)?;
    let users = services.security.users();
    if let Some(name) = &req.user {
        if !users.iter().any(|u| &u.access_key == name) {
            return Err(SecurityError::NoSuchUser(name.clone()).into());
        }
    }
    let rules = users
        .iter()
        .filter(|u| req.user.as_ref().is_none_or(|n| n == &u.access_key))
        .flat_map(|u| {
            u.rules.iter().map(|r| AclEntry {
                user: u.access_key.clone(),
                resource: r.resource.to_string(),
                actions: r.actions.iter().map(ToString::to_string).collect(),
                decision: r.decision.to_string(),
            })
        })
        .collect();
    Ok(Response::ok(&AclListResponse { rules }))
}

pub(super) async fn acl_remove(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: AclRemoveRequest = decode(frame)?;
    let resource: Resource = req.resource.parse().map_err(HandlerError::bad_request)?;
    let s = Arc::clone(services);
    blocking(move || Ok(s.security.remove_rule(&req.user, &resource)?)).await?;
    Ok(Response::ok(&Empty {}))
}
