//! [`RetryService`]: the send-back request and the life of the scheduler thread.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use commitlog::Signal;
use protocol::group_policy::{RetryDelays, RetryPolicy};
use protocol::messages::{SendBackRequest, SendBackResponse};
use protocol::names::{dlq_topic, retry_topic, validate_user_name, DLQ_PREFIX, TIMER_TOPIC};
use protocol::time::now_ms;

mod redeliver;

pub(crate) use redeliver::Redelivered;

use super::config::RetryConfig;
use super::copy::{copy_properties, Origin};
use super::error::RetryError;
use super::policy::GroupPolicies;
use super::progress::ScheduleProgress;
use super::scheduler;
use super::shared::Shared;
use super::topics::{level_of, SCHEDULE_TOPIC_PREFIX};
use crate::store::{MessageId, MessageStore, PutMessage, StoreError};
use crate::timer::{TimerConfig, TimerService};

/// Retries with delay and dead letters. See the module doc for the design.
#[derive(Debug)]
pub struct RetryService {
    shared: Arc<Shared>,
    /// Where retries wait for their delay.
    timer: Arc<TimerService>,
    scheduler: Mutex<Option<JoinHandle<Result<(), RetryError>>>>,
}

impl RetryService {
    /// [`Self::start_with_timer`] with a timer of its own (default settings).
    ///
    /// # Errors
    /// As [`Self::start_with_timer`]; the timer did not start.
    pub fn start(store: Arc<MessageStore>, config: RetryConfig) -> Result<Self, RetryError> {
        let timer = Arc::new(TimerService::start(
            Arc::clone(&store),
            TimerConfig::default(),
        )?);
        Self::start_with_timer(store, config, timer)
    }

    /// Starts the service: retries wait on `timer`. Loads the legacy schedule progress
    /// from `<data>/config/schedule_offsets` and starts the thread that drains the
    /// `%SCHEDULE%` topics an older broker left. The service keeps a reference to the
    /// store: close the service (or drop it) before closing the store.
    ///
    /// # Errors
    /// An invalid config, a corrupt progress file, failing to start the thread.
    pub fn start_with_timer(
        store: Arc<MessageStore>,
        config: RetryConfig,
        timer: Arc<TimerService>,
    ) -> Result<Self, RetryError> {
        config.validate()?;
        let config_dir = store.config().config_dir();
        let progress =
            ScheduleProgress::load(&config_dir, Arc::clone(&store.config().commitlog.storage))?;
        let policies =
            GroupPolicies::load(&config_dir, Arc::clone(&store.config().commitlog.storage))?;
        let levels = scheduled_levels(&store, &progress);
        let waker = Arc::new(Signal::new());
        let weak = Arc::downgrade(&waker);
        store.on_dispatch(Arc::new(move |topic: &str, _queue, _max| {
            if topic.starts_with(SCHEDULE_TOPIC_PREFIX) {
                if let Some(w) = weak.upgrade() {
                    w.wake();
                }
            }
        }));
        let shared = Arc::new(Shared::new(store, config, policies, waker));
        let worker = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("ferromq-retry-scheduler".into())
            .spawn(move || scheduler::run(&worker, progress, &levels))
            .map_err(|source| RetryError::Io {
                op: "start scheduler thread for",
                path: config_dir,
                source,
            })?;
        Ok(Self {
            shared,
            timer,
            scheduler: Mutex::new(Some(handle)),
        })
    }

    /// Sends a nacked message back: a copy goes to the group's retry topic after the delay
    /// of its next attempt, or to its dead-letter topic past the last attempt. Blocking
    /// (store reads and writes); call it from a blocking thread.
    ///
    /// # Errors
    /// A bad group name or message id, a message that does not exist or cannot be retried
    /// (bad request); store failures.
    pub fn send_back(&self, req: &SendBackRequest) -> Result<SendBackResponse, RetryError> {
        validate_user_name(&req.group).map_err(|source| RetryError::InvalidGroup {
            group: req.group.clone(),
            source,
        })?;
        let id: MessageId = req
            .msg_id
            .parse()
            .map_err(|source| RetryError::BadMessageId {
                id: req.msg_id.clone(),
                source: Box::new(source),
            })?;
        let store = &self.shared.store;
        let record = store.get_by_id(id).map_err(|source| match source {
            StoreError::MessageNotFound(_) | StoreError::CommitLog(_) => {
                RetryError::MessageNotFound {
                    id: id.to_string(),
                    source: Box::new(source),
                }
            }
            source => RetryError::Store {
                op: "reading message",
                target: id.to_string(),
                source: Box::new(source),
            },
        })?;
        let view = record.view();
        let topic = view.topic();
        let not_retryable = |reason| RetryError::NotRetryable {
            id: id.to_string(),
            topic: topic.to_string(),
            reason,
        };
        if topic.starts_with(SCHEDULE_TOPIC_PREFIX) || topic == TIMER_TOPIC {
            return Err(not_retryable("it is waiting in a schedule topic"));
        }
        if topic.starts_with(DLQ_PREFIX) {
            return Err(not_retryable("it is dead-lettered; resend it instead"));
        }
        let copy = copy_properties(
            view.properties(),
            &Origin {
                topic,
                msg_id: id.to_string(),
                queue_id: view.queue_id(),
                queue_offset: view.queue_offset(),
            },
        )
        .map_err(|source| RetryError::BadProperties {
            id: id.to_string(),
            source,
        })?;
        let reconsume_times = view.reconsume_times().saturating_add(1);
        let max = req
            .max_reconsume_times
            .or_else(|| self.group_max_reconsume_times(&req.group))
            .unwrap_or(self.shared.config.max_reconsume_times);
        let mut msg = PutMessage {
            properties: &[],
            body: view.body(),
            born_timestamp_ms: view.born_timestamp_ms(),
            reconsume_times,
        };

        if reconsume_times > max {
            let dlq = dlq_topic(&req.group);
            let props = copy.build();
            msg.properties = &props;
            self.shared.put(&dlq, 0, &[msg], "dead-lettering into")?;
            return Ok(SendBackResponse {
                dead_lettered: true,
                reconsume_times,
                due_at_ms: 0,
            });
        }
        let due_at_ms = now_ms().saturating_add(self.retry_delay_ms(&req.group, reconsume_times));
        let retry = retry_topic(&req.group);
        // Created now so members are assigned its queue before the first retry is due.
        self.shared.ensure_topic(&retry)?;
        let props = copy.build();
        msg.properties = &props;
        self.timer.schedule(&retry, 0, &[msg], due_at_ms)?;
        Ok(SendBackResponse {
            dead_lettered: false,
            reconsume_times,
            due_at_ms,
        })
    }

    /// Creates the group's retry topic (one queue) unless it exists. [`Self::send_back`]
    /// does this itself; a heartbeat does not, so that joining a group writes nothing.
    ///
    /// # Errors
    /// A bad group name; store failures.
    pub fn ensure_retry_topic(&self, group: &str) -> Result<(), RetryError> {
        validate_user_name(group).map_err(|source| RetryError::InvalidGroup {
            group: group.to_string(),
            source,
        })?;
        self.shared.ensure_topic(&retry_topic(group))
    }

    /// Sets (`Some`) or removes (`None`) a group's own retry policy, saved to
    /// `<data>/config/group_policies` before it returns; returns whether the group had one.
    /// Blocking (a file write).
    ///
    /// # Errors
    /// A bad group name or a policy out of range (bad request: `InvalidGroup`,
    /// `InvalidPolicy`, the latter also for a delay over the timer's maximum); the save
    /// failed (the policies in force are then unchanged).
    pub fn set_group_policy(
        &self,
        group: &str,
        policy: Option<RetryPolicy>,
    ) -> Result<bool, RetryError> {
        let Some(p) = policy else {
            return self.remove_group_policy(group);
        };
        validate_user_name(group).map_err(|source| RetryError::InvalidGroup {
            group: group.to_string(),
            source,
        })?;
        p.validate(self.timer.config().max_delay_ms)
            .map_err(|source| RetryError::InvalidPolicy {
                group: group.to_string(),
                source,
            })?;
        self.shared.policies.set(group, Some(p))
    }

    /// Removes a group's own retry policy (the broker's defaults apply again); returns
    /// whether it had one. Blocking (a file write when it had one).
    ///
    /// # Errors
    /// The save failed (the policy is then still in force).
    pub fn remove_group_policy(&self, group: &str) -> Result<bool, RetryError> {
        self.shared.policies.set(group, None)
    }

    /// A group's own retry policy, if it has one.
    pub fn group_policy(&self, group: &str) -> Option<RetryPolicy> {
        self.shared.policies.get(group)
    }

    /// The policy that applies to a group: its own, with the broker's delay table when it
    /// sets none, or the broker's defaults. `delays` is always set.
    pub fn effective_policy(&self, group: &str) -> RetryPolicy {
        let broker_table = || RetryDelays::Table(self.shared.config.delay_levels_ms.clone());
        match self.group_policy(group) {
            Some(p) => RetryPolicy {
                max_reconsume_times: p.max_reconsume_times,
                delays: p.delays.or_else(|| Some(broker_table())),
            },
            None => RetryPolicy {
                max_reconsume_times: self.shared.config.max_reconsume_times,
                delays: Some(broker_table()),
            },
        }
    }

    /// The max reconsume times of a group's own policy, if it has one.
    pub fn group_max_reconsume_times(&self, group: &str) -> Option<u32> {
        self.shared
            .policies
            .get(group)
            .map(|p| p.max_reconsume_times)
    }

    /// The delay before retry `n` (1 for the first) of a group's message: its policy's
    /// delays, else the broker's table. Capped at the timer's maximum, which may have been
    /// lowered since the policy was set.
    pub(crate) fn retry_delay_ms(&self, group: &str, n: u32) -> u64 {
        match self.group_policy(group).and_then(|p| p.delays) {
            Some(d) => d.delay_ms(n).min(self.timer.config().max_delay_ms),
            None => {
                let config = &self.shared.config;
                config.delay_of_level_ms(config.level_of_attempt(n))
            }
        }
    }

    /// The delay table in use.
    pub fn config(&self) -> &RetryConfig {
        &self.shared.config
    }

    /// The timer retries wait on.
    pub fn timer(&self) -> &Arc<TimerService> {
        &self.timer
    }

    /// Stops the scheduler and the timer, saves their progress and lets go of the store,
    /// so the caller can close the store next. A failed save is logged; its only consequence is that
    /// the next start delivers some retries again.
    pub fn close(self) {
        if let Err(e) = self.try_close() {
            tracing::warn!(error = %e, "retry scheduler progress not saved at close");
        }
    }

    /// [`RetryService::close`], returning the error of the final progress save.
    ///
    /// # Errors
    /// Saving the progress failed (the next start delivers some retries again).
    pub fn try_close(self) -> Result<(), RetryError> {
        let result = self.stop_scheduler();
        self.timer.close();
        result
    }

    /// Stops and joins the scheduler thread.
    fn stop_scheduler(&self) -> Result<(), RetryError> {
        self.shared.waker.stop();
        let handle = self
            .scheduler
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match handle.map(JoinHandle::join) {
            Some(Ok(result)) => result,
            // A panicked scheduler saved nothing; its undelivered messages are
            // delivered after the next start, so nothing is lost.
            Some(Err(_panic)) => {
                tracing::error!("retry scheduler thread panicked");
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl Drop for RetryService {
    fn drop(&mut self) {
        if let Err(e) = self.stop_scheduler() {
            tracing::warn!(error = %e, "retry scheduler progress not saved at drop");
        }
    }
}

/// Levels the legacy scheduler drains: those an older broker left in the store or the
/// progress file, so no parked message is stranded. New retries wait on the timer.
fn scheduled_levels(store: &MessageStore, progress: &ScheduleProgress) -> Vec<u32> {
    let mut levels: BTreeSet<u32> = BTreeSet::new();
    levels.extend(store.topics().iter().filter_map(|t| level_of(&t.name)));
    levels.extend(progress.topics().filter_map(level_of));
    levels.into_iter().collect()
}
