//! Connections of live transactional producers, per producer group: where check-backs
//! go. Held weakly: a registry entry never keeps a connection (or its writer) alive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use protocol::tx::TxCheckRequest;

use super::session::Session;

/// A producer connection: its session id and a weak handle on it.
type Producer = (u64, Weak<Session>);

/// Producer connections per producer group.
#[derive(Default)]
pub(crate) struct TxProducers {
    groups: Mutex<HashMap<String, Vec<Producer>>>,
    /// Spreads check-backs over a group's producers.
    turn: AtomicUsize,
    /// Producers that are not native connections (the gRPC endpoint's), asked when the
    /// group has no native one.
    others: OnceLock<Arc<dyn OtherProducers>>,
}

/// Check-backs through another protocol's producers.
pub(crate) trait OtherProducers: Send + Sync {
    /// Sends the check-back to a live producer of the transaction; false when none is live.
    fn check(&self, request: &TxCheckRequest) -> bool;
}

impl TxProducers {
    /// Names `conn` a live producer of `group` until it closes.
    pub(crate) fn register(&self, group: &str, conn: &Arc<Session>) {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        let list = groups.entry(group.to_owned()).or_default();
        list.retain(|(_, w)| w.upgrade().is_some_and(|s| !s.closed.is_cancelled()));
        if !list.iter().any(|(id, _)| *id == conn.id) {
            list.push((conn.id, Arc::downgrade(conn)));
        }
    }

    /// A live producer connection of `group`, taking turns; `None` when none is live.
    pub(crate) fn pick(&self, group: &str) -> Option<Arc<Session>> {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        let list = groups.get_mut(group)?;
        list.retain(|(_, w)| w.upgrade().is_some_and(|s| !s.closed.is_cancelled()));
        if list.is_empty() {
            groups.remove(group);
            return None;
        }
        let i = self.turn.fetch_add(1, Ordering::Relaxed) % list.len();
        list[i].1.upgrade()
    }

    /// Installs the other protocol's producers (once per broker).
    pub(crate) fn set_others(&self, others: Arc<dyn OtherProducers>) {
        let _ = self.others.set(others);
    }

    /// Sends a check-back through the other protocol's producers; false when none took it.
    pub(crate) fn check_others(&self, request: &TxCheckRequest) -> bool {
        self.others.get().is_some_and(|o| o.check(request))
    }
}
