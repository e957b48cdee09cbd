//! One client connection: a cancel-safe read loop that cuts frames out of a buffer, stores
//! sends in arrival order (a lone send on the spot, the rest through the appender thread),
//! starts a task for every other request (bounded per connection together with the sends,
//! by count and by bytes), and one writer task for the answers.
//!
//! Everything a connection starts ends with it: once the peer is gone (a failed read or
//! write) or the connection is dropped at shutdown, its request tasks are dropped, its
//! held pulls released and its queued answers freed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use protocol::{Frame, FrameDecoder, FrameKind, ProtocolError, RequestCode, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use super::budget::{Held, InFlight};
use super::gate::{self, Gate};
use super::handler;
use super::response::Response;
use super::send::{SendJob, SendQueue};
use super::services::Services;
use super::session::Session;
use super::writer;
use crate::security::{MaybeTlsStream, NativeAuth};

/// Bytes the read buffer grows by when it has no room left.
const READ_CHUNK: usize = 16 * 1024;

/// Serves one accepted connection, plaintext or TLS, until the peer leaves, the protocol
/// breaks, or shutdown. `accepted_at` starts the hello deadline (a TLS handshake counts).
pub(crate) async fn serve(
    services: Arc<Services>,
    stream: MaybeTlsStream,
    peer: SocketAddr,
    accepted_at: Instant,
) {
    match stream {
        MaybeTlsStream::Plain(socket) => {
            let _ = socket.set_nodelay(true);
            // Owned halves: no lock between the reader and the writer.
            let (reader, writer) = socket.into_split();
            serve_halves(services, reader, writer, peer, accepted_at).await;
        }
        MaybeTlsStream::Tls(tls) => {
            let _ = tls.get_ref().0.set_nodelay(true);
            let (reader, writer) = tokio::io::split(*tls);
            serve_halves(services, reader, writer, peer, accepted_at).await;
        }
    }
}

async fn serve_halves<R, W>(
    services: Arc<Services>,
    reader: R,
    write_half: W,
    peer: SocketAddr,
    accepted_at: Instant,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let inflight = services.config.max_inflight_per_connection as usize;
    let (tx, rx) = mpsc::channel(inflight);
    // The writer holds only the tokens: it must end once the reader and every request
    // task have dropped their senders (held inside `Session`).
    let conn = Arc::new(Session::new(
        peer,
        services.shutdown.child_token(),
        tx,
        services.config.max_pending_bytes(),
    ));
    let (closed, gone) = (conn.closed.clone(), conn.gone.clone());
    let ended = (closed.clone(), gone.clone());
    let writer = {
        let services = Arc::clone(&services);
        async move {
            if let Err(e) = writer::run(write_half, rx, &services.stats).await {
                // The peer cannot be told anything any more: stop working for it.
                tracing::debug!(%peer, error = %e, "write failed; closing");
                gone.cancel();
            }
            closed.cancel();
        }
    };
    // Only the reader and the request tasks hold `conn` (and so a sender to the writer).
    let reader = read_loop(Arc::clone(&services), conn, reader, accepted_at);
    let both = async {
        tokio::join!(reader, writer);
    };
    // Half of the shutdown deadline for answering what is in flight; the rest is left for
    // the store to close.
    let grace = Duration::from_millis(services.config.shutdown_timeout_ms / 2);
    let grace = async {
        services.shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        () = both => {}
        () = grace => tracing::warn!(%peer, "connection did not drain in time; dropped"),
    }
    ended.0.cancel();
    ended.1.cancel();
}

/// Why the read loop stops waiting for bytes.
#[derive(Clone, Copy)]
enum Timer {
    /// No complete first frame since the connection was accepted.
    Hello,
    /// A frame started but did not progress.
    Partial,
    /// Nothing in flight and nothing received.
    Idle,
}

/// Reads and dispatches frames. Returning drops this loop's sender, so the writer ends
/// once the requests still in flight have answered.
async fn read_loop<R: AsyncRead + Unpin>(
    services: Arc<Services>,
    conn: Arc<Session>,
    mut reader: R,
    accepted_at: Instant,
) {
    let config = &services.config;
    let decoder = FrameDecoder::new(config.max_frame_bytes());
    let max_inflight = config.max_inflight_per_connection as usize;
    let permits = Arc::new(Semaphore::new(max_inflight));
    let appender = services.appender.sender();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let stall = Duration::from_millis(config.partial_frame_timeout_ms);
    let hello_deadline = accepted_at + Duration::from_millis(config.hello_timeout_ms);
    let idle = (config.idle_timeout_ms > 0).then(|| Duration::from_millis(config.idle_timeout_ms));
    let mut greeted = false;
    let mut last_activity = Instant::now();
    // With auth on: the handshake state, and who the connection is once it has passed.
    let mut auth = services
        .security
        .auth_enabled()
        .then(|| NativeAuth::new(conn.peer.ip()));
    // Created once: a fresh cancellation future per read registers with the token's lock.
    let closed = conn.closed.clone();
    let cancelled = closed.cancelled();
    tokio::pin!(cancelled);
    loop {
        loop {
            // Over budget: read nothing more (the peer's sends back up in TCP) until the
            // answers already owed have been written.
            if !conn.budget.may_read() {
                tokio::select! {
                    () = &mut cancelled => return,
                    () = conn.budget.room_to_read() => {}
                }
            }
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    greeted = true;
                    let alone = buf.is_empty();
                    match gate::admit(&services, &conn, auth.as_mut(), frame).await {
                        Gate::Pass(frame) => {
                            dispatch(&services, &conn, &permits, appender.as_ref(), frame, alone)
                                .await;
                        }
                        Gate::Answered => {}
                        Gate::Close => {
                            conn.closed.cancel();
                            return;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    if !report_protocol_error(&conn, &buf, e).await {
                        return;
                    }
                }
            }
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        // Only a half-received frame is timed by `stall`: idle connections between
        // requests are normal, but a peer that stops mid-frame would hold its buffer.
        // Before the first frame the hello deadline runs as well; the earlier one counts.
        let partial = (!buf.is_empty()).then(|| (Timer::Partial, Instant::now() + stall));
        let hello = (!greeted).then_some((Timer::Hello, hello_deadline));
        let timer = match (partial, hello) {
            (Some(p), Some(h)) => Some(if p.1 < h.1 { p } else { h }),
            (p, h) => p
                .or(h)
                .or_else(|| idle.map(|d| (Timer::Idle, last_activity + d))),
        };
        let expired = async move {
            match timer {
                Some((which, at)) => {
                    tokio::time::sleep_until(at).await;
                    which
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut cancelled => return,
            which = expired => match which {
                Timer::Hello => {
                    tracing::debug!(peer = %conn.peer, pending = buf.len(), "no complete first frame in time; closing");
                    return;
                }
                Timer::Partial => {
                    tracing::warn!(peer = %conn.peer, pending = buf.len(), "no progress on a partial frame; closing");
                    return;
                }
                Timer::Idle if permits.available_permits() < max_inflight => {
                    // Requests still in flight (a held pull, say): not idle.
                    last_activity = Instant::now();
                }
                Timer::Idle => {
                    tracing::debug!(peer = %conn.peer, "idle; closing");
                    return;
                }
            },
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => {
                    if !buf.is_empty() {
                        tracing::debug!(peer = %conn.peer, pending = buf.len(), "peer closed mid-frame");
                    }
                    return;
                }
                Ok(_) => last_activity = Instant::now(),
                Err(e) => {
                    // A reset peer reads no answers: drop what it started.
                    tracing::debug!(peer = %conn.peer, error = %e, "read failed");
                    conn.end();
                    return;
                }
            },
        }
    }
}

/// Answers what can be answered about a broken frame. Returns whether the connection
/// can go on: only after a frame of another protocol version, which was skipped whole.
async fn report_protocol_error(conn: &Session, buf: &BytesMut, e: ProtocolError) -> bool {
    match e {
        ProtocolError::UnsupportedVersion {
            found,
            supported,
            request_id,
        } => {
            let msg = format!(
                "protocol version {found} is not supported; this broker speaks version {supported}"
            );
            conn.respond(request_id, Response::error(Status::UnsupportedVersion, msg))
                .await;
            true
        }
        ProtocolError::FrameTooLarge { .. } if !protocol::frame::starts_with_magic(buf) => {
            tracing::warn!(peer = %conn.peer, "input is not FerroMQ frames; closing");
            false
        }
        ProtocolError::FrameTooLarge { len, max } => {
            tracing::warn!(peer = %conn.peer, len, max, "oversized frame; closing");
            let msg = format!("frame of {len} bytes exceeds the limit of {max} bytes");
            let request_id = protocol::frame::peek_request_id(buf).unwrap_or(0);
            conn.respond(request_id, Response::error(Status::FrameTooLarge, msg))
                .await;
            conn.closed.cancel();
            false
        }
        other => {
            // Garbage or a frame that contradicts itself: the stream is out of sync and
            // nothing sensible can be addressed, so the connection just closes.
            tracing::warn!(peer = %conn.peer, error = %other, "malformed input; closing");
            false
        }
    }
}

/// Starts one request while a permit is free (`Busy` otherwise): a send goes to the
/// appender, anything else runs as a task of its own, dropped if the connection goes.
async fn dispatch(
    services: &Arc<Services>,
    conn: &Arc<Session>,
    permits: &Arc<Semaphore>,
    appender: Option<&SendQueue>,
    frame: Frame,
    alone: bool,
) {
    let request_id = frame.request_id;
    if frame.kind != FrameKind::Request {
        let msg = "the broker only accepts request frames";
        conn.respond(request_id, Response::error(Status::BadRequest, msg))
            .await;
        return;
    }
    let Ok(code) = RequestCode::try_from(frame.code) else {
        let msg = format!("unknown request code {}", frame.code);
        conn.respond(request_id, Response::error(Status::UnknownCode, msg))
            .await;
        return;
    };
    if let Some((status, msg)) = services.ha.as_ref().and_then(|ha| ha.refuse(code)) {
        conn.respond(request_id, Response::error(status, msg)).await;
        return;
    }
    let Ok(slot) = Arc::clone(permits).try_acquire_owned() else {
        let msg = format!(
            "too many requests in flight on this connection (limit {})",
            services.config.max_inflight_per_connection
        );
        conn.respond(request_id, Response::error(Status::Busy, msg))
            .await;
        return;
    };
    let frame_bytes = protocol::frame::wire_len(frame.header.len(), frame.body.len());
    let inflight = InFlight {
        _slot: slot,
        _request: conn.budget.hold(Held::Request, frame_bytes),
    };
    if code == RequestCode::Send {
        let job = SendJob {
            conn: Arc::clone(conn),
            frame,
            permit: inflight,
            received: std::time::Instant::now(),
        };
        let refused = match appender {
            Some(queue) => queue.submit(job, alone).await.err(),
            None => Some(job),
        };
        if let Some(job) = refused {
            let id = job.frame.request_id;
            drop(job);
            let msg = "the broker is shutting down";
            conn.respond(id, Response::error(Status::ShuttingDown, msg))
                .await;
        }
        return;
    }
    let services = Arc::clone(services);
    let conn = Arc::clone(conn);
    services.tracker.clone().spawn(async move {
        let work = async {
            // A pull or receive takes its work permit only around its reads, not while it
            // is held; an ack only around its memory update, not while it waits for the
            // write.
            let running = if matches!(
                code,
                RequestCode::Pull | RequestCode::Receive | RequestCode::AckMessages
            ) {
                None
            } else {
                match conn.start_work().await {
                    Ok(permit) => Some(permit),
                    Err(why) => {
                        if let Some(response) = why.response() {
                            conn.respond(request_id, response).await;
                        }
                        return;
                    }
                }
            };
            let started = std::time::Instant::now();
            let response = handler::handle(&services, &conn, code, frame).await;
            // A held pull counts its wait: the time until the consumer got its answer.
            services.stats.recorder().request(code, started.elapsed());
            // Waiting for room in the writer's queue is not work.
            drop(running);
            conn.respond(request_id, response).await;
        };
        tokio::select! {
            () = conn.gone.cancelled() => {}
            () = work => {}
        }
        drop(inflight);
    });
}
