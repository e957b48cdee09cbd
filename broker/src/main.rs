//! The `broker` binary: raises its open-file limit, reads the config (file, then flags),
//! starts the broker, and runs it until SIGINT or SIGTERM, then shuts it down within
//! `--shutdown-timeout-ms` and exits 0 (1 if the shutdown was not clean).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use broker::config::{
    parse_flush_policy, ByteSize, Config, DiskReserve, FlushPolicy, GrpcListen, HttpListen,
    KeyIndexMode, MetricsPerQueue,
};
use broker::security::{AuthMode, TlsMode};
use broker::{Broker, BrokerError};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// FerroMQ message broker.
///
/// Settings come from the defaults, then the TOML file given with --config (any subset
/// of the fields of the same names, with `_` for `-`), then these flags. Sizes accept
/// plain bytes or a K, M or G suffix. Logging follows RUST_LOG (default: info).
#[derive(Debug, Parser)]
#[command(name = "broker", version)]
struct Cli {
    /// TOML config file; flags override what it sets.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:10911].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Data directory [default: ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// When a send is acknowledged: `async` (in the page cache) or `sync` (on disk)
    /// [default: async].
    #[arg(long, value_name = "MODE", value_parser = parse_flush_policy)]
    flush: Option<FlushPolicy>,
    /// With async flush, the longest data stays unflushed, in ms [default: 500].
    #[arg(long, value_name = "MS")]
    flush_interval_ms: Option<u64>,
    /// Commit-log segment size, at least 4K; a fresh data directory takes two segments
    /// (the active one and a preallocated spare) [default: 64M].
    #[arg(long, value_name = "SIZE")]
    segment_size: Option<ByteSize>,
    /// Delete commit-log segments older than this; 0 keeps them forever [default: 72].
    #[arg(long, value_name = "HOURS")]
    retention_hours: Option<u64>,
    /// Delete the oldest segments while the log is larger than this [default: no cap].
    #[arg(long, value_name = "SIZE")]
    retention_bytes: Option<ByteSize>,
    /// Largest message body accepted [default: 4M].
    #[arg(long, value_name = "SIZE")]
    max_message_size: Option<ByteSize>,
    /// Most messages in one send [default: 4096].
    #[arg(long, value_name = "N")]
    max_batch_messages: Option<u32>,
    /// Largest request frame accepted [default: 64M].
    #[arg(long, value_name = "SIZE")]
    max_frame_size: Option<ByteSize>,
    /// Create topics on their first send [default: true].
    #[arg(long, value_name = "BOOL")]
    auto_create_topics: Option<bool>,
    /// Queues of an auto-created topic [default: 4].
    #[arg(long, value_name = "N")]
    default_queues: Option<u32>,
    /// Connections served at once; more are refused [default: 1024].
    #[arg(long, value_name = "N")]
    max_connections: Option<u32>,
    /// Requests in flight per connection; more are answered Busy [default: 1024].
    #[arg(long, value_name = "N")]
    max_inflight_per_connection: Option<u32>,
    /// A consumer silent this long leaves its group, in ms [default: 30000].
    #[arg(long, value_name = "MS")]
    session_timeout_ms: Option<u64>,
    /// Retry delays of nacked messages, comma-separated ms
    /// [default: 1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h].
    #[arg(long, value_name = "MS,MS,...", value_delimiter = ',')]
    retry_delays_ms: Option<Vec<u64>>,
    /// Attempts before a message goes to the dead-letter queue [default: 16].
    #[arg(long, value_name = "N")]
    max_reconsume_times: Option<u32>,
    /// How often changed consumer offsets are written, in ms [default: 1000].
    #[arg(long, value_name = "MS")]
    offsets_persist_interval_ms: Option<u64>,
    /// Close a connection that stops sending in the middle of a frame for this long, in ms
    /// [default: 30000].
    #[arg(long, value_name = "MS")]
    partial_frame_timeout_ms: Option<u64>,
    /// Free space kept back: sends are refused with DiskFull while less is free. A size
    /// (64M) or a percentage of the filesystem (1%, never below 16M); 0 disables it
    /// [default: 1%].
    #[arg(long, value_name = "SIZE|PCT")]
    disk_reserve: Option<DiskReserve>,
    /// Remove a group (offsets, retry and dead-letter topics) after it had no live member
    /// and no commit for this long, in ms; 0 never [default: 0].
    #[arg(long, value_name = "MS")]
    group_idle_expiry_ms: Option<u64>,
    /// Most topics held, internal ones included; creating one more is refused
    /// [default: 10000].
    #[arg(long, value_name = "N")]
    max_topics: Option<u32>,
    /// Close a connection that has not sent one complete frame (its Hello) this long after
    /// it was accepted, in ms [default: 5000].
    #[arg(long, value_name = "MS")]
    hello_timeout_ms: Option<u64>,
    /// Close a connection with nothing in flight that sends nothing for this long, in ms;
    /// 0 never closes idle connections [default: 0].
    #[arg(long, value_name = "MS")]
    idle_timeout_ms: Option<u64>,
    /// Bytes of unanswered requests plus unwritten answers one connection may hold; past
    /// it the connection is not read until its answers drain [default: 16M].
    #[arg(long, value_name = "SIZE")]
    max_pending_bytes_per_connection: Option<ByteSize>,
    /// Longest a graceful shutdown waits for connections and requests before it closes
    /// the store anyway, in ms [default: 10000].
    #[arg(long, value_name = "MS")]
    shutdown_timeout_ms: Option<u64>,
    /// Most leases a receiving group holds at once (per-message acks); past it receives
    /// return fewer messages or none [default: 100000].
    #[arg(long, value_name = "N")]
    max_in_flight_leases: Option<u32>,
    /// Furthest ahead a timer message may be due, in ms; later ones are refused
    /// [default: 604800000, 7 days].
    #[arg(long, value_name = "MS")]
    max_timer_delay_ms: Option<u64>,
    /// Address of the HTTP endpoint (metrics, JSON API, dashboard), or `off`; when not
    /// given and 127.0.0.1:8080 is taken, the broker runs without it and warns
    /// [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR|off")]
    http_listen: Option<HttpListen>,
    /// /metrics series per (group, topic, queue) `on`, per (group, topic) `off`, or per
    /// queue up to 2,000 queues `auto` [default: auto].
    #[arg(long, value_name = "on|off|auto")]
    metrics_per_queue: Option<MetricsPerQueue>,
    /// HTTP connections served at once; more are answered 503 [default: 64].
    #[arg(long, value_name = "N")]
    http_max_connections: Option<u32>,
    /// A transaction open longer than this is checked back, in ms [default: 60000].
    #[arg(long, value_name = "MS")]
    tx_timeout_ms: Option<u64>,
    /// Time between two check-backs of one open transaction, in ms [default: 10000].
    #[arg(long, value_name = "MS")]
    tx_check_interval_ms: Option<u64>,
    /// Check-backs before an unresolved transaction is rolled back [default: 15].
    #[arg(long, value_name = "N")]
    tx_max_checks: Option<u32>,
    /// Most messages (and, apart, most acks) in one transaction [default: 10000].
    #[arg(long, value_name = "N")]
    tx_max_messages: Option<u32>,
    /// Most body bytes in one transaction [default: 64M].
    #[arg(long, value_name = "SIZE")]
    tx_max_bytes: Option<ByteSize>,
    /// Keep the key index for lookups by message key (`mq message query`) [default: on].
    #[arg(long, value_name = "on|off")]
    key_index: Option<KeyIndexMode>,
    /// Address of the RocketMQ 5 gRPC endpoint (official RocketMQ 5 clients connect here),
    /// or `off`; when not given and 127.0.0.1:8081 is taken, the broker runs without it and
    /// warns [default: 127.0.0.1:8081].
    #[arg(long, value_name = "ADDR|off")]
    grpc_listen: Option<GrpcListen>,
    /// PEM certificate chain: TLS on the native and HTTP listeners (with --tls-key);
    /// reloaded on SIGHUP [default: none, plaintext].
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert [default: none].
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// `permissive`: TLS and plaintext on the same port; `required`: TLS only
    /// [default: permissive].
    #[arg(long, value_name = "permissive|required")]
    tls_mode: Option<TlsMode>,
    /// PEM CA certificates that client certificates must chain to (mutual TLS)
    /// [default: none, no client certificate asked].
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// `on`: every connection authenticates (users in <data>/config/users, `mq user`) and
    /// access rules apply (`mq acl`); the first start creates an administrator from
    /// FERRO_ADMIN_ACCESS_KEY / FERRO_ADMIN_SECRET_KEY or prints a generated one once
    /// [default: off].
    #[arg(long, value_name = "on|off")]
    auth: Option<AuthMode>,
    /// Furthest a RocketMQ 5 signature time may be from this clock, in seconds; 0 checks
    /// none [default: 900].
    #[arg(long, value_name = "SECS")]
    auth_max_skew_secs: Option<u64>,
    /// Failed authentications from one address within a minute before it is refused for
    /// the rest of that minute [default: 5].
    #[arg(long, value_name = "N")]
    auth_max_failures: Option<u32>,
    /// Replication role: master or replica (with --cluster-secret) [default: none,
    /// a standalone broker].
    #[arg(long, value_name = "master|replica")]
    role: Option<broker::ha::Role>,
    /// HA address: where a master takes its replicas; a replica's own, used once
    /// promoted [default: none].
    #[arg(long, value_name = "ADDR")]
    ha_listen: Option<std::net::SocketAddr>,
    /// A replica's master, its HA address [default: none].
    #[arg(long, value_name = "HA_ADDR")]
    master: Option<String>,
    /// Secret the brokers of a group authenticate each other with, 16 bytes or more
    /// [default: none; also FERRO_CLUSTER_SECRET].
    #[arg(
        long,
        value_name = "SECRET",
        env = "FERRO_CLUSTER_SECRET",
        hide_env_values = true
    )]
    cluster_secret: Option<String>,
    /// Brokers (master included) that hold a message before it is acknowledged [default: 2].
    #[arg(long, value_name = "N")]
    min_sync_replicas: Option<u32>,
    /// When a replica's copy counts: received (its page cache) or durable (after its
    /// flush) [default: received].
    #[arg(long, value_name = "received|durable")]
    replication_ack: Option<broker::ha::AckMode>,
    /// A replica this far behind leaves the sync set; also the longest a send waits for
    /// replicas, in ms [default: 5000].
    #[arg(long, value_name = "MS")]
    max_replica_lag_ms: Option<u64>,
}

impl Cli {
    /// Applies the flags that were given over `c`.
    fn apply(self, mut c: Config) -> Config {
        macro_rules! set {
            ($($field:ident),+) => { $(if let Some(v) = self.$field { c.$field = v; })+ };
        }
        set!(
            listen,
            data_dir,
            flush,
            flush_interval_ms,
            segment_size,
            retention_hours,
            max_message_size,
            max_batch_messages,
            max_frame_size,
            auto_create_topics,
            default_queues,
            max_connections,
            max_inflight_per_connection,
            session_timeout_ms,
            retry_delays_ms,
            max_reconsume_times,
            offsets_persist_interval_ms,
            partial_frame_timeout_ms,
            disk_reserve,
            group_idle_expiry_ms,
            max_topics,
            hello_timeout_ms,
            idle_timeout_ms,
            max_pending_bytes_per_connection,
            shutdown_timeout_ms,
            max_in_flight_leases,
            max_timer_delay_ms,
            metrics_per_queue,
            http_max_connections,
            tx_timeout_ms,
            tx_check_interval_ms,
            tx_max_checks,
            tx_max_messages,
            tx_max_bytes,
            key_index,
            tls_mode,
            auth,
            auth_max_skew_secs,
            auth_max_failures,
            min_sync_replicas,
            replication_ack,
            max_replica_lag_ms
        );
        if self.tls_cert.is_some() {
            c.tls_cert = self.tls_cert;
        }
        if self.tls_key.is_some() {
            c.tls_key = self.tls_key;
        }
        if self.tls_client_ca.is_some() {
            c.tls_client_ca = self.tls_client_ca;
        }
        if self.role.is_some() {
            c.role = self.role;
        }
        if self.ha_listen.is_some() {
            c.ha_listen = self.ha_listen;
        }
        if self.master.is_some() {
            c.master = self.master;
        }
        if self.cluster_secret.is_some() {
            c.cluster_secret = self.cluster_secret;
        }
        if self.http_listen.is_some() {
            c.http_listen = self.http_listen;
        }
        if self.grpc_listen.is_some() {
            c.grpc_listen = self.grpc_listen;
        }
        if self.retention_bytes.is_some() {
            c.retention_bytes = self.retention_bytes;
        }
        c
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: a log file or pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match &cli.config {
        Some(path) => match Config::from_file(path) {
            Ok(c) => c,
            Err(e) => return fail(&e),
        },
        None => Config::default(),
    };
    let config = cli.apply(config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    // Before anything opens a file: the budget the broker logs and fits connections to is
    // the raised one.
    if let Err(e) = broker::server::resources::raise_fd_limit() {
        tracing::warn!(error = %e, "cannot read the open-file limit");
    }
    let result = runtime.block_on(run(config));
    // Blocking work still running past the shutdown deadline must not hold the exit.
    runtime.shutdown_timeout(RUNTIME_EXIT_WAIT);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// How long the exiting process waits for blocking tasks left after shutdown.
const RUNTIME_EXIT_WAIT: Duration = Duration::from_millis(500);

async fn run(config: Config) -> Result<(), BrokerError> {
    let data_dir = config.data_dir.clone();
    let scheme = if config.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let broker = Broker::start(config).await?;
    eprintln!(
        "FerroMQ broker listening on {}, data in {}",
        broker.local_addr(),
        data_dir.display()
    );
    if let Some(http) = broker.http_addr() {
        eprintln!("FerroMQ dashboard on {scheme}://{http}/ (metrics at /metrics)");
    }
    if let Some((access_key, secret_key)) = broker.generated_admin() {
        // Shown this once, never logged: the user file is the only other copy.
        eprintln!(
            "FerroMQ created the first administrator; keep these keys, they are not shown again:\n  access key: {access_key}\n  secret key: {secret_key}"
        );
    }
    if let Some(grpc) = broker.grpc_addr() {
        eprintln!("FerroMQ RocketMQ 5 gRPC endpoint on {grpc}");
    }
    wait_for_signal(&broker).await;
    broker.shutdown().await
}

/// Returns on SIGINT, SIGTERM, or a shutdown the broker started itself.
async fn wait_for_signal(broker: &broker::RunningBroker) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the broker");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
            () = broker.stopping() => {}
        }
    }
    #[cfg(not(unix))]
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
            () = broker.stopping() => {}
        }
    }
}

fn fail(e: &dyn std::error::Error) -> ExitCode {
    eprintln!("broker: {e}");
    ExitCode::FAILURE
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let dir = tempfile::TempDir::new().unwrap();
        let file = dir.path().join("broker.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nflush = \"sync\"\ndefault_queues = 8\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "broker",
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:9100",
            "--segment-size",
            "64M",
            "--retention-bytes",
            "10G",
            "--auto-create-topics",
            "false",
            "--retry-delays-ms",
            "10,20,30",
        ]);
        let file_config = Config::from_file(cli.config.as_deref().unwrap()).unwrap();
        let c = cli.apply(file_config);
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(c.flush, FlushPolicy::Sync);
        assert_eq!(c.default_queues, 8);
        assert_eq!(c.segment_size, ByteSize(64 << 20));
        assert_eq!(c.retention_bytes, Some(ByteSize(10 << 30)));
        assert!(!c.auto_create_topics);
        assert_eq!(c.retry_delays_ms, [10, 20, 30]);
        c.validate().unwrap();
    }

    #[test]
    fn help_documents_every_option_with_its_default() {
        Cli::command().debug_assert();
        let cmd = Cli::command();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version" | "config") {
                continue;
            }
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(
                help.contains("[default:"),
                "--{id} does not state its default: {help}"
            );
        }
    }
}
