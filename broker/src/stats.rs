//! Broker-wide counters, updated lock-free on the request path and read by the
//! broker-stats request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::http::Recorder;

/// Counters since start. Relaxed ordering: each is an independent tally.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    connections: AtomicU64,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Per-topic traffic and latencies for `/metrics`.
    recorder: Arc<Recorder>,
}

/// A consistent-enough copy of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Time since the broker started.
    pub uptime_ms: u64,
    /// Connections open now.
    pub connections: u64,
    /// Messages stored by sends since start.
    pub messages_in: u64,
    /// Messages delivered by pulls since start.
    pub messages_out: u64,
    /// Body bytes of the messages stored since start.
    pub bytes_in: u64,
    /// Response body bytes written to sockets since start.
    pub bytes_out: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// All counters at zero, uptime counted from now.
    pub fn new() -> Self {
        Self::with_recorder(Arc::new(Recorder::new()))
    }

    /// Counters that also feed `recorder` (shared with the storage layers' hooks).
    pub fn with_recorder(recorder: Arc<Recorder>) -> Self {
        Self {
            recorder,
            started: Instant::now(),
            connections: AtomicU64::new(0),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }

    /// What `/metrics` reads beyond these counters.
    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }

    /// A connection was accepted.
    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection ended.
    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Messages stored by sends, with their body bytes.
    pub fn add_messages_in(&self, count: u64, bytes: u64) {
        self.messages_in.fetch_add(count, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Messages delivered by pulls.
    pub fn add_messages_out(&self, count: u64) {
        self.messages_out.fetch_add(count, Ordering::Relaxed);
    }

    /// Response body bytes written to sockets.
    pub fn add_bytes_out(&self, bytes: u64) {
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The counters now; each is read on its own, so they may be a moment apart.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            connections: self.connections.load(Ordering::Relaxed),
            messages_in: self.messages_in.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up() {
        let s = Stats::new();
        s.connection_opened();
        s.connection_opened();
        s.connection_closed();
        s.add_messages_in(3, 30);
        s.add_messages_out(2);
        s.add_bytes_out(7);
        let snap = s.snapshot();
        assert_eq!(
            (
                snap.connections,
                snap.messages_in,
                snap.bytes_in,
                snap.messages_out,
                snap.bytes_out
            ),
            (1, 3, 30, 2, 7)
        );
    }
}
