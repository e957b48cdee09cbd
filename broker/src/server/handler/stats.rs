//! Broker statistics.

use protocol::messages::{DiskState as WireDiskState, StatsRequest, StatsResponse};
use protocol::Frame;

use super::{decode, HandlerResult, Services};
use crate::server::response::Response;
use crate::store::DiskState;

pub(super) fn stats(services: &Services, frame: &Frame) -> HandlerResult {
    let _: StatsRequest = decode(frame)?;
    let s = services.stats.snapshot();
    let store = &services.store;
    let log = store.commit_log();
    let disk = store.disk().status();
    Ok(Response::ok(&StatsResponse {
        broker_version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_ms: s.uptime_ms,
        connections: s.connections,
        // The timer's own topic and those of transactions are machinery, not topics.
        topics: store
            .topics()
            .iter()
            .filter(|t| {
                ![
                    protocol::names::TIMER_TOPIC,
                    protocol::tx::HALF_TOPIC,
                    protocol::tx::OP_TOPIC,
                ]
                .contains(&t.name.as_str())
            })
            .count() as u64,
        messages_in: s.messages_in,
        messages_out: s.messages_out,
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        commitlog_min_offset: log.min_offset().get(),
        commitlog_write_offset: log.write_offset().get(),
        commitlog_flushed_offset: log.flushed_offset().get(),
        disk_state: match disk.state {
            DiskState::Ok => WireDiskState::Ok,
            DiskState::Full => WireDiskState::Full,
        },
        disk_free_bytes: disk.free_bytes,
        sends_refused_disk_full: disk.sends_refused,
        timers_pending: services.timer.pending_total(),
    }))
}
