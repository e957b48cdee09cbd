//! Per-message acknowledgement from the shell, one step per command: `mq receive` leases
//! messages and prints them with their receipt handles (nothing is acked), then `mq ack`,
//! `mq change-invisibility` and `mq reject` settle them by handle, from this or any other
//! process, while the lease lasts. What a `SimpleConsumer` does in a program.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use client::admin::Admin;
use client::{ConnectOptions, Connection, ReceiptHandle, SimpleConsumer, SimpleConsumerOptions};
use protocol::receive::{AckMessagesRequest, ChangeInvisibilityRequest, RejectRequest};

use crate::consume::to_json;
use crate::CliResult;

/// `mq receive`.
#[derive(Debug, Args)]
pub(crate) struct ReceiveArgs {
    /// Topic to receive from (and the group's retry topic).
    topic: String,
    /// Consumer group; it must not also consume by offsets.
    #[arg(long)]
    group: String,
    /// Most messages to lease.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    max: u32,
    /// How long the messages stay leased to this receiver.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    invisible_ms: u64,
    /// How long to wait while nothing is ready (long polling).
    #[arg(long, default_value_t = 5_000)]
    wait_ms: u64,
    /// Tag filter: `*`, `a` or `a || b`.
    #[arg(long, default_value = "*")]
    tag: String,
}

/// Leases up to `--max` messages and prints one JSON line per message: the fields of
/// `mq consume` plus `receipt_handle`, `delivery_attempt` and `invisible_until_ms`.
pub(crate) async fn receive(broker: &str, args: ReceiveArgs) -> CliResult {
    Admin::connect(broker).await?.get_topic(&args.topic).await?;
    let opts = SimpleConsumerOptions {
        tag_expr: args.tag,
        invisible: Duration::from_millis(args.invisible_ms),
        wait: Duration::from_millis(args.wait_ms),
        ..SimpleConsumerOptions::default()
    };
    let c = SimpleConsumer::connect(broker, &args.group, &args.topic, opts).await?;
    let got = c.receive(args.max).await?;
    let mut out = std::io::stdout().lock();
    for m in &got {
        let mut v = to_json(&m.message);
        v["receipt_handle"] = m.receipt_handle.to_string().into();
        v["delivery_attempt"] = m.delivery_attempt.into();
        v["invisible_until_ms"] = m.invisible_until_ms.into();
        serde_json::to_writer(&mut out, &v)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    c.close();
    Ok(())
}

async fn connect(broker: &str) -> CliResult<Connection> {
    Ok(Connection::connect(broker, ConnectOptions::default()).await?)
}

/// Acks the handles in one request; one JSON line per handle. Fails when any was refused.
pub(crate) async fn ack(broker: &str, group: &str, handles: Vec<ReceiptHandle>) -> CliResult {
    let conn = connect(broker).await?;
    let req = AckMessagesRequest {
        group: group.to_owned(),
        receipt_handles: handles.clone(),
    };
    let refused = conn.call(&req, &[]).await?.0.refused;
    let mut out = std::io::stdout().lock();
    for (i, h) in handles.iter().enumerate() {
        let line = match refused.iter().find(|r| r.index as usize == i) {
            None => serde_json::json!({"receipt_handle": h.to_string(), "status": "acked"}),
            Some(r) => {
                serde_json::json!({"receipt_handle": h.to_string(), "status": "refused", "error": r.message})
            }
        };
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    if refused.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} receipt handles refused",
            refused.len(),
            handles.len()
        )
        .into())
    }
}

/// Moves a lease's deadline to `invisible_ms` from now (0: visible again at once, a nack);
/// prints the lease's new handle, which replaces the old one.
pub(crate) async fn change(
    broker: &str,
    group: &str,
    handle: ReceiptHandle,
    invisible_ms: u64,
) -> CliResult {
    let conn = connect(broker).await?;
    let req = ChangeInvisibilityRequest {
        group: group.to_owned(),
        receipt_handle: handle,
        invisible_ms,
    };
    let resp = conn.call(&req, &[]).await?.0;
    println!(
        "{}",
        serde_json::json!({
            "receipt_handle": resp.receipt_handle.to_string(),
            "invisible_until_ms": resp.invisible_until_ms,
        })
    );
    Ok(())
}

/// Sends a leased message to the group's dead-letter queue now.
pub(crate) async fn reject(broker: &str, group: &str, handle: ReceiptHandle) -> CliResult {
    let conn = connect(broker).await?;
    let req = RejectRequest {
        group: group.to_owned(),
        receipt_handle: handle,
    };
    conn.call(&req, &[]).await?;
    println!(
        "{}",
        serde_json::json!({"receipt_handle": handle.to_string(), "status": "rejected"})
    );
    Ok(())
}
