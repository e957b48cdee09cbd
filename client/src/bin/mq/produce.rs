//! `mq produce TOPIC [--tag T] [--key K] [--message-group G] [--property K=V]... [--deliver-at MS | --delay-ms MS]`: one message
//! per stdin line, pipelined; one JSON line per ack, in line order, each written as soon as
//! it and those before it are in. A timer message's ack line adds `deliver_at` and
//! `recall_handle` (for `mq recall`).

use std::io::Write;

use clap::Args;
use client::{DeliverAt, Message, Producer, ProducerOptions, SendResult};
use std::collections::VecDeque;
use tokio::io::AsyncBufReadExt;

use tokio::task::JoinHandle;

use crate::CliResult;

#[derive(Debug, Args)]
pub(crate) struct ProduceArgs {
    /// Topic to send to (created on the first send when the broker auto-creates topics).
    topic: String,
    /// Tag of every message.
    #[arg(long)]
    tag: Option<String>,
    /// Key of every message (messages with one key go to one queue, in order).
    #[arg(long)]
    key: Option<String>,
    /// Most sends awaiting their ack.
    #[arg(long, default_value_t = 256)]
    inflight: usize,
    /// Deliver each message at this wall-clock time (ms since the epoch; past = now).
    #[arg(long, value_name = "MS", conflicts_with = "delay_ms")]
    deliver_at: Option<u64>,
    /// Deliver each message this many ms after the broker receives it.
    #[arg(long, value_name = "MS")]
    delay_ms: Option<u64>,
    /// Message group of every message (e.g. an order id): receiving groups (`mq consume
    /// --pop`) get one message group's messages in send order, one at a time.
    #[arg(long, value_name = "G")]
    message_group: Option<String>,
    /// A user property of every message, `KEY=VALUE`; repeat for more (consumers of
    /// either protocol, `mq consume` and RocketMQ 5 clients, see them).
    #[arg(long = "property", value_name = "KEY=VALUE", value_parser = parse_property)]
    properties: Vec<(String, String)>,
}

/// `KEY=VALUE` into its parts; a key the broker reserves is refused.
fn parse_property(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    if k.is_empty() || protocol::properties::is_system(k) {
        return Err(format!(
            "property key {k:?} is empty or reserved for the broker"
        ));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// An ack: a plain send's receipt, or a timer send's.
enum Ack {
    Sent(SendResult),
    Timer(client::TimerReceipt),
}

type Outcome = Result<Ack, client::Error>;

/// `mq recall TOPIC HANDLE`: prints `{"status": ...}`.
pub(crate) async fn recall(broker: &str, topic: &str, handle: &str) -> CliResult {
    let producer = Producer::connect(broker, ProducerOptions::default()).await?;
    let status = producer.recall(topic, handle).await;
    producer.close().await;
    println!("{}", serde_json::json!({ "status": status? }));
    Ok(())
}

pub(crate) async fn run(broker: &str, args: ProduceArgs) -> CliResult {
    // Pipelined even with a key: the broker stores the sends of one connection in the
    // order they arrive, and they are written in line order.
    let opts = ProducerOptions {
        max_in_flight: args.inflight,
    };
    let producer = Producer::connect(broker, opts).await?;
    let at = match (args.deliver_at, args.delay_ms) {
        (Some(t), _) => Some(DeliverAt::TimestampMs(t)),
        (None, Some(d)) => Some(DeliverAt::DelayMs(d)),
        (None, None) => None,
    };
    // Lines as bytes: a body need not be UTF-8 (consumers print it as body_b64).
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut buf = Vec::new();
    // Each ack is awaited by a task of its own (so its in-flight permit is released as soon
    // as it arrives) and printed in line order: the front of this queue first.
    let mut acks: VecDeque<(u64, JoinHandle<Outcome>)> = VecDeque::new();
    let mut line_no = 0u64;
    let mut failed = Vec::new();
    let mut eof = false;
    let mut out = std::io::stdout().lock();
    while !eof || !acks.is_empty() {
        tokio::select! {
            biased;
            done = async {
                match acks.front_mut() {
                    Some((_, h)) => h.await,
                    None => std::future::pending().await,
                }
            }, if !acks.is_empty() => {
                if let Some((n, _)) = acks.pop_front() {
                    report(&mut out, n, done, &mut failed)?;
                }
            }
            read = stdin.read_until(b'\n', &mut buf), if !eof => {
                // 0 with bytes in buf: a last line without '\n' (partly read by a call
                // the ack branch preempted; read_until keeps what it read in buf).
                if read? == 0 && buf.is_empty() {
                    eof = true;
                    continue;
                }
                line_no += 1;
                let mut line = std::mem::take(&mut buf);
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                }
                let mut msg = Message::new(line);
                if let Some(t) = &args.tag {
                    msg = msg.with_tag(t);
                }
                if let Some(k) = &args.key {
                    msg = msg.with_keys(k);
                }
                if let Some(g) = &args.message_group {
                    msg = msg.with_message_group(g);
                }
                for (k, v) in &args.properties {
                    msg = msg.with_property(k, v);
                }
                let n = line_no;
                match send(&producer, &args.topic, &msg, at).await {
                    Ok(ack) => acks.push_back((n, ack)),
                    Err(e) => {
                        eprintln!("mq: line {n}: send failed: {e}");
                        failed.push(n);
                    }
                }
            }
        }
    }
    drop(out);
    producer.close().await;
    if failed.is_empty() {
        return Ok(());
    }
    // Each failure was printed with its reason as it happened: this only sums them up.
    failed.sort_unstable();
    let lines: Vec<String> = failed.iter().take(10).map(u64::to_string).collect();
    Err(format!(
        "{} of {line_no} messages failed (line{} {}{})",
        failed.len(),
        if failed.len() == 1 { "" } else { "s" },
        lines.join(", "),
        if failed.len() > 10 { ", ..." } else { "" },
    )
    .into())
}

/// Starts one send; the task resolves to its ack.
async fn send(
    producer: &Producer,
    topic: &str,
    msg: &Message,
    at: Option<DeliverAt>,
) -> Result<JoinHandle<Outcome>, client::Error> {
    let no_receipt = || client::Error::InvalidArgument("no receipt".into());
    Ok(match at {
        None => {
            let handle = producer.send_async(topic, msg).await?;
            tokio::spawn(async move {
                let mut r = handle.wait().await?;
                r.pop().map(Ack::Sent).ok_or_else(no_receipt)
            })
        }
        Some(at) => {
            let handle = producer.send_timer_async(topic, msg, at).await?;
            tokio::spawn(async move {
                let mut r = handle.wait().await?;
                r.pop().map(Ack::Timer).ok_or_else(no_receipt)
            })
        }
    })
}

fn report(
    out: &mut impl Write,
    n: u64,
    done: Result<Outcome, tokio::task::JoinError>,
    failed: &mut Vec<u64>,
) -> CliResult {
    match done? {
        Ok(ack) => {
            let line = match ack {
                Ack::Sent(r) => {
                    serde_json::json!({"msg_id": r.msg_id, "queue": r.queue_id, "offset": r.queue_offset})
                }
                Ack::Timer(r) => {
                    serde_json::json!({"msg_id": r.msg_id, "queue": r.queue_id, "deliver_at": r.deliver_at_ms, "recall_handle": r.recall_handle})
                }
            };
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        Err(e) => {
            eprintln!("mq: line {n}: send failed: {e}");
            failed.push(n);
        }
    }
    Ok(())
}
