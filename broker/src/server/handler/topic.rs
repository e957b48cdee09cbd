//! Topic administration: create, update, delete, describe, list.

use std::sync::Arc;

use protocol::messages::{
    CreateTopicRequest, DeleteTopicRequest, Empty, GetTopicRequest, ListTopicsRequest,
    ListTopicsResponse, QueueInfo, TopicInfo, TopicResponse, UpdateTopicRequest, PERM_READ,
    PERM_WRITE,
};
use protocol::names::RESERVED_PREFIX;
use protocol::{Frame, Status};

use super::{blocking, decode, queue_bounds, HandlerResult, Services};
use crate::server::response::{HandlerError, Response};
use crate::store::{validate_topic_name, Permission, TopicConfig, TopicScope, MAX_QUEUE_COUNT};

/// Creates a topic. Creating one that exists with the same settings succeeds (so setup
/// scripts can run twice); with other settings it is `TopicExists`.
pub(super) async fn create(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: CreateTopicRequest = decode(frame)?;
    check_user_topic(&req.topic)?;
    check_queue_count(req.queue_count)?;
    let s = Arc::clone(services);
    blocking(move || {
        let perm = perm_from_bits(req.perm);
        if let Some(existing) = s.store.topic(&req.topic) {
            if existing.queue_count == req.queue_count && existing.perm == perm {
                return Ok(Response::ok(&TopicResponse {
                    topic: topic_info(&s, &existing),
                }));
            }
            return Err(HandlerError::new(
                Status::TopicExists,
                format!(
                    "topic {} already exists with {} queues",
                    req.topic, existing.queue_count
                ),
            ));
        }
        let mut config = TopicConfig::new(req.topic.clone(), req.queue_count);
        config.perm = perm;
        let created = s.store.create_topic(config)?;
        tracing::info!(topic = %created.name, queues = created.queue_count, "topic created");
        Ok(Response::ok(&TopicResponse {
            topic: topic_info(&s, &created),
        }))
    })
    .await
}

/// Changes permissions and grows the queue count; queues are never removed, as that
/// would strand their messages.
pub(super) async fn update(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: UpdateTopicRequest = decode(frame)?;
    check_user_topic(&req.topic)?;
    check_queue_count(req.queue_count)?;
    let s = Arc::clone(services);
    blocking(move || {
        let existing = s
            .store
            .topic(&req.topic)
            .ok_or_else(|| not_found(&req.topic))?;
        if req.queue_count < existing.queue_count {
            return Err(HandlerError::bad_request(format!(
                "topic {} has {} queues; the queue count can only grow",
                req.topic, existing.queue_count
            )));
        }
        let mut config = existing;
        config.queue_count = req.queue_count;
        config.perm = perm_from_bits(req.perm);
        let updated = s.store.create_topic(config)?;
        tracing::info!(topic = %updated.name, queues = updated.queue_count, "topic updated");
        Ok(Response::ok(&TopicResponse {
            topic: topic_info(&s, &updated),
        }))
    })
    .await
}

pub(super) async fn delete(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: DeleteTopicRequest = decode(frame)?;
    check_user_topic(&req.topic)?;
    let s = Arc::clone(services);
    blocking(move || {
        if !s.store.delete_topic(&req.topic)? {
            return Err(not_found(&req.topic));
        }
        s.offsets.remove_topic(&req.topic);
        // Pulls held on the deleted topic re-check and get TopicNotFound.
        s.long_polling.notify_topic(&req.topic);
        tracing::info!(topic = %req.topic, "topic deleted");
        Ok(Response::ok(&Empty {}))
    })
    .await
}

pub(super) async fn get(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: GetTopicRequest = decode(frame)?;
    let s = Arc::clone(services);
    blocking(move || {
        let topic = s
            .store
            .topic(&req.topic)
            .ok_or_else(|| not_found(&req.topic))?;
        Ok(Response::ok(&TopicResponse {
            topic: topic_info(&s, &topic),
        }))
    })
    .await
}

/// Most topics in one page of a topic listing.
const PAGE_TOPICS: usize = 1_000;
/// A page stops before this many queues (it always holds at least one topic), so that an
/// answer stays far below the protocol's header limit whatever the topics' queue counts.
const PAGE_QUEUES: u64 = 16_384;

pub(super) async fn list(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: ListTopicsRequest = decode(frame)?;
    let s = Arc::clone(services);
    blocking(move || {
        let max = match usize::try_from(req.limit) {
            Ok(0) | Err(_) => PAGE_TOPICS,
            Ok(n) => n.min(PAGE_TOPICS),
        };
        // One more than fits tells whether another page follows.
        let page = s.store.topics_page(req.after.as_deref(), max + 1, |t| {
            req.include_internal || !t.name.starts_with(RESERVED_PREFIX)
        });
        let mut topics = Vec::new();
        let mut queues = 0u64;
        for t in page.iter().take(max) {
            if !topics.is_empty() && queues + u64::from(t.queue_count) > PAGE_QUEUES {
                break;
            }
            queues += u64::from(t.queue_count);
            topics.push(topic_info(&s, t));
        }
        let next = if topics.len() < page.len() {
            topics.last().map(|t: &TopicInfo| t.name.clone())
        } else {
            None
        };
        Ok(Response::ok(&ListTopicsResponse { topics, next }))
    })
    .await
}

fn topic_info(services: &Services, t: &TopicConfig) -> TopicInfo {
    let queues = (0..t.queue_count)
        .map(|queue_id| {
            // A queue that never received a message has no index yet: it is empty.
            let (min_offset, max_offset) =
                queue_bounds(services, &t.name, queue_id).unwrap_or((0, 0));
            QueueInfo {
                queue_id,
                min_offset,
                max_offset,
            }
        })
        .collect();
    TopicInfo {
        name: t.name.clone(),
        queue_count: t.queue_count,
        perm: perm_to_bits(t.perm),
        queues,
        timers_pending: services.timer.pending_of(&t.name),
    }
}

fn check_user_topic(name: &str) -> Result<(), HandlerError> {
    if name.starts_with(RESERVED_PREFIX) {
        return Err(HandlerError::new(
            Status::Forbidden,
            format!("topic {name} is managed by the broker"),
        ));
    }
    validate_topic_name(name, TopicScope::Client).map_err(HandlerError::from)
}

fn check_queue_count(n: u32) -> Result<(), HandlerError> {
    if n == 0 || n > MAX_QUEUE_COUNT {
        return Err(HandlerError::bad_request(format!(
            "queue count must be between 1 and {MAX_QUEUE_COUNT}, got {n}"
        )));
    }
    Ok(())
}

fn not_found(topic: &str) -> HandlerError {
    HandlerError::new(
        Status::TopicNotFound,
        format!("topic {topic} does not exist"),
    )
}

/// Permission bits from the wire; 0 (unset) means read and write.
fn perm_from_bits(bits: u8) -> Permission {
    if bits == 0 {
        return Permission::default();
    }
    Permission {
        read: bits & PERM_READ != 0,
        write: bits & PERM_WRITE != 0,
    }
}

pub(super) fn perm_to_bits(p: Permission) -> u8 {
    (if p.read { PERM_READ } else { 0 }) | (if p.write { PERM_WRITE } else { 0 })
}
