//! One TCP connection to a broker carrying many requests at once.
//!
//! Every request gets a fresh request id and a oneshot in the pending map. A frame is
//! written straight from the caller when nothing is queued and the socket takes it whole;
//! otherwise it joins an unbounded queue that a writer task drains (coalescing whatever is
//! queued into one write), so frames always leave in the order they were started. A reader
//! task cuts response frames out of the socket and completes the oneshot of their request
//! id. Responses may arrive in any order.
//!
//! When the socket fails, every request in flight on it fails with `Closed` (a send is not
//! idempotent, so the caller decides whether to retry) and the next request reconnects with
//! exponential backoff and repeats the Hello handshake.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use protocol::auth::{AuthChallengeRequest, AuthenticateRequest};
use protocol::messages::{ErrorResponse, HelloRequest, HelloResponse};
use protocol::{header, Frame, FrameDecoder, FrameKind, Request, Status, PROTOCOL_VERSION};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::security::{ClientTls, Credentials};
use tokio_rustls::client::TlsStream;

/// Largest response frame accepted; pull responses are bounded by the requested max bytes.
const MAX_RESPONSE_FRAME_BYTES: u32 = 256 << 20;
/// Bytes gathered into one socket write when many frames are queued.
const WRITE_COALESCE_BYTES: usize = 256 << 10;

/// How a [`Connection`] behaves.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Sent in the Hello handshake and used as the consumer member id. Default: random.
    pub client_id: String,
    /// How long a request may wait for its answer (long polls add their wait). Default 10 s.
    pub request_timeout: Duration,
    /// How long to keep trying to (re)connect before a request fails. Default 5 s.
    pub connect_timeout: Duration,
    /// First pause between connection attempts; doubles up to `max_backoff`. Default 20 ms.
    pub initial_backoff: Duration,
    /// Longest pause between connection attempts. Default 1 s.
    pub max_backoff: Duration,
    /// Speak TLS to the broker. Default: the process default ([`crate::set_default_security`]),
    /// none unless set.
    pub tls: Option<ClientTls>,
    /// Authenticate as this user after the Hello (a broker with `--auth on` requires it).
    /// Default: the process default, none unless set.
    pub credentials: Option<Credentials>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        let (tls, credentials) = crate::security::default_security();
        Self {
            client_id: random_client_id(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
            tls,
            credentials,
        }
    }
}

/// A random-enough id: host process id, time and a counter, so two clients never clash.
pub fn random_client_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "mq-{}-{:x}-{n}",
        std::process::id(),
        nanos & 0xFFFF_FFFF_FFFF
    )
}

type Reply = std::result::Result<Frame, Error>;

/// A live socket: its writer queue and the requests waiting for an answer.
struct Link {
    tx: mpsc::UnboundedSender<Bytes>,
    /// The plain socket callers may write to directly; `None` over TLS, where only the
    /// writer task writes (a TLS stream is not shared).
    sock: Option<Arc<OwnedWriteHalf>>,
    /// Who may write to `sock`; see [`Link::send_frame`].
    write: Mutex<WriteState>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    dead: AtomicBool,
    addr: String,
    /// Stops the reader and writer tasks (and so closes the socket) once the link is dead.
    cancel: CancellationToken,
    /// Where requests of the broker (transaction check-backs) go, when someone listens.
    pushes: PushSlot,
}

/// The receiver of broker-to-client requests, shared by every link of a connection.
type PushSlot = Arc<Mutex<Option<mpsc::UnboundedSender<Frame>>>>;

/// Serializes the two writers of a socket: callers writing directly and the writer task.
#[derive(Default)]
struct WriteState {
    /// Frames queued for the writer task and not yet written whole. While non-zero the
    /// task owns the socket (it may be in the middle of a frame) and new frames queue
    /// behind, in order.
    queued: usize,
}

impl Link {
    /// Writes `frame` now if it is `alone` (the only request in flight), nothing is queued
    /// and the socket takes all of it without blocking: no hand-off to the writer task.
    /// Otherwise queues it, or what is left of it after a short write, for the writer task.
    /// Returns false if the writer task is gone.
    fn send_frame(&self, frame: Bytes, alone: bool) -> bool {
        let Ok(mut state) = self.write.lock() else {
            return false;
        };
        let direct = self.sock.as_ref().filter(|_| alone && state.queued == 0);
        let rest = if let Some(sock) = direct {
            match sock.try_write(&frame) {
                Ok(n) if n == frame.len() => return true,
                Ok(n) => frame.slice(n..),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => frame,
                // The reader sees the broken socket too and fails the link; queueing keeps
                // the request's fate in one place.
                Err(_) => frame,
            }
        } else {
            frame
        };
        state.queued += 1;
        self.tx.send(rest).is_ok()
    }

    /// Called by the writer task after writing `n` queued frames whole.
    fn written(&self, n: usize) {
        if let Ok(mut state) = self.write.lock() {
            state.queued = state.queued.saturating_sub(n);
        }
    }

    /// Marks the link dead and fails everything in flight. Idempotent.
    fn fail_all(&self, why: &Error) {
        self.dead.store(true, Ordering::Release);
        self.cancel.cancel();
        let drained: Vec<_> = match self.pending.lock() {
            Ok(mut map) => map.drain().collect(),
            Err(poisoned) => poisoned.into_inner().drain().collect(),
        };
        for (_, tx) in drained {
            let _ = tx.send(Err(clone_error(why, &self.addr)));
        }
    }

    fn remove(&self, id: u64) {
        if let Ok(mut map) = self.pending.lock() {
            map.remove(&id);
        }
    }
}

fn clone_error(e: &Error, addr: &str) -> Error {
    match e {
        Error::Io { source, .. } => Error::Io {
            addr: addr.to_string(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::Protocol(p) => Error::InvalidArgument(format!("connection lost: {p}")),
        // A refusal of the whole connection (TLS required, too many connections).
        Error::Broker { status, message } => Error::Broker {
            status: *status,
            message: message.clone(),
        },
        _ => Error::Closed {
            addr: addr.to_string(),
        },
    }
}

struct Inner {
    addr: String,
    opts: ConnectOptions,
    link: Mutex<Option<Arc<Link>>>,
    /// Held while (re)connecting. It guards the number of failed reconnect rounds, so that
    /// callers queued behind a round that failed share its outcome instead of each
    /// waiting a full connect timeout in turn.
    connecting: tokio::sync::Mutex<u64>,
    next_id: AtomicU64,
    closed: AtomicBool,
    /// Cancelled by `close`: a reconnect in progress (a connect attempt or the pause
    /// between two) gives up at once instead of running out its timeout.
    closing: CancellationToken,
    hello: Mutex<Option<HelloResponse>>,
    pushes: PushSlot,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: stop the socket tasks, which hold only the link.
        if let Some(link) = self.link.get_mut().ok().and_then(Option::take) {
            link.fail_all(&Error::Closed {
                addr: self.addr.clone(),
            });
        }
    }
}

/// A cheaply clonable handle on one multiplexed connection to a broker.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to `addr` (host:port) and performs the Hello handshake.
    ///
    /// # Errors
    /// `Io` when no connection could be made within the connect timeout, `Broker` or
    /// `Protocol` when the handshake is refused.
    pub async fn connect(addr: &str, opts: ConnectOptions) -> Result<Self> {
        let conn = Self {
            inner: Arc::new(Inner {
                addr: addr.to_string(),
                opts,
                link: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(0),
                next_id: AtomicU64::new(1),
                closed: AtomicBool::new(false),
                closing: CancellationToken::new(),
                hello: Mutex::new(None),
                pushes: PushSlot::default(),
            }),
        };
        conn.link().await?;
        Ok(conn)
    }

    /// The broker's address.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// The id this client gave the broker in its hello.
    pub fn client_id(&self) -> &str {
        &self.inner.opts.client_id
    }

    /// The options the connection was opened with.
    pub fn options(&self) -> &ConnectOptions {
        &self.inner.opts
    }

    /// The broker's answer to the last Hello (its limits and version).
    pub fn hello(&self) -> Option<HelloResponse> {
        self.inner.hello.lock().ok().and_then(|h| h.clone())
    }

    /// Most messages the broker accepts in one send.
    pub fn max_batch_messages(&self) -> u32 {
        self.hello().map_or(4096, |h| h.max_batch_messages)
    }

    /// Requests the broker sends to this client (transaction check-backs), from now on and
    /// across reconnects; a later call takes them over from an earlier receiver.
    pub fn requests_from_broker(&self) -> mpsc::UnboundedReceiver<Frame> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut slot) = self.inner.pushes.lock() {
            *slot = Some(tx);
        }
        rx
    }

    /// Sends a request and waits for its answer within the request timeout.
    ///
    /// # Errors
    /// Any [`Error`]; `Broker` carries the broker's status and message.
    pub async fn call<R: Request>(&self, req: &R, body: &[u8]) -> Result<(R::Response, Bytes)> {
        let timeout = self.inner.opts.request_timeout;
        self.start(req, body).await?.wait(timeout).await
    }

    /// Puts a request on the wire and returns without waiting for the answer, so that
    /// requests started one after the other are written in that order.
    ///
    /// # Errors
    /// Connection failures and requests that cannot be encoded.
    pub async fn start<R: Request>(&self, req: &R, body: &[u8]) -> Result<Pending<R>> {
        let link = self.link().await?;
        self.start_on(&link, req, body)
    }

    fn start_on<R: Request>(&self, link: &Arc<Link>, req: &R, body: &[u8]) -> Result<Pending<R>> {
        let head = header::encode(req)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut frame =
            BytesMut::with_capacity(protocol::frame::PREFIX_LEN + head.len() + body.len());
        Frame::encode(
            &mut frame,
            FrameKind::Request,
            u16::from(R::CODE),
            id,
            &head,
            body,
        )?;
        let (tx, rx) = oneshot::channel();
        // Whether this is the only request in flight: pipelined requests rather queue, so
        // the writer task coalesces them into few writes.
        let alone = {
            let mut map = link.pending.lock().map_err(|_| self.closed_error())?;
            // Checked under the map lock: a reader that fails the link sets `dead` before
            // draining, so a request is either drained or refused, never forgotten.
            if link.dead.load(Ordering::Acquire) {
                return Err(self.closed_error());
            }
            map.insert(id, tx);
            map.len() == 1
        };
        if !link.send_frame(frame.freeze(), alone) {
            link.remove(id);
            return Err(self.closed_error());
        }
        Ok(Pending {
            rx,
            id,
            link: Arc::clone(link),
            done: false,
            _marker: std::marker::PhantomData,
        })
    }

    fn closed_error(&self) -> Error {
        Error::Closed {
            addr: self.inner.addr.clone(),
        }
    }

    /// Closes the connection: requests in flight fail with `Closed`, later ones too.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.closing.cancel();
        let link = self.inner.link.lock().ok().and_then(|mut l| l.take());
        if let Some(link) = link {
            link.fail_all(&self.closed_error());
        }
    }

    fn live_link(&self) -> Option<Arc<Link>> {
        let guard = self.inner.link.lock().ok()?;
        guard
            .as_ref()
            .filter(|l| !l.dead.load(Ordering::Acquire))
            .cloned()
    }

    /// The live link, reconnecting with backoff when there is none.
    async fn link(&self) -> Result<Arc<Link>> {
        if let Some(link) = self.live_link() {
            return Ok(link);
        }
        let failed_before = self.failed_rounds();
        let mut failed_rounds = self.inner.connecting.lock().await;
        if let Some(link) = self.live_link() {
            return Ok(link);
        }
        if *failed_rounds != failed_before {
            // A round that ended while this caller waited for the lock just failed.
            return Err(self.unreachable_error());
        }
        let result = self.reconnect().await;
        if result.is_err() {
            *failed_rounds += 1;
        }
        result
    }

    /// Failed reconnect rounds so far, or `u64::MAX` while a round is running: then the
    /// caller waits for that round and shares its outcome.
    fn failed_rounds(&self) -> u64 {
        self.inner.connecting.try_lock().map_or(u64::MAX, |n| *n)
    }

    fn unreachable_error(&self) -> Error {
        Error::Io {
            addr: self.inner.addr.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the broker could not be reached just now",
            ),
        }
    }

    /// One reconnect round: tries with backoff until the connect timeout.
    async fn reconnect(&self) -> Result<Arc<Link>> {
        let deadline = tokio::time::Instant::now() + self.inner.opts.connect_timeout;
        let mut delays =
            crate::backoff::delays(self.inner.opts.initial_backoff, self.inner.opts.max_backoff);
        let mut backoff = delays.next().unwrap_or(self.inner.opts.max_backoff);
        loop {
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(self.closed_error());
            }
            let attempt = tokio::select! {
                () = self.inner.closing.cancelled() => return Err(self.closed_error()),
                attempt = self.open_link() => attempt,
            };
            match attempt {
                Ok(link) => {
                    if let Ok(mut slot) = self.inner.link.lock() {
                        *slot = Some(Arc::clone(&link));
                    }
                    return Ok(link);
                }
                Err(e) if e.is_retriable() && tokio::time::Instant::now() + backoff < deadline => {
                    tracing::debug!(addr = %self.inner.addr, error = %e, "connect failed, retrying");
                    tokio::select! {
                        () = self.inner.closing.cancelled() => return Err(self.closed_error()),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = delays.next().unwrap_or(self.inner.opts.max_backoff);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn open_link(&self) -> Result<Arc<Link>> {
        let addr = &self.inner.addr;
        let io_err = |source| Error::Io {
            addr: addr.clone(),
            source,
        };
        let stream =
            tokio::time::timeout(self.inner.opts.connect_timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| Error::Timeout {
                    what: "connect",
                    after_ms: self.inner.opts.connect_timeout.as_millis() as u64,
                })?
                .map_err(io_err)?;
        stream.set_nodelay(true).map_err(io_err)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let link = |sock| {
            Arc::new(Link {
                tx,
                sock,
                write: Mutex::new(WriteState::default()),
                pending: Mutex::new(HashMap::new()),
                dead: AtomicBool::new(false),
                addr: addr.clone(),
                cancel: CancellationToken::new(),
                pushes: Arc::clone(&self.inner.pushes),
            })
        };
        let link = match &self.inner.opts.tls {
            None => {
                let (read, write) = stream.into_split();
                let write = Arc::new(write);
                let link = link(Some(Arc::clone(&write)));
                tokio::spawn(write_loop(rx, Arc::clone(&link), FrameWriter::Plain(write)));
                tokio::spawn(read_loop(read, Arc::clone(&link)));
                link
            }
            Some(tls) => {
                let name = crate::security::server_name(addr)?;
                let handshake = tls.connector().connect(name, stream);
                let stream = tokio::time::timeout(self.inner.opts.connect_timeout, handshake)
                    .await
                    .map_err(|_| Error::Timeout {
                        what: "TLS handshake",
                        after_ms: self.inner.opts.connect_timeout.as_millis() as u64,
                    })?
                    .map_err(|e| Error::Tls {
                        addr: addr.clone(),
                        reason: format!("handshake failed: {e}"),
                    })?;
                let (read, write) = tokio::io::split(stream);
                let link = link(None);
                tokio::spawn(write_loop(rx, Arc::clone(&link), FrameWriter::Tls(write)));
                tokio::spawn(read_loop(read, Arc::clone(&link)));
                link
            }
        };
        let hello = HelloRequest {
            protocol_version: PROTOCOL_VERSION,
            client_id: self.inner.opts.client_id.clone(),
        };
        let reply = self.start_on(&link, &hello, &[])?;
        let greeted = async {
            let (resp, _) = reply.wait(self.inner.opts.request_timeout).await?;
            if let Ok(mut h) = self.inner.hello.lock() {
                *h = Some(resp);
            }
            if let Some(credentials) = &self.inner.opts.credentials {
                self.authenticate(&link, credentials).await?;
            }
            Ok(())
        };
        match greeted.await {
            Ok(()) => Ok(link),
            Err(e) => {
                link.fail_all(&self.closed_error());
                Err(e)
            }
        }
    }

    /// The challenge-response handshake: the secret signs the broker's fresh nonce and
    /// ours, and never crosses the wire.
    async fn authenticate(&self, link: &Arc<Link>, credentials: &Credentials) -> Result<()> {
        let timeout = self.inner.opts.request_timeout;
        let challenge = AuthChallengeRequest {
            access_key: credentials.access_key.clone(),
        };
        let (nonce, _) = self.start_on(link, &challenge, &[])?.wait(timeout).await?;
        let mut client_nonce = vec![0u8; protocol::auth::NONCE_BYTES];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut client_nonce)
            .map_err(|_| Error::InvalidArgument("the system random source failed".into()))?;
        let proof = credentials.proof(&nonce.server_nonce, &client_nonce);
        let req = AuthenticateRequest {
            access_key: credentials.access_key.clone(),
            client_nonce,
            proof,
        };
        self.start_on(link, &req, &[])?.wait(timeout).await?;
        Ok(())
    }
}

/// A request on the wire whose answer has not been awaited yet.
pub struct Pending<R: Request> {
    rx: oneshot::Receiver<Reply>,
    id: u64,
    link: Arc<Link>,
    done: bool,
    _marker: std::marker::PhantomData<fn() -> R>,
}

impl<R: Request> Pending<R> {
    /// Waits for the answer.
    ///
    /// # Errors
    /// `Timeout` after `timeout`; `Closed`/`Io` when the connection broke; `Broker` when
    /// the broker refused; `Protocol` when the answer does not decode.
    pub async fn wait(mut self, timeout: Duration) -> Result<(R::Response, Bytes)> {
        let reply = tokio::time::timeout(timeout, &mut self.rx).await;
        self.done = true;
        let frame = match reply {
            Ok(Ok(reply)) => reply?,
            Ok(Err(_)) => {
                return Err(Error::Closed {
                    addr: self.link.addr.clone(),
                })
            }
            Err(_) => {
                self.link.remove(self.id);
                return Err(Error::Timeout {
                    what: "request",
                    after_ms: timeout.as_millis() as u64,
                });
            }
        };
        decode_reply::<R>(frame)
    }
}

impl<R: Request> Drop for Pending<R> {
    fn drop(&mut self) {
        if !self.done {
            // Abandoned (e.g. a cancelled long poll): forget it so the map does not grow.
            self.link.remove(self.id);
        }
    }
}

fn decode_reply<R: Request>(frame: Frame) -> Result<(R::Response, Bytes)> {
    let status = Status::try_from(frame.code)?;
    if status == Status::Ok {
        let resp = header::decode::<R::Response>(&frame.header)?;
        return Ok((resp, frame.body));
    }
    let message = header::decode::<ErrorResponse>(&frame.header)
        .map(|e| e.message)
        .unwrap_or_else(|_| "(no message)".to_string());
    Err(Error::Broker { status, message })
}

/// The writer task's side of the socket.
enum FrameWriter {
    /// Shared with callers that write directly (see [`Link::send_frame`]).
    Plain(Arc<OwnedWriteHalf>),
    /// Owned by the writer task alone.
    Tls(WriteHalf<TlsStream<TcpStream>>),
}

impl FrameWriter {
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Plain(sock) => write_all(sock, bytes).await,
            Self::Tls(sock) => {
                sock.write_all(bytes).await?;
                sock.flush().await
            }
        }
    }
}

async fn write_loop(
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    link: Arc<Link>,
    mut writer: FrameWriter,
) {
    let mut buf = Vec::with_capacity(WRITE_COALESCE_BYTES);
    // One cancellation future for the connection's life: registering a fresh one per frame
    // costs a lock round trip on the token for every request.
    let cancelled = link.cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        let first = tokio::select! {
            biased;
            () = &mut cancelled => break,
            next = rx.recv() => match next {
                Some(first) => first,
                None => break,
            },
        };
        let mut frames = 1;
        let result = match rx.try_recv() {
            // The common case: one frame, written without a copy.
            Err(_) => writer.write_all(&first).await,
            Ok(second) => {
                buf.clear();
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&second);
                frames = 2;
                while buf.len() < WRITE_COALESCE_BYTES {
                    match rx.try_recv() {
                        Ok(next) => {
                            buf.extend_from_slice(&next);
                            frames += 1;
                        }
                        Err(_) => break,
                    }
                }
                writer.write_all(&buf).await
            }
        };
        if let Err(source) = result {
            link.fail_all(&Error::Io {
                addr: link.addr.clone(),
                source,
            });
            return;
        }
        link.written(frames);
    }
}

/// `write_all` through a shared write half.
async fn write_all(sock: &OwnedWriteHalf, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        sock.writable().await?;
        match sock.try_write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn read_loop<R: AsyncRead + Unpin>(mut sock: R, link: Arc<Link>) {
    let decoder = FrameDecoder::new(MAX_RESPONSE_FRAME_BYTES);
    let mut buf = BytesMut::with_capacity(256 << 10);
    let cancel = link.cancel.clone();
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    let why = loop {
        match decoder.decode(&mut buf) {
            Ok(Some(frame)) if frame.request_id == 0 && frame.kind == FrameKind::Response => {
                // Request ids start at 1: id 0 is the broker refusing the whole connection
                // (TLS required, too many connections); its sentence is the error.
                break match decode_reply::<HelloRequest>(frame) {
                    Err(e) => e,
                    Ok(_) => Error::Closed {
                        addr: link.addr.clone(),
                    },
                };
            }
            Ok(Some(frame)) => {
                complete(&link, frame);
                continue;
            }
            Ok(None) => {}
            Err(e) => break Error::Protocol(e),
        }
        if buf.capacity() - buf.len() < 64 << 10 {
            buf.reserve(256 << 10);
        }
        let read = tokio::select! {
            () = &mut cancelled => break Error::Closed { addr: link.addr.clone() },
            read = sock.read_buf(&mut buf) => read,
        };
        match read {
            Ok(0) => {
                break Error::Closed {
                    addr: link.addr.clone(),
                }
            }
            Ok(_) => {}
            Err(source) => {
                break Error::Io {
                    addr: link.addr.clone(),
                    source,
                }
            }
        }
    };
    tracing::debug!(addr = %link.addr, error = %why, "connection lost");
    link.fail_all(&why);
}

fn complete(link: &Link, frame: Frame) {
    if frame.kind == FrameKind::Request {
        // A request of the broker: handed to whoever listens, else dropped (the broker
        // asks again).
        if let Ok(slot) = link.pushes.lock() {
            if let Some(tx) = slot.as_ref() {
                let _ = tx.send(frame);
            }
        }
        return;
    }
    let tx = link
        .pending
        .lock()
        .ok()
        .and_then(|mut map| map.remove(&frame.request_id));
    if let Some(tx) = tx {
        let _ = tx.send(Ok(frame));
    }
}
