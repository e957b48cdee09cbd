//! What the retry API and the scheduler thread share: the store, the settings, and the
//! waker that rouses the scheduler.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use protocol::time::now_ms;

use super::config::RetryConfig;
use super::error::RetryError;
use crate::store::{MessageStore, PutMessage, TopicConfig, TopicScope};

/// What the API and the scheduler thread share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<MessageStore>,
    pub(crate) config: RetryConfig,
    /// Groups' own max reconsume times.
    pub(super) group_max: RwLock<HashMap<String, u32>>,
    /// Serialises on-demand topic creation so two send-backs do not both create.
    create_lock: Mutex<()>,
    pub(crate) waker: Arc<Waker>,
}

/// Wakes the scheduler: on new schedule-topic messages, and to stop.
#[derive(Debug, Default)]
pub(crate) struct Waker {
    state: Mutex<WakeState>,
    cond: Condvar,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WakeState {
    pub(crate) stop: bool,
    /// Bumped on every wake-up; the scheduler compares it with the value it saw.
    pub(crate) seq: u64,
}

impl Waker {
    fn lock(&self) -> MutexGuard<'_, WakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn poke(&self) {
        self.lock().seq += 1;
        self.cond.notify_all();
    }

    pub(crate) fn stop(&self) {
        self.lock().stop = true;
        self.cond.notify_all();
    }

    pub(crate) fn snapshot(&self) -> WakeState {
        *self.lock()
    }

    /// Sleeps until poked after `seen`, stopped, or the wall clock reaches `deadline_ms`.
    pub(crate) fn wait(&self, seen: u64, deadline_ms: Option<u64>) {
        let mut state = self.lock();
        while !state.stop && state.seq == seen {
            match deadline_ms {
                None => {
                    state = self
                        .cond
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                Some(d) => {
                    let now = now_ms();
                    if now >= d {
                        return;
                    }
                    state = self
                        .cond
                        .wait_timeout(state, Duration::from_millis(d - now))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }
}

impl Shared {
    /// The shared state of a starting service; `waker` is already hooked to the store.
    pub(crate) fn new(store: Arc<MessageStore>, config: RetryConfig, waker: Arc<Waker>) -> Self {
        Self {
            store,
            config,
            group_max: RwLock::new(HashMap::new()),
            create_lock: Mutex::new(()),
            waker,
        }
    }

    /// Creates an internal topic with one queue unless it exists.
    pub(crate) fn ensure_topic(&self, topic: &str) -> Result<(), RetryError> {
        if self.store.topic(topic).is_some() {
            return Ok(());
        }
        let _one = self
            .create_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.store.topic(topic).is_some() {
            return Ok(());
        }
        self.store
            .create_topic_scoped(TopicScope::Internal, TopicConfig::new(topic, 1))
            .map(drop)
            .map_err(|source| RetryError::Store {
                op: "creating topic",
                target: topic.to_string(),
                source: Box::new(source),
            })
    }

    /// Writes messages to an internal topic, creating it on demand.
    pub(crate) fn put(
        &self,
        topic: &str,
        queue_id: u32,
        msgs: &[PutMessage<'_>],
        op: &'static str,
    ) -> Result<(), RetryError> {
        self.ensure_topic(topic)?;
        self.store
            .put_batch_scoped(TopicScope::Internal, topic, queue_id, msgs)
            .map(drop)
            .map_err(|source| RetryError::Store {
                op,
                target: topic.to_string(),
                source: Box::new(source),
            })
    }
}
