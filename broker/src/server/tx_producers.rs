//! Connections of live transactional producers, per producer group: where check-backs
//! go. Held weakly: a registry entry never keeps a connection (or its writer) alive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::session::Session;

/// A producer connection: its session id and a weak handle on it.
type Producer = (u64, Weak<Session>);

/// Producer connections per producer group.
#[derive(Default)]
pub(crate) struct TxProducers {
    groups: Mutex<HashMap<String, Vec<Producer>>>,
    /// Spreads check-backs over a group's producers.
    turn: AtomicUsize,
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
}
