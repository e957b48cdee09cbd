//! The HTTP endpoint (`--http-listen`): Prometheus metrics, the dashboard's JSON API, the
//! dashboard itself, and health checks, served by hyper on the broker's tokio runtime.
//!
//! Files follow the request path: this module accepts connections (a cap on how many,
//! a header-read timeout, a header size limit), `routes` dispatches, `metrics` renders
//! `/metrics` from `recorder` and the broker's state, `api` answers `/api/...`,
//! `dashboard` serves the page. The listener is bound before the store opens, so
//! `/healthz` answers and `/readyz` says "recovering" while the store recovers.

mod api;
mod dashboard;
mod error;
mod metrics;
mod recorder;
mod routes;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::MetricsPerQueue;
use crate::security::{AcceptError, MaybeTlsStream, Security};
use crate::server::services::Services;

pub use recorder::{
    AtomicHistogram, HistogramSnapshot, Recorder, TopicCounters, LATENCY_BUCKETS_S,
};

/// A client must send its complete request head within this time, or it is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers); larger ones get 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Largest request body (a test message); larger ones get 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What the HTTP handlers share.
pub(crate) struct HttpState {
    /// Set once the store is open and recovered; until then only health checks answer.
    services: OnceLock<Arc<Services>>,
    recorder: Arc<Recorder>,
    per_queue: MetricsPerQueue,
    /// TLS for the listener, credentials for the requests.
    security: Arc<Security>,
}

impl HttpState {
    /// The broker's services, or `None` while it starts.
    fn services(&self) -> Option<&Arc<Services>> {
        self.services.get()
    }
}

/// The running HTTP endpoint; stopped by [`HttpServer::stop`] or when dropped.
pub(crate) struct HttpServer {
    local_addr: SocketAddr,
    state: Arc<HttpState>,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl HttpServer {
    /// Serves HTTP on `listener` in the background of the current runtime.
    pub(crate) fn start(
        listener: TcpListener,
        recorder: Arc<Recorder>,
        per_queue: MetricsPerQueue,
        max_connections: u32,
        security: Arc<Security>,
    ) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let state = Arc::new(HttpState {
            services: OnceLock::new(),
            recorder,
            per_queue,
            security,
        });
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(max_connections as usize));
        tracker.spawn(accept_loop(
            listener,
            Arc::clone(&state),
            slots,
            stop.clone(),
            tracker.clone(),
        ));
        Ok(Self {
            local_addr,
            state,
            stop,
            tracker,
        })
    }

    /// Where it listens (the real port when port 0 was asked for).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Makes the API and metrics answer: the store is open and recovered.
    pub(crate) fn ready(&self, services: Arc<Services>) {
        let _ = self.state.services.set(services);
    }

    /// Closes the listener and every HTTP connection, and waits for their tasks (which
    /// hold the broker's services) to end.
    pub(crate) async fn stop(&self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<HttpState>,
    slots: Arc<Semaphore>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let router = routes::router(Arc::clone(&state));
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracker.spawn(refuse_busy(stream));
            continue;
        };
        let ip = routes::PeerIp(peer.ip());
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ip);
                req
            },
        ));
        let stop = stop.clone();
        let tls = state.security.tls().cloned();
        tracker.spawn(async move {
            let _slot = slot;
            let stream = match tls {
                None => MaybeTlsStream::Plain(stream),
                Some(tls) => match tls.accept(stream).await {
                    Ok(s) => s,
                    Err(AcceptError::PlaintextRefused(stream)) => {
                        refuse_plaintext(stream).await;
                        return;
                    }
                    Err(AcceptError::Io(e)) => {
                        tracing::debug!(%peer, error = %e, "HTTP TLS handshake failed");
                        return;
                    }
                },
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES.max(8192))
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = stop.cancelled() => {}
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                    }
                }
            }
        });
    }
}

/// Answers a connection past the cap with 503 and closes it, without reading it.
async fn refuse_busy(stream: TcpStream) {
    let body = r#"{"error":"too many HTTP connections; try again"}"#;
    answer_and_close(stream, "503 Service Unavailable", body).await;
}

/// Answers a plaintext request on a TLS-only listener with 400 and closes it.
async fn refuse_plaintext(stream: TcpStream) {
    let body = r#"{"error":"this endpoint requires TLS (--tls-mode required); use https://"}"#;
    answer_and_close(stream, "400 Bad Request", body).await;
}

async fn answer_and_close(mut stream: TcpStream, status: &str, body: &str) {
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let refuse = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        // Closing with the request unread would reset the connection and could destroy
        // the answer before the client reads it: read what it sent first, briefly.
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), refuse).await;
}
