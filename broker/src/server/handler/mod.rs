//! One module per kind of request but sends (those go to `server::send`). Each handler
//! decodes its header, does its work (store calls run on the blocking pool) and returns a
//! response; errors become error responses with a status and a sentence.

mod cluster;
pub(super) mod group;
mod group_policy;
mod hello;
mod lookup;
mod offset;
mod ordered;
mod pull;
pub(crate) mod receive;
mod security;
mod stats;
mod timer;
mod topic;
pub(crate) mod tx;

use std::sync::{Arc, OnceLock};

use protocol::{Frame, RequestCode, Status};
use tokio::sync::Semaphore;

use super::request::decode;
use super::response::{HandlerError, Response};
use super::services::Services;
use super::session::Session;
use crate::retry::RetryError;
use crate::store::StoreError;

type HandlerResult = Result<Response, HandlerError>;

/// Answers one request other than a send.
pub(crate) async fn handle(
    services: &Arc<Services>,
    conn: &Arc<Session>,
    code: RequestCode,
    frame: Frame,
) -> Response {
    let result = match code {
        RequestCode::Hello => hello::hello(services, &frame),
        RequestCode::CreateTopic => topic::create(services, &frame).await,
        RequestCode::UpdateTopic => topic::update(services, &frame).await,
        RequestCode::DeleteTopic => topic::delete(services, &frame).await,
        RequestCode::GetTopic => topic::get(services, &frame).await,
        RequestCode::ListTopics => topic::list(services, &frame).await,
        RequestCode::Pull => pull::pull(services, conn, &frame).await,
        RequestCode::CommitOffset => offset::commit(services, &frame).await,
        RequestCode::QueryOffset => offset::query(services, &frame),
        RequestCode::ResetOffset => offset::reset(services, &frame).await,
        RequestCode::Heartbeat => group::heartbeat(services, conn, &frame).await,
        RequestCode::LeaveGroup => group::leave(services, &frame),
        RequestCode::GroupInfo => group::info(services, &frame).await,
        RequestCode::DeleteGroup => group::delete(services, &frame).await,
        RequestCode::SendBack => lookup::send_back(services, &frame).await,
        RequestCode::SearchOffset => lookup::search_offset(services, &frame).await,
        RequestCode::GetMessage => lookup::get_message(services, &frame).await,
        RequestCode::BrokerStats => stats::stats(services, &frame),
        RequestCode::Receive => receive::receive(services, conn, &frame).await,
        RequestCode::AckMessages => receive::ack(services, conn, &frame).await,
        RequestCode::ChangeInvisibility => receive::change(services, &frame),
        RequestCode::Reject => receive::reject(services, &frame).await,
        RequestCode::LeaseInfo => receive::lease_info(services, &frame),
        RequestCode::SendTimer => timer::send_timer(services, &frame).await,
        RequestCode::Recall => timer::recall(services, &frame).await,
        RequestCode::SetGroupPolicy => group_policy::set(services, &frame).await,
        RequestCode::GetGroupPolicy => group_policy::get(services, &frame),
        RequestCode::LockBatch => ordered::lock(services, &frame),
        RequestCode::UnlockBatch => ordered::unlock(services, &frame),
        RequestCode::TxRegister => tx::register(services, conn, &frame),
        RequestCode::TxBegin => tx::begin(services, conn, &frame).await,
        RequestCode::TxSend => tx::send(services, &frame).await,
        RequestCode::TxAck => tx::ack(services, &frame).await,
        RequestCode::TxCommit => tx::commit(services, &frame).await,
        RequestCode::TxRollback => tx::rollback(services, &frame).await,
        RequestCode::TxList => tx::list(services, &frame),
        RequestCode::QueryMessage => lookup::query_message(services, &frame).await,
        RequestCode::UserAdd => security::user_add(services, &frame).await,
        RequestCode::UserList => security::user_list(services, &frame),
        RequestCode::UserRemove => security::user_remove(services, &frame).await,
        RequestCode::AclSet => security::acl_set(services, &frame).await,
        RequestCode::AclList => security::acl_list(services, &frame),
        RequestCode::AclRemove => security::acl_remove(services, &frame).await,
        RequestCode::ClusterStatus => cluster::status(services, &frame),
        RequestCode::ClusterPromote => cluster::promote(services, &frame).await,
        other => Err(HandlerError::new(
            Status::UnknownCode,
            format!("request code {other:?} is not served by this broker"),
        )),
    };
    result.unwrap_or_else(Response::from)
}

/// Runs blocking store work on tokio's blocking pool, at most [`blocking_slots`] pieces
/// at once for the whole process. Without a cap, clients pipelining heavy requests start
/// hundreds of CPU-bound threads that starve the runtime's workers, so every other client
/// waits, and so does shutdown. The slot travels with the work: it is held until the work
/// ends even if the request that started it was dropped.
async fn blocking<T, F>(f: F) -> Result<T, HandlerError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, HandlerError> + Send + 'static,
{
    let slot = blocking_slots()
        .acquire()
        .await
        .map_err(|e| HandlerError::internal(format!("request task failed: {e}")))?;
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        f()
    })
    .await
    .map_err(|e| HandlerError::internal(format!("request task failed: {e}")))?
}

/// Slots for blocking request work: four per CPU (at least eight), since most of it is
/// short CPU work and some waits for disk reads. Process-wide because CPUs are.
fn blocking_slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Semaphore::new((cpus * 4).max(8))
    })
}

impl From<StoreError> for HandlerError {
    fn from(e: StoreError) -> Self {
        let status = store_status(&e);
        let message = if status == Status::DiskFull {
            format!("disk full: {e}")
        } else {
            e.to_string()
        };
        if matches!(status, Status::StorageError | Status::Internal) {
            tracing::error!(error = %e, "store failure");
        }
        HandlerError::new(status, message)
    }
}

impl From<RetryError> for HandlerError {
    fn from(e: RetryError) -> Self {
        let status = match &e {
            RetryError::MessageNotFound { .. } => Status::NotFound,
            RetryError::InvalidGroup { .. } => Status::InvalidName,
            RetryError::Store { source, .. } => store_status(source),
            RetryError::Timer(crate::timer::TimerError::Store { source, .. }) => {
                store_status(source)
            }
            other if other.is_bad_request() => Status::BadRequest,
            _ => Status::StorageError,
        };
        let message = if status == Status::DiskFull {
            format!("disk full: {e}")
        } else {
            e.to_string()
        };
        if matches!(status, Status::StorageError | Status::Internal) {
            tracing::error!(error = %e, "send-back failure");
        }
        HandlerError::new(status, message)
    }
}

fn store_status(e: &StoreError) -> Status {
    match e {
        StoreError::InvalidTopicName { .. } => Status::InvalidName,
        StoreError::TopicNotFound(_) => Status::TopicNotFound,
        StoreError::TopicLimit { .. } => Status::TopicLimit,
        StoreError::QueueNotFound { .. }
        | StoreError::BadProperties(_)
        | StoreError::UnsupportedProperty { .. }
        | StoreError::BadTagExpression { .. }
        | StoreError::BadMessageId { .. }
        | StoreError::InvalidKeyQuery(_) => Status::BadRequest,
        StoreError::KeyIndexOff => Status::Forbidden,
        StoreError::PermissionDenied { .. } => Status::Forbidden,
        StoreError::BodyTooLarge { .. } => Status::MessageTooLarge,
        StoreError::MessageNotFound(_) => Status::NotFound,
        StoreError::Closed => Status::ShuttingDown,
        _ if e.is_disk_full() => Status::DiskFull,
        StoreError::CommitLog(c) => commitlog_status(c),
        _ => Status::StorageError,
    }
}

fn commitlog_status(e: &commitlog::Error) -> Status {
    match e {
        commitlog::Error::RecordTooLarge { .. } => Status::MessageTooLarge,
        commitlog::Error::OffsetUnavailable { .. } => Status::NotFound,
        _ => Status::StorageError,
    }
}

/// Checks a consumer group name (user naming rules: groups are never broker-internal).
fn check_group(group: &str) -> Result<(), HandlerError> {
    protocol::names::validate_user_name(group).map_err(|e| {
        HandlerError::new(
            Status::InvalidName,
            format!("invalid group name {group:?}: {e}"),
        )
    })
}

/// `(min, max)` offsets of a queue, max exclusive.
fn queue_bounds(
    services: &Services,
    topic: &str,
    queue_id: u32,
) -> Result<(u64, u64), HandlerError> {
    let (min, max) = services.store.queue_range(topic, queue_id)?;
    Ok((min.get(), max.get()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_reported_as_disk_full_in_plain_words() {
        let e = StoreError::Io {
            op: "appending to",
            path: "/data/commitlog".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        let h = HandlerError::from(e);
        assert_eq!(h.status, Status::DiskFull);
        assert!(h.message.starts_with("disk full"), "{}", h.message);
        let e = StoreError::TopicNotFound("t".into());
        assert_eq!(HandlerError::from(e).status, Status::TopicNotFound);
    }

    #[test]
    fn a_send_refused_below_the_reserve_says_so_with_the_figures() {
        let e = StoreError::DiskFull {
            free_bytes: 5 << 20,
            reserve_bytes: 16 << 20,
        };
        let h = HandlerError::from(e);
        assert_eq!(h.status, Status::DiskFull);
        assert_eq!(
            h.message,
            "disk full: sends refused until space is freed (free=5.0 MiB, reserve=16.0 MiB)"
        );
    }
}
