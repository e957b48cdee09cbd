//! Queue locks for ordered consumption: per (group, topic, queue) at most one holder, with
//! a lease.
//!
//! A member locks the queues it wants to consume in order and renews them while it works;
//! another member gets a queue only once the holder unlocked it, left, lost its connection
//! ([`QueueLocks::release_member`]) or let the lease run out. The holder counts its lease
//! from when it sent the request, the broker from when it handled it, so the holder's view
//! always ends first: two members never both believe they hold one queue.
//!
//! Entries exist only for locks taken: an unlock removes its entry, and expired ones are
//! dropped by [`QueueLocks::sweep`], so memory follows the queues consumed in order.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// (group, topic, queue id).
type Key = (String, String, u32);

#[derive(Debug, Clone)]
struct Holder {
    client_id: String,
    expires_ms: u64,
}

/// The broker's queue locks. Send + Sync.
#[derive(Debug)]
pub struct QueueLocks {
    lease_ms: u64,
    inner: Mutex<HashMap<Key, Holder>>,
}

impl QueueLocks {
    /// Locks that last `lease_ms` from each lock or renewal.
    pub fn new(lease_ms: u64) -> Self {
        Self {
            lease_ms,
            inner: Mutex::new(HashMap::new()),
        }
    }

    /// How long a lock lasts unless renewed.
    pub fn lease_ms(&self) -> u64 {
        self.lease_ms
    }

    /// Locks or renews `(topic, queue)` pairs for `client_id`; returns those it holds now.
    /// A queue held by another member whose lease has not run out is left out.
    pub fn lock(
        &self,
        group: &str,
        client_id: &str,
        queues: &[(String, u32)],
        now_ms: u64,
    ) -> Vec<(String, u32)> {
        let mut map = self.map();
        let expires_ms = now_ms.saturating_add(self.lease_ms);
        let mut locked = Vec::with_capacity(queues.len());
        for (topic, queue_id) in queues {
            let key = (group.to_owned(), topic.clone(), *queue_id);
            let free = match map.get(&key) {
                None => true,
                Some(h) => h.client_id == client_id || h.expires_ms <= now_ms,
            };
            if free {
                map.insert(
                    key,
                    Holder {
                        client_id: client_id.to_owned(),
                        expires_ms,
                    },
                );
                locked.push((topic.clone(), *queue_id));
            }
        }
        locked
    }

    /// Releases the locks `client_id` holds among `queues`; returns how many.
    pub fn unlock(&self, group: &str, client_id: &str, queues: &[(String, u32)]) -> usize {
        let mut map = self.map();
        let mut released = 0;
        for (topic, queue_id) in queues {
            let key = (group.to_owned(), topic.clone(), *queue_id);
            if map.get(&key).is_some_and(|h| h.client_id == client_id) {
                map.remove(&key);
                released += 1;
            }
        }
        released
    }

    /// Releases every lock of a member that left or whose connection closed: it can no
    /// longer ack or commit, so its queues go to their next owner at once.
    pub fn release_member(&self, group: &str, client_id: &str) -> usize {
        let mut map = self.map();
        let before = map.len();
        map.retain(|(g, _, _), h| !(g == group && h.client_id == client_id));
        before - map.len()
    }

    /// Releases every lock of a group (the group was deleted).
    pub fn release_group(&self, group: &str) {
        self.map().retain(|(g, _, _), _| g != group);
    }

    /// Drops locks whose lease ran out.
    pub fn sweep(&self, now_ms: u64) {
        self.map().retain(|_, h| h.expires_ms > now_ms);
    }

    /// The member holding a queue's lock at `now_ms`, if any.
    pub fn holder(&self, group: &str, topic: &str, queue_id: u32, now_ms: u64) -> Option<String> {
        self.map()
            .get(&(group.to_owned(), topic.to_owned(), queue_id))
            .filter(|h| h.expires_ms > now_ms)
            .map(|h| h.client_id.clone())
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Key, Holder>> {
        // Every update is a single insert or remove: a poisoned lock guards valid data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    const LEASE: u64 = 100;

    fn q(id: u32) -> Vec<(String, u32)> {
        vec![("t".to_owned(), id)]
    }

    #[test]
    fn a_held_queue_goes_to_another_member_only_after_unlock_or_expiry() {
        let locks = QueueLocks::new(LEASE);
        assert_eq!(locks.lock("g", "a", &q(0), 0), q(0));
        assert!(locks.lock("g", "b", &q(0), 50).is_empty());
        // Renewal by the holder moves the expiry.
        assert_eq!(locks.lock("g", "a", &q(0), 90), q(0));
        assert!(locks.lock("g", "b", &q(0), 150).is_empty());
        assert_eq!(locks.lock("g", "b", &q(0), 190), q(0));
        assert_eq!(locks.unlock("g", "a", &q(0)), 0, "a no longer holds it");
        assert_eq!(locks.unlock("g", "b", &q(0)), 1);
        assert_eq!(locks.lock("g", "a", &q(0), 191), q(0));
        // Another group's lock on the same queue is independent.
        assert_eq!(locks.lock("h", "b", &q(0), 191), q(0));
        assert_eq!(locks.release_member("g", "a"), 1);
        assert_eq!(locks.holder("h", "t", 0, 191).as_deref(), Some("b"));
        locks.sweep(10_000);
        assert_eq!(locks.holder("h", "t", 0, 191), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Lock { client: u8, queue: u32 },
        Unlock { client: u8, queue: u32 },
        Leave { client: u8 },
        Advance { ms: u64 },
        Sweep,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..3, 0u32..3).prop_map(|(client, queue)| Op::Lock { client, queue }),
            2 => (0u8..3, 0u32..3).prop_map(|(client, queue)| Op::Unlock { client, queue }),
            1 => (0u8..3).prop_map(|client| Op::Leave { client }),
            3 => (0u64..=LEASE + 10).prop_map(|ms| Op::Advance { ms }),
            1 => Just(Op::Sweep),
        ]
    }

    proptest! {
        /// Each member believes it holds a queue from its lock request until the lease
        /// ends or it unlocks (or leaves). Under any sequence, a grant never goes to a
        /// member while another one still believes it holds that queue.
        #[test]
        fn two_members_never_hold_one_queue_at_once(ops in proptest::collection::vec(op(), 1..200)) {
            let locks = QueueLocks::new(LEASE);
            let mut now = 0u64;
            // (client, queue) -> the end of that client's belief.
            let mut belief: BTreeMap<(u8, u32), u64> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Lock { client, queue } => {
                        let got = locks.lock("g", &client.to_string(), &q(queue), now);
                        if got.is_empty() {
                            // Refused: someone else's lease must still be running.
                            let held = belief
                                .iter()
                                .any(|(&(c, qq), &end)| c != client && qq == queue && end > now);
                            prop_assert!(held, "refused a free queue");
                        } else {
                            for (&(c, qq), &end) in &belief {
                                prop_assert!(
                                    c == client || qq != queue || end <= now,
                                    "queue {} granted to {} while {} holds it until {} (now {})",
                                    queue, client, c, end, now
                                );
                            }
                            belief.insert((client, queue), now + LEASE);
                            prop_assert_eq!(
                                locks.holder("g", "t", queue, now),
                                Some(client.to_string())
                            );
                        }
                    }
                    Op::Unlock { client, queue } => {
                        let released = locks.unlock("g", &client.to_string(), &q(queue));
                        let believed = belief.remove(&(client, queue)).is_some_and(|end| end > now);
                        // Releasing what it believed held must free it; an expired belief
                        // may or may not still have its entry.
                        if believed {
                            prop_assert_eq!(released, 1);
                        }
                    }
                    Op::Leave { client } => {
                        locks.release_member("g", &client.to_string());
                        belief.retain(|(c, _), _| *c != client);
                    }
                    Op::Advance { ms } => now += ms,
                    Op::Sweep => locks.sweep(now),
                }
            }
        }
    }
}
