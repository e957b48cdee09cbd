//! `mq topic ...`, `mq group ...`, `mq stats`.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;

use client::admin::Admin;
use protocol::group_policy::{GroupPolicyResponse, RetryDelays, RetryPolicy};
use protocol::messages::{GroupInfoResponse, QueueLag, ResetTarget, PERM_READ, PERM_WRITE};
use protocol::properties::Properties;
use protocol::receive::LeaseInfoResponse;
use protocol::Status;

use crate::CliResult;

fn perm_text(perm: u8) -> String {
    let r = if perm & PERM_READ != 0 { "r" } else { "-" };
    let w = if perm & PERM_WRITE != 0 { "w" } else { "-" };
    format!("{r}{w}")
}

pub(crate) async fn topic_create(broker: &str, name: &str, queues: Option<u32>) -> CliResult {
    let admin = Admin::connect(broker).await?;
    let queues = match queues {
        Some(q) => q,
        None => admin.default_queue_count()?,
    };
    // Looked up first: the broker answers a create of an identical topic with success,
    // and a user must not read "created" for a topic that was already there.
    let existing = match admin.get_topic(name).await {
        Ok(t) => Some(t),
        Err(e) if e.status() == Some(Status::TopicNotFound) => None,
        Err(e) => return Err(e.into()),
    };
    let Some(t) = existing else {
        let t = admin.create_topic(name, queues).await?;
        println!(
            "created topic {} with {}",
            t.name,
            plural(t.queue_count, "queue")
        );
        return Ok(());
    };
    let wanted = PERM_READ | PERM_WRITE;
    if t.queue_count == queues && t.perm == wanted {
        // Idempotent for scripts: same settings, exit 0.
        println!(
            "topic {} exists with {}",
            t.name,
            plural(t.queue_count, "queue")
        );
        return Ok(());
    }
    Err(format!(
        "topic {} exists with {}, perm {} (asked for {}, perm {}); see mq topic update",
        t.name,
        plural(t.queue_count, "queue"),
        perm_text(t.perm),
        plural(queues, "queue"),
        perm_text(wanted)
    )
    .into())
}

pub(crate) async fn topic_update(
    broker: &str,
    name: &str,
    queues: Option<u32>,
    perm: Option<u8>,
) -> CliResult {
    if queues.is_none() && perm.is_none() {
        return Err("nothing to change: give --queues and/or --perm".into());
    }
    let admin = Admin::connect(broker).await?;
    let now = admin.get_topic(name).await?;
    let t = admin
        .update_topic(
            name,
            queues.unwrap_or(now.queue_count),
            perm.unwrap_or(now.perm),
        )
        .await?;
    println!(
        "updated topic {}: {}, perm {}",
        t.name,
        plural(t.queue_count, "queue"),
        perm_text(t.perm)
    );
    Ok(())
}

pub(crate) async fn topic_delete(broker: &str, name: &str) -> CliResult {
    Admin::connect(broker).await?.delete_topic(name).await?;
    println!("deleted topic {name}");
    Ok(())
}

pub(crate) async fn message_show(broker: &str, msg_id: &str) -> CliResult {
    let m = Admin::connect(broker).await?.get_message(msg_id).await?;
    let mut v = crate::consume::to_json(&m);
    v["born_timestamp_ms"] = m.born_timestamp_ms().into();
    v["store_timestamp_ms"] = m.store_timestamp_ms().into();
    let mut props = serde_json::Map::new();
    for entry in Properties::new(m.properties()).iter() {
        let (k, val) = entry?;
        props.insert(k.to_string(), val.into());
    }
    v["properties"] = props.into();
    println!("{v}");
    Ok(())
}

pub(crate) async fn message_query(
    broker: &str,
    topic: &str,
    key: &str,
    from_ms: u64,
    to_ms: u64,
    max: u32,
) -> CliResult {
    let found = Admin::connect(broker)
        .await?
        .query_by_key(topic, key, from_ms, to_ms, max)
        .await?;
    let mut out = std::io::stdout().lock();
    for m in &found.messages {
        writeln!(out, "{}", crate::consume::to_json(m))?;
    }
    out.flush()?;
    if found.more {
        eprintln!(
            "mq: more messages match; showing the newest {}",
            found.messages.len()
        );
    }
    Ok(())
}

/// `1 queue`, `2 queues`.
pub(crate) fn plural(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
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
        "topic {}  queues {}  perm {}  timers_pending {}",
        t.name,
        t.queue_count,
        perm_text(t.perm),
        t.timers_pending
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

pub(crate) async fn group_show(broker: &str, group: &str, json: bool) -> CliResult {
    let admin = Admin::connect(broker).await?;
    let mut info = admin.group_info(group).await?;
    let leases = admin.lease_info(group).await?;
    let policy = admin.group_policy(group).await?;
    if info.queues.is_empty()
        && info.members.is_empty()
        && !leases.receives
        && policy.policy.is_none()
    {
        return Err(format!(
            "unknown group {group}: it has no committed offsets and no live members"
        )
        .into());
    }
    info.queues
        .sort_by(|a, b| (&a.topic, a.queue_id).cmp(&(&b.topic, b.queue_id)));
    // Each queue's first stored offset, to count what retention removed unread.
    let mut min_offsets: HashMap<(String, u32), u64> = HashMap::new();
    let topics: BTreeSet<&str> = info.queues.iter().map(|q| q.topic.as_str()).collect();
    for topic in topics {
        // A since-deleted topic has no queues left to count.
        if let Ok(t) = admin.get_topic(topic).await {
            for q in t.queues {
                min_offsets.insert((topic.to_string(), q.queue_id), q.min_offset);
            }
        }
    }
    let skipped_of = |q: &QueueLag| {
        let min = min_offsets.get(&(q.topic.clone(), q.queue_id)).copied();
        match (q.committed, min) {
            (Some(c), Some(min)) => min.saturating_sub(c),
            _ => 0,
        }
    };
    if json {
        println!("{}", group_json(&info, &leases, &policy, &skipped_of));
        return Ok(());
    }
    println!("group {}", info.group);
    println!(
        "{:<40} {:>6} {:>14} {:>14} {:>10} {:>10}",
        "TOPIC", "QUEUE", "COMMITTED", "MAX_OFFSET", "LAG", "SKIPPED"
    );
    let (mut total_lag, mut total_skipped) = (0, 0);
    for q in &info.queues {
        let committed = q
            .committed
            .map_or_else(|| "-".to_string(), |c| c.to_string());
        let skipped = skipped_of(q);
        println!(
            "{:<40} {:>6} {:>14} {:>14} {:>10} {:>10}",
            q.topic, q.queue_id, committed, q.max_offset, q.lag, skipped
        );
        total_lag += q.lag;
        total_skipped += skipped;
    }
    println!("total lag {total_lag}");
    if total_skipped > 0 {
        println!(
            "total skipped {total_skipped} (removed by retention before this group read them)"
        );
    }
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
    if leases.receives {
        print_leases(&leases);
    }
    println!("{}", policy_line(&policy));
    Ok(())
}

/// `mq group show G --json`: one object with the table's figures, the members, the lease
/// totals (`null` for an offset group) and the retry policy in force.
fn group_json(
    info: &GroupInfoResponse,
    leases: &LeaseInfoResponse,
    policy: &GroupPolicyResponse,
    skipped_of: &dyn Fn(&QueueLag) -> u64,
) -> serde_json::Value {
    let queues: Vec<serde_json::Value> = info
        .queues
        .iter()
        .map(|q| {
            serde_json::json!({"topic": q.topic, "queue": q.queue_id, "committed": q.committed,
                "max_offset": q.max_offset, "lag": q.lag, "skipped": skipped_of(q)})
        })
        .collect();
    let members: Vec<serde_json::Value> = info
        .members
        .iter()
        .map(|m| {
            let queues: Vec<serde_json::Value> = m
                .assignment
                .iter()
                .filter(|a| !a.queue_ids.is_empty())
                .map(|a| serde_json::json!({"topic": a.topic, "queues": a.queue_ids}))
                .collect();
            serde_json::json!({"client_id": m.client_id, "queues": queues})
        })
        .collect();
    serde_json::json!({
        "group": info.group,
        "queues": queues,
        "total_lag": info.queues.iter().map(|q| q.lag).sum::<u64>(),
        "members": members,
        "leases": leases.receives.then(|| serde_json::json!({
            "in_flight": leases.in_flight, "max_in_flight": leases.max_in_flight})),
        "retry_policy": policy_json(policy),
    })
}

/// `mq group set G ...`: sets (or with `None` resets) the group's retry policy and prints
/// the policy now in force.
pub(crate) async fn group_set(broker: &str, group: &str, policy: Option<RetryPolicy>) -> CliResult {
    let resp = Admin::connect(broker)
        .await?
        .set_group_policy(group, policy)
        .await?;
    println!("{}", policy_line(&resp));
    Ok(())
}

/// `retry policy (group): max reconsume 5, backoff 1000 ms x2 up to 60000 ms`.
fn policy_line(p: &GroupPolicyResponse) -> String {
    let source = if p.policy.is_some() {
        "group"
    } else {
        "broker default"
    };
    let delays = match &p.effective.delays {
        Some(RetryDelays::Table(t)) => {
            let t: Vec<String> = t.iter().map(u64::to_string).collect();
            format!("delays {} ms", t.join(","))
        }
        Some(RetryDelays::Backoff {
            initial_ms,
            multiplier,
            max_ms,
        }) => format!("backoff {initial_ms} ms x{multiplier} up to {max_ms} ms"),
        None => "delays of the broker".to_string(),
    };
    format!(
        "retry policy ({source}): max reconsume {}, {delays}",
        p.effective.max_reconsume_times
    )
}

/// The policy in force as JSON: `{"source": "group", "max_reconsume_times": 5,
/// "delays": {"backoff": {...}}}` (`"table": [...]` for a delay table).
fn policy_json(p: &GroupPolicyResponse) -> serde_json::Value {
    serde_json::json!({
        "source": if p.policy.is_some() { "group" } else { "broker" },
        "max_reconsume_times": p.effective.max_reconsume_times,
        "delays": p.effective.delays,
    })
}

/// The in-flight leases of a group that receives (per-message acks), per queue.
fn print_leases(leases: &protocol::receive::LeaseInfoResponse) {
    println!(
        "leases (in flight {} of at most {})",
        leases.in_flight, leases.max_in_flight
    );
    println!(
        "{:<40} {:>6} {:>10} {:>14}",
        "TOPIC", "QUEUE", "IN_FLIGHT", "NEXT_OFFSET"
    );
    for q in &leases.queues {
        println!(
            "{:<40} {:>6} {:>10} {:>14}",
            q.topic, q.queue_id, q.in_flight, q.next_offset
        );
    }
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

/// One JSON line per broker, `{"broker": ADDR, ...status}`, or `{"broker", "error"}`.
pub(crate) async fn cluster_status(addrs: &[String]) -> CliResult {
    for addr in addrs {
        let line = match cluster_status_of(addr).await {
            Ok(s) => {
                let mut v = serde_json::to_value(&s)?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("broker".into(), serde_json::Value::String(addr.clone()));
                }
                v
            }
            Err(e) => serde_json::json!({"broker": addr, "error": e.to_string()}),
        };
        println!("{line}");
    }
    Ok(())
}

async fn cluster_status_of(
    addr: &str,
) -> Result<protocol::cluster::ClusterStatusResponse, client::Error> {
    Admin::connect(addr).await?.cluster_status().await
}

/// Promotes the replica at `addr`: refuses one that is not a replica, or (unless
/// `force`) one behind a master that is still reachable; opens an epoch above every one
/// seen.
pub(crate) async fn cluster_promote(addr: &str, force: bool) -> CliResult {
    let admin = Admin::connect(addr).await?;
    let me = admin.cluster_status().await?;
    if me.role != "replica" {
        return Err(format!("{addr} is {}, not a replica", me.role).into());
    }
    let mut epoch = me.epoch;
    if let Some(master) = &me.master {
        if let Ok(m) = cluster_status_of(master).await {
            epoch = epoch.max(m.epoch);
            if m.role == "master" && m.write_offset > me.write_offset && !force {
                return Err(format!(
                    "the master {master} is reachable and ahead ({} > {} bytes): let {addr} catch up, stop the master, or use --force",
                    m.write_offset, me.write_offset
                )
                .into());
            }
        }
    }
    let r = admin.cluster_promote(epoch + 1).await?;
    println!(
        "{}",
        serde_json::json!({"broker": addr, "role": "master", "epoch": r.epoch, "start_offset": r.start_offset})
    );
    Ok(())
}

pub(crate) async fn stats(broker: &str) -> CliResult {
    let s = Admin::connect(broker).await?.stats().await?;
    println!("{}", serde_json::to_string_pretty(&s)?);
    Ok(())
}
