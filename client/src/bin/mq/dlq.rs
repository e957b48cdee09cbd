//! `mq dlq show G` and `mq dlq resend G`: the dead-letter topic `%DLQ%G`, read with plain
//! pulls under group G, which also keeps the resend progress.

use client::admin::Admin;
use client::{ConnectOptions, Connection, Message, Producer, ProducerOptions, ReceivedMessage};
use protocol::messages::{CommitOffsetRequest, PullRequest, PullStatus, QueueCommit};
use protocol::names::dlq_topic;
use protocol::properties::{self, PropertiesBuilder};
use protocol::Status;

use crate::CliResult;

/// Properties that describe a message's stay in retry/DLQ, dropped when it is resent.
const INTERNAL_PROPERTIES: &[&str] = &[
    properties::ORIGIN_TOPIC,
    properties::ORIGIN_MSG_ID,
    properties::ORIGIN_QUEUE_ID,
    properties::ORIGIN_QUEUE_OFFSET,
    properties::REAL_TOPIC,
    properties::REAL_QUEUE_ID,
    properties::DUE_AT_MS,
    properties::DELAY_LEVEL,
];

/// Every queue of the DLQ topic with where to start (committed offset, or min) and its end.
/// An unknown group is an error, not an empty dead-letter queue.
async fn dlq_queues(admin: &Admin, group: &str) -> CliResult<Vec<(u32, u64, u64)>> {
    let topic = dlq_topic(group);
    let info = match admin.get_topic(&topic).await {
        Ok(t) => t,
        Err(e) if e.status() == Some(Status::TopicNotFound) => {
            let g = admin.group_info(group).await?;
            if g.queues.is_empty() && g.members.is_empty() {
                return Err(format!(
                    "unknown group {group}: it has no committed offsets and no live members"
                )
                .into());
            }
            return Ok(Vec::new());
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for q in info.queues {
        let committed = admin.committed(group, &topic, q.queue_id).await?;
        let from = committed.map_or(q.min_offset, |c| c.offset.max(q.min_offset));
        out.push((q.queue_id, from, q.max_offset));
    }
    Ok(out)
}

/// Pulls `[from, to)` of one queue, at most `max` messages.
async fn pull_range(
    conn: &Connection,
    group: &str,
    queue_id: u32,
    from: u64,
    to: u64,
    max: u64,
) -> CliResult<Vec<ReceivedMessage>> {
    let topic = dlq_topic(group);
    let mut out = Vec::new();
    let mut offset = from;
    while offset < to && (out.len() as u64) < max {
        let req = PullRequest {
            topic: topic.clone(),
            queue_id,
            group: group.to_string(),
            offset,
            max_messages: 256,
            max_bytes: 8 << 20,
            tag_expr: "*".into(),
            max_wait_ms: 0,
        };
        let (resp, body) = conn.call(&req, &[]).await?;
        match resp.status {
            PullStatus::Found => {}
            PullStatus::OffsetBelowMin => {
                offset = resp.min_offset;
                continue;
            }
            PullStatus::NoNewMessage | PullStatus::OffsetPastMax => break,
        }
        let mut rest = body;
        for _ in 0..resp.count {
            if rest.is_empty() || (out.len() as u64) >= max {
                break;
            }
            let m = ReceivedMessage::decode(&rest)?;
            bytes::Buf::advance(&mut rest, m.record_len());
            out.push(m);
        }
        offset = out
            .last()
            .map_or(resp.next_offset, |m| m.queue_offset() + 1)
            .max(offset + 1);
    }
    Ok(out)
}

pub(crate) async fn show(broker: &str, group: &str, max: Option<u64>) -> CliResult {
    let admin = Admin::connect(broker).await?;
    let mut left = max.unwrap_or(u64::MAX);
    for (queue_id, from, to) in dlq_queues(&admin, group).await? {
        let msgs = pull_range(admin.connection(), group, queue_id, from, to, left).await?;
        left -= msgs.len() as u64;
        for m in &msgs {
            let mut v = crate::consume::to_json(m);
            v["topic"] = m.stored_topic().into();
            v["msg_id"] = m.delivered_msg_id().into();
            v["origin_topic"] = m.property(properties::ORIGIN_TOPIC).into();
            v["origin_msg_id"] = m.property(properties::ORIGIN_MSG_ID).into();
            println!("{v}");
        }
    }
    Ok(())
}

pub(crate) async fn resend(broker: &str, group: &str, max: Option<u64>) -> CliResult {
    let conn = Connection::connect(broker, ConnectOptions::default()).await?;
    let admin = Admin::new(conn.clone());
    let producer = Producer::with_connection(conn.clone(), ProducerOptions::default());
    let mut left = max.unwrap_or(u64::MAX);
    let mut resent = 0u64;
    for (queue_id, from, to) in dlq_queues(&admin, group).await? {
        let msgs = pull_range(&conn, group, queue_id, from, to, left).await?;
        left -= msgs.len() as u64;
        for m in &msgs {
            let Some(origin) = m.property(properties::ORIGIN_TOPIC) else {
                eprintln!(
                    "mq: dlq message {} has no {} property; skipped",
                    m.delivered_msg_id(),
                    properties::ORIGIN_TOPIC
                );
                continue;
            };
            let props = PropertiesBuilder::without(m.properties(), INTERNAL_PROPERTIES)?;
            let mut msg = Message::new(m.body_bytes()).with_properties_blob(props.as_bytes());
            if let Some(keys) = m.keys() {
                // with_keys sets the routing hash; the blob (which holds KEYS already) is
                // put back so the property is not doubled.
                msg = msg.with_keys(keys).with_properties_blob(props.as_bytes());
            }
            producer.send(origin, &msg).await?;
            resent += 1;
        }
        if let Some(last) = msgs.last() {
            let req = CommitOffsetRequest {
                group: group.to_string(),
                commits: vec![QueueCommit {
                    topic: dlq_topic(group),
                    queue_id,
                    offset: last.queue_offset() + 1,
                    acked_above: Vec::new(),
                }],
                reset_epoch: None,
            };
            conn.call(&req, &[]).await?;
        }
    }
    println!(
        "resent {} from {}",
        crate::admin_cmds::plural(resent, "message"),
        dlq_topic(group)
    );
    Ok(())
}
