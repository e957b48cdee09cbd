//! What a request task holds of its connection: who the peer is, the signals that end
//! its work, and the handle its answer goes back through (bounded by the connection's
//! byte budget). Kept apart from the read loop (`connection`) so that handlers and the
//! appender answer requests without depending on the code that reads them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use protocol::Status;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::budget::{ByteBudget, Held, InFlight};
use super::response::Response;
use super::writer::Outgoing;

/// The id of the next connection; never reused, unlike a socket address.
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);
/// Requests of one connection doing work (reading the store, building an answer) at
/// once; the rest wait as cheap futures. Without it a pipeline of heavy requests builds
/// every answer at the same time, whatever the byte budget says. Held pulls do not count
/// while they wait.
const RUNNING_PER_CONNECTION: usize = 8;

/// What a request task needs from its connection.
pub(crate) struct Session {
    pub(crate) peer: SocketAddr,
    /// Unique for the life of the broker; group members are bound to it.
    pub(crate) id: u64,
    /// Cancelled when the connection stops taking requests or the broker shuts down;
    /// held pulls and group membership watch it.
    pub(crate) closed: CancellationToken,
    /// Cancelled once the connection has ended for good (the peer is gone or the
    /// connection was dropped): request tasks still running are dropped.
    pub(crate) gone: CancellationToken,
    tx: mpsc::Sender<Outgoing>,
    /// Sends of this connection queued for the appender thread and not yet stored.
    queued_sends: AtomicUsize,
    /// Bytes of requests in flight and answers not yet written.
    pub(crate) budget: Arc<ByteBudget>,
    /// Requests doing work now; see [`RUNNING_PER_CONNECTION`].
    running: Arc<Semaphore>,
}

impl Session {
    /// A session for a connection from `peer` whose answers go to `tx`: it closes with
    /// `closed`, holds at most `max_pending_bytes` of requests and answers.
    pub(crate) fn new(
        peer: SocketAddr,
        closed: CancellationToken,
        tx: mpsc::Sender<Outgoing>,
        max_pending_bytes: usize,
    ) -> Self {
        Self {
            peer,
            id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
            closed,
            gone: CancellationToken::new(),
            tx,
            queued_sends: AtomicUsize::new(0),
            budget: ByteBudget::new(max_pending_bytes),
            running: Arc::new(Semaphore::new(RUNNING_PER_CONNECTION)),
        }
    }

    /// Sends of this connection queued for the appender and not yet stored.
    pub(crate) fn queued_sends(&self) -> usize {
        self.queued_sends.load(Ordering::Acquire)
    }

    /// Counts `n` more sends queued for the appender.
    pub(crate) fn sends_queued(&self, n: usize) {
        self.queued_sends.fetch_add(n, Ordering::AcqRel);
    }

    /// Counts `n` queued sends as stored.
    pub(crate) fn sends_done(&self, n: usize) {
        self.queued_sends.fetch_sub(n, Ordering::AcqRel);
    }

    /// Waits until this connection may start building an answer: it is under its byte
    /// budget and fewer than [`RUNNING_PER_CONNECTION`] of its requests are working.
    ///
    /// # Errors
    /// `Gone` once the connection has ended; `Closing` once it takes no more work (the
    /// broker is shutting down or the connection is closing): a request that has not
    /// started by then is not started at all.
    pub(crate) async fn start_work(&self) -> Result<OwnedSemaphorePermit, NotStarted> {
        let wait = async {
            // The slot first, then the room: checked the other way round, every request
            // queued for a slot would have passed the check long before its turn.
            let permit = Arc::clone(&self.running).acquire_owned().await;
            self.budget.room_to_work().await;
            permit
        };
        tokio::select! {
            () = self.gone.cancelled() => Err(NotStarted::Gone),
            () = self.closed.cancelled() => Err(NotStarted::Closing),
            permit = wait => permit.map_err(|_| NotStarted::Gone),
        }
    }

    /// Queues a response for the writer; dropped if the connection is already gone.
    pub(crate) async fn respond(&self, request_id: u64, response: Response) {
        let held = self.budget.hold(Held::Answer, response.wire_len());
        let _ = self
            .tx
            .send(Outgoing {
                request_id,
                response,
                _held: held,
                push: None,
            })
            .await;
    }

    /// Sends a request of the broker to this connection's client (a transaction
    /// check-back) without waiting: dropped when the writer's queue is full or gone, as
    /// the broker asks again later. Returns whether it was queued.
    pub(crate) fn push_request<R: protocol::Request>(&self, request: &R) -> bool {
        static NEXT_PUSH_ID: AtomicU64 = AtomicU64::new(1);
        let response = Response::ok(request);
        if response.status != Status::Ok {
            return false;
        }
        let held = self.budget.hold(Held::Answer, response.wire_len());
        self.tx
            .try_send(Outgoing {
                request_id: NEXT_PUSH_ID.fetch_add(1, Ordering::Relaxed),
                response,
                _held: held,
                push: Some(u16::from(R::CODE)),
            })
            .is_ok()
    }

    /// Queues a response from a thread outside the runtime (the appender) without
    /// blocking it; only when the writer's queue is full does a task wait for room. The
    /// in-flight slot is given back once the response is queued.
    pub(crate) fn respond_from_thread(
        &self,
        runtime: &tokio::runtime::Handle,
        request_id: u64,
        response: Response,
        inflight: InFlight,
    ) {
        let held = self.budget.hold(Held::Answer, response.wire_len());
        let out = Outgoing {
            request_id,
            response,
            _held: held,
            push: None,
        };
        match self.tx.try_send(out) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => drop(inflight),
            Err(mpsc::error::TrySendError::Full(out)) => {
                let tx = self.tx.clone();
                runtime.spawn(async move {
                    let _ = tx.send(out).await;
                    drop(inflight);
                });
            }
        }
    }

    /// Ends everything this connection started.
    pub(crate) fn end(&self) {
        self.closed.cancel();
        self.gone.cancel();
    }
}

/// Why a request was not started; see [`Connection::start_work`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStarted {
    /// The connection has ended: nobody reads an answer.
    Gone,
    /// The connection or the broker is closing: the request is refused.
    Closing,
}

impl NotStarted {
    /// The answer owed to the request, if anyone can still read it.
    pub(crate) fn response(self) -> Option<Response> {
        match self {
            Self::Gone => None,
            Self::Closing => Some(Response::error(
                Status::ShuttingDown,
                "the connection is closing (or the broker shutting down); request not started",
            )),
        }
    }
}
