//! The accept loop: one task per connection, at most `max_connections` at once.

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use bytes::BytesMut;
use protocol::{Frame, FrameKind, Status};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::connection;
use super::response::Response;
use super::services::Services;
use crate::security::{AcceptError, MaybeTlsStream};

/// Accepts until `stop` (cancelled first at shutdown, so no connection arrives while
/// the others drain). Accept errors (such as running out of file descriptors) pause the
/// loop with a growing backoff, never a spin, and are logged once per episode.
pub(crate) async fn run(services: Arc<Services>, listener: TcpListener, stop: CancellationToken) {
    let limit = services.config.max_connections;
    let slots = Arc::new(Semaphore::new(limit as usize));
    // The same exponential schedule as the client's retries (backon's builder).
    let pauses = || {
        backon::ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(10))
            .with_max_delay(Duration::from_secs(1))
            .without_max_times()
            .build()
    };
    let mut delays = pauses();
    let mut failures = 0u64;
    // Refusals are logged once per run of them, not once per connection.
    let mut refused = 0u64;
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => {
                if failures > 0 {
                    tracing::info!(failures, "accepting connections again");
                }
                failures = 0;
                delays = pauses();
                pair
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(error = %e, "accept failed; backing off until it succeeds again");
                }
                failures += 1;
                let pause = delays.next().unwrap_or(Duration::from_secs(1));
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if refused == 0 {
                tracing::warn!(%peer, limit, "connection refused: limit reached");
            }
            refused += 1;
            services.tracker.spawn(refuse(socket, limit));
            continue;
        };
        if refused > 0 {
            tracing::info!(
                refused,
                "connections admitted again after refusals at the limit"
            );
            refused = 0;
        }
        let services2 = Arc::clone(&services);
        services.tracker.spawn(async move {
            let accepted_at = tokio::time::Instant::now();
            // The TLS handshake runs here, in the connection's task, never in the loop.
            let stream = match services2.security.tls() {
                None => MaybeTlsStream::Plain(socket),
                Some(tls) => match tls.accept(socket).await {
                    Ok(stream) => stream,
                    Err(AcceptError::PlaintextRefused(socket)) => {
                        tracing::debug!(%peer, "plaintext connection refused: TLS required");
                        let msg =
                            "this broker requires TLS (--tls-mode required); connect with mq --tls";
                        answer_and_close(socket, Response::error(Status::TlsRequired, msg)).await;
                        drop(slot);
                        return;
                    }
                    Err(AcceptError::Io(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        drop(slot);
                        return;
                    }
                },
            };
            services2.stats.connection_opened();
            tracing::debug!(%peer, tls = stream.is_tls(), "connection opened");
            connection::serve(Arc::clone(&services2), stream, peer, accepted_at).await;
            tracing::debug!(%peer, "connection closed");
            services2.stats.connection_closed();
            drop(slot);
        });
    }
    // The socket closes here, before any connection is told to stop.
    drop(listener);
    tracing::info!("stopped accepting connections");
}

/// Tells a client over the limit why it is turned away, then closes.
async fn refuse(socket: TcpStream, limit: u32) {
    let response = Response::error(
        Status::Busy,
        format!("too many connections (limit {limit}); try again later"),
    );
    answer_and_close(socket, response).await;
}

/// Writes one error answer (request id 0) and closes, within a second.
async fn answer_and_close(mut socket: TcpStream, response: Response) {
    let mut buf = BytesMut::new();
    if Frame::encode(
        &mut buf,
        FrameKind::Response,
        u16::from(response.status),
        0,
        &response.header,
        &[],
    )
    .is_ok()
    {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = socket.write_all(&buf).await;
            let _ = socket.shutdown().await;
        })
        .await;
    }
}
