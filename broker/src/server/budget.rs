//! What one connection may hold at once. Requests in flight are bounded by count (a
//! permit each) and, together with the answers not yet written, by bytes: a connection
//! over its byte budget is not read until its writer drains, so a client that pipelines
//! heavy requests and never reads the answers holds at most about one budget.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{Notify, OwnedSemaphorePermit};

/// Bytes of requests and answers held by one connection.
pub(crate) struct ByteBudget {
    used: AtomicUsize,
    limit: usize,
    /// Woken when `used` falls below `limit`.
    drained: Notify,
}

impl ByteBudget {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit,
            drained: Notify::new(),
        })
    }

    /// Counts `n` bytes until the returned guard is dropped. Never refuses: the caller
    /// checks for room before it reads or starts work, so one answer larger than the whole
    /// budget still goes out.
    pub(crate) fn hold(self: &Arc<Self>, n: usize) -> HeldBytes {
        self.used.fetch_add(n, Ordering::AcqRel);
        HeldBytes {
            budget: Arc::clone(self),
            n,
        }
    }

    fn release(&self, n: usize) {
        let before = self.used.fetch_sub(n, Ordering::AcqRel);
        if before >= self.limit && before - n < self.limit {
            self.drained.notify_waiters();
        }
    }

    pub(crate) fn has_room(&self) -> bool {
        self.used.load(Ordering::Acquire) < self.limit
    }

    /// Resolves once the connection is under its budget.
    pub(crate) async fn room(&self) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            // Registered before the check, so a release in between still wakes us.
            drained.as_mut().enable();
            if self.has_room() {
                return;
            }
            drained.await;
        }
    }
}

/// Bytes counted against a connection's budget until dropped.
pub(crate) struct HeldBytes {
    budget: Arc<ByteBudget>,
    n: usize,
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.budget.release(self.n);
    }
}

/// One request in flight: its slot and its bytes, both given back when it is answered
/// (or dropped because the connection went away).
pub(crate) struct InFlight {
    pub(crate) _slot: OwnedSemaphorePermit,
    pub(crate) _request: HeldBytes,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn room_returns_once_held_bytes_are_released_below_the_limit() {
        let budget = ByteBudget::new(100);
        let a = budget.hold(60);
        let b = budget.hold(60);
        assert!(!budget.has_room());
        let waiter = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move { budget.room().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(a);
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("a waiter must wake once the budget has room")
            .unwrap();
        assert!(budget.has_room());
        drop(b);
        assert_eq!(budget.used.load(Ordering::Acquire), 0);
    }

    #[test]
    fn one_hold_larger_than_the_budget_is_still_counted_and_released() {
        let budget = ByteBudget::new(10);
        let big = budget.hold(1_000);
        assert!(!budget.has_room());
        drop(big);
        assert!(budget.has_room());
    }
}
