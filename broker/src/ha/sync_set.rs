//! The sync set and the confirm watermark (`../shared/cluster.md` §3), and the sends
//! waiting for it: a map keyed by end offset, one entry per stored batch, no thread or
//! task each.
//!
//! Confirm = min(the master's own end, the acks of every replica in the set); frozen while
//! the set (master included) is smaller than `--min-sync-replicas`. A replica joins once
//! its ack reaches confirm and it was caught up within the lag limit; it leaves when it
//! falls further behind than that or its link closes.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::cluster::ReplicaStatus;
use protocol::Status;

use super::lock;
use crate::store::{MessageStore, PhysicalOffset};

/// Answers a stored batch: `Ok` once confirmed, else why not.
pub(crate) type Waiter = Box<dyn FnOnce(Result<(), (Status, String)>) + Send>;

/// One connected replica, as its master sees it.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) broker_id: u64,
    pub(crate) peer: String,
    /// Its cumulative ack (received or durable, per `--replication-ack`).
    pub(crate) acked: AtomicU64,
    in_sync: AtomicBool,
    pub(crate) closed: AtomicBool,
    /// When it last held everything the master had written at some send.
    last_caught_up: Mutex<Option<Instant>>,
    /// (send time, the master's write offset then), for the catch-up time.
    sent: Mutex<VecDeque<(Instant, u64)>>,
    stream: TcpStream,
}

impl Link {
    pub(crate) fn new(broker_id: u64, peer: String, acked: u64, stream: TcpStream) -> Link {
        Link {
            broker_id,
            peer,
            acked: AtomicU64::new(acked),
            in_sync: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            last_caught_up: Mutex::new(None),
            sent: Mutex::new(VecDeque::new()),
            stream,
        }
    }

    /// Notes a frame sent while the master's log ended at `write`.
    pub(crate) fn sent(&self, write: u64) {
        let mut q = lock(&self.sent);
        if q.back().is_none_or(|&(_, w)| w < write) {
            q.push_back((Instant::now(), write));
        }
        // Bounded: an ack far behind loses only catch-up precision, never correctness.
        while q.len() > 4096 {
            q.pop_front();
        }
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

struct Pending {
    since: Instant,
    waiter: Waiter,
}

/// The sync set of a master and the sends waiting for confirm.
pub(crate) struct SyncSet {
    min_sync: u32,
    links: Mutex<Vec<Arc<Link>>>,
    pending: Mutex<BTreeMap<u64, Vec<Pending>>>,
}

impl SyncSet {
    pub(crate) fn new(min_sync: u32) -> SyncSet {
        SyncSet {
            min_sync,
            links: Mutex::new(Vec::new()),
            pending: Mutex::new(BTreeMap::new()),
        }
    }

    /// Members, the master included.
    pub(crate) fn size(&self) -> u32 {
        let n = lock(&self.links)
            .iter()
            .filter(|l| l.in_sync.load(Ordering::Acquire))
            .count();
        1 + u32::try_from(n).unwrap_or(u32::MAX - 1)
    }

    /// Adds a replica's link; an earlier link of the same broker is closed (it reconnected).
    pub(crate) fn add(&self, link: Arc<Link>) {
        let mut links = lock(&self.links);
        links.retain(|l| {
            let same = l.broker_id == link.broker_id;
            if same {
                l.close();
            }
            !same
        });
        links.push(link);
    }

    /// Removes a closed link; sends waiting fail if the set is now too small.
    pub(crate) fn remove(&self, link: &Arc<Link>) {
        link.close();
        let was_member = link.in_sync.swap(false, Ordering::AcqRel);
        lock(&self.links).retain(|l| !Arc::ptr_eq(l, link));
        if was_member {
            tracing::warn!(replica = link.broker_id, peer = %link.peer, "replica left the sync set (link closed)");
            self.fail_if_too_small();
        }
    }

    /// A replica acked `acked`; it may join the set. Then confirm is recomputed.
    pub(crate) fn on_ack(&self, link: &Link, acked: u64, store: &MessageStore, max_lag: Duration) {
        link.acked.fetch_max(acked, Ordering::AcqRel);
        let log = store.commit_log();
        let now = Instant::now();
        {
            let mut caught = lock(&link.last_caught_up);
            if acked >= log.write_offset().get() {
                *caught = Some(now);
            } else {
                let mut q = lock(&link.sent);
                while let Some(&(at, w)) = q.front() {
                    if w > acked {
                        break;
                    }
                    *caught = Some(caught.map_or(at, |c| c.max(at)));
                    q.pop_front();
                }
            }
            let recent = caught.is_some_and(|c| now.duration_since(c) <= max_lag);
            if !link.in_sync.load(Ordering::Acquire)
                && recent
                && acked >= log.confirm_offset().get()
            {
                link.in_sync.store(true, Ordering::Release);
                tracing::info!(replica = link.broker_id, peer = %link.peer, acked, "replica joined the sync set");
            }
        }
        self.recompute(store);
    }

    /// Confirm from the set, raised in the store; answers the sends it covers.
    pub(crate) fn recompute(&self, store: &MessageStore) {
        let log = store.commit_log();
        let own = if store.is_sync() {
            log.flushed_offset().get()
        } else {
            log.write_offset().get()
        };
        let confirm = {
            let links = lock(&self.links);
            let members: Vec<u64> = links
                .iter()
                .filter(|l| l.in_sync.load(Ordering::Acquire))
                .map(|l| l.acked.load(Ordering::Acquire))
                .collect();
            if 1 + members.len() < self.min_sync as usize {
                return;
            }
            members.into_iter().fold(own, u64::min)
        };
        let c = store.advance_confirm(PhysicalOffset::new(confirm)).get();
        let ready: Vec<Pending> = {
            let mut pending = lock(&self.pending);
            let later = pending.split_off(&(c + 1));
            std::mem::replace(&mut *pending, later)
                .into_values()
                .flatten()
                .collect()
        };
        for p in ready {
            (p.waiter)(Ok(()));
        }
    }

    /// Registers a stored batch ending at `end`.
    pub(crate) fn wait(&self, end: u64, waiter: Waiter) {
        lock(&self.pending).entry(end).or_default().push(Pending {
            since: Instant::now(),
            waiter,
        });
    }

    /// The lag check: replicas caught up longer ago than `max_lag` leave the set, and
    /// sends waiting longer than that fail.
    pub(crate) fn tick(&self, max_lag: Duration) {
        let now = Instant::now();
        let mut dropped = false;
        for l in lock(&self.links).iter() {
            let caught = *lock(&l.last_caught_up);
            let late = caught.is_none_or(|c| now.duration_since(c) > max_lag);
            if late && l.in_sync.swap(false, Ordering::AcqRel) {
                tracing::warn!(replica = l.broker_id, peer = %l.peer, "replica fell behind by more than the lag limit; left the sync set");
                dropped = true;
            }
        }
        if dropped {
            self.fail_if_too_small();
        }
        let expired: Vec<Pending> = {
            let mut pending = lock(&self.pending);
            let mut out = Vec::new();
            for list in pending.values_mut() {
                let (old, keep): (Vec<Pending>, Vec<Pending>) = std::mem::take(list)
                    .into_iter()
                    .partition(|p| now.duration_since(p.since) > max_lag);
                *list = keep;
                out.extend(old);
            }
            pending.retain(|_, l| !l.is_empty());
            out
        };
        for p in expired {
            (p.waiter)(Err((
                Status::NotEnoughReplicas,
                "replicas did not confirm within --max-replica-lag-ms; the message is stored and may still be delivered".to_owned(),
            )));
        }
    }

    fn fail_if_too_small(&self) {
        if self.size() < self.min_sync {
            self.fail_all(
                Status::NotEnoughReplicas,
                "the sync set fell below --min-sync-replicas; the message is stored and may still be delivered",
            );
        }
    }

    /// Fails every waiting send.
    pub(crate) fn fail_all(&self, status: Status, msg: &str) {
        let all = std::mem::take(&mut *lock(&self.pending));
        for p in all.into_values().flatten() {
            (p.waiter)(Err((status, msg.to_owned())));
        }
    }

    pub(crate) fn close_links(&self) {
        for l in lock(&self.links).iter() {
            l.close();
        }
    }

    pub(crate) fn replicas(&self, write: u64) -> Vec<ReplicaStatus> {
        let now = Instant::now();
        lock(&self.links)
            .iter()
            .map(|l| {
                let acked = l.acked.load(Ordering::Acquire);
                let caught = *lock(&l.last_caught_up);
                ReplicaStatus {
                    broker_id: l.broker_id,
                    peer: l.peer.clone(),
                    acked,
                    lag_bytes: write.saturating_sub(acked),
                    lag_ms: caught.map_or(u64::MAX, |c| {
                        u64::try_from(now.duration_since(c).as_millis()).unwrap_or(u64::MAX)
                    }),
                    in_sync: l.in_sync.load(Ordering::Acquire),
                }
            })
            .collect()
    }
}
