//! Replication: a master and its replicas (`../shared/cluster.md`), roles set by flags.
//!
//! - [`frame`]: the HA stream's binary frames; [`auth`]: the HMAC handshake and identity.
//! - `sync_set`: the confirm watermark over the sync set, and sends waiting for it.
//! - `master`: the HA listener, one link (a sender and a receiver thread) per replica.
//! - `replica`: the thread that follows a master: handshake, truncation, raw appends, acks.
//!
//! The HA stream runs on plain threads with blocking sockets (one or two per replica,
//! never one per waiting send), beside the tokio server, like the appender.

pub(crate) mod auth;
pub(crate) mod frame;
mod master;
mod replica;
mod sync_set;

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::MessageStore;

pub(crate) use auth::MIN_SECRET_BYTES;
pub(crate) use sync_set::Waiter;

/// A broker's replication role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Takes writes and streams them to its replicas.
    Master,
    /// Follows a master; refuses writes.
    Replica,
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "master" => Ok(Role::Master),
            "replica" => Ok(Role::Replica),
            other => Err(format!("{other:?} is not master or replica")),
        }
    }
}

/// When a replica's copy counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// In the replica's page cache.
    Received,
    /// After the replica's flush.
    Durable,
}

impl FromStr for AckMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "received" => Ok(AckMode::Received),
            "durable" => Ok(AckMode::Durable),
            other => Err(format!("{other:?} is not received or durable")),
        }
    }
}

/// The replication settings taken from [`crate::Config`].
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) ha_listen: Option<std::net::SocketAddr>,
    pub(crate) master: Option<String>,
    pub(crate) secret: Vec<u8>,
    pub(crate) min_sync: u32,
    pub(crate) ack: AckMode,
    pub(crate) max_lag: Duration,
    /// This broker's client address, told to replicas (their `NotMaster` answers name it).
    pub(crate) client_addr: String,
}

impl Settings {
    /// Heartbeats and lag checks: a quarter of the lag limit, at most every 500 ms.
    pub(crate) fn heartbeat(&self) -> Duration {
        (self.max_lag / 4).min(Duration::from_millis(500))
    }
}

/// A replica's view of its master.
#[derive(Debug, Default)]
struct Following {
    /// The master's client address, learnt in the handshake.
    master_client: Option<String>,
    /// The master's newest epoch, learnt in the handshake.
    master_epoch: u64,
}

/// The replication state of a running broker.
pub struct Replication {
    settings: Settings,
    store: Arc<MessageStore>,
    broker_id: u64,
    is_master: AtomicBool,
    streaming: AtomicBool,
    following: Mutex<Following>,
    sync: sync_set::SyncSet,
    stop: Arc<AtomicBool>,
    /// Stops the replica thread alone (a promotion).
    replica_stop: Arc<AtomicBool>,
    replica_thread: Mutex<Option<JoinHandle<()>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication")
            .field("broker_id", &self.broker_id)
            .field("master", &self.is_master.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Why replication could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Identity, epoch or listener I/O.
    #[error("replication: {what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The store refused (epoch file, log scan).
    #[error("replication: {0}")]
    Store(#[from] crate::store::StoreError),
}

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> StartError {
    move |source| StartError::Io { what, source }
}

impl Replication {
    /// Starts the role: a master opens a new epoch and listens for replicas; a replica
    /// starts following its master.
    ///
    /// # Errors
    /// The identity file, the epoch file, the HA listener or a thread failed.
    pub(crate) fn start(
        settings: Settings,
        role: Role,
        store: Arc<MessageStore>,
    ) -> Result<Arc<Replication>, StartError> {
        let broker_id =
            auth::broker_id(&store.config().data_dir).map_err(io_err("broker identity"))?;
        let min_sync = settings.min_sync;
        let r = Arc::new(Replication {
            settings,
            store,
            broker_id,
            is_master: AtomicBool::new(false),
            streaming: AtomicBool::new(false),
            following: Mutex::new(Following::default()),
            sync: sync_set::SyncSet::new(min_sync),
            stop: Arc::new(AtomicBool::new(false)),
            replica_stop: Arc::new(AtomicBool::new(false)),
            replica_thread: Mutex::new(None),
            threads: Mutex::new(Vec::new()),
        });
        match role {
            Role::Master => {
                r.become_master(0)?;
            }
            Role::Replica => {
                let t = replica::spawn(Arc::clone(&r)).map_err(io_err("replica thread"))?;
                *lock(&r.replica_thread) = Some(t);
            }
        }
        Ok(r)
    }

    /// Opens a new epoch (above every one seen and `min_epoch`), continues every queue
    /// after its last record, and starts taking replicas.
    fn become_master(
        self: &Arc<Self>,
        min_epoch: u64,
    ) -> Result<commitlog::EpochEntry, StartError> {
        let log = self.store.commit_log();
        let own = log.epochs().last().map_or(0, |e| e.epoch);
        let seen = lock(&self.following).master_epoch;
        let epoch = own.max(seen).max(min_epoch.saturating_sub(1)) + 1;
        self.store.seed_writer_from_log()?;
        let entry = self.store.begin_epoch(epoch, self.broker_id)?;
        self.is_master.store(true, Ordering::SeqCst);
        let Some(addr) = self.settings.ha_listen else {
            return Err(StartError::Io {
                what: "HA listener",
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no --ha-listen"),
            });
        };
        let threads = master::spawn(Arc::clone(self), addr).map_err(io_err("HA listener"))?;
        lock(&self.threads).extend(threads);
        self.sync.recompute(&self.store);
        tracing::info!(epoch, start = entry.start_offset, "serving as master");
        Ok(entry)
    }

    /// Promotes this replica to master (`mq cluster promote`): stops following and opens
    /// a new epoch. The role lives in memory only: restart the broker with
    /// `--role master` (flags always decide the role at start; a broker started as a
    /// replica of a broker that is no master simply waits, it never takes writes).
    ///
    /// # Errors
    /// Not a replica, or the epoch or role file could not be written.
    pub(crate) fn promote(
        self: &Arc<Self>,
        min_epoch: u64,
    ) -> Result<commitlog::EpochEntry, StartError> {
        if self.is_master.load(Ordering::SeqCst) {
            return Err(StartError::Io {
                what: "promote",
                source: std::io::Error::other("this broker is already a master"),
            });
        }
        self.replica_stop.store(true, Ordering::SeqCst);
        if let Some(t) = lock(&self.replica_thread).take() {
            // A panicked follower has nothing left to clean up.
            let _ = t.join();
        }
        self.streaming.store(false, Ordering::SeqCst);
        self.become_master(min_epoch)
    }

    /// Whether this broker takes writes.
    pub(crate) fn is_master(&self) -> bool {
        self.is_master.load(Ordering::Acquire)
    }

    /// The master's client address, for `NotMaster` answers.
    pub(crate) fn master_client(&self) -> Option<String> {
        if self.is_master() {
            return Some(self.settings.client_addr.clone());
        }
        lock(&self.following).master_client.clone()
    }

    /// Why a request is refused before anything is done, if it is: a replica takes
    /// nothing but the handshake, stats and cluster requests; a master refuses sends while
    /// the sync set is too small.
    pub(crate) fn refuse(&self, code: protocol::RequestCode) -> Option<(protocol::Status, String)> {
        use protocol::RequestCode as C;
        if matches!(
            code,
            C::Hello | C::BrokerStats | C::ClusterStatus | C::ClusterPromote
        ) {
            return None;
        }
        if !self.is_master() {
            return Some(self.not_master());
        }
        if code != C::Send {
            return None;
        }
        let (size, min) = (self.sync.size(), self.settings.min_sync);
        (size < min).then(|| {
            (
                protocol::Status::NotEnoughReplicas,
                format!("the sync set has {size} of the {min} brokers needed (--min-sync-replicas); nothing was stored"),
            )
        })
    }

    /// The `NotMaster` answer, naming the master when known.
    pub(crate) fn not_master(&self) -> (protocol::Status, String) {
        let msg = match self.master_client() {
            Some(m) => format!("this broker is a replica; the master is {m}"),
            None => "this broker is a replica; its master is not known yet".to_owned(),
        };
        (protocol::Status::NotMaster, msg)
    }

    /// Answers `waiter` once everything below `end` is confirmed (or fails it).
    pub(crate) fn wait_confirmed(&self, end: u64, waiter: Waiter) {
        self.sync.wait(end, waiter);
        self.sync.recompute(&self.store);
    }

    /// The state `mq cluster status` shows.
    pub(crate) fn status(&self) -> protocol::cluster::ClusterStatusResponse {
        let log = self.store.commit_log();
        let master = self.is_master();
        protocol::cluster::ClusterStatusResponse {
            role: if master { "master" } else { "replica" }.to_owned(),
            broker_id: self.broker_id,
            epoch: log.epochs().last().map_or(0, |e| e.epoch),
            master: self.master_client(),
            ha_addr: self.settings.ha_listen.map(|a| a.to_string()),
            write_offset: log.write_offset().get(),
            flushed_offset: log.flushed_offset().get(),
            confirm_offset: log.confirm_offset().get(),
            dispatched_offset: self.store.dispatched_offset().get(),
            sync_set_size: if master { self.sync.size() } else { 0 },
            min_sync_replicas: self.settings.min_sync,
            replicas: self.sync.replicas(log.write_offset().get()),
            streaming: self.streaming.load(Ordering::Acquire),
        }
    }

    /// Stops the HA threads and fails waiting sends (the broker is stopping).
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.replica_stop.store(true, Ordering::SeqCst);
        self.sync.close_links();
        if let Some(t) = lock(&self.replica_thread).take() {
            let _ = t.join();
        }
        loop {
            let next = lock(&self.threads).pop();
            match next {
                Some(t) => {
                    let _ = t.join();
                }
                None => break,
            }
        }
        self.sync.fail_all(
            protocol::Status::ShuttingDown,
            "the broker is shutting down",
        );
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
