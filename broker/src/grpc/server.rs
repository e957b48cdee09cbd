//! The endpoint's listener: tonic over the bound socket, plaintext HTTP/2, stopped with
//! its own token (long polls and Telemetry streams end on it) before the broker closes.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use super::pb::messaging_service_server::MessagingServiceServer;
use super::service::Endpoint;
use super::tx::GrpcTx;
use crate::server::services::Services;
use crate::server::tx_producers::OtherProducers;

/// Slack over the largest body for the rest of a send request (properties, headers).
const REQUEST_SLACK_BYTES: usize = 1 << 20;

/// A running gRPC endpoint.
pub(crate) struct GrpcServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl GrpcServer {
    /// Serves `listener` until [`GrpcServer::stop`].
    ///
    /// # Errors
    /// The socket's address cannot be read.
    pub(crate) fn start(listener: TcpListener, services: Arc<Services>) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        // A body at the broker's limit must reach the store's check (which answers
        // MESSAGE_BODY_TOO_LARGE) rather than tonic's 4 MiB default limit.
        let max_request = usize::try_from(services.config.max_message_size.0)
            .unwrap_or(usize::MAX)
            .saturating_add(REQUEST_SLACK_BYTES)
            .max(4 << 20);
        let txs = Arc::new(GrpcTx::default());
        services
            .tx_producers
            .set_others(Arc::clone(&txs) as Arc<dyn OtherProducers>);
        let endpoint = Endpoint::new(services, addr, stop.clone(), txs);
        let service = MessagingServiceServer::new(endpoint)
            .max_decoding_message_size(max_request)
            .max_encoding_message_size(usize::MAX);
        let incoming = TcpListenerStream::new(listener);
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, token.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "gRPC endpoint stopped");
            }
        });
        Ok(Self { addr, stop, task })
    }

    /// Where it listens.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, ends long polls and Telemetry streams, and waits for the calls in
    /// flight until `deadline`; past it they are dropped.
    pub(crate) async fn stop(mut self, deadline: Instant) {
        self.stop.cancel();
        if tokio::time::timeout_at(deadline, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
            let _ = self.task.await;
        }
    }
}
