//! Replication admin: a broker's replication state, and manual promotion of a replica.

use std::sync::Arc;

use protocol::cluster::{
    ClusterPromoteRequest, ClusterPromoteResponse, ClusterStatusRequest, ClusterStatusResponse,
};
use protocol::{Frame, Status};

use super::{blocking, decode, HandlerResult, Services};
use crate::server::response::{HandlerError, Response};

pub(super) fn status(services: &Services, frame: &Frame) -> HandlerResult {
    let _: ClusterStatusRequest = decode(frame)?;
    if let Some(ha) = &services.ha {
        return Ok(Response::ok(&ha.status()));
    }
    let store = &services.store;
    let log = store.commit_log();
    Ok(Response::ok(&ClusterStatusResponse {
        role: "standalone".to_owned(),
        broker_id: 0,
        epoch: log.epochs().last().map_or(0, |e| e.epoch),
        master: None,
        ha_addr: None,
        write_offset: log.write_offset().get(),
        flushed_offset: log.flushed_offset().get(),
        confirm_offset: log.write_offset().get(),
        dispatched_offset: store.dispatched_offset().get(),
        sync_set_size: 1,
        min_sync_replicas: 1,
        replicas: Vec::new(),
        streaming: false,
    }))
}

pub(super) async fn promote(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: ClusterPromoteRequest = decode(frame)?;
    let Some(ha) = services.ha.clone() else {
        return Err(HandlerError::new(
            Status::BadRequest,
            "this broker is standalone (no --role); there is nothing to promote",
        ));
    };
    let entry = blocking(move || {
        ha.promote(req.min_epoch)
            .map_err(|e| HandlerError::new(Status::BadRequest, e.to_string()))
    })
    .await?;
    Ok(Response::ok(&ClusterPromoteResponse {
        epoch: entry.epoch,
        start_offset: entry.start_offset,
    }))
}
