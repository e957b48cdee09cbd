//! Periodic work of a running broker: writing changed consumer offsets and expiring
//! silent group members. Both loops end when shutdown starts.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use super::handler::now_ms;
use super::Services;

/// Writes consumer offsets whenever they changed since the last write.
pub(crate) async fn persist_offsets(services: Arc<Services>) {
    let period = Duration::from_millis(services.config.offsets_persist_interval_ms);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = services.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !services.offsets.is_dirty() {
            continue;
        }
        if let Err(e) = persist_now(&services).await {
            tracing::error!(error = %e, "writing consumer offsets failed; will retry");
        }
    }
}

/// Writes consumer offsets now, off the runtime.
///
/// # Errors
/// A sentence describing the failure.
pub(crate) async fn persist_now(services: &Arc<Services>) -> Result<(), String> {
    let s = Arc::clone(services);
    tokio::task::spawn_blocking(move || s.offsets.persist().map_err(|e| e.to_string()))
        .await
        .map_err(|e| format!("offset writer task failed: {e}"))?
}

/// Drops group members that stopped heartbeating, so their queues move to others.
pub(crate) async fn expire_members(services: Arc<Services>) {
    let period = Duration::from_millis((services.config.session_timeout_ms / 4).clamp(100, 1000));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = services.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (group, client) in services.groups.expire(now_ms()) {
            tracing::info!(%group, %client, "consumer expired after missing heartbeats");
        }
    }
}
