//! What one connection may hold at once. Requests in flight are bounded by count (a
//! permit each) and, together with the answers not yet written, by bytes: a connection
//! over its byte budget is not read until its writer drains, so a client that pipelines
//! heavy requests and never reads the answers holds at most about one budget.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{Notify, OwnedSemaphorePermit};

/// Bytes of requests and answers held by one connection. The reader stops while both
/// together reach the limit; work starts only while the answers alone are under it, so
/// requests waiting to start can never hold up their own start.
pub(crate) struct ByteBudget {
    requests: AtomicUsize,
    answers: AtomicUsize,
    limit: usize,
    /// Woken whenever bytes are released while a limit was reached.
    drained: Notify,
}

/// Which side of a connection bytes are held for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// A request frame not yet answered.
    Request,
    /// An answer not yet written to the socket.
    Answer,
}

impl ByteBudget {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            requests: AtomicUsize::new(0),
            answers: AtomicUsize::new(0),
            limit,
            drained: Notify::new(),
        })
    }

    fn counter(&self, kind: Held) -> &AtomicUsize {
        match kind {
            Held::Request => &self.requests,
            Held::Answer => &self.answers,
        }
    }

    /// Counts `n` bytes until the returned guard is dropped. Never refuses: callers check
    /// for room before they read or start work, so one frame larger than the whole
    /// budget still goes through.
    pub(crate) fn hold(self: &Arc<Self>, kind: Held, n: usize) -> HeldBytes {
        // A frame's length is a u32, so nothing held is larger; the guard stays small
        // because every send in flight carries one.
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.counter(kind).fetch_add(n as usize, Ordering::AcqRel);
        HeldBytes {
            budget: Arc::clone(self),
            kind,
            n,
        }
    }

    fn release(&self, kind: Held, n: u32) {
        let was_full = !self.may_read() || !self.may_work();
        self.counter(kind).fetch_sub(n as usize, Ordering::AcqRel);
        if was_full {
            self.drained.notify_waiters();
        }
    }

    /// Whether the reader may take more requests.
    pub(crate) fn may_read(&self) -> bool {
        let used = self
            .requests
            .load(Ordering::Acquire)
            .saturating_add(self.answers.load(Ordering::Acquire));
        used < self.limit
    }

    /// Whether a request may start building its answer.
    pub(crate) fn may_work(&self) -> bool {
        self.answers.load(Ordering::Acquire) < self.limit
    }

    /// Resolves once the reader may take more requests.
    pub(crate) async fn room_to_read(&self) {
        self.wait_until(Self::may_read).await;
    }

    /// Resolves once a request may start building its answer.
    pub(crate) async fn room_to_work(&self) {
        self.wait_until(Self::may_work).await;
    }

    async fn wait_until(&self, ready: fn(&Self) -> bool) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            // Registered before the check, so a release in between still wakes us.
            drained.as_mut().enable();
            if ready(self) {
                return;
            }
            drained.await;
        }
    }
}

/// Bytes counted against a connection's budget until dropped.
pub(crate) struct HeldBytes {
    budget: Arc<ByteBudget>,
    kind: Held,
    n: u32,
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.budget.release(self.kind, self.n);
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
    async fn reading_resumes_once_answers_are_written_below_the_limit() {
        let budget = ByteBudget::new(100);
        let a = budget.hold(Held::Answer, 60);
        let r = budget.hold(Held::Request, 60);
        assert!(!budget.may_read());
        let waiter = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move { budget.room_to_read().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(a);
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("a waiter must wake once the budget has room")
            .unwrap();
        assert!(budget.may_read());
        drop(r);
        assert_eq!(budget.requests.load(Ordering::Acquire), 0);
        assert_eq!(budget.answers.load(Ordering::Acquire), 0);
    }

    #[test]
    fn requests_waiting_to_start_never_block_their_own_start() {
        // Requests larger than the whole budget stop the reader, not the work.
        let budget = ByteBudget::new(10);
        let big = budget.hold(Held::Request, 1_000);
        assert!(!budget.may_read());
        assert!(budget.may_work());
        let answer = budget.hold(Held::Answer, 1_000);
        assert!(!budget.may_work());
        drop(answer);
        drop(big);
        assert!(budget.may_read() && budget.may_work());
    }
}
