//! `mq tx ...`: open, fill, commit and roll back a transaction from a shell, list the open
//! ones, and end any of them by id as an operator.
//!
//! `mq tx begin` prints the new id alone (for `TX=$(mq tx begin ...)`); the others print
//! one JSON line. A transaction begun from a shell is left to check-back when nobody
//! commits it: with no live producer of its group answering, it is rolled back after the
//! broker's `--tx-max-checks`.

use std::io::BufRead;

use clap::Subcommand;
use client::{ConnectOptions, Connection, Message, TxAdmin};

use crate::CliResult;

#[derive(Debug, Subcommand)]
pub(crate) enum TxCmd {
    /// Open a transaction; prints its id.
    Begin {
        /// Producer group whose live producers answer its check-backs.
        #[arg(long)]
        producer_group: String,
        /// Checked back once open longer than this, in ms [default: the broker's --tx-timeout-ms].
        #[arg(long, value_name = "MS")]
        timeout_ms: Option<u64>,
    },
    /// Add messages to a transaction: each BODY, or one per stdin line when none is given.
    Send {
        /// Transaction id.
        id: String,
        /// Topic the messages go to on commit.
        #[arg(long)]
        topic: String,
        /// Queue they go to.
        #[arg(long, default_value_t = 0)]
        queue: u32,
        /// Tag of every message.
        #[arg(long)]
        tag: Option<String>,
        /// Message bodies.
        body: Vec<String>,
    },
    /// Add acks of consumed messages: queue offsets of a group that consumes by offsets
    /// (with --topic and --queue), or receipt handles of messages a receive-mode (--pop)
    /// consumer of the group holds (--receipt, repeated).
    Ack {
        /// Transaction id.
        id: String,
        /// Consumer group.
        #[arg(long)]
        group: String,
        /// Topic of the queue (with OFFSET...).
        #[arg(long, requires = "queue")]
        topic: Option<String>,
        /// The queue (with OFFSET...).
        #[arg(long, requires = "topic")]
        queue: Option<u32>,
        /// A receipt handle acknowledged; repeat for several.
        #[arg(long = "receipt", value_name = "HANDLE", conflicts_with_all = ["topic", "queue", "offsets"])]
        receipts: Vec<client::ReceiptHandle>,
        /// Queue offsets acknowledged.
        #[arg(required_unless_present = "receipts", requires = "topic")]
        offsets: Vec<u64>,
    },
    /// Commit a transaction: its messages and acks take effect together.
    Commit {
        /// Transaction id.
        id: String,
    },
    /// Roll a transaction back: none of it takes effect.
    Rollback {
        /// Transaction id.
        id: String,
        /// Why; recorded with the decision.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Open transactions, oldest first: id, producer group, age, check-backs, contents.
    List,
}

async fn admin(broker: &str) -> CliResult<TxAdmin> {
    Ok(TxAdmin::new(
        Connection::connect(broker, ConnectOptions::default()).await?,
    ))
}

pub(crate) async fn run(broker: &str, cmd: TxCmd) -> CliResult {
    let tx = admin(broker).await?;
    match cmd {
        TxCmd::Begin {
            producer_group,
            timeout_ms,
        } => {
            println!("{}", tx.begin(&producer_group, timeout_ms).await?);
        }
        TxCmd::Send {
            id,
            topic,
            queue,
            tag,
            body,
        } => {
            let bodies = if body.is_empty() {
                std::io::stdin()
                    .lock()
                    .lines()
                    .collect::<Result<Vec<_>, _>>()?
            } else {
                body
            };
            if bodies.is_empty() {
                return Err("nothing to send: give bodies or lines on stdin".into());
            }
            let msgs: Vec<Message> = bodies
                .into_iter()
                .map(|b| {
                    let m = Message::new(b.into_bytes());
                    match &tag {
                        Some(t) => m.with_tag(t),
                        None => m,
                    }
                })
                .collect();
            let r = tx.send(&id, &topic, queue, &msgs).await?;
            println!(
                "{}",
                serde_json::json!({"tx_id": id, "first_index": r.first_index, "messages": r.messages})
            );
        }
        TxCmd::Ack {
            id,
            group,
            topic,
            queue,
            receipts,
            offsets,
        } => {
            let acks = match (topic, queue) {
                (Some(topic), Some(queue)) => tx.ack(&id, &group, &topic, queue, &offsets).await?,
                _ => tx.ack_receipts(&id, &group, &receipts).await?,
            };
            println!("{}", serde_json::json!({"tx_id": id, "acks": acks}));
        }
        TxCmd::Commit { id } => {
            let r = tx.commit(&id).await?;
            let ids: Vec<&str> = r.receipts.iter().map(|x| x.msg_id.as_str()).collect();
            println!(
                "{}",
                serde_json::json!({"tx_id": id, "status": "committed", "messages": r.receipts.len(), "acks": r.acks, "msg_ids": ids})
            );
        }
        TxCmd::Rollback { id, reason } => {
            tx.rollback(&id, reason).await?;
            println!(
                "{}",
                serde_json::json!({"tx_id": id, "status": "rolled_back"})
            );
        }
        TxCmd::List => {
            let open = tx.list().await?;
            if open.is_empty() {
                println!("no open transactions");
                return Ok(());
            }
            println!(
                "{:<16}  {:<20}  {:>9}  {:>6}  {:>8}  {:>5}",
                "ID", "PRODUCER GROUP", "AGE", "CHECKS", "MESSAGES", "ACKS"
            );
            for t in open {
                println!(
                    "{:<16}  {:<20}  {:>9}  {:>6}  {:>8}  {:>5}",
                    t.tx_id,
                    t.producer_group,
                    age(t.age_ms),
                    t.checks,
                    t.messages,
                    t.acks
                );
            }
        }
    }
    Ok(())
}

/// `850ms`, `12.3s`, `4m05s`, `2h03m`.
fn age(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}
