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
            services2.stats.connection_opened();
            tracing::debug!(%peer, "connection opened");
            connection::serve(Arc::clone(&services2), socket, peer).await;
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
async fn refuse(mut socket: TcpStream, limit: u32) {
    let response = Response::error(
        Status::Busy,
        format!("too many connections (limit {limit}); try again later"),
    );
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
