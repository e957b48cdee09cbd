//! Periodic work of a running broker: writing changed consumer offsets, expiring silent
//! group members and watching the descriptor and mapping budgets. Every loop ends when
//! shutdown starts.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use super::handler::now_ms;
use super::{resources, Services};

/// How often the descriptor and mapping counts are checked: reading two small `/proc`
/// files is cheap, and a budget does not fill up in seconds under normal use.
const BUDGET_CHECK_INTERVAL: Duration = Duration::from_secs(10);

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

/// Warns once when open descriptors or memory mappings pass 80% of their limit, and once
/// when they are back below 70%, so an operator hears before files start failing.
pub(crate) async fn watch_budgets(services: Arc<Services>) {
    let mut tick = tokio::time::interval(BUDGET_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let max_maps = resources::max_map_count();
    let (mut fds_warned, mut maps_warned) = (false, false);
    loop {
        tokio::select! {
            () = services.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let counts = tokio::task::spawn_blocking(|| {
            (
                resources::fd_limit().ok(),
                resources::open_fds(),
                resources::mappings(),
            )
        })
        .await;
        let Ok((limit, fds, maps)) = counts else {
            continue;
        };
        if let (Some(limit), Some(used)) = (limit, fds) {
            flip(&mut fds_warned, used, limit.soft, "open file descriptors");
        }
        if let (Some(max), Some(used)) = (max_maps, maps) {
            flip(
                &mut maps_warned,
                used,
                max,
                "memory mappings (vm.max_map_count)",
            );
        }
    }
}

fn flip(warned: &mut bool, used: u64, limit: u64, what: &str) {
    let over = resources::over_threshold(used, limit, *warned);
    if over && !*warned {
        tracing::warn!(
            used,
            limit,
            "{what} above {}% of the limit",
            resources::WARN_PERCENT
        );
    } else if !over && *warned {
        tracing::info!(
            used,
            limit,
            "{what} back below {}% of the limit",
            resources::CLEAR_PERCENT
        );
    }
    *warned = over;
}
