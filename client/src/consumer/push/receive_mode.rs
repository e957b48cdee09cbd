//! The push consumer's receive mode: a handler per message over a [`SimpleConsumer`]
//! (per-message acknowledgement). `Ok` acks; `Err(Failure::Retry)` makes the message
//! invisible for the retry delay of its attempt under the group's retry policy, or a table
//! given to [`PushConsumer::start_receiving_with`] (it comes again then, with one more
//! attempt; past the policy's max attempts the broker dead-letters it); `Err(Failure::Reject)`
//! sends it to the dead-letter queue at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use super::PushConsumer;
use crate::consumer::simple::{LeasedMessage, SimpleConsumer};
use crate::error::Result;

/// Why a receive-mode handler did not process a message.
#[derive(Debug)]
pub enum Failure<E> {
    /// Try again later: the message is hidden for the retry delay of its attempt.
    Retry(E),
    /// The message is bad: straight to `%DLQ%<group>`, no further attempt.
    Reject(E),
}

/// RocketMQ's retry delays, 1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h: the
/// broker's default table.
pub const DEFAULT_RETRY_DELAYS_MS: [u64; 18] = [
    1_000, 5_000, 10_000, 30_000, 60_000, 120_000, 180_000, 240_000, 300_000, 360_000, 420_000,
    480_000, 540_000, 600_000, 1_200_000, 1_800_000, 3_600_000, 7_200_000,
];

/// The retry delay after failed attempt `attempt` (1-based): the table's entry, its last
/// past its end.
pub fn retry_delay(delays_ms: &[u64], attempt: u32) -> Duration {
    let i = (attempt.max(1) as usize - 1).min(delays_ms.len().saturating_sub(1));
    Duration::from_millis(delays_ms.get(i).copied().unwrap_or(1_000))
}

impl PushConsumer {
    /// Runs `handler` on messages received by `consumer`, at most `workers` at a time; a
    /// `Retry` waits the delay of the group's retry policy ([`SimpleConsumer::nack`]).
    pub fn start_receiving<F, Fut, E>(consumer: SimpleConsumer, workers: usize, handler: F) -> Self
    where
        F: Fn(LeasedMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), Failure<E>>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        Self::start_receiving_on(consumer, workers, None, handler)
    }

    /// [`PushConsumer::start_receiving`] with a retry delay table (ms per attempt) in place
    /// of the group's policy.
    pub fn start_receiving_with<F, Fut, E>(
        consumer: SimpleConsumer,
        workers: usize,
        retry_delays_ms: Vec<u64>,
        handler: F,
    ) -> Self
    where
        F: Fn(LeasedMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), Failure<E>>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        Self::start_receiving_on(consumer, workers, Some(retry_delays_ms), handler)
    }

    /// Starts the receive loop; `retry_delays_ms` `None` follows the group's policy.
    fn start_receiving_on<F, Fut, E>(
        consumer: SimpleConsumer,
        workers: usize,
        retry_delays_ms: Option<Vec<u64>>,
        handler: F,
    ) -> Self
    where
        F: Fn(LeasedMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), Failure<E>>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let stop = CancellationToken::new();
        // Receive mode has no pull events to report; the channel stays empty.
        let (_events_tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(
            Arc::new(consumer),
            workers.max(1),
            Arc::new(retry_delays_ms),
            Arc::new(handler),
            stop.clone(),
        ));
        Self { stop, task, events }
    }
}

async fn run<F, Fut, E>(
    consumer: Arc<SimpleConsumer>,
    workers: usize,
    delays: Arc<Option<Vec<u64>>>,
    handler: Arc<F>,
    stop: CancellationToken,
) -> Result<()>
where
    F: Fn(LeasedMessage) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), Failure<E>>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let pool = Arc::new(Semaphore::new(workers));
    let mut failures = 0u32;
    'outer: loop {
        // Receive only as many as there are free workers, so nothing waits leased.
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            p = Arc::clone(&pool).acquire_owned() => p,
        };
        let Ok(first) = permit else { break };
        let free = 1 + pool.available_permits().min(31);
        let got = tokio::select! {
            () = stop.cancelled() => break,
            got = consumer.receive(u32::try_from(free).unwrap_or(32)) => got,
        };
        let msgs = match got {
            Ok(m) => {
                failures = 0;
                m
            }
            Err(e) if e.is_retriable() => {
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, "receive failed, retrying");
                let pause = Duration::from_millis(50u64 << failures.min(6));
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
            Err(e) => return Err(e),
        };
        let mut first = Some(first);
        for msg in msgs {
            let permit = match first.take() {
                Some(p) => p,
                None => match Arc::clone(&pool).acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => break 'outer,
                },
            };
            let (c, h, d) = (
                Arc::clone(&consumer),
                Arc::clone(&handler),
                Arc::clone(&delays),
            );
            tokio::spawn(async move {
                let _permit = permit;
                handle(&c, &*h, &d, msg).await;
            });
        }
    }
    // Every permit back means every handler finished and acked, changed or rejected.
    let _ = pool
        .acquire_many(u32::try_from(workers).unwrap_or(u32::MAX))
        .await;
    consumer.close();
    Ok(())
}

async fn handle<F, Fut, E>(
    consumer: &SimpleConsumer,
    handler: &F,
    delays: &Option<Vec<u64>>,
    mut msg: LeasedMessage,
) where
    F: Fn(LeasedMessage) -> Fut,
    Fut: Future<Output = std::result::Result<(), Failure<E>>>,
    E: std::fmt::Display,
{
    let id = msg.message.msg_id();
    let outcome = match handler(msg.clone()).await {
        Ok(()) => consumer.ack(&msg).await,
        Err(Failure::Retry(e)) => match delays {
            Some(table) => {
                let delay = retry_delay(table, msg.delivery_attempt);
                tracing::debug!(msg_id = %id, error = %e, ?delay, "handler failed, retrying later");
                consumer.change_invisibility(&mut msg, delay).await
            }
            None => consumer.nack(&mut msg).await.map(|delay| {
                tracing::debug!(msg_id = %id, error = %e, ?delay, "handler failed, retrying later");
            }),
        },
        Err(Failure::Reject(e)) => {
            tracing::debug!(msg_id = %id, error = %e, "handler rejected the message");
            consumer.reject(&msg).await
        }
    };
    // A lost lease (it expired while the handler ran) only means the message comes again.
    if let Err(e) = outcome {
        tracing::warn!(msg_id = %id, error = %e, "outcome of a received message not recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_follow_the_table_and_stay_at_its_end() {
        let t = [100, 200, 300];
        let got: Vec<u64> = (0..6)
            .map(|a| retry_delay(&t, a).as_millis() as u64)
            .collect();
        assert_eq!(got, vec![100, 100, 200, 300, 300, 300]);
    }
}
