//! `mq consume TOPIC --group G ...`: one JSON line per message (acked after printing), or
//! `--exec CMD` run per message (exit 0 acks, 65 rejects to the dead-letter queue, other
//! non-zero nacks). Commits before exiting. With `--pop`, receives with per-message acks
//! instead (see `pop`); with `--ordered`, handles each queue in order under the broker's
//! queue lock (see `ordered`); with `--broadcast`, consumes every message as one instance
//! of a broadcast group, its progress in a local file.
//!
//! Ctrl-C or SIGTERM while a handler runs: the handler has its own process group (the
//! terminal's Ctrl-C does not reach it); mq sends it SIGTERM (SIGKILL at a second
//! signal), and its message is released, neither acked nor nacked: delivered again later
//! with the same attempt count.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use clap::Args;
use client::admin::Admin;
use client::BroadcastOptions;
use client::{ConsumerEvent, ConsumerOptions, Delivery, PullConsumer, ReceivedMessage, StartFrom};
use protocol::names::{dlq_topic, RETRY_PREFIX};
use protocol::properties;
use tokio::io::AsyncWriteExt;

use crate::{CliResult, Signals};

mod ordered;
mod pop;

/// Exit status of an `--exec` handler that rejects its message (EX_DATAERR: the message
/// is bad): it goes to the dead-letter queue at once.
const EXIT_REJECT: i32 = 65;

#[derive(Debug, Args)]
pub(crate) struct ConsumeArgs {
    /// Topic to consume (or another group's dead-letter queue, %DLQ%OTHER).
    topic: String,
    /// Consumer group.
    #[arg(long)]
    group: String,
    /// Tag expression: `*`, `a`, or `a || b`.
    #[arg(long, default_value = "*")]
    tag: String,
    /// Where a group without a committed offset starts: earliest, latest or TIMESTAMP_MS
    /// (default earliest; latest with --broadcast).
    #[arg(long, value_parser = crate::parse_start)]
    from: Option<StartFrom>,
    /// Stop after this many messages.
    #[arg(long)]
    max: Option<u64>,
    /// Stop after this many ms without a message.
    #[arg(long)]
    idle_exit_ms: Option<u64>,
    /// Run this command (via `sh -c`) per message, body on stdin; exit 0 acks, 65 rejects
    /// to the dead-letter queue, other non-zero nacks.
    #[arg(long)]
    exec: Option<String>,
    /// With --exec: attempts before a message goes to the dead-letter queue.
    #[arg(long)]
    max_reconsume: Option<u32>,
    /// Receive with per-message acks (leases) instead of owning queues: any number of
    /// such consumers share the group's work, even on a one-queue topic.
    #[arg(long)]
    pop: bool,
    /// With --pop: how long a received message stays invisible to others, in ms.
    #[arg(long, default_value_t = 30_000, requires = "pop")]
    invisible_ms: u64,
    /// Ordered consumption: each queue's messages one at a time, in send order, under the
    /// broker's lock on the queue; a failing --exec is retried in place after the retry
    /// delay (not through the retry topic), and past --max-reconsume attempts (default 16)
    /// goes to the dead-letter queue.
    #[arg(long, conflicts_with_all = ["pop", "broadcast"])]
    ordered: bool,
    /// With --ordered: the in-place retry delays in ms, comma-separated, the last one
    /// repeated (default the broker's table: 1000,5000,10000,30000,...).
    #[arg(long, value_delimiter = ',', requires = "ordered")]
    retry_delays_ms: Option<Vec<u64>>,
    /// Broadcast consumption: this instance gets every message of the topic, whatever
    /// other instances of the group do; its progress lives in --progress-file, and a new
    /// instance starts at the latest message. A failing --exec is not retried.
    #[arg(long, conflicts_with = "pop")]
    broadcast: bool,
    /// With --broadcast: this instance's progress file, one per instance (default
    /// `mq-broadcast-GROUP.progress` in the current directory).
    #[arg(long, requires = "broadcast")]
    progress_file: Option<std::path::PathBuf>,
}

pub(crate) async fn run(broker: &str, args: ConsumeArgs) -> CliResult {
    reserved_topic_hint(&args.topic, &args.group)?;
    let mut stop = Signals::new()?;
    if args.pop {
        return pop::run(broker, &args, &mut stop).await;
    }
    if args.ordered {
        return ordered::run(broker, &args, &mut stop).await;
    }
    let opts = ConsumerOptions {
        start_from: args.from.unwrap_or(StartFrom::Earliest),
        max_reconsume_times: args.max_reconsume,
        heartbeat_interval: Duration::from_millis(1000),
        long_poll_ms: 1000,
        ..ConsumerOptions::default()
    };
    let connect = async {
        // A topic that does not exist is a mistake to report, not a reason to wait silently
        // (and auto-creation happens on the first send, never on a subscription).
        Admin::connect(broker).await?.get_topic(&args.topic).await?;
        let subscriptions = [(args.topic.as_str(), args.tag.as_str())];
        if args.broadcast {
            let broadcast = BroadcastOptions {
                progress_file: args
                    .progress_file
                    .clone()
                    .unwrap_or_else(|| format!("mq-broadcast-{}.progress", args.group).into()),
                start_from: args.from.unwrap_or(StartFrom::Latest),
            };
            PullConsumer::connect_broadcast(broker, &args.group, &subscriptions, opts, broadcast)
                .await
        } else {
            PullConsumer::connect(broker, &args.group, &subscriptions, opts).await
        }
    };
    // A signal while the broker is still being reached stops at once: nothing to commit.
    let mut consumer = tokio::select! {
        name = stop.recv() => {
            return Err(format!("interrupted by {name} while connecting to the broker at {broker}").into());
        }
        consumer = connect => consumer?,
    };
    let result = consume_loop(&mut consumer, &args, &mut stop).await;
    let closed = consumer.close().await;
    result?;
    closed?;
    Ok(())
}

/// A retry topic, or the group's own dead-letter queue, is not consumed directly: say what
/// to use instead.
fn reserved_topic_hint(topic: &str, group: &str) -> CliResult {
    if topic == dlq_topic(group) {
        return Err(format!(
            "{topic} is the dead-letter queue of group {group}: list it with `mq dlq show {group}`, \
             replay it with `mq dlq resend {group}`, or consume it with another group (a repair job)"
        )
        .into());
    }
    if topic.starts_with(RETRY_PREFIX) {
        return Err(format!(
            "{topic} is a retry topic: every consumer of its group consumes it on its own"
        )
        .into());
    }
    Ok(())
}

async fn consume_loop(
    consumer: &mut PullConsumer,
    args: &ConsumeArgs,
    stop: &mut Signals,
) -> CliResult {
    let mut seen = 0u64;
    let idle = args.idle_exit_ms.map(Duration::from_millis);
    let mut out = std::io::stdout();
    while !matches!(args.max, Some(max) if seen >= max) {
        let next = tokio::select! {
            _ = stop.recv() => break,
            d = async {
                match idle {
                    Some(d) => tokio::time::timeout(d, consumer.recv_delivery()).await.ok().flatten(),
                    None => consumer.recv_delivery().await,
                }
            } => d,
        };
        let msg = match next {
            None => break,
            Some(Delivery::Message(m)) => m,
            Some(Delivery::Event(e)) => match e {
                // Data loss from the user's point of view: say so, with the range, and go on.
                ConsumerEvent::Skipped { .. } => {
                    eprintln!("mq: warning: {e}");
                    continue;
                }
                // A refused pull would leave the queue silent: stop with the reason.
                _ => return Err(e.to_string().into()),
            },
        };
        seen += 1;
        match &args.exec {
            Some(cmd) => match exec(cmd, &msg, stop).await? {
                Handled::Succeeded => consumer.ack(&msg),
                // Broadcast messages are not retried: every instance would get the retry.
                Handled::Failed | Handled::Rejected if consumer.is_broadcast() => {
                    eprintln!(
                        "mq: warning: handler failed on {}; broadcast messages are not retried",
                        msg.msg_id()
                    );
                    consumer.ack(&msg);
                }
                Handled::Failed => consumer.nack(&msg).await?,
                Handled::Rejected => consumer.reject(&msg).await?,
                // Neither acked nor nacked: delivered again later, no attempt used.
                Handled::Interrupted => {
                    eprintln!(
                        "mq: stopped while handling {}; released without counting an attempt",
                        msg.msg_id()
                    );
                    break;
                }
            },
            None => {
                let mut line = serde_json::to_vec(&to_json(&msg))?;
                line.push(b'\n');
                out.write_all(&line)?;
                out.flush()?;
                consumer.ack(&msg);
            }
        }
    }
    Ok(())
}

/// Queue and offset of the message in its topic: for a retry (delivered from
/// `%RETRY%G`), those of the original message, so that topic, queue, offset and msg_id
/// all name the same message whatever the attempt.
pub(crate) fn position(msg: &ReceivedMessage) -> (u32, u64) {
    if msg.is_retry() {
        let queue = msg
            .property(properties::ORIGIN_QUEUE_ID)
            .and_then(|q| q.parse().ok());
        let offset = msg
            .property(properties::ORIGIN_QUEUE_OFFSET)
            .and_then(|o| o.parse().ok());
        if let (Some(queue), Some(offset)) = (queue, offset) {
            return (queue, offset);
        }
    }
    (msg.queue_id(), msg.queue_offset())
}

/// The JSON form of a message (a contract: these field names).
pub(crate) fn to_json(msg: &ReceivedMessage) -> serde_json::Value {
    let (queue, offset) = position(msg);
    // Fields in this order (serde_json's preserve_order keeps it).
    let mut v = serde_json::json!({
        "topic": msg.topic(),
        "queue": queue,
        "offset": offset,
        "msg_id": msg.msg_id(),
        "reconsume_times": msg.reconsume_times(),
        "tag": msg.tag(),
        "key": msg.keys(),
    });
    // User properties only (those the broker sets are shown as the fields above); added
    // only when the message has some, so existing output is unchanged.
    let user: serde_json::Map<String, serde_json::Value> =
        properties::Properties::new(msg.properties())
            .iter()
            .map_while(Result::ok)
            .filter(|(k, _)| !properties::is_system(k))
            .map(|(k, v)| (k.to_owned(), v.into()))
            .collect();
    if !user.is_empty() {
        v["properties"] = user.into();
    }
    match std::str::from_utf8(msg.body()) {
        Ok(text) => v["body"] = text.into(),
        Err(_) => {
            v["body_b64"] = base64::engine::general_purpose::STANDARD
                .encode(msg.body())
                .into();
        }
    }
    v
}

/// How a handler run ended.
enum Handled {
    /// Exit status 0: ack.
    Succeeded,
    /// Any other exit: nack (an attempt is used).
    Failed,
    /// Exit 65: the message is bad; to the dead-letter queue.
    Rejected,
    /// Stopped by mq's own shutdown (Ctrl-C, SIGTERM): not the handler's failure, so the
    /// message is released without an attempt.
    Interrupted,
}

/// Runs the command for one message in a process group of its own, so that a Ctrl-C at
/// the terminal reaches only mq; mq then ends the handler itself and releases the message.
async fn exec(cmd: &str, msg: &ReceivedMessage, stop: &mut Signals) -> CliResult<Handled> {
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
            let status = status?;
            return Ok(match status.code() {
                Some(0) => Handled::Succeeded,
                Some(EXIT_REJECT) => Handled::Rejected,
                _ => Handled::Failed,
            });
        }
        _ = stop.recv() => {}
    }
    // Asked to stop: SIGTERM to the handler's group, SIGKILL at a second signal.
    signal_group(&child, Signal::Term);
    tokio::select! {
        status = child.wait() => { status?; }
        _ = stop.recv() => {
            signal_group(&child, Signal::Kill);
            child.wait().await?;
        }
    }
    Ok(Handled::Interrupted)
}

enum Signal {
    Term,
    Kill,
}

/// Signals the whole process group of a handler started with `process_group(0)`.
fn signal_group(child: &tokio::process::Child, signal: Signal) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let sig = match signal {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        };
        // SAFETY: kill(2) takes plain integers and touches no memory of ours; the group
        // id is that of a child not yet reaped, so it names no other process group.
        unsafe {
            libc::kill(-pid, sig);
        }
    }
    #[cfg(not(unix))]
    let _ = (child, signal);
}
