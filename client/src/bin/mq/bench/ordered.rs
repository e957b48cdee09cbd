//! `mq bench consume --ordered` (and `--push`): drains the topic through a push consumer
//! whose handler only counts, either ordered (each queue one message at a time, under the
//! broker's queue lock) or parallel (a worker pool), so the two can be set side by side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::admin::Admin;
use client::{ConsumerOptions, Failure, OrderedOptions, PullConsumer, PushConsumer};
use tokio::sync::Notify;

use super::workloads::bench_group;
use super::{BenchArgs, Figures, Progress};
use crate::CliResult;

/// Handler tasks of the parallel push consumer.
const PUSH_WORKERS: usize = 64;

pub(crate) async fn consume(
    broker: &str,
    args: &BenchArgs,
    progress: &Progress,
) -> CliResult<Figures> {
    let info = Admin::connect(broker).await?.get_topic(&args.topic).await?;
    let stored: u64 = info
        .queues
        .iter()
        .map(|q| q.max_offset.saturating_sub(q.min_offset))
        .sum();
    let total = args.messages.unwrap_or(stored).min(stored);
    let opts = ConsumerOptions::high_throughput();
    let subscriptions = [(args.topic.as_str(), "*")];
    let count = Arc::new(Counted::default());
    let start = Instant::now();
    let push = if args.ordered {
        let consumer =
            PullConsumer::connect_ordered(broker, &bench_group(), &subscriptions, opts).await?;
        let (c, p) = (Arc::clone(&count), progress.clone());
        PushConsumer::start_ordered(consumer, OrderedOptions::default(), move |m| {
            c.add(m.body().len(), &p);
            async { Ok::<(), Failure<String>>(()) }
        })?
    } else {
        let consumer = PullConsumer::connect(broker, &bench_group(), &subscriptions, opts).await?;
        let (c, p) = (Arc::clone(&count), progress.clone());
        PushConsumer::start(consumer, PUSH_WORKERS, move |m| {
            c.add(m.body().len(), &p);
            async { Ok::<(), String>(()) }
        })
    };
    loop {
        let more = count.more.notified();
        let messages = count.messages.load(Ordering::Acquire);
        if messages >= total {
            break;
        }
        if tokio::time::timeout(Duration::from_secs(10), more)
            .await
            .is_err()
        {
            return Err(format!("consume stalled after {messages} of {total} messages").into());
        }
    }
    let elapsed = start.elapsed();
    push.close().await?;
    Ok(Figures {
        messages: count.messages.load(Ordering::Acquire),
        bytes: count.bytes.load(Ordering::Acquire),
        elapsed,
        latency: None,
    })
}

#[derive(Default)]
struct Counted {
    messages: AtomicU64,
    bytes: AtomicU64,
    more: Notify,
}

impl Counted {
    fn add(&self, bytes: usize, progress: &Progress) {
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.messages.fetch_add(1, Ordering::AcqRel);
        progress.add(1);
        self.more.notify_one();
    }
}
