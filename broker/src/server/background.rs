//! Periodic work of a running broker: writing changed consumer offsets (with back-off on
//! a full disk), expiring silent group members, removing idle groups and watching the
//! descriptor and mapping budgets. Every loop ends when shutdown starts.

use std::sync::Arc;
use std::time::Duration;

use protocol::time::now_ms;
use tokio::time::MissedTickBehavior;

use super::handler::group;
use super::resources;
use super::services::Services;
use crate::store::disk::WriteRetry;

/// How often the descriptor and mapping counts are checked: reading two small `/proc`
/// files is cheap, and a budget does not fill up in seconds under normal use.
const BUDGET_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Writes consumer offsets whenever they changed since the last write. A failing write
/// (a full disk) leaves the offsets in memory, where commits keep landing, and is retried
/// with back-off; it is logged once per failure streak.
pub(crate) async fn persist_offsets(services: Arc<Services>) {
    let period = Duration::from_millis(services.config.offsets_persist_interval_ms);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut retry = WriteRetry::new("writing consumer offsets");
    loop {
        tokio::select! {
            () = services.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let disk = services.store.disk();
        if !services.offsets.is_dirty() || !retry.due(disk) {
            continue;
        }
        let s = Arc::clone(&services);
        match tokio::task::spawn_blocking(move || s.offsets.persist()).await {
            Ok(Ok(())) => retry.succeeded(),
            // The file is about as large as the last one written; 64 KiB when unknown.
            Ok(Err(e)) => retry.failed(&e, offsets_file_bytes(&services), disk),
            Err(e) => retry.failed(&e, 0, disk),
        }
    }
}

fn offsets_file_bytes(services: &Services) -> u64 {
    std::fs::metadata(services.offsets.path()).map_or(64 << 10, |m| m.len())
}

/// Writes consumer offsets now, off the runtime.
///
/// # Errors
/// A sentence describing the failure.
pub(crate) async fn persist_now(services: &Arc<Services>) -> Result<(), String> {
    let s = Arc::clone(services);
    tokio::task::spawn_blocking(move || {
        // Acks received since the ack writer's last write.
        let ctx = crate::pop::Ctx {
            store: &s.store,
            offsets: &s.offsets,
            retry: &s.retry,
        };
        s.pop.flush_acks(&ctx).map_err(|e| e.to_string())?;
        s.offsets.persist().map_err(|e| e.to_string())
    })
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
        services.queue_locks.sweep(now_ms());
    }
}

/// Removes groups idle past `group_idle_expiry_ms` (when set): no live member and no
/// commit for that long. Groups not seen since start count as active at start, so a
/// restart never removes a group sooner than the expiry after it.
pub(crate) async fn expire_idle_groups(services: Arc<Services>) {
    let expiry_ms = services.config.group_idle_expiry_ms;
    if expiry_ms == 0 {
        return;
    }
    let started_ms = now_ms();
    let period = Duration::from_millis((expiry_ms / 4).clamp(100, 60_000));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = services.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let s = Arc::clone(&services);
        let swept = tokio::task::spawn_blocking(move || {
            for group in group::idle_groups(&s, expiry_ms, started_ms, now_ms()) {
                // A member may have joined since the list was made.
                if s.groups.has_live_members(&group) {
                    continue;
                }
                match group::delete_group(&s, &group) {
                    Ok(r) => tracing::info!(%group, offsets = r.offsets, topics = ?r.topics, "idle group removed"),
                    Err(e) => tracing::warn!(%group, error = %e.message, "removing idle group failed; will retry"),
                }
            }
        })
        .await;
        if let Err(e) = swept {
            tracing::error!(error = %e, "idle group sweep failed");
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
