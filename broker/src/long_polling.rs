//! Long polling: a pull at the head of a queue waits on the queue's [`Notify`], which the
//! store's dispatcher fires as soon as it indexes a new message for that queue.
//!
//! A waiter must take its `notified()` future and `enable()` it *before* it checks the
//! store one last time; `notify_waiters` only wakes futures that exist, so that order is
//! what rules out a lost wake-up. Nothing here sleeps or polls.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::Notify;

/// One `Notify` per (topic, queue) that ever had a waiter.
#[derive(Debug, Default)]
pub struct LongPolling {
    // topic -> queue id -> notify. Nested so the dispatcher looks up by `&str` without
    // allocating; entries are few (bounded by the number of queues) and kept.
    queues: RwLock<HashMap<String, HashMap<u32, Arc<Notify>>>>,
}

impl LongPolling {
    /// No queue watched yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The notify a pull on (topic, queue) waits on.
    pub fn watch(&self, topic: &str, queue_id: u32) -> Arc<Notify> {
        if let Some(n) = self.find(topic, queue_id) {
            return n;
        }
        let mut map = self.queues.write().unwrap_or_else(PoisonError::into_inner);
        map.entry(topic.to_owned())
            .or_default()
            .entry(queue_id)
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// Called by the dispatcher when (topic, queue) got a new message: wakes every pull
    /// waiting on it. Cheap when nobody waits.
    pub fn notify(&self, topic: &str, queue_id: u32) {
        if let Some(n) = self.find(topic, queue_id) {
            n.notify_waiters();
        }
    }

    /// Wakes every waiter (used when a topic is deleted so pulls do not hang on it).
    pub fn notify_topic(&self, topic: &str) {
        let map = self.queues.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(queues) = map.get(topic) {
            queues.values().for_each(|n| n.notify_waiters());
        }
    }

    fn find(&self, topic: &str, queue_id: u32) -> Option<Arc<Notify>> {
        let map = self.queues.read().unwrap_or_else(PoisonError::into_inner);
        map.get(topic).and_then(|q| q.get(&queue_id)).cloned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_notify_wakes_an_enabled_waiter_and_only_its_queue() {
        let lp = Arc::new(LongPolling::new());
        let n = lp.watch("t", 1);
        let other = lp.watch("t", 2);
        let fut = n.notified();
        tokio::pin!(fut);
        fut.as_mut().enable();
        let fut_other = other.notified();
        tokio::pin!(fut_other);
        fut_other.as_mut().enable();
        lp.notify("t", 1);
        lp.notify("unknown", 1);
        tokio::time::timeout(Duration::from_secs(1), fut)
            .await
            .expect("woken");
        assert!(tokio::time::timeout(Duration::from_millis(20), fut_other)
            .await
            .is_err());
    }
}
