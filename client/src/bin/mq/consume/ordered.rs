//! `mq consume TOPIC --group G --ordered`: ordered consumption. Each queue's messages are
//! handled one at a time in send order (different queues in parallel) under the broker's
//! lock on the queue; prints the same JSON lines as `mq consume`, or runs `--exec CMD` per
//! message: exit 0 acks, 65 sends the message to the dead-letter queue at once, any other
//! status runs it again in place after the retry delay (blocking its queue) until
//! `--max-reconsume` failures, then dead-letters it. Stopped by a signal while a handler
//! runs, the handler gets SIGTERM and its message is left for the queue's next owner.

use std::io::Write;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::admin::Admin;
use client::consumer::DEFAULT_RETRY_DELAYS_MS;
use client::{
    ConsumerOptions, Failure, OrderedOptions, PullConsumer, PushConsumer, ReceivedMessage,
    StartFrom,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{position, signal_group, to_json, ConsumeArgs, Signal, EXIT_REJECT};
use crate::{CliResult, Signals};

pub(super) async fn run(broker: &str, args: &ConsumeArgs, stop: &mut Signals) -> CliResult {
    let opts = ConsumerOptions {
        start_from: args.from.unwrap_or(StartFrom::Earliest),
        heartbeat_interval: Duration::from_millis(1000),
        long_poll_ms: 1000,
        ..ConsumerOptions::default()
    };
    let connect = async {
        Admin::connect(broker).await?.get_topic(&args.topic).await?;
        let subscriptions = [(args.topic.as_str(), args.tag.as_str())];
        PullConsumer::connect_ordered(broker, &args.group, &subscriptions, opts).await
    };
    let consumer = tokio::select! {
        name = stop.recv() => {
            return Err(format!("interrupted by {name} while connecting to the broker at {broker}").into());
        }
        c = connect => c?,
    };
    let ordered = OrderedOptions {
        retry_delays_ms: args
            .retry_delays_ms
            .clone()
            .unwrap_or_else(|| DEFAULT_RETRY_DELAYS_MS.to_vec()),
        max_reconsume_times: args.max_reconsume.unwrap_or(16),
    };
    let state = Arc::new(State {
        exec: args.exec.clone(),
        max: args.max,
        started: AtomicU64::new(0),
        finished: AtomicU64::new(0),
        activity: Notify::new(),
        interrupt: CancellationToken::new(),
    });
    let s = Arc::clone(&state);
    let push = PushConsumer::start_ordered(consumer, ordered, move |msg| {
        let s = Arc::clone(&s);
        async move { s.handle(msg).await }
    })?;
    let idle = args.idle_exit_ms.map(Duration::from_millis);
    loop {
        if state.max_reached() {
            break;
        }
        let activity = state.activity.notified();
        tokio::select! {
            _ = stop.recv() => break,
            woke = async {
                match idle {
                    Some(d) => tokio::time::timeout(d, activity).await.is_ok(),
                    None => { activity.await; true }
                }
            } => if !woke { break },
        }
    }
    // Handlers still running get SIGTERM; their messages stay for the next owner.
    state.interrupt.cancel();
    push.close().await?;
    Ok(())
}

struct State {
    exec: Option<String>,
    max: Option<u64>,
    /// Handler runs started (retries included), for --max.
    started: AtomicU64,
    /// Handler runs finished, for --max: mq stops once the last allowed run finished.
    finished: AtomicU64,
    /// Fired as each handler run starts and ends, for --idle-exit-ms and --max.
    activity: Notify,
    /// Cancelled when mq stops: a running --exec gets SIGTERM.
    interrupt: CancellationToken,
}

impl State {
    fn max_reached(&self) -> bool {
        self.max
            .is_some_and(|m| self.finished.load(Ordering::Acquire) >= m)
    }

    async fn handle(&self, msg: ReceivedMessage) -> Result<(), Failure<String>> {
        if self.interrupt.is_cancelled() {
            return Err(Failure::Retry("mq is stopping".into()));
        }
        let n = self.started.fetch_add(1, Ordering::AcqRel);
        if self.max.is_some_and(|m| n >= m) {
            // Past --max: left unacked for the next run rather than handled.
            return Err(Failure::Retry("mq is stopping".into()));
        }
        self.activity.notify_one();
        let outcome = self.run(msg).await;
        self.finished.fetch_add(1, Ordering::AcqRel);
        self.activity.notify_one();
        outcome
    }

    async fn run(&self, msg: ReceivedMessage) -> Result<(), Failure<String>> {
        let Some(cmd) = &self.exec else {
            let print = || -> std::io::Result<()> {
                let mut line = serde_json::to_vec(&to_json(&msg))?;
                line.push(b'\n');
                let mut out = std::io::stdout().lock();
                out.write_all(&line)?;
                out.flush()
            };
            return print().map_err(|e| Failure::Retry(format!("cannot print: {e}")));
        };
        match run_exec(cmd, &msg, &self.interrupt).await {
            Ok(Some(0)) => Ok(()),
            Ok(Some(EXIT_REJECT)) => Err(Failure::Reject(format!("{cmd:?} rejected it"))),
            Ok(status) => Err(Failure::Retry(format!("{cmd:?} failed ({status:?})"))),
            Err(e) => Err(Failure::Retry(e)),
        }
    }
}

/// Runs the command for one message in its own process group; its exit code (`None`:
/// killed by a signal, or by mq's own stop).
async fn run_exec(
    cmd: &str,
    msg: &ReceivedMessage,
    interrupt: &CancellationToken,
) -> Result<Option<i32>, String> {
    let (queue, offset) = position(msg);
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(cmd)
        .env("MQ_TOPIC", msg.topic())
        .env("MQ_MSG_ID", msg.msg_id())
        .env("MQ_RECONSUME_TIMES", msg.reconsume_times().to_string())
        .env("MQ_QUEUE", queue.to_string())
        .env("MQ_OFFSET", offset.to_string())
        .stdin(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin closes the pipe early: not an error.
        let _ = stdin.write_all(msg.body()).await;
    }
    tokio::select! {
        status = child.wait() => {
            return status.map(|s| s.code()).map_err(|e| e.to_string());
        }
        () = interrupt.cancelled() => {}
    }
    signal_group(&child, Signal::Term);
    child.wait().await.map_err(|e| e.to_string())?;
    Ok(None)
}
