//! Copies for per-message acknowledgement (`crate::pop`): a message whose lease ended
//! without an ack goes to the group's retry topic at once, visible again with one more
//! attempt, or to its dead-letter queue past the last attempt; a rejected one goes to the
//! dead-letter queue. Same copy rules as a send-back, without the delay.

use commitlog::RecordRef;
use protocol::names::{dlq_topic, retry_topic};

use super::RetryService;
use crate::retry::copy::{copy_properties, Origin};
use crate::retry::RetryError;
use crate::store::{MessageId, PutMessage};

/// Where a redelivered message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Redelivered {
    /// To `%RETRY%<group>` with this many reconsume times.
    Retry(u32),
    /// To `%DLQ%<group>`.
    DeadLettered,
}

impl RetryService {
    /// Writes the next attempt of `record` to the group's retry topic (queue 0), or to its
    /// dead-letter queue when that attempt would pass the group's max reconsume times (or
    /// when `reject`). Blocking: call it from a blocking thread.
    ///
    /// # Errors
    /// Properties that do not decode; store failures.
    pub(crate) fn redeliver(
        &self,
        group: &str,
        record: &RecordRef,
        reject: bool,
    ) -> Result<Redelivered, RetryError> {
        let view = record.view();
        let id = MessageId::new(record.offset(), record.size()).to_text();
        let copy = copy_properties(
            view.properties(),
            &Origin {
                topic: view.topic(),
                msg_id: id.clone(),
                queue_id: view.queue_id(),
                queue_offset: view.queue_offset(),
            },
        )
        .map_err(|source| RetryError::BadProperties { id, source })?
        .build();
        let reconsume_times = view.reconsume_times().saturating_add(1);
        let max = self
            .group_max_reconsume_times(group)
            .unwrap_or(self.shared.config.max_reconsume_times);
        let dead = reject || reconsume_times > max;
        let msg = PutMessage {
            properties: &copy,
            body: view.body(),
            born_timestamp_ms: view.born_timestamp_ms(),
            // A rejected message keeps its count: it was not retried.
            reconsume_times: if reject {
                view.reconsume_times()
            } else {
                reconsume_times
            },
        };
        if dead {
            self.shared
                .put(&dlq_topic(group), 0, &[msg], "dead-lettering into")?;
            Ok(Redelivered::DeadLettered)
        } else {
            self.shared
                .put(&retry_topic(group), 0, &[msg], "redelivering into")?;
            Ok(Redelivered::Retry(reconsume_times))
        }
    }
}
