//! The accept loop: one task per connection, at most `max_connections` at once.

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use bytes::BytesMut;
use protocol::{Frame, FrameKind, Status};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::connection;
use super::response::Response;
use super::Services;

/// Accepts until shutdown. Accept errors (such as running out of file descriptors) are
/// logged and retried after a short pause rather than ending the broker.
pub(crate) async fn run(services: Arc<Services>, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(services.config.max_connections as usize));
    // The same exponential schedule as the client's retries (backon's builder).
    let pauses = || {
        backon::ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(10))
            .with_max_delay(Duration::from_secs(1))
            .without_max_times()
            .build()
    };
    let mut delays = pauses();
    loop {
        let accepted = tokio::select! {
            () = services.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => {
                delays = pauses();
                pair
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; retrying");
                let pause = delays.next().unwrap_or(Duration::from_secs(1));
                tokio::select! {
                    () = services.shutdown.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, limit = services.config.max_connections, "connection refused: limit reached");
            let limit = services.config.max_connections;
            services.tracker.spawn(refuse(socket, limit));
            continue;
        };
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
