//! `mq consume TOPIC --group G --pop`: receive with per-message acks. Prints the same JSON
//! lines as `mq consume` plus `"delivery_attempt"`, acking each printed batch; or runs
//! `--exec CMD` per message: exit 0 acks, 65 rejects to the dead-letter queue, any other
//! status hides the message for the retry delay of its attempt under the group's retry
//! policy (it comes again then, to any consumer of the group; after its last attempt it
//! goes to the dead-letter queue). Stopped by a signal while a handler runs, the message is
//! made visible again at once.

use std::io::Write;
use std::time::{Duration, Instant};

use client::admin::Admin;
use client::{LeasedMessage, SimpleConsumer, SimpleConsumerOptions};

use super::{exec, to_json, ConsumeArgs, Handled};
use crate::{CliResult, Signals};

/// Messages received at once when printing; with --exec one at a time, so that no message
/// waits leased behind a slow handler.
const PRINT_BATCH: u64 = 32;
/// Longest a receive waits before mq checks its idle limit again.
const RECEIVE_WAIT: Duration = Duration::from_millis(1_000);

pub(super) async fn run(broker: &str, args: &ConsumeArgs, stop: &mut Signals) -> CliResult {
    let idle = args.idle_exit_ms.map(Duration::from_millis);
    let opts = SimpleConsumerOptions {
        tag_expr: args.tag.clone(),
        invisible: Duration::from_millis(args.invisible_ms.max(1)),
        wait: idle.map_or(RECEIVE_WAIT, |d| d.min(RECEIVE_WAIT)),
        ..SimpleConsumerOptions::default()
    };
    let connect = async {
        Admin::connect(broker).await?.get_topic(&args.topic).await?;
        SimpleConsumer::connect(broker, &args.group, &args.topic, opts).await
    };
    let consumer = tokio::select! {
        name = stop.recv() => {
            return Err(format!("interrupted by {name} while connecting to the broker at {broker}").into());
        }
        c = connect => c?,
    };
    let result = receive_loop(&consumer, args, stop).await;
    consumer.close();
    result
}

async fn receive_loop(
    consumer: &SimpleConsumer,
    args: &ConsumeArgs,
    stop: &mut Signals,
) -> CliResult {
    let idle = args.idle_exit_ms.map(Duration::from_millis);
    let mut seen = 0u64;
    let mut last = Instant::now();
    let mut out = std::io::stdout();
    loop {
        let left = args.max.map_or(u64::MAX, |m| m.saturating_sub(seen));
        if left == 0 {
            return Ok(());
        }
        let batch = if args.exec.is_some() { 1 } else { PRINT_BATCH };
        let got = tokio::select! {
            _ = stop.recv() => return Ok(()),
            got = consumer.receive(u32::try_from(left.min(batch)).unwrap_or(1)) => got?,
        };
        if got.is_empty() {
            if idle.is_some_and(|d| last.elapsed() >= d) {
                return Ok(());
            }
            continue;
        }
        last = Instant::now();
        seen += got.len() as u64;
        match &args.exec {
            None => {
                let mut handles = Vec::with_capacity(got.len());
                for m in got {
                    let mut line = serde_json::to_vec(&json(&m))?;
                    line.push(b'\n');
                    out.write_all(&line)?;
                    handles.push(m.receipt_handle);
                }
                out.flush()?;
                for r in consumer.ack_handles(handles).await? {
                    eprintln!(
                        "mq: warning: ack refused (the message comes again): {}",
                        r.message
                    );
                }
            }
            Some(cmd) => {
                for m in got {
                    if !run_one(consumer, cmd, m, stop).await? {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Runs the handler for one message and records its outcome; false when mq was asked to
/// stop meanwhile.
async fn run_one(
    consumer: &SimpleConsumer,
    cmd: &str,
    mut m: LeasedMessage,
    stop: &mut Signals,
) -> CliResult<bool> {
    let handled = exec(cmd, &m.message, stop).await?;
    let result = match handled {
        Handled::Succeeded => consumer.ack(&m).await,
        Handled::Rejected => consumer.reject(&m).await,
        Handled::Failed => consumer.nack(&mut m).await.map(drop),
        Handled::Interrupted => {
            // Its lease ends now: visible again at once, which (as any lease that ends
            // without an ack) counts as an attempt.
            consumer.change_invisibility(&mut m, Duration::ZERO).await?;
            eprintln!(
                "mq: stopped while handling {}; made visible again at once (counts as an attempt)",
                m.message.msg_id()
            );
            return Ok(false);
        }
    };
    if let Err(e) = result {
        // The lease ran out while the handler ran: the message is someone else's now.
        eprintln!(
            "mq: warning: outcome of {} not recorded: {e}",
            m.message.msg_id()
        );
    }
    Ok(true)
}

fn json(m: &LeasedMessage) -> serde_json::Value {
    let mut v = to_json(&m.message);
    v["delivery_attempt"] = m.delivery_attempt.into();
    v
}
