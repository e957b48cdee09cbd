//! `/api/...`: the JSON the dashboard reads (documented in the README, "HTTP endpoint").
//! Reads of the store run on the blocking pool; every failure is `{"error": "..."}` with
//! a fitting status.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use protocol::messages::QueueCommit;
use protocol::names::{dlq_topic, retry_topic, DLQ_PREFIX, RETRY_PREFIX};
use protocol::properties::{self, Properties, PropertiesBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use protocol::time::now_ms;

use super::error::ApiError;
use super::HttpState;
use crate::server::services::Services;
use crate::store::{
    GetRequest, MessageId, PutMessage, QueueOffset, RecordRef, StoreError, TagFilter, TopicConfig,
};

type AppState = State<Arc<HttpState>>;
type ApiResult<T = Json<Value>> = Result<T, ApiError>;

/// Prefix of the retry scheduler's internal topics, hidden from listings.
const SCHEDULE_PREFIX: &str = "%SCHEDULE%";
/// Most topics one `/api/topics` page lists.
const MAX_TOPICS_PAGE: usize = 1_000;
/// Most dead-letter messages one listing or one resend handles.
const MAX_DLQ_BATCH: u64 = 10_000;

/// Runs blocking broker work off the runtime's workers.
async fn blocking<T: Send + 'static>(
    state: &HttpState,
    f: impl FnOnce(&Services) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let services = Arc::clone(state.services().ok_or_else(ApiError::starting)?);
    tokio::task::spawn_blocking(move || f(&services))
        .await
        .map_err(|e| ApiError::internal(format!("request task failed: {e}")))?
}

fn store_error(e: &StoreError) -> ApiError {
    let status = match e {
        StoreError::TopicNotFound(_) | StoreError::MessageNotFound(_) => StatusCode::NOT_FOUND,
        StoreError::InvalidTopicName { .. }
        | StoreError::QueueNotFound { .. }
        | StoreError::BadMessageId { .. }
        | StoreError::BadProperties(_)
        | StoreError::BodyTooLarge { .. } => StatusCode::BAD_REQUEST,
        StoreError::PermissionDenied { .. } => StatusCode::FORBIDDEN,
        StoreError::DiskFull { .. } | StoreError::Closed => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.to_string())
}

/// One queue of a group: where it stands and how far behind it is.
#[derive(Debug, Clone, Serialize)]
pub(super) struct QueueState {
    pub(super) topic: String,
    pub(super) queue_id: u32,
    /// Committed offset; `None` when the group never committed on the queue.
    pub(super) committed: Option<u64>,
    pub(super) max_offset: u64,
    pub(super) lag: u64,
    /// Seconds since the oldest message not yet acknowledged was stored; `None` at lag 0.
    pub(super) oldest_unacked_age_s: Option<f64>,
}

/// Every group the broker knows: with offsets, live members, receive leases, or a
/// dead-letter topic.
pub(super) fn group_names(services: &Services) -> Vec<String> {
    let mut names: BTreeSet<String> = services.offsets.groups().into_iter().collect();
    names.extend(services.groups.groups());
    names.extend(services.pop.group_names());
    for t in services.store.topics() {
        if let Some(g) = t.name.strip_prefix(DLQ_PREFIX) {
            names.insert(g.to_owned());
        }
    }
    names.into_iter().collect()
}

/// The queues of `group` (committed on, or assigned to a member) with lag and age.
pub(super) fn group_queues(services: &Services, group: &str, now_ms: u64) -> Vec<QueueState> {
    let mut queues: Vec<(String, u32, Option<u64>)> = services
        .offsets
        .queues_of(group)
        .into_iter()
        .map(|c| (c.topic, c.queue_id, Some(c.offset)))
        .collect();
    for m in services.groups.members(group) {
        for a in m.assignment {
            for q in a.queue_ids {
                if !queues.iter().any(|(t, id, _)| *t == a.topic && *id == q) {
                    queues.push((a.topic.clone(), q, None));
                }
            }
        }
    }
    queues.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let all = TagFilter::default();
    queues
        .into_iter()
        // The dead-letter topic is read by resends under the group's name: not a backlog.
        .filter(|(t, _, _)| !t.starts_with(DLQ_PREFIX))
        .map(|(topic, queue_id, committed)| {
            let (min, max) = services
                .store
                .queue_range(&topic, queue_id)
                .map_or((0, 0), |(a, b)| (a.get(), b.get()));
            let from = committed.unwrap_or(min).max(min);
            let lag = max.saturating_sub(from);
            let oldest_unacked_age_s = (lag > 0)
                .then(|| {
                    let got = services
                        .store
                        .get_messages(GetRequest {
                            topic: &topic,
                            queue_id,
                            from: QueueOffset::new(from),
                            max_count: 1,
                            max_bytes: 1,
                            filter: &all,
                        })
                        .ok()?;
                    let stored = got.messages.first()?.view().store_timestamp_ms();
                    #[allow(clippy::cast_precision_loss)] // ms as seconds for display
                    Some(now_ms.saturating_sub(stored) as f64 / 1000.0)
                })
                .flatten();
            QueueState {
                topic,
                queue_id,
                committed,
                max_offset: max,
                lag,
                oldest_unacked_age_s,
            }
        })
        .collect()
}

/// Dead-letter queues of `group`: `(queue id, first not yet resent, end)`.
fn dlq_ranges(services: &Services, group: &str) -> Vec<(u32, u64, u64)> {
    let topic = dlq_topic(group);
    let Some(t) = services.store.topic(&topic) else {
        return Vec::new();
    };
    (0..t.queue_count)
        .filter_map(|q| {
            let (min, max) = services.store.queue_range(&topic, q).ok()?;
            let committed = services.offsets.get(group, &topic, q).map(|c| c.offset);
            let from = committed.unwrap_or(min.get()).max(min.get());
            Some((q, from, max.get()))
        })
        .collect()
}

/// Messages in `group`'s dead-letter queue not yet resent.
pub(super) fn dlq_depth(services: &Services, group: &str) -> u64 {
    dlq_ranges(services, group)
        .iter()
        .map(|(_, from, to)| to.saturating_sub(*from))
        .sum()
}

/// Hidden from listings: the retry scheduler's own topics.
fn is_schedule_topic(name: &str) -> bool {
    name.starts_with(SCHEDULE_PREFIX)
}

pub(super) async fn overview(State(state): AppState) -> ApiResult {
    blocking(&state, |s| {
        let st = s.stats.snapshot();
        let log = s.store.commit_log();
        let disk = s.store.disk().status();
        let topics = s
            .store
            .topics()
            .iter()
            .filter(|t| !is_schedule_topic(&t.name))
            .count();
        Ok(Json(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_ms": st.uptime_ms,
            "connections": st.connections,
            "topics": topics,
            "groups": group_names(s).len(),
            "messages_in": st.messages_in,
            "messages_out": st.messages_out,
            "bytes_in": st.bytes_in,
            "bytes_out": st.bytes_out,
            "commitlog_min_offset": log.min_offset().get(),
            "commitlog_write_offset": log.write_offset().get(),
            "timers_pending": s.timer.pending_total(),
            "disk_full": disk.state == crate::store::DiskState::Full,
            "disk_free_bytes": disk.free_bytes,
            "disk_reserve_bytes": disk.reserve_bytes,
        })))
    })
    .await
}

#[derive(Debug, Deserialize)]
pub(super) struct TopicsQuery {
    /// List topics named after this one (paging).
    after: Option<String>,
    /// Most topics listed (default and cap 1,000).
    limit: Option<usize>,
    /// Also list `%RETRY%` and `%DLQ%` topics.
    #[serde(default)]
    internal: bool,
}

fn topic_json(s: &Services, t: &TopicConfig, counters: Option<&[u64; 4]>) -> Value {
    let mut messages = 0;
    let queues: Vec<Value> = (0..t.queue_count)
        .map(|q| {
            let (min, max) = s
                .store
                .queue_range(&t.name, q)
                .map_or((0, 0), |(a, b)| (a.get(), b.get()));
            messages += max - min;
            json!({ "queue_id": q, "min_offset": min, "max_offset": max })
        })
        .collect();
    let c = counters.copied().unwrap_or_default();
    json!({
        "name": t.name,
        "queue_count": t.queue_count,
        "timers_pending": s.timer.pending_of(&t.name),
        "messages": messages,
        "messages_in": c[0],
        "bytes_in": c[1],
        "messages_out": c[2],
        "bytes_out": c[3],
        "queues": queues,
    })
}

pub(super) async fn topics(State(state): AppState, Query(q): Query<TopicsQuery>) -> ApiResult {
    let recorder = Arc::clone(&state.recorder);
    blocking(&state, move |s| {
        let limit = q.limit.unwrap_or(MAX_TOPICS_PAGE).clamp(1, MAX_TOPICS_PAGE);
        let page = s.store.topics_page(q.after.as_deref(), limit, |t| {
            !is_schedule_topic(&t.name)
                && (q.internal
                    || !(t.name.starts_with(RETRY_PREFIX) || t.name.starts_with(DLQ_PREFIX)))
        });
        let counters: std::collections::HashMap<String, [u64; 4]> =
            recorder.topic_counters().into_iter().collect();
        let next = (page.len() == limit).then(|| page.last().map(|t| t.name.clone()));
        let topics: Vec<Value> = page
            .iter()
            .map(|t| topic_json(s, t, counters.get(&t.name)))
            .collect();
        Ok(Json(json!({ "topics": topics, "next": next.flatten() })))
    })
    .await
}

pub(super) async fn topic(State(state): AppState, Path(name): Path<String>) -> ApiResult {
    let recorder = Arc::clone(&state.recorder);
    blocking(&state, move |s| {
        let t = s
            .store
            .topic(&name)
            .ok_or_else(|| ApiError::not_found(format!("topic {name} does not exist")))?;
        let counters = recorder
            .topic_counters()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c);
        Ok(Json(topic_json(s, &t, counters.as_ref())))
    })
    .await
}

/// One group's summary line: what the dashboard sorts by.
fn group_summary(s: &Services, group: &str, now: u64) -> Value {
    let queues = group_queues(s, group, now);
    let lag: u64 = queues.iter().map(|q| q.lag).sum();
    let oldest = queues
        .iter()
        .filter_map(|q| q.oldest_unacked_age_s)
        .fold(None, |m: Option<f64>, a| Some(m.map_or(a, |m| m.max(a))));
    // `null` for a group that never received in this broker run (it pulls).
    let leases = s.pop.report(group);
    let leases = leases.receives.then_some(leases.in_flight);
    json!({
        "name": group,
        "members": s.groups.members(group).len(),
        "leases_in_flight": leases,
        "retries_pending": s.timer.pending_of(&retry_topic(group)),
        "lag": lag,
        "oldest_unacked_age_s": oldest,
        "dlq": dlq_depth(s, group),
        "queues": queues.len(),
    })
}

/// Every group, the most behind first (by lag, then by oldest unacknowledged age).
pub(super) async fn groups(State(state): AppState) -> ApiResult {
    blocking(&state, |s| {
        let now = now_ms();
        let mut groups: Vec<Value> = group_names(s)
            .iter()
            .map(|g| group_summary(s, g, now))
            .collect();
        let key = |v: &Value| {
            (
                v["lag"].as_u64().unwrap_or(0),
                v["oldest_unacked_age_s"].as_f64().unwrap_or(0.0),
            )
        };
        groups.sort_by(|a, b| {
            let (la, aa) = key(a);
            let (lb, ab) = key(b);
            lb.cmp(&la).then(ab.total_cmp(&aa))
        });
        Ok(Json(json!({ "groups": groups })))
    })
    .await
}

pub(super) async fn group(State(state): AppState, Path(group): Path<String>) -> ApiResult {
    blocking(&state, move |s| {
        if !group_names(s).contains(&group) {
            return Err(ApiError::not_found(format!(
                "unknown group {group}: it has no committed offsets, members or dead letters"
            )));
        }
        let now = now_ms();
        let mut v = group_summary(s, &group, now);
        v["queues"] = json!(group_queues(s, &group, now));
        v["members"] = json!(s
            .groups
            .members(&group)
            .into_iter()
            .map(
                |m| json!({ "client_id": m.client_id, "assignment": m.assignment
                .into_iter()
                .map(|a| json!({ "topic": a.topic, "queue_ids": a.queue_ids }))
                .collect::<Vec<_>>() })
            )
            .collect::<Vec<_>>());
        Ok(Json(v))
    })
    .await
}

/// A stored message as JSON: where it is, its properties and its body (text when UTF-8).
fn message_json(rec: &RecordRef) -> Value {
    let v = rec.view();
    let props: serde_json::Map<String, Value> = Properties::new(v.properties())
        .iter()
        .filter_map(Result::ok)
        .map(|(k, val)| (k.to_owned(), Value::String(val.to_owned())))
        .collect();
    let body = v.body();
    let text = std::str::from_utf8(body).ok();
    json!({
        "msg_id": MessageId::new(rec.offset(), rec.size()).to_text(),
        "topic": v.topic(),
        "queue_id": v.queue_id(),
        "queue_offset": v.queue_offset(),
        "born_timestamp_ms": v.born_timestamp_ms(),
        "store_timestamp_ms": v.store_timestamp_ms(),
        "reconsume_times": v.reconsume_times(),
        "properties": props,
        "body_bytes": body.len(),
        "body": text,
        "body_preview": String::from_utf8_lossy(&body[..body.len().min(4096)]),
    })
}

pub(super) async fn message(State(state): AppState, Path(id): Path<String>) -> ApiResult {
    blocking(&state, move |s| {
        let id: MessageId = id.parse().map_err(|e: StoreError| store_error(&e))?;
        let rec = s.store.get_by_id(id).map_err(|e| store_error(&e))?;
        Ok(Json(message_json(&rec)))
    })
    .await
}

#[derive(Debug, Deserialize)]
pub(super) struct MaxQuery {
    /// Most messages (default and cap 10,000).
    max: Option<u64>,
}

/// Reads `group`'s dead-letter messages not yet resent, at most `max`.
fn dlq_messages(s: &Services, group: &str, max: u64) -> ApiResult<Vec<(u32, RecordRef)>> {
    let topic = dlq_topic(group);
    let all = TagFilter::default();
    let mut out = Vec::new();
    for (q, mut from, to) in dlq_ranges(s, group) {
        while from < to && (out.len() as u64) < max {
            let want = usize::try_from((max - out.len() as u64).min(256)).unwrap_or(256);
            let got = s
                .store
                .get_messages(GetRequest {
                    topic: &topic,
                    queue_id: q,
                    from: QueueOffset::new(from),
                    max_count: want,
                    max_bytes: 8 << 20,
                    filter: &all,
                })
                .map_err(|e| store_error(&e))?;
            if got.messages.is_empty() {
                break;
            }
            from = got.next_offset.get().max(from + 1);
            out.extend(got.messages.into_iter().map(|m| (q, m)));
        }
    }
    Ok(out)
}

pub(super) async fn dlq(
    State(state): AppState,
    Path(group): Path<String>,
    Query(q): Query<MaxQuery>,
) -> ApiResult {
    let max = q.max.unwrap_or(100).min(MAX_DLQ_BATCH);
    blocking(&state, move |s| {
        let msgs = dlq_messages(s, &group, max)?;
        let list: Vec<Value> = msgs.iter().map(|(_, m)| message_json(m)).collect();
        Ok(Json(json!({
            "group": group,
            "topic": dlq_topic(&group),
            "depth": dlq_depth(s, &group),
            "messages": list,
        })))
    })
    .await
}

/// Properties that describe a message's stay in retry and the DLQ, dropped on resend.
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

/// Sends dead-letter messages back to the topic they came from (to their original queue
/// when it still exists), then commits the group's dead-letter offsets past them: what
/// `mq dlq resend` does, done inside the broker.
pub(super) async fn dlq_resend(
    State(state): AppState,
    Path(group): Path<String>,
    Query(q): Query<MaxQuery>,
) -> ApiResult {
    let max = q.max.unwrap_or(MAX_DLQ_BATCH).min(MAX_DLQ_BATCH);
    let recorder = Arc::clone(&state.recorder);
    blocking(&state, move |s| {
        let msgs = dlq_messages(s, &group, max)?;
        let (mut resent, mut skipped) = (0u64, 0u64);
        let mut commits: Vec<QueueCommit> = Vec::new();
        for (q, m) in &msgs {
            let v = m.view();
            let props = Properties::new(v.properties());
            let origin = props.get(properties::ORIGIN_TOPIC).map(str::to_owned);
            match origin.and_then(|o| s.store.topic(&o)) {
                Some(t) => {
                    let queue = props
                        .get(properties::ORIGIN_QUEUE_ID)
                        .and_then(|q| q.parse::<u32>().ok())
                        .filter(|q| *q < t.queue_count)
                        .unwrap_or(0);
                    let kept = PropertiesBuilder::without(v.properties(), INTERNAL_PROPERTIES)
                        .map_err(|e| ApiError::internal(e.to_string()))?;
                    let put = PutMessage {
                        properties: kept.as_bytes(),
                        body: v.body(),
                        born_timestamp_ms: now_ms(),
                        reconsume_times: 0,
                    };
                    s.store
                        .put(&t.name, queue, &put)
                        .map_err(|e| store_error(&e))?;
                    s.stats.add_messages_in(1, v.body().len() as u64);
                    recorder.messages_in(&t.name, 1, v.body().len() as u64);
                    resent += 1;
                }
                None => skipped += 1,
            }
            let next = v.queue_offset() + 1;
            match commits.iter_mut().find(|c| c.queue_id == *q) {
                Some(c) => c.offset = c.offset.max(next),
                None => commits.push(QueueCommit {
                    topic: dlq_topic(&group),
                    queue_id: *q,
                    offset: next,
                    acked_above: Vec::new(),
                }),
            }
        }
        if !commits.is_empty() {
            s.offsets
                .commit(&group, &commits)
                .map_err(|e| ApiError::internal(e.to_string()))?;
        }
        tracing::info!(%group, resent, skipped, "dead-letter messages resent over HTTP");
        Ok(Json(json!({
            "group": group,
            "resent": resent,
            "skipped_without_origin": skipped,
            "depth": dlq_depth(s, &group),
        })))
    })
    .await
}

/// A test message from the dashboard's form.
#[derive(Debug, Deserialize)]
pub(super) struct TestMessage {
    body: String,
    #[serde(default)]
    tags: Option<String>,
    #[serde(default)]
    keys: Option<String>,
    /// The queue; by default one chosen by the clock.
    #[serde(default)]
    queue_id: Option<u32>,
}

pub(super) async fn send_test_message(
    State(state): AppState,
    Path(topic): Path<String>,
    body: Result<Json<TestMessage>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(msg) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let recorder = Arc::clone(&state.recorder);
    blocking(&state, move |s| {
        let mut props = PropertiesBuilder::new();
        if let Some(t) = msg.tags.as_deref().filter(|t| !t.is_empty()) {
            props.push(properties::TAGS, t);
        }
        if let Some(k) = msg.keys.as_deref().filter(|k| !k.is_empty()) {
            props.push(properties::KEYS, k);
        }
        let queue_count = s.store.topic(&topic).map_or(1, |t| t.queue_count.max(1));
        let queue = msg
            .queue_id
            .unwrap_or_else(|| u32::try_from(now_ms() % u64::from(queue_count)).unwrap_or(0));
        let put = PutMessage {
            properties: props.as_bytes(),
            body: msg.body.as_bytes(),
            born_timestamp_ms: now_ms(),
            reconsume_times: 0,
        };
        let r = s
            .store
            .put(&topic, queue, &put)
            .map_err(|e| store_error(&e))?;
        s.stats.add_messages_in(1, msg.body.len() as u64);
        recorder.messages_in(&topic, 1, msg.body.len() as u64);
        Ok((
            StatusCode::CREATED,
            Json(json!({
                "msg_id": r.msg_id.to_text(),
                "topic": topic,
                "queue_id": r.queue_id,
                "queue_offset": r.queue_offset.get(),
            })),
        ))
    })
    .await
}
