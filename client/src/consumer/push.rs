//! A push-style consumer: runs a handler per message on a bounded worker pool over a
//! [`PullConsumer`]. `Ok` acks the message, `Err` nacks it (a later retry).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

mod ordered;
mod receive_mode;

pub use ordered::OrderedOptions;
pub(crate) use ordered::{lock_queues, unlock_queues};
pub use receive_mode::{retry_delay, Failure, DEFAULT_RETRY_DELAYS_MS};

use super::{ConsumerEvent, Delivery, PullConsumer};
use crate::error::Result;
use crate::message::ReceivedMessage;

/// A running push consumer. Dropping it without [`PushConsumer::close`] stops it without
/// a final commit.
pub struct PushConsumer {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<()>>,
    events: mpsc::UnboundedReceiver<ConsumerEvent>,
}

impl PushConsumer {
    /// Starts delivering messages of `consumer` to `handler`, at most `workers` at a time.
    pub fn start<F, Fut, E>(consumer: PullConsumer, workers: usize, handler: F) -> Self
    where
        F: Fn(ReceivedMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let stop = CancellationToken::new();
        let (events_tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(
            consumer,
            workers.max(1),
            Arc::new(handler),
            stop.clone(),
            events_tx,
        ));
        Self { stop, task, events }
    }

    /// The next event of the underlying consumer (skipped messages, refused pulls); `None`
    /// once the consumer has stopped.
    pub async fn next_event(&mut self) -> Option<ConsumerEvent> {
        self.events.recv().await
    }

    /// An event already reported, if any, without waiting.
    pub fn try_event(&mut self) -> Option<ConsumerEvent> {
        self.events.try_recv().ok()
    }

    /// Stops taking messages, waits for running handlers, then commits and leaves.
    ///
    /// # Errors
    /// As [`PullConsumer::close`].
    pub async fn close(self) -> Result<()> {
        self.stop.cancel();
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(crate::Error::InvalidArgument(format!(
                "push consumer task failed: {e}"
            ))),
        }
    }
}

async fn run<F, Fut, E>(
    mut consumer: PullConsumer,
    workers: usize,
    handler: Arc<F>,
    stop: CancellationToken,
    events: mpsc::UnboundedSender<ConsumerEvent>,
) -> Result<()>
where
    F: Fn(ReceivedMessage) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let pool = Arc::new(Semaphore::new(workers));
    let acker = consumer.acker();
    // A broadcast instance does not retry (nobody consumes its retry topic for it).
    let broadcast = consumer.is_broadcast();
    loop {
        let msg = tokio::select! {
            () = stop.cancelled() => break,
            d = consumer.recv_delivery() => match d {
                Some(Delivery::Message(m)) => m,
                Some(Delivery::Event(e)) => {
                    // Nobody listening is the application's choice.
                    let _ = events.send(e);
                    continue;
                }
                None => break,
            },
        };
        let Ok(permit) = Arc::clone(&pool).acquire_owned().await else {
            break;
        };
        let handler = Arc::clone(&handler);
        let acker = acker.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match handler(msg.clone()).await {
                Ok(()) => acker.ack(&msg),
                Err(e) if broadcast => {
                    tracing::warn!(msg_id = %msg.msg_id(), error = %e, "broadcast handler failed; message dropped");
                    acker.ack(&msg);
                }
                Err(e) => {
                    tracing::debug!(msg_id = %msg.msg_id(), error = %e, "handler failed, nacking");
                    if let Err(e) = acker.nack(&msg).await {
                        tracing::error!(msg_id = %msg.msg_id(), error = %e, "nack refused");
                    }
                }
            }
        });
    }
    // Every permit back means every handler finished and acked or nacked.
    let _ = pool
        .acquire_many(u32::try_from(workers).unwrap_or(u32::MAX))
        .await;
    consumer.close().await
}
