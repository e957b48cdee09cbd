//! `MessagingService`: each RPC decoded and answered with an in-body status (the call
//! itself always ends OK, as the clients expect). RPCs FerroMQ does not serve (PullMessage,
//! UpdateOffset, GetOffset, QueryOffset, SyncLiteSubscription) answer gRPC UNIMPLEMENTED.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::codes::{ok, status};
use super::pb::messaging_service_server::MessagingService;
use super::pb::{
    settings::PubSub, telemetry_command::Command, AckMessageRequest, AckMessageResponse,
    ChangeInvisibleDurationRequest, ChangeInvisibleDurationResponse, Code, EndTransactionRequest,
    EndTransactionResponse, ForwardMessageToDeadLetterQueueRequest,
    ForwardMessageToDeadLetterQueueResponse, HeartbeatRequest, HeartbeatResponse,
    NotifyClientTerminationRequest, NotifyClientTerminationResponse, QueryAssignmentRequest,
    QueryAssignmentResponse, QueryRouteRequest, QueryRouteResponse, RecallMessageRequest,
    RecallMessageResponse, ReceiveMessageRequest, ReceiveMessageResponse, SendMessageRequest,
    SendMessageResponse, TelemetryCommand,
};
use super::tx::GrpcTx;
use super::{receive, route, send, settings, tx};
use crate::server::services::Services;

/// Header naming the client's namespace.
const NAMESPACE_HEADER: &str = "x-mq-namespace";

/// The service behind the endpoint; shared by every connection.
pub(super) struct Endpoint {
    services: Arc<Services>,
    local: SocketAddr,
    /// Cancelled when the endpoint stops: long polls and Telemetry streams end on it.
    stop: CancellationToken,
    /// Round robin over a topic's queues for sends without a message group.
    next_queue: AtomicU32,
    /// Live producers' Telemetry streams and open transactions, for check-backs.
    txs: Arc<GrpcTx>,
    /// Numbers Telemetry streams.
    streams: AtomicU64,
}

impl Endpoint {
    pub(super) fn new(
        services: Arc<Services>,
        local: SocketAddr,
        stop: CancellationToken,
        txs: Arc<GrpcTx>,
    ) -> Self {
        Self {
            services,
            local,
            stop,
            next_queue: AtomicU32::new(0),
            txs,
            streams: AtomicU64::new(0),
        }
    }
}

/// A stream of server messages.
type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The client's id (`x-mq-client-id`), empty when absent.
fn client_id(m: &MetadataMap) -> String {
    m.get("x-mq-client-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn namespace(m: &MetadataMap) -> &str {
    m.get(NAMESPACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// What is left of the client's deadline (`grpc-timeout`: digits and a unit).
fn client_wait(m: &MetadataMap) -> Option<Duration> {
    let v = m.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[tonic::async_trait]
impl MessagingService for Endpoint {
    async fn query_route(
        &self,
        request: Request<QueryRouteRequest>,
    ) -> Result<Response<QueryRouteResponse>, Status> {
        let ns = namespace(request.metadata()).to_owned();
        let req = request.into_inner();
        if !ns.is_empty() {
            return Ok(Response::new(QueryRouteResponse {
                status: Some(status(
                    Code::BadRequest,
                    format!("namespace {ns:?}: FerroMQ serves only the empty namespace"),
                )),
                message_queues: Vec::new(),
            }));
        }
        let endpoints = route::advertised(req.endpoints.as_ref(), self.local);
        Ok(Response::new(route::query_route(
            &self.services,
            req.topic,
            &endpoints,
        )))
    }

    async fn heartbeat(
        &self,
        _request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        Ok(Response::new(HeartbeatResponse { status: Some(ok()) }))
    }

    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let client = client_id(request.metadata());
        let from = send::Sender {
            client: &client,
            txs: &self.txs,
        };
        let resp = send::send(
            &self.services,
            request.into_inner(),
            &self.next_queue,
            &from,
        )
        .await;
        Ok(Response::new(resp))
    }

    async fn query_assignment(
        &self,
        request: Request<QueryAssignmentRequest>,
    ) -> Result<Response<QueryAssignmentResponse>, Status> {
        let req = request.into_inner();
        let endpoints = route::advertised(req.endpoints.as_ref(), self.local);
        Ok(Response::new(route::query_assignment(
            &self.services,
            req.topic,
            &endpoints,
        )))
    }

    async fn receive_message(
        &self,
        request: Request<ReceiveMessageRequest>,
    ) -> Result<Response<Boxed<ReceiveMessageResponse>>, Status> {
        let wait = client_wait(request.metadata());
        let items = receive::receive(&self.services, request.into_inner(), wait, &self.stop).await;
        Ok(Response::new(Box::pin(tokio_stream::iter(
            items.into_iter().map(Ok),
        ))))
    }

    async fn ack_message(
        &self,
        request: Request<AckMessageRequest>,
    ) -> Result<Response<AckMessageResponse>, Status> {
        Ok(Response::new(
            receive::ack(&self.services, request.into_inner()).await,
        ))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        request: Request<ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<ForwardMessageToDeadLetterQueueResponse>, Status> {
        Ok(Response::new(
            receive::forward_to_dlq(&self.services, request.into_inner()).await,
        ))
    }

    async fn end_transaction(
        &self,
        request: Request<EndTransactionRequest>,
    ) -> Result<Response<EndTransactionResponse>, Status> {
        Ok(Response::new(
            tx::end(&self.services, &self.txs, request.into_inner()).await,
        ))
    }

    async fn telemetry(
        &self,
        request: Request<Streaming<TelemetryCommand>>,
    ) -> Result<Response<Boxed<TelemetryCommand>>, Status> {
        let client = client_id(request.metadata());
        let stream = self.streams.fetch_add(1, Ordering::Relaxed);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(8);
        let services = Arc::clone(&self.services);
        let stop = self.stop.clone();
        let txs = Arc::clone(&self.txs);
        // Open until the client closes it (or the endpoint stops): every settings command
        // is answered with the server's settings.
        self.services.tracker.spawn(async move {
            loop {
                let next = tokio::select! {
                    m = inbound.message() => m,
                    () = stop.cancelled() => break,
                    () = services.shutdown.cancelled() => break,
                };
                match next {
                    Ok(Some(TelemetryCommand {
                        command: Some(Command::Settings(s)),
                        ..
                    })) => {
                        // A producer's stream is where its transactions are checked back.
                        if let Some(PubSub::Publishing(p)) = &s.pub_sub {
                            let topics = p.topics.iter().map(|t| t.name.clone()).collect();
                            txs.register(&client, stream, topics, tx.clone());
                        }
                        let reply = TelemetryCommand {
                            status: Some(ok()),
                            command: Some(Command::Settings(settings::reply(&services, s))),
                        };
                        if tx.send(Ok(reply)).await.is_err() {
                            break;
                        }
                    }
                    // Answers to server commands; the endpoint sends none that need one.
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            txs.unregister(&client, stream);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn notify_client_termination(
        &self,
        _request: Request<NotifyClientTerminationRequest>,
    ) -> Result<Response<NotifyClientTerminationResponse>, Status> {
        Ok(Response::new(NotifyClientTerminationResponse {
            status: Some(ok()),
        }))
    }

    async fn change_invisible_duration(
        &self,
        request: Request<ChangeInvisibleDurationRequest>,
    ) -> Result<Response<ChangeInvisibleDurationResponse>, Status> {
        Ok(Response::new(receive::change(
            &self.services,
            request.into_inner(),
        )))
    }

    async fn recall_message(
        &self,
        request: Request<RecallMessageRequest>,
    ) -> Result<Response<RecallMessageResponse>, Status> {
        Ok(Response::new(
            send::recall(&self.services, request.into_inner()).await,
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_deadline_is_read_from_grpc_timeout() {
        let mut m = MetadataMap::new();
        m.insert("grpc-timeout", "23S".parse().unwrap());
        assert_eq!(client_wait(&m), Some(Duration::from_secs(23)));
        m.insert("grpc-timeout", "1500m".parse().unwrap());
        assert_eq!(client_wait(&m), Some(Duration::from_millis(1500)));
        m.insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(client_wait(&m), None);
    }
}
