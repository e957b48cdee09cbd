//! `mq produce TOPIC [--tag T] [--key K]`: one message per stdin line, pipelined; one JSON
//! line per ack, in the order the acks arrive.

use std::io::Write;

use clap::Args;
use client::{Message, Producer, ProducerOptions, SendResult};
use tokio::io::AsyncBufReadExt;
use tokio::task::JoinSet;

use crate::CliResult;

#[derive(Debug, Args)]
pub(crate) struct ProduceArgs {
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
}

type Outcome = (u64, Result<SendResult, client::Error>);

pub(crate) async fn run(broker: &str, args: ProduceArgs) -> CliResult {
    // Pipelined even with a key: the broker stores the sends of one connection in the
    // order they arrive, and they are written in line order.
    let opts = ProducerOptions {
        max_in_flight: args.inflight,
    };
    let producer = Producer::connect(broker, opts).await?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut acks: JoinSet<Outcome> = JoinSet::new();
    let mut line_no = 0u64;
    let mut failed = Vec::new();
    let mut eof = false;
    let mut out = std::io::stdout().lock();
    while !eof || !acks.is_empty() {
        tokio::select! {
            biased;
            Some(done) = acks.join_next(), if !acks.is_empty() => {
                report(&mut out, done, &mut failed)?;
            }
            line = lines.next_line(), if !eof => {
                let Some(line) = line? else {
                    eof = true;
                    continue;
                };
                line_no += 1;
                let mut msg = Message::new(line.into_bytes());
                if let Some(t) = &args.tag {
                    msg = msg.with_tag(t);
                }
                if let Some(k) = &args.key {
                    msg = msg.with_keys(k);
                }
                let n = line_no;
                match producer.send_async(&args.topic, &msg).await {
                    Ok(handle) => {
                        acks.spawn(async move {
                            (n, handle.wait().await.and_then(|mut r| r.pop().ok_or(client::Error::InvalidArgument("no receipt".into()))))
                        });
                    }
                    Err(e) => failed.push((n, e.to_string())),
                }
            }
        }
    }
    drop(out);
    producer.close().await;
    if failed.is_empty() {
        return Ok(());
    }
    failed.sort();
    let lines: Vec<String> = failed.iter().take(10).map(|(n, _)| n.to_string()).collect();
    Err(format!(
        "{} of {line_no} messages failed (lines {}{}): {}",
        failed.len(),
        lines.join(", "),
        if failed.len() > 10 { ", ..." } else { "" },
        failed[0].1
    )
    .into())
}

fn report(
    out: &mut impl Write,
    done: Result<Outcome, tokio::task::JoinError>,
    failed: &mut Vec<(u64, String)>,
) -> CliResult {
    match done? {
        (_, Ok(r)) => {
            let line = serde_json::json!({"msg_id": r.msg_id, "queue": r.queue_id, "offset": r.queue_offset});
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        (n, Err(e)) => {
            eprintln!("mq: line {n}: send failed: {e}");
            failed.push((n, e.to_string()));
        }
    }
    Ok(())
}
