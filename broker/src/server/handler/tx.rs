//! Transaction requests ([`crate::tx`]) and the check-back loop that asks live producers
//! about transactions open past their timeout and rolls back those nobody resolves.

use std::sync::Arc;
use std::time::Duration;

use protocol::batch;
use protocol::messages::{Empty, SendReceipt};
use protocol::receive::ReceiptHandle;
use protocol::time::now_ms;
use protocol::tx::{
    TxAck, TxAckRequest, TxAckResponse, TxBeginRequest, TxBeginResponse, TxCheckRequest,
    TxCommitRequest, TxCommitResponse, TxInfo, TxListRequest, TxListResponse, TxRegisterRequest,
    TxRollbackRequest, TxSendRequest, TxSendResponse,
};
use protocol::{Frame, Status};

use super::{blocking, check_group, decode, HandlerResult, Services};
use crate::pop::{Ctx, MAX_INVISIBLE_MS};
use crate::server::response::{HandlerError, Response};
use crate::server::session::Session;
use crate::store::PutMessage;
use crate::tx::{AckItem, TxError};

impl From<TxError> for HandlerError {
    fn from(e: TxError) -> Self {
        let status = match e {
            TxError::BadId { .. } | TxError::Invalid(_) => Status::BadRequest,
            TxError::NotFound { .. } => Status::TxNotFound,
            TxError::Finished { .. } => Status::TxFinished,
            TxError::TooLarge { .. } => Status::TxTooLarge,
            TxError::Store(s) => return HandlerError::from(s),
            _ => Status::StorageError,
        };
        if status == Status::StorageError {
            tracing::error!(error = %e, "transaction failure");
        }
        HandlerError::new(status, e.to_string())
    }
}

fn check_producer_group(group: &str) -> Result<(), HandlerError> {
    protocol::names::validate_user_name(group).map_err(|e| {
        HandlerError::new(
            Status::InvalidName,
            format!("invalid producer group name {group:?}: {e}"),
        )
    })
}

fn ctx(s: &Services) -> Ctx<'_> {
    Ctx {
        store: &s.store,
        offsets: &s.offsets,
        retry: &s.retry,
    }
}

pub(super) fn register(services: &Services, conn: &Arc<Session>, frame: &Frame) -> HandlerResult {
    let req: TxRegisterRequest = decode(frame)?;
    check_producer_group(&req.producer_group)?;
    services.tx_producers.register(&req.producer_group, conn);
    Ok(Response::ok(&Empty {}))
}

pub(super) async fn begin(
    services: &Arc<Services>,
    conn: &Arc<Session>,
    frame: &Frame,
) -> HandlerResult {
    let req: TxBeginRequest = decode(frame)?;
    check_producer_group(&req.producer_group)?;
    if req.timeout_ms == Some(0) {
        return Err(HandlerError::bad_request(
            "a transaction timeout must be at least 1 ms",
        ));
    }
    services.tx_producers.register(&req.producer_group, conn);
    let s = Arc::clone(services);
    let tx_id = blocking(move || Ok(s.tx.begin(&req.producer_group, req.timeout_ms)?)).await?;
    Ok(Response::ok(&TxBeginResponse { tx_id }))
}

pub(super) async fn send(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: TxSendRequest = decode(frame)?;
    let max = services.config.max_batch_messages;
    if req.count == 0 || req.count > max {
        return Err(HandlerError::new(
            Status::BatchTooLarge,
            format!(
                "a send in a transaction holds 1 to {max} messages, not {}",
                req.count
            ),
        ));
    }
    let s = Arc::clone(services);
    let body = frame.body.clone();
    blocking(move || {
        let msgs = batch::decode(&body, req.count, u32::MAX)
            .map_err(|e| HandlerError::bad_request(e.to_string()))?;
        let puts: Vec<PutMessage<'_>> = msgs
            .iter()
            .map(|m| PutMessage {
                properties: m.properties,
                body: m.body,
                born_timestamp_ms: m.born_timestamp_ms,
                reconsume_times: 0,
            })
            .collect();
        let (first_index, messages) = s.tx.send(&req.tx_id, &req.topic, req.queue_id, &puts)?;
        Ok(Response::ok(&TxSendResponse {
            first_index,
            messages,
        }))
    })
    .await
}

/// Resolves the acks of a request: a receipt handle's lease is extended past the
/// transaction's whole check window, so that it is still held when the commit acks it.
fn resolve_acks(services: &Services, req: &TxAckRequest) -> Result<Vec<AckItem>, HandlerError> {
    let c = services.tx.config();
    let hold_ms = c
        .timeout_ms
        .saturating_add(
            c.check_interval_ms
                .saturating_mul(u64::from(c.max_checks) + 1),
        )
        .saturating_add(60_000)
        .min(MAX_INVISIBLE_MS);
    let mut out = Vec::with_capacity(req.acks.len());
    for a in &req.acks {
        out.push(match a {
            TxAck::Offset {
                topic,
                queue_id,
                offset,
            } => AckItem {
                group: req.group.clone(),
                topic: topic.clone(),
                queue_id: *queue_id,
                offset: *offset,
                handle: None,
            },
            TxAck::Receipt { handle } => {
                let changed =
                    services
                        .pop
                        .change(&ctx(services), &req.group, handle, hold_ms, now_ms())?;
                let h = changed.receipt_handle;
                let (topic, queue_id) = services.pop.locate(&req.group, &h)?;
                AckItem {
                    group: req.group.clone(),
                    topic,
                    queue_id,
                    offset: h.offset(),
                    handle: Some(h),
                }
            }
        });
    }
    Ok(out)
}

pub(super) async fn ack(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: TxAckRequest = decode(frame)?;
    check_group(&req.group)?;
    if req.acks.is_empty() || req.acks.len() > services.config.max_batch_messages as usize {
        return Err(HandlerError::bad_request(format!(
            "an ack in a transaction holds 1 to {} acks, not {}",
            services.config.max_batch_messages,
            req.acks.len()
        )));
    }
    // Fails before anything is leased for a transaction that cannot take acks.
    crate::tx::parse_id(&req.tx_id)?;
    let items = resolve_acks(services, &req)?;
    let s = Arc::clone(services);
    let acks = blocking(move || Ok(s.tx.ack(&req.tx_id, items)?)).await?;
    Ok(Response::ok(&TxAckResponse { acks }))
}

/// Applies a committed transaction's acks and writes them: leases of receive-mode groups
/// are acked in the lease table, the rest as exact acks in the committed offsets.
pub(crate) fn apply_acks(s: &Services, acks: &[AckItem]) -> Result<(), String> {
    let mut plain: Vec<AckItem> = Vec::new();
    let mut leased: std::collections::BTreeMap<&str, Vec<ReceiptHandle>> = Default::default();
    for a in acks {
        match &a.handle {
            Some(h) => leased.entry(a.group.as_str()).or_default().push(*h),
            None => plain.push(a.clone()),
        }
    }
    for (group, handles) in &leased {
        let refused = s
            .pop
            .ack(&ctx(s), group, handles)
            .map_err(|e| e.to_string())?;
        for r in refused {
            tracing::warn!(group, reason = %r.message, "a lease acked by a committed transaction had ended; its message may be delivered again");
        }
    }
    if !leased.is_empty() {
        s.pop.flush_acks(&ctx(s)).map_err(|e| e.to_string())?;
    }
    s.tx.apply_offset_acks(&s.offsets, &plain)?;
    s.offsets.persist().map_err(|e| e.to_string())
}

pub(super) async fn commit(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: TxCommitRequest = decode(frame)?;
    let s = Arc::clone(services);
    blocking(move || {
        let (stored, acks) = s.tx.commit(&req.tx_id, &|a| apply_acks(&s, a))?;
        s.stats.add_messages_in(stored.len() as u64, 0);
        let receipts = stored
            .iter()
            .map(|r| SendReceipt {
                msg_id: r.msg_id.to_text(),
                queue_id: r.queue_id,
                queue_offset: r.queue_offset.get(),
            })
            .collect();
        Ok(Response::ok(&TxCommitResponse { receipts, acks }))
    })
    .await
}

/// Rolls back and makes the messages a receive-mode ack had leased visible again at once.
pub(crate) fn rollback_now(s: &Services, id: &str, reason: &str) -> Result<(), TxError> {
    let acks = s.tx.rollback(id, reason)?;
    for a in acks {
        if let Some(h) = &a.handle {
            // A lease that ended meanwhile has been handed on already.
            let _ = s.pop.change(&ctx(s), &a.group, h, 0, now_ms());
        }
    }
    Ok(())
}

pub(super) async fn rollback(services: &Arc<Services>, frame: &Frame) -> HandlerResult {
    let req: TxRollbackRequest = decode(frame)?;
    let reason = req
        .reason
        .unwrap_or_else(|| "rolled back by the client".to_owned());
    let s = Arc::clone(services);
    blocking(move || {
        rollback_now(&s, &req.tx_id, &reason)?;
        Ok(Response::ok(&Empty {}))
    })
    .await
}

pub(super) fn list(services: &Services, frame: &Frame) -> HandlerResult {
    let _: TxListRequest = decode(frame)?;
    let now = now_ms();
    let transactions = services
        .tx
        .list()
        .into_iter()
        .map(|t| TxInfo {
            tx_id: t.id,
            producer_group: t.group,
            age_ms: now.saturating_sub(t.begun_ms),
            checks: t.checks,
            messages: t.messages,
            acks: t.acks,
        })
        .collect();
    Ok(Response::ok(&TxListResponse { transactions }))
}

/// Sends due check-backs, rolls back transactions past the check limit, and saves the
/// recovery checkpoint when it moved. Runs until shutdown.
pub(crate) async fn check_back(services: Arc<Services>) {
    let c = services.tx.config();
    let tick = Duration::from_millis((c.check_interval_ms.min(c.timeout_ms) / 4).clamp(10, 500));
    let mut saved: Option<(u64, u64)> = None;
    let mut last_save = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = services.shutdown.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
        }
        let (checks, expired) = services.tx.due(now_ms());
        for c in checks {
            let request = TxCheckRequest {
                tx_id: c.id,
                producer_group: c.group,
                check: c.check,
            };
            match services.tx_producers.pick(&request.producer_group) {
                Some(conn) if conn.push_request(&request) => {
                    tracing::debug!(tx = %request.tx_id, check = request.check, "transaction checked back");
                }
                _ if services.tx_producers.check_others(&request) => {
                    tracing::debug!(tx = %request.tx_id, check = request.check, "transaction checked back through the gRPC endpoint");
                }
                _ => {
                    tracing::debug!(tx = %request.tx_id, group = %request.producer_group, "no live producer to check a transaction back with");
                }
            }
        }
        for (id, reason) in expired {
            let s = Arc::clone(&services);
            let done = blocking(move || {
                let r = rollback_now(&s, &id, &reason);
                if let Err(e) = &r {
                    if matches!(e, TxError::Store(_)) {
                        s.tx.retry_expiry(&id, now_ms());
                    }
                }
                r.map_err(HandlerError::from)
            })
            .await;
            if let Err(e) = done {
                if e.status != Status::TxFinished {
                    tracing::warn!(error = %e.message, "expired transaction not rolled back; will retry");
                }
            }
        }
        if last_save.elapsed() >= Duration::from_secs(1) {
            last_save = tokio::time::Instant::now();
            let s = Arc::clone(&services);
            match blocking(move || Ok(s.tx.save_checkpoint(saved))).await {
                Ok(Ok(now)) => saved = Some(now),
                Ok(Err(e)) => tracing::warn!(error = %e, "transaction checkpoint not saved"),
                Err(e) => tracing::warn!(error = %e.message, "transaction checkpoint not saved"),
            }
        }
    }
}
