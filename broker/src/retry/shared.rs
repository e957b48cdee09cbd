//! What the retry API and the scheduler thread share: the store, the settings, and the
//! waker that rouses the scheduler.

use std::sync::{Arc, Mutex, PoisonError};

use commitlog::Signal;

use super::config::RetryConfig;
use super::error::RetryError;
use super::policy::GroupPolicies;
use crate::store::{MessageStore, PutMessage, TopicConfig, TopicScope};

/// What the API and the scheduler thread share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<MessageStore>,
    pub(crate) config: RetryConfig,
    /// Groups' own retry policies, persisted.
    pub(super) policies: GroupPolicies,
    /// Serialises on-demand topic creation so two send-backs do not both create.
    create_lock: Mutex<()>,
    /// Wakes the scheduler (new schedule-topic messages) and stops it.
    pub(crate) waker: Arc<Signal>,
}

impl Shared {
    /// The shared state of a starting service; `waker` is already hooked to the store.
    pub(crate) fn new(
        store: Arc<MessageStore>,
        config: RetryConfig,
        policies: GroupPolicies,
        waker: Arc<Signal>,
    ) -> Self {
        Self {
            store,
            config,
            policies,
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
