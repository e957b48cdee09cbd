//! One client connection: a cancel-safe read loop that cuts frames out of a buffer, stores
//! sends in arrival order (a lone send on the spot, the rest through the appender thread),
//! starts a task for every other request (bounded per connection together with the sends),
//! and one writer task for the answers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use protocol::{Frame, FrameDecoder, FrameKind, ProtocolError, RequestCode, Status};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::appender::{SendJob, SendQueue};
use super::handler;
use super::response::Response;
use super::writer::{self, Outgoing};
use super::Services;

/// How long a connection may take to finish its in-flight requests after shutdown
/// starts; a peer that stops reading must not hold the broker open.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Bytes the read buffer grows by when it has no room left.
const READ_CHUNK: usize = 16 * 1024;
/// The id of the next connection; never reused, unlike a socket address.
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// What a request task needs from its connection.
pub(crate) struct Connection {
    pub(crate) peer: SocketAddr,
    /// Unique for the life of the broker; group members are bound to it.
    pub(crate) id: u64,
    /// Cancelled when the connection ends or the broker shuts down; held pulls watch it.
    pub(crate) closed: CancellationToken,
    tx: mpsc::Sender<Outgoing>,
    /// Sends of this connection queued for the appender thread and not yet stored.
    queued_sends: AtomicUsize,
}

impl Connection {
    pub(crate) fn queued_sends(&self) -> usize {
        self.queued_sends.load(Ordering::Acquire)
    }

    pub(crate) fn sends_queued(&self, n: usize) {
        self.queued_sends.fetch_add(n, Ordering::AcqRel);
    }

    pub(crate) fn sends_done(&self, n: usize) {
        self.queued_sends.fetch_sub(n, Ordering::AcqRel);
    }

    /// Queues a response for the writer; dropped if the connection is already gone.
    pub(crate) async fn respond(&self, request_id: u64, response: Response) {
        let _ = self
            .tx
            .send(Outgoing {
                request_id,
                response,
            })
            .await;
    }

    /// Queues a response from a thread outside the runtime (the appender) without
    /// blocking it; only when the writer's queue is full does a task wait for room. The
    /// in-flight slot is given back once the response is queued.
    pub(crate) fn respond_from_thread(
        &self,
        runtime: &tokio::runtime::Handle,
        request_id: u64,
        response: Response,
        permit: OwnedSemaphorePermit,
    ) {
        let out = Outgoing {
            request_id,
            response,
        };
        match self.tx.try_send(out) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => drop(permit),
            Err(mpsc::error::TrySendError::Full(out)) => {
                let tx = self.tx.clone();
                runtime.spawn(async move {
                    let _ = tx.send(out).await;
                    drop(permit);
                });
            }
        }
    }
}

/// Serves one accepted socket until the peer leaves, the protocol breaks, or shutdown.
pub(crate) async fn serve(services: Arc<Services>, socket: TcpStream, peer: SocketAddr) {
    let _ = socket.set_nodelay(true);
    let (reader, write_half) = socket.into_split();
    let inflight = services.config.max_inflight_per_connection as usize;
    let (tx, rx) = mpsc::channel(inflight);
    let closed = services.shutdown.child_token();
    // The writer holds only the token: it must end once the reader and every request
    // task have dropped their senders (held inside `Connection`).
    let conn = Arc::new(Connection {
        peer,
        id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
        closed: closed.clone(),
        tx,
        queued_sends: AtomicUsize::new(0),
    });
    let writer = {
        let closed = closed.clone();
        let services = Arc::clone(&services);
        async move {
            if let Err(e) = writer::run(write_half, rx, &services.stats).await {
                tracing::debug!(%peer, error = %e, "write failed; closing");
            }
            closed.cancel();
        }
    };
    let reader = read_loop(Arc::clone(&services), conn, reader);
    let both = async {
        tokio::join!(reader, writer);
    };
    let grace = async {
        services.shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        () = both => {}
        () = grace => tracing::warn!(%peer, "connection did not drain in time; dropped"),
    }
    closed.cancel();
}

/// Reads and dispatches frames. Returning drops this loop's sender, so the writer ends
/// once the requests still in flight have answered.
async fn read_loop(services: Arc<Services>, conn: Arc<Connection>, mut reader: OwnedReadHalf) {
    let decoder = FrameDecoder::new(services.config.max_frame_bytes());
    let permits = Arc::new(Semaphore::new(
        services.config.max_inflight_per_connection as usize,
    ));
    let appender = services.appender.sender();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let stall = Duration::from_millis(services.config.partial_frame_timeout_ms);
    // Created once: a fresh cancellation future per read registers with the token's lock.
    let closed = conn.closed.clone();
    let cancelled = closed.cancelled();
    tokio::pin!(cancelled);
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let alone = buf.is_empty();
                    dispatch(&services, &conn, &permits, appender.as_ref(), frame, alone).await;
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
        // Only a half-received frame is timed: idle connections between requests are
        // normal, but a peer that stops mid-frame would hold its buffer forever.
        // The timer is armed only while a frame is incomplete.
        let partial = !buf.is_empty();
        let stalled = async move {
            if partial {
                tokio::time::sleep(stall).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = &mut cancelled => return,
            () = stalled => {
                tracing::warn!(peer = %conn.peer, pending = buf.len(), "no progress on a partial frame; closing");
                return;
            }
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => {
                    if !buf.is_empty() {
                        tracing::debug!(peer = %conn.peer, pending = buf.len(), "peer closed mid-frame");
                    }
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(peer = %conn.peer, error = %e, "read failed");
                    return;
                }
            },
        }
    }
}

/// Answers what can be answered about a broken frame. Returns whether the connection
/// can go on: only after a frame of another protocol version, which was skipped whole.
async fn report_protocol_error(conn: &Connection, buf: &BytesMut, e: ProtocolError) -> bool {
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
        ProtocolError::FrameTooLarge { .. } if !starts_with_magic(buf) => {
            tracing::warn!(peer = %conn.peer, "input is not FerroMQ frames; closing");
            false
        }
        ProtocolError::FrameTooLarge { len, max } => {
            tracing::warn!(peer = %conn.peer, len, max, "oversized frame; closing");
            let msg = format!("frame of {len} bytes exceeds the limit of {max} bytes");
            conn.respond(
                peeked_request_id(buf),
                Response::error(Status::FrameTooLarge, msg),
            )
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

/// Whether the bytes after the length prefix are FerroMQ's magic (or not there yet), so
/// that an oversized length is worth answering rather than just garbage.
fn starts_with_magic(buf: &BytesMut) -> bool {
    const MAGIC_AT: usize = 4;
    match buf.get(MAGIC_AT..MAGIC_AT + 2) {
        Some(m) => u16::from_le_bytes([m[0], m[1]]) == protocol::frame::MAGIC,
        None => true,
    }
}

/// The request id of the frame at the start of `buf`, if enough of it has arrived.
fn peeked_request_id(buf: &BytesMut) -> u64 {
    const ID_AT: usize = 12;
    buf.get(ID_AT..ID_AT + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes)
}

/// Starts one request while a permit is free (`Busy` otherwise): a send goes to the
/// appender, anything else runs as a task of its own.
async fn dispatch(
    services: &Arc<Services>,
    conn: &Arc<Connection>,
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
    let Ok(permit) = Arc::clone(permits).try_acquire_owned() else {
        let msg = format!(
            "too many requests in flight on this connection (limit {})",
            services.config.max_inflight_per_connection
        );
        conn.respond(request_id, Response::error(Status::Busy, msg))
            .await;
        return;
    };
    if code == RequestCode::Send {
        let job = SendJob {
            conn: Arc::clone(conn),
            frame,
            permit,
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
        let response = handler::handle(&services, &conn, code, frame).await;
        conn.respond(request_id, response).await;
        drop(permit);
    });
}
