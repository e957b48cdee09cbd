//! Transactions over gRPC, on the broker's own (`crate::tx`): a TRANSACTION send begins a
//! transaction holding that one half message (its id is the `transaction_id`);
//! EndTransaction commits or rolls it back. A transaction left open past its timeout is
//! checked back as `RecoverOrphanedTransactionCommand` on the Telemetry stream of the
//! producer that sent it, or of another live producer of its topic; the client answers
//! with EndTransaction (source SERVER_CHECK).
//!
//! What a check needs (the message, the sending client) is held in memory: after a broker
//! restart an open gRPC transaction is not checked back, and ends, rolled back, after the
//! broker's `--tx-max-checks` rounds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use protocol::tx::TxCheckRequest;
use tokio::sync::mpsc;

use super::codes::{ok, status};
use super::convert::md5_upper_hex;
use super::pb::{
    self, telemetry_command::Command, Code, EndTransactionResponse, MessageType,
    RecoverOrphanedTransactionCommand, TelemetryCommand, TransactionResolution,
};
use crate::server::handler::tx::{apply_acks, rollback_now};
use crate::server::response::HandlerError;
use crate::server::services::Services;
use crate::server::tx_producers::OtherProducers;

/// Where a Telemetry stream's server commands go.
pub(super) type Outbox = mpsc::Sender<Result<TelemetryCommand, tonic::Status>>;

/// A producer's Telemetry stream.
struct Producer {
    outbox: Outbox,
    /// Tells this stream from a later one of the same client.
    stream: u64,
    topics: Vec<String>,
}

/// An open transaction's half message, for check-backs.
struct Held {
    client: String,
    topic: String,
    message: pb::Message,
}

/// Live gRPC producers and the open transactions they sent.
#[derive(Default)]
pub(super) struct GrpcTx {
    producers: Mutex<HashMap<String, Producer>>,
    open: Mutex<HashMap<String, Held>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl GrpcTx {
    /// Names a client's Telemetry stream a producer of `topics`.
    pub(super) fn register(&self, client: &str, stream: u64, topics: Vec<String>, outbox: Outbox) {
        lock(&self.producers).insert(
            client.to_owned(),
            Producer {
                outbox,
                stream,
                topics,
            },
        );
    }

    /// Forgets a client's stream once it ends (unless a newer one replaced it).
    pub(super) fn unregister(&self, client: &str, stream: u64) {
        let mut p = lock(&self.producers);
        if p.get(client).is_some_and(|p| p.stream == stream) {
            p.remove(client);
        }
    }

    /// Keeps what a check-back of transaction `id` needs.
    pub(super) fn hold(&self, id: &str, client: &str, topic: &str, message: pb::Message) {
        lock(&self.open).insert(
            id.to_owned(),
            Held {
                client: client.to_owned(),
                topic: topic.to_owned(),
                message,
            },
        );
    }

    /// The command that asks a producer about transaction `id`, and where to send it.
    fn command(&self, id: &str) -> Option<(Outbox, TelemetryCommand)> {
        let open = lock(&self.open);
        let held = open.get(id)?;
        let producers = lock(&self.producers);
        let outbox = producers
            .get(&held.client)
            .or_else(|| producers.values().find(|p| p.topics.contains(&held.topic)))?
            .outbox
            .clone();
        let mut message = held.message.clone();
        let sys = message
            .system_properties
            .get_or_insert_with(Default::default);
        // The Python client checks the digest of what it is asked about.
        sys.body_digest = Some(pb::Digest {
            r#type: pb::DigestType::Md5 as i32,
            checksum: md5_upper_hex(&message.body),
        });
        sys.message_type = MessageType::Transaction as i32;
        let cmd = TelemetryCommand {
            status: Some(ok()),
            command: Some(Command::RecoverOrphanedTransactionCommand(
                RecoverOrphanedTransactionCommand {
                    message: Some(message),
                    transaction_id: id.to_owned(),
                },
            )),
        };
        Some((outbox, cmd))
    }
}

impl OtherProducers for GrpcTx {
    fn check(&self, request: &TxCheckRequest) -> bool {
        match self.command(&request.tx_id) {
            // A full outbox: the client is not reading; it is asked again next round.
            Some((outbox, cmd)) => outbox.try_send(Ok(cmd)).is_ok(),
            None => false,
        }
    }
}

/// Commits or rolls back a transaction; UNSPECIFIED (a checker that does not know yet)
/// leaves it open to be checked again.
pub(super) async fn end(
    s: &Arc<Services>,
    held: &Arc<GrpcTx>,
    req: pb::EndTransactionRequest,
) -> EndTransactionResponse {
    let id = req.transaction_id;
    if id.is_empty() {
        return EndTransactionResponse {
            status: Some(status(
                Code::InvalidTransactionId,
                "the transaction id is empty",
            )),
        };
    }
    let resolution = TransactionResolution::try_from(req.resolution)
        .unwrap_or(TransactionResolution::Unspecified);
    if resolution == TransactionResolution::Unspecified {
        return EndTransactionResponse { status: Some(ok()) };
    }
    let services = Arc::clone(s);
    let tx_id = id.clone();
    let done = tokio::task::spawn_blocking(move || match resolution {
        TransactionResolution::Commit => services
            .tx
            .commit(&tx_id, &|a| apply_acks(&services, a))
            .map(|(stored, _)| services.stats.add_messages_in(stored.len() as u64, 0)),
        _ => rollback_now(&services, &tx_id, "rolled back by the gRPC client"),
    })
    .await;
    let st = match done {
        Ok(Ok(())) => {
            lock(&held.open).remove(&id);
            ok()
        }
        Ok(Err(e)) => {
            let e = HandlerError::from(e);
            let code = match e.status {
                protocol::Status::TxNotFound | protocol::Status::TxFinished => {
                    Code::InvalidTransactionId
                }
                other => super::codes::code_of(other),
            };
            status(code, e.message)
        }
        Err(e) => status(
            Code::InternalServerError,
            format!("transaction task failed: {e}"),
        ),
    };
    EndTransactionResponse { status: Some(st) }
}
