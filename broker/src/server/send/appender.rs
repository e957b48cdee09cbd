//! The appender: one thread that stores the sends of every connection.
//!
//! A lone send under async flush is stored by its connection's task directly when the
//! store's writer is free and nothing of that connection is queued (`SendQueue::submit`).
//! Every other send goes, in arrival order, into one bounded channel. Each send is
//! decoded and validated by its connection's task before either (the tasks run in
//! parallel); the appender takes everything queued, stores all valid ones with a single
//! store call (one writer lock, one commit-log append) and answers each request
//! straight to its connection's writer. One thread in arrival order keeps pipelined sends
//! of a connection in order, and many small sends become one large append.
//!
//! Under `flush = sync` the appender waits for the flush of each append before answering;
//! the sends that arrive meanwhile queue up and go into the next append and the next flush
//! together (group commit across connections). Storing, flushing, indexing and answering
//! on one thread keeps the hand-offs between threads to one per direction.

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use protocol::Frame;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::prepare::{self, PreparedSend};
use crate::ha::Replication;
use crate::server::budget::InFlight;
use crate::server::response::{HandlerError, Response};
use crate::server::session::Session;
use crate::stats::Stats;
use crate::store::{GroupsAppended, MessageStore, PhysicalOffset, StoreResult, ValidatedSend};

/// A send with its checks done: the validated batch, or why it is refused.
struct Queued {
    job: SendJob,
    prepared: Result<PreparedSend, HandlerError>,
}

/// Sends queued towards the appender from all connections together.
const QUEUE_DEPTH: usize = 4096;
/// Most requests stored by one append.
const MAX_JOBS_PER_APPEND: usize = 2048;
/// Stop taking more requests into one append once their bodies add up to this.
const MAX_BYTES_PER_APPEND: usize = 32 << 20;

/// One send request waiting to be stored.
pub(crate) struct SendJob {
    /// The connection that sent it, where the answer goes.
    pub(crate) conn: Arc<Session>,
    /// The request as received.
    pub(crate) frame: Frame,
    /// The connection's in-flight slot and request bytes, given back once the answer is
    /// queued.
    pub(crate) permit: InFlight,
    /// When the request was read, for its latency.
    pub(crate) received: Instant,
}

/// A request and its answer; `stored` says whether the answer waits for durability.
struct Answer {
    job: SendJob,
    response: Response,
    stored: bool,
}

/// Handle on the appender thread.
pub(crate) struct Appender {
    tx: Mutex<Option<mpsc::Sender<Queued>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    worker: Arc<Worker>,
}

/// Where a connection hands its sends: stored on the spot when that is safe and cheap,
/// else queued for the appender thread.
#[derive(Clone)]
pub(crate) struct SendQueue {
    tx: mpsc::Sender<Queued>,
    worker: Arc<Worker>,
}

impl SendQueue {
    /// Stores `job` on the calling task when that can neither reorder nor hold up anything:
    /// async flush (no durability wait), no earlier send of the connection still queued,
    /// `alone` (the connection has no further request already buffered, so there is no
    /// batch to gain by queueing) and the store's writer lock free. Otherwise queues it
    /// for the appender thread. This saves a lone send the hand-off to the appender thread
    /// and back. Either way the send is decoded and validated here, on the calling task, so
    /// the appender thread only appends. Gives the job back when the appender is stopping.
    pub(crate) async fn submit(&self, job: SendJob, alone: bool) -> Result<(), SendJob> {
        let prepared = prepare::prepare(
            &self.worker.store,
            self.worker.max_batch_messages,
            &job.frame,
        );
        let mut queued = Queued { job, prepared };
        if alone && !self.worker.store.is_sync() && queued.job.conn.queued_sends() == 0 {
            match self.worker.try_store_now(queued) {
                Ok(()) => return Ok(()),
                Err(back) => queued = *back,
            }
        }
        queued.job.conn.sends_queued(1);
        match self.tx.send(queued).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError(queued)) => {
                queued.job.conn.sends_done(1);
                Err(queued.job)
            }
        }
    }
}

impl Appender {
    /// Starts the appender thread; sends of more than `max_batch_messages` are refused.
    ///
    /// # Errors
    /// The OS refused to start a thread.
    pub(crate) fn start(
        store: Arc<MessageStore>,
        stats: Arc<Stats>,
        max_batch_messages: u32,
        runtime: Handle,
        ha: Option<Arc<Replication>>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let worker = Arc::new(Worker {
            store,
            stats,
            max_batch_messages,
            runtime,
            ha,
        });
        let thread = {
            let worker = Arc::clone(&worker);
            std::thread::Builder::new()
                .name("ferromq-append".into())
                .spawn(move || worker.run(rx))?
        };
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            worker,
        })
    }

    /// Where a connection hands its sends; `None` once the appender is stopping.
    pub(crate) fn sender(&self) -> Option<SendQueue> {
        let tx = self
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        Some(SendQueue {
            tx,
            worker: Arc::clone(&self.worker),
        })
    }

    /// Stops taking sends and waits until every queued one is answered. Blocking; call it
    /// after the connections have ended.
    pub(crate) fn stop(&self) {
        drop(
            self.tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            // A panicked appender has answered what it could; shutdown goes on.
            let _ = t.join();
        }
    }
}

impl Drop for Appender {
    fn drop(&mut self) {
        // A broker dropped without `shutdown`: the thread must still let go of the store so
        // the data directory can be opened again.
        self.stop();
    }
}

struct Worker {
    store: Arc<MessageStore>,
    stats: Arc<Stats>,
    max_batch_messages: u32,
    runtime: Handle,
    /// Replication: answers wait until the sync set holds the records.
    ha: Option<Arc<Replication>>,
}

impl Worker {
    fn run(&self, mut rx: mpsc::Receiver<Queued>) {
        let mut jobs = Vec::with_capacity(MAX_JOBS_PER_APPEND);
        while let Some(first) = rx.blocking_recv() {
            let mut bytes = first.job.frame.body.len();
            jobs.push(first);
            while jobs.len() < MAX_JOBS_PER_APPEND && bytes < MAX_BYTES_PER_APPEND {
                let Ok(job) = rx.try_recv() else { break };
                bytes += job.job.frame.body.len();
                jobs.push(job);
            }
            let (end, answers) = self.store_all(&mut jobs);
            for a in &answers {
                a.job.conn.sends_done(1);
            }
            self.wait_and_answer(end, answers);
        }
    }

    /// Checks and stores `jobs` (emptied) with one append; returns the end to wait for.
    fn store_all(&self, jobs: &mut Vec<Queued>) -> (PhysicalOffset, Vec<Answer>) {
        let stored = self.store_with(jobs, |groups| Some(self.store.append_groups(groups)));
        // A blocking append always happens.
        stored.unwrap_or((PhysicalOffset::new(0), Vec::new()))
    }

    /// Stores and answers one send on the calling thread if the store's writer lock is
    /// free; gives the job back otherwise (boxed: only on the slow path, where it then
    /// queues anyway).
    fn try_store_now(&self, job: Queued) -> Result<(), Box<Queued>> {
        let mut jobs = vec![job];
        let stored = self.store_with(&mut jobs, |groups| self.store.try_append_groups(groups));
        match (stored, jobs.pop()) {
            (Some((end, answers)), _) => {
                self.wait_and_answer(end, answers);
                Ok(())
            }
            (None, Some(job)) => Err(Box::new(job)),
            // Unreachable: `jobs` keeps its job when nothing was stored.
            (None, None) => Ok(()),
        }
    }

    /// Stores the valid sends of `jobs` with `append` (one store call). `None` when
    /// `append` declined, with `jobs` untouched; else `jobs` is emptied into the answers.
    fn store_with(
        &self,
        jobs: &mut Vec<Queued>,
        append: impl FnOnce(&[ValidatedSend<'_>]) -> Option<StoreResult<GroupsAppended>>,
    ) -> Option<(PhysicalOffset, Vec<Answer>)> {
        // The valid sends go to the store in one slice; `prepared` keeps, per job, its
        // body size or why it was refused.
        let mut groups: Vec<ValidatedSend<'_>> = Vec::with_capacity(jobs.len());
        let prepared: Vec<Result<u64, HandlerError>> = jobs
            .iter()
            .map(|q| match &q.prepared {
                Ok(PreparedSend { batch, body_bytes }) => {
                    groups.push(batch.send());
                    Ok(*body_bytes)
                }
                Err(e) => Err(e.clone()),
            })
            .collect();
        let started = Instant::now();
        let appended = append(&groups)?;
        self.stats.recorder().append.record(started.elapsed());
        let mut end = PhysicalOffset::new(0);
        let mut responses: Vec<(Response, bool)> = Vec::with_capacity(jobs.len());
        match appended {
            Ok(done) => {
                end = done.end;
                let mut results = done.results.into_iter();
                let mut sends = groups.iter();
                let (mut messages, mut bytes) = (0u64, 0u64);
                for p in &prepared {
                    responses.push(match p {
                        Err(e) => (Response::from(e.clone()), false),
                        Ok(body_bytes) => match (results.next(), sends.next()) {
                            (Some(Ok(stored)), send) => {
                                messages += stored.len() as u64;
                                bytes += body_bytes;
                                if let Some(send) = send {
                                    self.stats.recorder().messages_in(
                                        send.topic(),
                                        stored.len() as u64,
                                        *body_bytes,
                                    );
                                }
                                (prepare::receipts(&stored), true)
                            }
                            (Some(Err(e)), _) => (Response::from(HandlerError::from(e)), false),
                            (None, _) => (Response::from(lost_result()), false),
                        },
                    });
                }
                self.stats.add_messages_in(messages, bytes);
            }
            Err(e) => {
                let e = HandlerError::from(e);
                for p in &prepared {
                    let err = match p {
                        Err(mine) => mine.clone(),
                        Ok(_) => e.clone(),
                    };
                    responses.push((Response::from(err), false));
                }
            }
        }
        // The validated sends borrow the batches the answers drop.
        drop(groups);
        let answers = jobs
            .drain(..)
            .zip(responses)
            .map(|(q, (response, stored))| Answer {
                job: q.job,
                response,
                stored,
            })
            .collect();
        Some((end, answers))
    }

    /// Waits until `end` is durable (nothing to wait for under async flush), then answers.
    fn wait_and_answer(&self, end: PhysicalOffset, answers: Vec<Answer>) {
        let failed = self.store.wait_durable(end).err().map(HandlerError::from);
        if let (Some(ha), None, true) = (&self.ha, &failed, end.get() > 0) {
            // Answered by whoever moves confirm past `end` (an ack, or this thread now).
            let (stats, runtime) = (Arc::clone(&self.stats), self.runtime.clone());
            ha.wait_confirmed(
                end.get(),
                Box::new(move |r| {
                    let failed = r.err().map(|(status, msg)| HandlerError::new(status, msg));
                    answer(&stats, &runtime, answers, failed.as_ref());
                }),
            );
            return;
        }
        answer(&self.stats, &self.runtime, answers, failed.as_ref());
    }
}

/// Answers each request: its own response, or `failed` for the stored ones.
fn answer(stats: &Stats, runtime: &Handle, answers: Vec<Answer>, failed: Option<&HandlerError>) {
    let recorder = stats.recorder();
    for a in answers {
        recorder.request(protocol::RequestCode::Send, a.job.received.elapsed());
        let response = match failed {
            Some(e) if a.stored => Response::from(e.clone()),
            _ => a.response,
        };
        a.job
            .conn
            .respond_from_thread(runtime, a.job.frame.request_id, response, a.job.permit);
    }
}

fn lost_result() -> HandlerError {
    HandlerError::internal("the store returned fewer results than requests")
}
