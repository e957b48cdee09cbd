//! `mq topic ...`, `mq group ...`, `mq stats`.

use client::admin::Admin;
use protocol::messages::{ResetTarget, PERM_READ, PERM_WRITE};

use crate::CliResult;

fn perm_text(perm: u8) -> String {
    let r = if perm & PERM_READ != 0 { "r" } else { "-" };
    let w = if perm & PERM_WRITE != 0 { "w" } else { "-" };
    format!("{r}{w}")
}

pub(crate) async fn topic_create(broker: &str, name: &str, queues: u32) -> CliResult {
    let t = Admin::connect(broker)
        .await?
        .create_topic(name, queues)
        .await?;
    println!("created topic {} with {} queues", t.name, t.queue_count);
    Ok(())
}

pub(crate) async fn topic_list(broker: &str, all: bool) -> CliResult {
    let mut topics = Admin::connect(broker).await?.list_topics(all).await?;
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    println!(
        "{:<40} {:>6} {:>4} {:>14}",
        "TOPIC", "QUEUES", "PERM", "MESSAGES"
    );
    for t in topics {
        let msgs: u64 = t
            .queues
            .iter()
            .map(|q| q.max_offset - q.min_offset.min(q.max_offset))
            .sum();
        println!(
            "{:<40} {:>6} {:>4} {:>14}",
            t.name,
            t.queue_count,
            perm_text(t.perm),
            msgs
        );
    }
    Ok(())
}

pub(crate) async fn topic_show(broker: &str, name: &str) -> CliResult {
    let t = Admin::connect(broker).await?.get_topic(name).await?;
    println!(
        "topic {}  queues {}  perm {}",
        t.name,
        t.queue_count,
        perm_text(t.perm)
    );
    println!("{:>6} {:>14} {:>14}", "QUEUE", "MIN_OFFSET", "MAX_OFFSET");
    for q in t.queues {
        println!(
            "{:>6} {:>14} {:>14}",
            q.queue_id, q.min_offset, q.max_offset
        );
    }
    Ok(())
}

pub(crate) async fn group_show(broker: &str, group: &str) -> CliResult {
    let mut info = Admin::connect(broker).await?.group_info(group).await?;
    info.queues
        .sort_by(|a, b| (&a.topic, a.queue_id).cmp(&(&b.topic, b.queue_id)));
    println!("group {}", info.group);
    println!(
        "{:<40} {:>6} {:>14} {:>14} {:>10}",
        "TOPIC", "QUEUE", "COMMITTED", "MAX_OFFSET", "LAG"
    );
    let mut total_lag = 0;
    for q in &info.queues {
        let committed = q
            .committed
            .map_or_else(|| "-".to_string(), |c| c.to_string());
        println!(
            "{:<40} {:>6} {:>14} {:>14} {:>10}",
            q.topic, q.queue_id, committed, q.max_offset, q.lag
        );
        total_lag += q.lag;
    }
    println!("total lag {total_lag}");
    println!("members ({})", info.members.len());
    for m in &info.members {
        let queues: Vec<String> = m
            .assignment
            .iter()
            .filter(|a| !a.queue_ids.is_empty())
            .map(|a| format!("{}:{:?}", a.topic, a.queue_ids))
            .collect();
        println!("  {}  {}", m.client_id, queues.join(" "));
    }
    Ok(())
}

pub(crate) async fn group_reset(
    broker: &str,
    group: &str,
    topic: &str,
    to: ResetTarget,
    force: bool,
) -> CliResult {
    let queues = Admin::connect(broker)
        .await?
        .reset_offset(group, topic, to, force)
        .await?;
    for q in queues {
        println!("{} queue {} -> {}", q.topic, q.queue_id, q.offset);
    }
    Ok(())
}

pub(crate) async fn group_delete(broker: &str, group: &str, force: bool) -> CliResult {
    let r = Admin::connect(broker)
        .await?
        .delete_group(group, force)
        .await?;
    let topics = if r.topics.is_empty() {
        "no topics".to_string()
    } else {
        r.topics.join(", ")
    };
    println!(
        "deleted group {group}: offsets of {} queue(s), {topics}, {} live member(s) dropped",
        r.offsets, r.members
    );
    Ok(())
}

pub(crate) async fn stats(broker: &str) -> CliResult {
    let s = Admin::connect(broker).await?.stats().await?;
    println!("{}", serde_json::to_string_pretty(&s)?);
    Ok(())
}
