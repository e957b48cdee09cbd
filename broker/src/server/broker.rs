//! A broker's life: open the store and services, listen, serve, and shut down in order
//! (stop accepting, answer what is in flight, write offsets, close the store).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::send::Appender;
use super::services::Services;
use super::tx_producers::TxProducers;
use super::{background, handler, listener, resources};
use crate::config::{
    ByteSize, Config, ConfigError, HttpListen, DEFAULT_GRPC_LISTEN, DEFAULT_HTTP_LISTEN,
};
use crate::groups::{
    ConsumerOffsets, ContiguousEvenSplit, GroupCoordinator, OffsetsError, QueueLocks,
};
use crate::grpc::GrpcServer;
use crate::http::{HttpServer, Recorder};
use crate::long_polling::LongPolling;
use crate::pop::PopService;
use crate::retry::{RetryConfig, RetryError, RetryService};
use crate::security::{Security, SecurityError, TlsAcceptor, TlsFiles};
use crate::stats::Stats;
use crate::store::{MessageStore, StoreConfig, StoreError};
use crate::timer::{TimerConfig, TimerService};
use crate::tx::{TxConfig, TxError, TxService};

/// Why a broker could not start or did not stop cleanly.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The message store did not open.
    #[error("cannot open the message store in {dir}: {source}")]
    Store {
        /// The data directory.
        dir: PathBuf,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The consumer offsets did not load.
    #[error("cannot open consumer offsets: {0}")]
    Offsets(#[from] OffsetsError),
    /// The retry service did not start.
    #[error("cannot start the retry service: {0}")]
    Retry(#[from] RetryError),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Shutdown did not complete cleanly; the sentence says what was left.
    #[error("shutdown: {0}")]
    Shutdown(String),
    /// Transactions could not be recovered.
    #[error("cannot recover transactions: {0}")]
    Tx(#[from] TxError),
    /// TLS material or the users file cannot be used.
    #[error("security: {0}")]
    Security(#[from] SecurityError),
    /// The replication role did not start.
    #[error("cannot start replication: {0}")]
    Replication(String),
}

/// Starts brokers.
pub struct Broker;

impl Broker {
    /// Validates `config`, opens the store and services under its data dir, binds the
    /// listen address, and starts serving.
    ///
    /// # Errors
    /// A bad config, a store that does not open (for example locked by another broker),
    /// or an address that cannot be bound.
    pub async fn start(config: Config) -> Result<RunningBroker, BrokerError> {
        Self::start_on(config, Arc::new(commitlog::storage::RealFs)).await
    }

    /// [`Broker::start`] with every commit-log file operation and every metadata write
    /// (offsets, checkpoint, schedule progress) going through `storage`: how tests inject
    /// a full disk or failed syncs without root (`commitlog::fault::FaultyStorage`).
    ///
    /// # Errors
    /// As for `start`.
    pub async fn start_on(
        mut config: Config,
        storage: Arc<dyn commitlog::storage::Storage>,
    ) -> Result<RunningBroker, BrokerError> {
        config.validate()?;
        fit_connections_to_fd_budget(&mut config);
        // Bound first: a taken port fails fast, before any recovery work.
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| BrokerError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| BrokerError::Listen {
                addr: config.listen,
                source,
            })?;
        let security = Arc::new(open_security(&config)?);
        let recorder = Arc::new(Recorder::new());
        let http = start_http(&config, &recorder, &security).await?;
        let grpc_listener = bind_grpc(&config).await?;
        let mut store_config = store_config(&config);
        store_config.replicated = config.role.is_some();
        store_config.commitlog.storage = storage;
        store_config.commitlog.on_flush = Some(recorder.observer(|r| &r.flush));
        store_config.on_dispatch_round = Some(recorder.observer(|r| &r.dispatch));
        let dir = config.data_dir.clone();
        let store = blocking(move || MessageStore::open(store_config))
            .await
            .map_err(BrokerError::Shutdown)?
            .map_err(|source| BrokerError::Store { dir, source })?;
        let store = Arc::new(store);
        // Under the data directory's lock: only this broker writes the users file.
        let generated_admin = match security.bootstrap_admin(|k| std::env::var(k).ok()) {
            Ok(keys) => keys,
            Err(e) => {
                if let Err(close) = close_store(store).await {
                    tracing::warn!(error = %close, "store not closed cleanly after a failed start");
                }
                return Err(e.into());
            }
        };
        let long_polling = Arc::new(LongPolling::new());
        let lp = Arc::clone(&long_polling);
        store.on_dispatch(Arc::new(move |topic: &str, queue_id: u32, _max: u64| {
            lp.notify(topic, queue_id);
        }));
        let (offsets, retry, tx) = match open_services(&config, &store).await {
            Ok(opened) => opened,
            Err(e) => {
                if let Err(close) = close_store(store).await {
                    tracing::warn!(error = %close, "store not closed cleanly after a failed start");
                }
                return Err(e);
            }
        };
        let ha = match start_replication(&config, local_addr, &store).await {
            Ok(ha) => ha,
            Err(e) => {
                retry.close();
                drop(tx);
                if let Err(close) = close_store(store).await {
                    tracing::warn!(error = %close, "store not closed cleanly after a failed start");
                }
                return Err(e);
            }
        };
        let stats = Arc::new(Stats::with_recorder(recorder));
        // The body limit is the store's (`max_body_bytes`), checked once by its validation.
        let appender = match Appender::start(
            Arc::clone(&store),
            Arc::clone(&stats),
            config.max_batch_messages,
            tokio::runtime::Handle::current(),
            ha.clone(),
        ) {
            Ok(a) => a,
            Err(e) => {
                if let Some(ha) = &ha {
                    ha.stop();
                }
                retry.close();
                drop(tx);
                if let Err(close) = close_store(store).await {
                    tracing::warn!(error = %close, "store not closed cleanly after a failed start");
                }
                return Err(BrokerError::Shutdown(format!(
                    "cannot start the appender thread: {e}"
                )));
            }
        };
        let pop = PopService::new(
            config.max_in_flight_leases,
            &store,
            protocol::time::now_ms(),
        );
        let timer = Arc::clone(retry.timer());
        let services = Arc::new(Services {
            pop,
            timer,
            groups: GroupCoordinator::new(config.session_timeout_ms, Box::new(ContiguousEvenSplit)),
            queue_locks: QueueLocks::new(config.session_timeout_ms),
            config,
            store,
            offsets,
            retry,
            long_polling,
            stats,
            appender,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            tx,
            tx_producers: TxProducers::default(),
            security,
            ha,
        });
        if let Some(h) = &http {
            h.ready(Arc::clone(&services));
        }
        let grpc = match grpc_listener {
            Some((addr, l)) => Some(
                GrpcServer::start(l, Arc::clone(&services))
                    .map_err(|source| BrokerError::Listen { addr, source })?,
            ),
            None => None,
        };
        let stop_accepting = CancellationToken::new();
        let accepting = services.tracker.spawn(listener::run(
            Arc::clone(&services),
            listener,
            stop_accepting.clone(),
        ));
        services
            .tracker
            .spawn(background::watch_budgets(Arc::clone(&services)));
        services
            .tracker
            .spawn(background::persist_offsets(Arc::clone(&services)));
        services
            .tracker
            .spawn(background::expire_members(Arc::clone(&services)));
        services
            .tracker
            .spawn(background::expire_idle_groups(Arc::clone(&services)));
        services
            .tracker
            .spawn(handler::tx::check_back(Arc::clone(&services)));
        if services.security.tls().is_some() {
            reload_tls_on_sighup(&services);
        }
        // The binary prints the one start line users read; embedders get it at debug.
        tracing::debug!(
            listen = %local_addr,
            data_dir = %services.config.data_dir.display(),
            flush = ?services.config.flush_policy(),
            "broker started"
        );
        Ok(RunningBroker {
            local_addr,
            generated_admin,
            http,
            grpc,
            services: Some(services),
            stop_accepting,
            accepting: Some(accepting),
        })
    }
}

/// A broker serving in the background of the current tokio runtime.
pub struct RunningBroker {
    local_addr: SocketAddr,
    /// The first administrator's keys when this start generated them (shown once).
    generated_admin: Option<(String, String)>,
    /// The HTTP endpoint, unless off (or its default port was taken).
    http: Option<HttpServer>,
    /// The RocketMQ 5 gRPC endpoint, unless off (or its default port was taken).
    grpc: Option<GrpcServer>,
    // Taken by `shutdown`; `None` only while shutting down.
    services: Option<Arc<Services>>,
    /// Stops the accept loop, the first step of a shutdown.
    stop_accepting: CancellationToken,
    accepting: Option<JoinHandle<()>>,
}

impl RunningBroker {
    /// The address the broker listens on (the real port when the config asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the HTTP endpoint (metrics, API, dashboard), `None` when it is off.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpServer::local_addr)
    }

    /// The address of the RocketMQ 5 gRPC endpoint, `None` when it is off.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().map(GrpcServer::local_addr)
    }

    /// The access key and secret of the first administrator when this start generated
    /// one (`--auth on`, no users, no `FERRO_ADMIN_*` variables): to be shown once.
    pub fn generated_admin(&self) -> Option<(&str, &str)> {
        self.generated_admin
            .as_ref()
            .map(|(ak, sk)| (ak.as_str(), sk.as_str()))
    }

    /// Reads the TLS certificate, key and client CA again for new connections (what
    /// SIGHUP does). Returns false when TLS is off.
    ///
    /// # Errors
    /// `Security` when a file cannot be used; the old certificate stays in use.
    pub fn reload_tls(&self) -> Result<bool, BrokerError> {
        match self.services.as_ref().and_then(|s| s.security.tls()) {
            Some(tls) => {
                tls.reload()?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Resolves once shutdown has started, whoever started it.
    pub async fn stopping(&self) {
        if let Some(s) = &self.services {
            s.shutdown.cancelled().await;
        }
    }

    /// Stops accepting (the listening socket closes first), lets connections answer the
    /// requests in flight (held pulls answer at once), writes consumer offsets, then closes
    /// the retry service and the store. Connections that do not drain within half of
    /// `shutdown_timeout_ms` are dropped with everything they started; whatever still runs
    /// at the deadline is no longer waited for, and the store is flushed instead of closed.
    ///
    /// # Errors
    /// `Shutdown` when offsets could not be written, the deadline passed, or the store did
    /// not close cleanly; everything else is still stopped.
    pub async fn shutdown(mut self) -> Result<(), BrokerError> {
        let Some(services) = self.services.take() else {
            return Ok(());
        };
        tracing::info!("shutting down");
        let deadline = Instant::now() + Duration::from_millis(services.config.shutdown_timeout_ms);
        self.stop_accepting.cancel();
        if let Some(http) = self.http.take() {
            // Its connections hold the services; they end before the store can close.
            let _ = tokio::time::timeout_at(deadline, http.stop()).await;
        }
        if let Some(grpc) = self.grpc.take() {
            // Its calls hold the services too; long polls and Telemetry streams end on its stop.
            grpc.stop(deadline).await;
        }
        if let Some(accepting) = self.accepting.take() {
            // Never a long wait: the loop only selects on the token and accept.
            let _ = tokio::time::timeout_at(deadline, accepting).await;
        }
        services.shutdown.cancel();
        services.tracker.close();
        let mut problems = Vec::new();
        if tokio::time::timeout_at(deadline, services.tracker.wait())
            .await
            .is_err()
        {
            problems.push(format!(
                "{} tasks still running at the shutdown deadline",
                services.tracker.len()
            ));
        }
        // Every connection has ended; the appender answers what it still holds and stops,
        // releasing its hold on the store.
        let s = Arc::clone(&services);
        if let Err(e) = blocking(move || s.appender.stop()).await {
            tracing::warn!(error = %e, "appender did not stop cleanly");
        }
        if let Some(ha) = services.ha.clone() {
            // Its threads hold the store; they end before the store can close.
            if let Err(e) = blocking(move || ha.stop()).await {
                tracing::warn!(error = %e, "replication did not stop cleanly");
            }
        }
        if let Err(e) = background::persist_now(&services).await {
            problems.push(format!("writing consumer offsets: {e}"));
        }
        // Blocking store work a request started may still hold the services for a moment
        // after its task was dropped; it is short, but bounded by the deadline all the same.
        let services = match sole_owner(services, deadline).await {
            Ok(services) => services,
            Err(services) => {
                problems.push("requests still running at the shutdown deadline".into());
                let store = Arc::clone(&services.store);
                match blocking(move || store.flush()).await {
                    Ok(Ok(())) => problems.push("store flushed, not closed".into()),
                    Ok(Err(e)) => problems.push(format!("flushing the store: {e}")),
                    Err(e) => problems.push(e),
                }
                return Err(shutdown_error(problems));
            }
        };
        // The other fields (the appender's hold on the store among them) drop at the end
        // of this block, before the store is closed.
        let (retry, store) = {
            let owned = services;
            let Services { retry, store, .. } = owned;
            (retry, store)
        };
        retry.close();
        if let Err(e) = close_store(store).await {
            problems.push(e);
        }
        if problems.is_empty() {
            tracing::info!("broker stopped cleanly");
            Ok(())
        } else {
            Err(shutdown_error(problems))
        }
    }
}

fn shutdown_error(problems: Vec<String>) -> BrokerError {
    let e = BrokerError::Shutdown(problems.join("; "));
    tracing::error!(error = %e, "broker did not stop cleanly");
    e
}

/// Waits until `services` has no other owner, or the deadline passes.
async fn sole_owner(
    mut services: Arc<Services>,
    deadline: Instant,
) -> Result<Services, Arc<Services>> {
    loop {
        match Arc::try_unwrap(services) {
            Ok(s) => return Ok(s),
            Err(shared) if Instant::now() < deadline => {
                services = shared;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(shared) => return Err(shared),
        }
    }
}

/// Loads the TLS material and the users.
fn open_security(config: &Config) -> Result<Security, BrokerError> {
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(TlsAcceptor::new(
            TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: config.tls_client_ca.clone(),
            },
            config.tls_mode,
            Duration::from_millis(config.hello_timeout_ms),
        )?),
        _ => None,
    };
    let skew =
        (config.auth_max_skew_secs > 0).then(|| Duration::from_secs(config.auth_max_skew_secs));
    Ok(Security::open(
        &config.data_dir,
        config.auth,
        tls,
        skew,
        config.auth_max_failures,
    )?)
}

/// Reloads the certificate on every SIGHUP until shutdown; a failed reload keeps the old
/// one and says why. The handler stays installed for the process, so a later SIGHUP never
/// kills it.
fn reload_tls_on_sighup(services: &Arc<Services>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; certificates reload only on restart");
                return;
            }
        };
        let s = Arc::clone(services);
        services.tracker.spawn(async move {
            loop {
                tokio::select! {
                    () = s.shutdown.cancelled() => return,
                    got = hangups.recv() => if got.is_none() { return },
                }
                match s.security.tls().map(TlsAcceptor::reload) {
                    Some(Ok(())) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                    Some(Err(e)) => tracing::error!(error = %e, "SIGHUP: TLS reload failed; the old certificate stays in use"),
                    None => return,
                }
            }
        });
    }
}

/// Binds and starts the HTTP endpoint. Unset, it takes 127.0.0.1:8080 if free and is
/// skipped with a warning otherwise (a second broker on one machine still starts); a set
/// address that cannot be bound fails the start, like the native listener.
async fn start_http(
    config: &Config,
    recorder: &Arc<Recorder>,
    security: &Arc<Security>,
) -> Result<Option<HttpServer>, BrokerError> {
    let (addr, required) = match config.http_listen {
        Some(HttpListen::Off) => return Ok(None),
        Some(HttpListen::At(a)) => (a, true),
        None => (DEFAULT_HTTP_LISTEN, false),
    };
    let bound = TcpListener::bind(addr).await.and_then(|l| {
        HttpServer::start(
            l,
            Arc::clone(recorder),
            config.metrics_per_queue,
            config.http_max_connections,
            Arc::clone(security),
        )
    });
    match bound {
        Ok(server) => Ok(Some(server)),
        Err(e) if !required => {
            tracing::warn!(%addr, error = %e, "HTTP endpoint off: its default address cannot be bound; set --http-listen");
            Ok(None)
        }
        Err(source) => Err(BrokerError::Listen { addr, source }),
    }
}

/// Binds the gRPC endpoint's address. Unset, it takes 127.0.0.1:8081 if free and is
/// skipped with a warning otherwise, as the HTTP endpoint; a set address that cannot be
/// bound fails the start.
async fn bind_grpc(config: &Config) -> Result<Option<(SocketAddr, TcpListener)>, BrokerError> {
    let (addr, required) = match config.grpc_listen {
        Some(HttpListen::Off) => return Ok(None),
        Some(HttpListen::At(a)) => (a, true),
        None => (DEFAULT_GRPC_LISTEN, false),
    };
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(Some((addr, l))),
        Err(e) if !required => {
            tracing::warn!(%addr, error = %e, "gRPC endpoint off: its default address cannot be bound; set --grpc-listen");
            Ok(None)
        }
        Err(source) => Err(BrokerError::Listen { addr, source }),
    }
}

/// Lowers `max_connections` so that connections leave descriptors for the store's files,
/// and logs the descriptor and mapping budgets once.
fn fit_connections_to_fd_budget(config: &mut Config) {
    let fds = match resources::fd_limit() {
        Ok(l) => l.soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit; connections not fitted to it");
            return;
        }
    };
    let budget = resources::connection_budget(fds);
    let wanted = u64::from(config.max_connections);
    if wanted > budget {
        tracing::warn!(
            max_connections = wanted,
            fd_limit = fds,
            "max_connections lowered to {budget} so that connections leave {} descriptors for files",
            fds - budget
        );
        config.max_connections = u32::try_from(budget).unwrap_or(u32::MAX);
    }
    let maps = match (resources::mappings(), resources::max_map_count()) {
        (Some(used), Some(max)) => format!("mappings {used} of {max}"),
        _ => "mappings: unknown budget".to_owned(),
    };
    tracing::info!(
        max_connections = config.max_connections,
        "fd budget {fds} (connections ≤ {budget}), {maps}"
    );
}

impl Drop for RunningBroker {
    fn drop(&mut self) {
        // Dropped without `shutdown`: at least stop every task; the store closes when the
        // last reference goes.
        self.stop_accepting.cancel();
        if let Some(s) = &self.services {
            s.shutdown.cancel();
        }
    }
}

/// Opens consumer offsets, starts the retry service and recovers transactions (completing
/// commits a crash cut short, their acks written to the offsets at once), off the runtime.
async fn open_services(
    config: &Config,
    store: &Arc<MessageStore>,
) -> Result<(ConsumerOffsets, RetryService, Arc<TxService>), BrokerError> {
    let data_dir = config.data_dir.clone();
    let retry_config = RetryConfig {
        delay_levels_ms: config.retry_delays_ms.clone(),
        max_reconsume_times: config.max_reconsume_times,
    };
    let store = Arc::clone(store);
    let max_timer_delay_ms = config.max_timer_delay_ms;
    let tx_config = TxConfig {
        timeout_ms: config.tx_timeout_ms,
        check_interval_ms: config.tx_check_interval_ms,
        max_checks: config.tx_max_checks,
        max_messages: config.tx_max_messages,
        max_bytes: config.tx_max_bytes.get(),
    };
    blocking(move || {
        let storage = Arc::clone(&store.config().commitlog.storage);
        let offsets = ConsumerOffsets::open_on(&data_dir, storage)?;
        clamp_offsets_to_recovered_queues(&offsets, &store);
        let timer = TimerService::start(
            Arc::clone(&store),
            TimerConfig {
                max_delay_ms: max_timer_delay_ms,
            },
        )
        .map_err(RetryError::from)?;
        let tx = TxService::open(Arc::clone(&store), tx_config)?;
        let apply = |acks: &[crate::tx::AckItem]| -> Result<(), String> {
            tx.apply_offset_acks(&offsets, acks)?;
            offsets.persist().map_err(|e| e.to_string())
        };
        tx.recover(&apply)?;
        let retry = RetryService::start_with_timer(store, retry_config, Arc::new(timer))?;
        Ok((offsets, retry, Arc::new(tx)))
    })
    .await
    .map_err(BrokerError::Shutdown)?
}

/// Moves every committed offset that lies past its queue's end back to that end. Recovery
/// may cut a torn or corrupt log tail; a group committed beyond it would otherwise skip
/// the messages produced at those offsets after the restart. The change is persisted with
/// the next periodic offsets write.
fn clamp_offsets_to_recovered_queues(offsets: &ConsumerOffsets, store: &MessageStore) {
    for group in offsets.groups() {
        for commit in offsets.queues_of(&group) {
            let Ok((_, max)) = store.queue_range(&commit.topic, commit.queue_id) else {
                continue;
            };
            let max = max.get();
            let past = commit.offset > max || commit.acked_above.iter().any(|r| r.end > max);
            if past {
                tracing::warn!(
                    %group,
                    topic = %commit.topic,
                    queue_id = commit.queue_id,
                    committed = commit.offset,
                    queue_max = max,
                    "committed offset past the recovered end of the queue; moved back"
                );
                offsets.reset(
                    &group,
                    &commit.topic,
                    commit.queue_id,
                    commit.offset.min(max),
                );
            }
        }
    }
}

/// Flushes and closes the store off the runtime.
async fn close_store(store: Arc<MessageStore>) -> Result<(), String> {
    blocking(move || match Arc::try_unwrap(store) {
        Ok(store) => store.close().map_err(|e| format!("closing the store: {e}")),
        Err(_) => Err("the store is still in use; it closes when released".into()),
    })
    .await?
}

/// Runs blocking work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("blocking task failed: {e}"))
}

/// Starts the replication role, if the config names one.
async fn start_replication(
    config: &Config,
    local_addr: SocketAddr,
    store: &Arc<MessageStore>,
) -> Result<Option<Arc<crate::ha::Replication>>, BrokerError> {
    let Some(flag) = config.role else {
        return Ok(None);
    };
    let settings = crate::ha::Settings {
        ha_listen: config.ha_listen,
        master: config.master.clone(),
        secret: config
            .cluster_secret
            .clone()
            .unwrap_or_default()
            .into_bytes(),
        min_sync: config.min_sync_replicas,
        ack: config.replication_ack,
        max_lag: Duration::from_millis(config.max_replica_lag_ms),
        client_addr: local_addr.to_string(),
    };
    let store = Arc::clone(store);
    blocking(move || crate::ha::Replication::start(settings, flag, store))
        .await
        .map_err(BrokerError::Replication)?
        .map(Some)
        .map_err(|e| BrokerError::Replication(e.to_string()))
}

fn store_config(config: &Config) -> StoreConfig {
    let mut c = StoreConfig::new(config.data_dir.clone());
    c.commitlog.segment_size_bytes = config.segment_size.get();
    c.commitlog.flush = config.flush_policy();
    c.commitlog.retention = commitlog::Retention {
        max_age_ms: (config.retention_hours > 0).then(|| config.retention_hours * 3_600_000),
        max_total_bytes: config.retention_bytes.map(ByteSize::get),
    };
    // Room for the record header and properties next to the largest body; `validate`
    // keeps this below the segment size.
    c.commitlog.max_record_bytes = config
        .max_message_bytes()
        .saturating_add(RECORD_OVERHEAD_BYTES)
        .max(c.commitlog.max_record_bytes);
    c.max_body_bytes = config.max_message_bytes() as usize;
    c.auto_create_topics = config.auto_create_topics;
    c.max_topics = config.max_topics;
    c.default_queue_count = config.default_queues;
    c.disk_reserve = config.disk_reserve;
    c.key_index.enabled = config.key_index == crate::config::KeyIndexMode::On;
    c
}

/// What a record may hold beyond its body: header, topic name and properties.
const RECORD_OVERHEAD_BYTES: u32 = 64 * 1024;
