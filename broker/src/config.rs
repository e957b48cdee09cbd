//! Broker configuration: one serde struct read from an optional TOML file, overridden by
//! command-line flags, and validated once before anything is opened.
//!
//! Sizes accept plain bytes or a `K`, `M` or `G` suffix (powers of 1024), in flags and in
//! the file (`segment_size = "256M"` or `segment_size = 268435456`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use crate::store::DiskReserve;
pub use byte_size::ByteSize;
/// When an acknowledged message is on disk: the commit log's own policy, one spelling.
pub use commitlog::FlushPolicy;

mod byte_size;

/// Commit-log segment size by default: small enough that a fresh data folder takes
/// 128 MiB (the active segment and one preallocated spare), not gigabytes. Production
/// brokers with steady traffic may prefer `1G` (fewer files, rarer rolls).
pub const DEFAULT_SEGMENT_SIZE: ByteSize = ByteSize(64 << 20);

/// The longest a pull may be held at the head of a queue, whatever the client asks.
pub const MAX_LONG_POLL_MS: u64 = 30_000;

/// Everything that can be wrong with a configuration.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file given with `--config`.
        path: PathBuf,
        /// The error from the OS.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not TOML, or names a setting the broker does not have.
    #[error("config file {path} is not valid TOML for the broker: {source}")]
    Parse {
        /// The file given with `--config`.
        path: PathBuf,
        /// What the TOML parser found, with its line and column.
        #[source]
        source: toml::de::Error,
    },
    /// A setting is out of range or contradicts another one.
    #[error("invalid setting {field}: {reason}")]
    Invalid {
        /// The setting's name, as in the file (`max_frame_size`).
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },
}

/// Parses the `--flush` flag and the `flush` key: `async` or `sync`, any case. The interval
/// of `Async` is a placeholder here; [`Config::flush_policy`] takes it from
/// `flush_interval_ms`, the one setting for it.
///
/// # Errors
/// Any other word, with the two accepted ones.
pub fn parse_flush_policy(s: &str) -> Result<FlushPolicy, String> {
    match s.to_ascii_lowercase().as_str() {
        "async" => Ok(FlushPolicy::default()),
        "sync" => Ok(FlushPolicy::Sync),
        other => Err(format!("unknown flush mode {other:?} (use sync or async)")),
    }
}

/// `flush = "async" | "sync"` in the config file, for [`FlushPolicy`] (which has no serde).
mod flush_serde {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    use super::FlushPolicy;

    pub(super) fn serialize<S: Serializer>(p: &FlushPolicy, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match p {
            FlushPolicy::Async { .. } => "async",
            FlushPolicy::Sync => "sync",
        })
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<FlushPolicy, D::Error> {
        let word = String::deserialize(d)?;
        match word.as_str() {
            "async" => Ok(FlushPolicy::default()),
            "sync" => Ok(FlushPolicy::Sync),
            _ => Err(D::Error::unknown_variant(&word, &["async", "sync"])),
        }
    }
}

/// Where the HTTP endpoint (metrics, JSON API, dashboard) listens: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum HttpListen {
    /// No HTTP endpoint.
    Off,
    /// Listen on this address; port 0 picks a free port.
    At(SocketAddr),
}

/// Where the RocketMQ 5 gRPC endpoint listens: an address, or `off` (the same two forms as
/// [`HttpListen`]).
pub type GrpcListen = HttpListen;

/// The gRPC endpoint's address when none is configured: the RocketMQ proxy's port.
pub const DEFAULT_GRPC_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8081);

/// The HTTP endpoint's address when none is configured.
pub const DEFAULT_HTTP_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

impl FromStr for HttpListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        s.parse()
            .map(Self::At)
            .map_err(|e| format!("{s:?} is neither `off` nor an address like 127.0.0.1:8080 ({e})"))
    }
}

impl TryFrom<String> for HttpListen {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<HttpListen> for String {
    fn from(v: HttpListen) -> String {
        match v {
            HttpListen::Off => "off".into(),
            HttpListen::At(a) => a.to_string(),
        }
    }
}

/// Whether `/metrics` has one series per (group, topic, queue) or per (group, topic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MetricsPerQueue {
    /// Per queue while the broker holds at most [`MetricsPerQueue::AUTO_MAX_QUEUES`]
    /// queues, per topic above.
    #[default]
    Auto,
    /// Always per (group, topic, queue).
    On,
    /// Always per (group, topic).
    Off,
}

impl MetricsPerQueue {
    /// Queues up to which `auto` keeps per-queue series.
    pub const AUTO_MAX_QUEUES: u64 = 2_000;

    /// Whether a broker holding `queues` queues shows per-queue series.
    pub fn per_queue(self, queues: u64) -> bool {
        match self {
            Self::On => true,
            Self::Off => false,
            Self::Auto => queues <= Self::AUTO_MAX_QUEUES,
        }
    }
}

impl FromStr for MetricsPerQueue {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => Err(format!("{other:?} is not on, off or auto")),
        }
    }
}

/// Whether the broker keeps the key index (`<data>/index`) for lookups by message key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeyIndexMode {
    /// Index message keys; `mq message query` works.
    #[default]
    On,
    /// No key index: no files, no indexing work; lookups by key are refused.
    Off,
}

impl FromStr for KeyIndexMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => Err(format!("{other:?} is not on or off")),
        }
    }
}

/// The broker's settings. Every field has a default; a TOML file may set any subset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:10911`; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Folder holding the commit log, consume queues, offsets and topics. Default `./data`.
    pub data_dir: PathBuf,
    /// When a message is acknowledged: `async` or `sync`. Default `async`, whose interval is
    /// `flush_interval_ms` ([`Config::flush_policy`]).
    #[serde(with = "flush_serde")]
    pub flush: FlushPolicy,
    /// With `flush = async`, the longest a message stays unflushed. Default 500 ms.
    pub flush_interval_ms: u64,
    /// Size of one commit-log segment file. Default 64M ([`DEFAULT_SEGMENT_SIZE`]); at least 4K.
    pub segment_size: ByteSize,
    /// Delete commit-log segments older than this many hours. Default 72; 0 keeps forever.
    pub retention_hours: u64,
    /// Delete the oldest segments while the log is larger than this. Default unset (no cap).
    pub retention_bytes: Option<ByteSize>,
    /// Largest message body accepted. Default 4M.
    pub max_message_size: ByteSize,
    /// Most messages in one send. Default 4096.
    pub max_batch_messages: u32,
    /// Largest request frame accepted. Default 64M; must exceed `max_message_size`.
    pub max_frame_size: ByteSize,
    /// Create a topic on its first send. Default true.
    pub auto_create_topics: bool,
    /// Queues of an auto-created topic. Default 4.
    pub default_queues: u32,
    /// Connections served at once; more are refused with `Busy`. Default 1024.
    pub max_connections: u32,
    /// Requests in flight on one connection; more are answered `Busy`. Default 1024 (the `mq bench` pipeline depth fits).
    pub max_inflight_per_connection: u32,
    /// A consumer silent for longer than this leaves its group. Default 30000 ms.
    pub session_timeout_ms: u64,
    /// Delay before each retry of a nacked message. Default 1s 5s 10s 30s 1m 2m ... 2h.
    pub retry_delays_ms: Vec<u64>,
    /// Attempts before a message goes to the dead-letter queue. Default 16.
    pub max_reconsume_times: u32,
    /// How often changed consumer offsets are written to disk. Default 1000 ms.
    pub offsets_persist_interval_ms: u64,
    /// A connection that sends part of a frame and then nothing for this long is closed.
    /// Default 30000 ms.
    pub partial_frame_timeout_ms: u64,
    /// Free space kept back on the data directory's filesystem: while less is free, sends
    /// and send-backs are refused with `DiskFull` (reads, acks and joins go on). A size
    /// (`64M`) or a percentage of the filesystem (`1%`, never below 16M); `0` disables it
    /// (writes are then refused only after one hit `ENOSPC`). Default `1%`.
    pub disk_reserve: DiskReserve,
    /// Remove a consumer group (its offsets, `%RETRY%` and `%DLQ%` topics) once it has had
    /// no live member and no commit for this long. Default 0: never.
    pub group_idle_expiry_ms: u64,
    /// Most topics the broker holds (internal ones included); creating or auto-creating
    /// one more is refused with `TopicLimit`. Default 10000.
    pub max_topics: u32,
    /// A connection that has not sent one complete frame (normally its Hello) this long
    /// after it was accepted is closed, so silent connections cannot hold every slot.
    /// Default 5000 ms.
    pub hello_timeout_ms: u64,
    /// A connection with no request in flight that sends nothing for this long is closed.
    /// Default 0: never (clients keep connections open between bursts).
    pub idle_timeout_ms: u64,
    /// Bytes one connection may hold in requests not yet answered plus answers not yet
    /// written; past it the connection reads nothing more until its writer drains.
    /// Default 16M.
    pub max_pending_bytes_per_connection: ByteSize,
    /// How long a graceful shutdown may take before the broker stops waiting for
    /// connections and requests and closes the store anyway. Default 10000 ms.
    pub shutdown_timeout_ms: u64,
    /// Most leases a group that receives (per-message acks) holds at once; past it a
    /// receive returns fewer messages or none. Default 100000.
    pub max_in_flight_leases: u32,
    /// Furthest ahead a timer message may be due; later ones are refused. Default 7 days.
    pub max_timer_delay_ms: u64,
    /// Address of the HTTP endpoint (`/metrics`, `/api/...`, the dashboard at `/`,
    /// `/healthz`, `/readyz`), or `off`. Unset (the default): `127.0.0.1:8080` when that
    /// port is free, else no HTTP endpoint and a warning. A set address that cannot be
    /// bound stops the start.
    pub http_listen: Option<HttpListen>,
    /// `/metrics` series per (group, topic, queue) (`on`), per (group, topic) (`off`), or
    /// per queue up to 2,000 queues and per topic above (`auto`). Default `auto`.
    pub metrics_per_queue: MetricsPerQueue,
    /// HTTP connections served at once; more are answered 503 and closed. Default 64.
    pub http_max_connections: u32,
    /// A transaction open longer than this is checked back (unless its begin set its own
    /// timeout). Default 60000 ms.
    pub tx_timeout_ms: u64,
    /// Time between two check-backs of one open transaction. Default 10000 ms.
    pub tx_check_interval_ms: u64,
    /// Check-backs before an unresolved transaction is rolled back. Default 15.
    pub tx_max_checks: u32,
    /// Most messages in one transaction (and most acks, counted apart). Default 10000.
    pub tx_max_messages: u32,
    /// Most body bytes in one transaction. Default 64M.
    pub tx_max_bytes: ByteSize,
    /// The key index for `mq message query` (`on`), or none (`off`). Default `on`.
    pub key_index: KeyIndexMode,
    /// Address of the RocketMQ 5 gRPC endpoint (`apache.rocketmq.v2.MessagingService`,
    /// plaintext h2c), or `off`. Unset (the default): `127.0.0.1:8081` when that port is
    /// free, else no gRPC endpoint and a warning. A set address that cannot be bound stops
    /// the start.
    pub grpc_listen: Option<GrpcListen>,
    /// PEM certificate chain: TLS on every listener (with `tls_key`). Default none.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`. Default none.
    pub tls_key: Option<PathBuf>,
    /// `permissive` (TLS and plaintext on one port) or `required`. Default `permissive`.
    pub tls_mode: crate::security::TlsMode,
    /// PEM CA certificates client certificates must chain to (mutual TLS). Default none.
    pub tls_client_ca: Option<PathBuf>,
    /// `on`: every connection authenticates and access rules apply. Default `off`.
    pub auth: crate::security::AuthMode,
    /// Furthest a RocketMQ 5 signature time may be from the broker's clock, in seconds;
    /// 0 checks none. Default 900.
    pub auth_max_skew_secs: u64,
    /// Failed authentications from one address within a minute before it is refused for
    /// the rest of that minute. Default 5.
    pub auth_max_failures: u32,
    /// Replication role: `master` or `replica`; none (default) is a standalone broker.
    pub role: Option<crate::ha::Role>,
    /// HA address: where a master takes its replicas (a replica's own, used once
    /// promoted). Default none.
    pub ha_listen: Option<SocketAddr>,
    /// A replica's master, its HA address. Default none.
    pub master: Option<String>,
    /// The secret brokers of a group authenticate each other with (at least 16 bytes);
    /// required with a role. Default none.
    pub cluster_secret: Option<String>,
    /// Brokers (master included) that must hold a record before it is confirmed. Default 2.
    pub min_sync_replicas: u32,
    /// What a replica's ack means: `received` (in its page cache, default) or `durable`
    /// (after its flush).
    pub replication_ack: crate::ha::AckMode,
    /// A replica this far behind, in ms, leaves the sync set; also the longest a send
    /// waits for replicas. Default 5000.
    pub max_replica_lag_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 10911)),
            data_dir: PathBuf::from("./data"),
            flush: FlushPolicy::default(),
            flush_interval_ms: 500,
            segment_size: DEFAULT_SEGMENT_SIZE,
            retention_hours: 72,
            retention_bytes: None,
            max_message_size: ByteSize(4 << 20),
            max_batch_messages: 4096,
            max_frame_size: ByteSize(64 << 20),
            auto_create_topics: true,
            default_queues: 4,
            max_connections: 1024,
            max_inflight_per_connection: 1024,
            session_timeout_ms: crate::groups::DEFAULT_SESSION_TIMEOUT_MS,
            retry_delays_ms: crate::retry::DEFAULT_DELAY_LEVELS_MS.to_vec(),
            max_reconsume_times: crate::retry::DEFAULT_MAX_RECONSUME_TIMES,
            offsets_persist_interval_ms: 1_000,
            partial_frame_timeout_ms: 30_000,
            disk_reserve: DiskReserve::default(),
            group_idle_expiry_ms: 0,
            max_topics: 10_000,
            hello_timeout_ms: 5_000,
            idle_timeout_ms: 0,
            max_pending_bytes_per_connection: ByteSize(16 << 20),
            shutdown_timeout_ms: 10_000,
            max_in_flight_leases: crate::pop::DEFAULT_MAX_IN_FLIGHT_LEASES,
            max_timer_delay_ms: crate::timer::DEFAULT_MAX_TIMER_DELAY_MS,
            http_listen: None,
            metrics_per_queue: MetricsPerQueue::Auto,
            http_max_connections: 64,
            tx_timeout_ms: crate::tx::DEFAULT_TX_TIMEOUT_MS,
            tx_check_interval_ms: crate::tx::DEFAULT_TX_CHECK_INTERVAL_MS,
            tx_max_checks: crate::tx::DEFAULT_TX_MAX_CHECKS,
            tx_max_messages: crate::tx::DEFAULT_TX_MAX_MESSAGES,
            tx_max_bytes: ByteSize(crate::tx::DEFAULT_TX_MAX_BYTES),
            key_index: KeyIndexMode::On,
            grpc_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_mode: crate::security::TlsMode::Permissive,
            tls_client_ca: None,
            auth: crate::security::AuthMode::Off,
            auth_max_skew_secs: 900,
            auth_max_failures: 5,
            role: None,
            ha_listen: None,
            master: None,
            cluster_secret: None,
            min_sync_replicas: 2,
            replication_ack: crate::ha::AckMode::Received,
            max_replica_lag_ms: 5000,
        }
    }
}

impl Config {
    /// Defaults with the data under `data_dir`, ephemeral ports on 127.0.0.1 (the HTTP
    /// endpoint's too) and no disk reserve: what tests start an in-process broker with (a
    /// test must not fail because the host's disk is 99% used).
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            disk_reserve: DiskReserve::Bytes(0),
            http_listen: Some(HttpListen::At(SocketAddr::from(([127, 0, 0, 1], 0)))),
            grpc_listen: Some(HttpListen::At(SocketAddr::from(([127, 0, 0, 1], 0)))),
            ..Self::default()
        }
    }

    /// Reads a TOML file; fields it leaves out keep their defaults.
    ///
    /// # Errors
    /// `Read` or `Parse` naming the file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The commit log's flush policy: `flush`, with `flush_interval_ms` as the interval of
    /// `Async`.
    pub fn flush_policy(&self) -> FlushPolicy {
        match self.flush {
            FlushPolicy::Async { .. } => FlushPolicy::Async {
                interval_ms: self.flush_interval_ms,
            },
            FlushPolicy::Sync => FlushPolicy::Sync,
        }
    }

    /// Checks every field against its range.
    ///
    /// # Errors
    /// `Invalid` naming the first bad field and why.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: String| Err(ConfigError::Invalid { field, reason });
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "is empty".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("tls_cert", "tls_cert and tls_key go together".into());
        }
        if self.tls_cert.is_none() && self.tls_client_ca.is_some() {
            return bad("tls_client_ca", "needs tls_cert and tls_key".into());
        }
        if self.tls_cert.is_none() && self.tls_mode == crate::security::TlsMode::Required {
            return bad("tls_mode", "required needs tls_cert and tls_key".into());
        }
        if self.auth_max_failures == 0 {
            return bad("auth_max_failures", "must be at least 1".into());
        }
        if self.flush_interval_ms == 0 {
            return bad("flush_interval_ms", "must be at least 1".into());
        }
        if self.segment_size.get() < 4096 {
            return bad("segment_size", format!("{} is below 4K", self.segment_size));
        }
        if self.max_message_size.get() == 0 || self.max_message_size.get() > u64::from(u32::MAX) {
            return bad("max_message_size", "must be between 1 and 4G".into());
        }
        // A message plus its record header and properties must fit one segment.
        if self.max_message_size.get() + 64 * 1024 > self.segment_size.get() {
            return bad(
                "max_message_size",
                format!(
                    "{} does not fit a segment of {} with room for its header",
                    self.max_message_size, self.segment_size
                ),
            );
        }
        if self.max_frame_size.get() > u64::from(u32::MAX)
            || self.max_frame_size.get() <= self.max_message_size.get() + 1024
        {
            return bad(
                "max_frame_size",
                format!(
                    "{} must exceed max_message_size ({}) and fit 4G",
                    self.max_frame_size, self.max_message_size
                ),
            );
        }
        if self.max_batch_messages == 0 {
            return bad("max_batch_messages", "must be at least 1".into());
        }
        if self.default_queues == 0 || self.default_queues > 1024 {
            return bad("default_queues", "must be between 1 and 1024".into());
        }
        if self.max_connections == 0 {
            return bad("max_connections", "must be at least 1".into());
        }
        if self.max_inflight_per_connection == 0 {
            return bad("max_inflight_per_connection", "must be at least 1".into());
        }
        if self.session_timeout_ms < 100 {
            return bad("session_timeout_ms", "must be at least 100".into());
        }
        if self.retry_delays_ms.is_empty() {
            return bad("retry_delays_ms", "needs at least one delay".into());
        }
        if self.partial_frame_timeout_ms == 0 {
            return bad("partial_frame_timeout_ms", "must be at least 1".into());
        }
        if self.max_topics == 0 {
            return bad("max_topics", "must be at least 1".into());
        }
        if self.max_in_flight_leases == 0 {
            return bad("max_in_flight_leases", "must be at least 1".into());
        }
        if self.hello_timeout_ms == 0 {
            return bad("hello_timeout_ms", "must be at least 1".into());
        }
        if self.max_pending_bytes_per_connection.get() < 64 * 1024 {
            return bad(
                "max_pending_bytes_per_connection",
                format!("{} is below 64K", self.max_pending_bytes_per_connection),
            );
        }
        if self.shutdown_timeout_ms < 100 {
            return bad("shutdown_timeout_ms", "must be at least 100".into());
        }
        if self.http_max_connections == 0 {
            return bad("http_max_connections", "must be at least 1".into());
        }
        if self.offsets_persist_interval_ms == 0 {
            return bad("offsets_persist_interval_ms", "must be at least 1".into());
        }
        for (field, v) in [
            ("tx_timeout_ms", self.tx_timeout_ms),
            ("tx_check_interval_ms", self.tx_check_interval_ms),
            ("tx_max_messages", u64::from(self.tx_max_messages)),
            ("tx_max_bytes", self.tx_max_bytes.get()),
        ] {
            if v == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        self.validate_replication()
    }

    fn validate_replication(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: String| Err(ConfigError::Invalid { field, reason });
        let Some(role) = self.role else {
            if self.master.is_some() || self.ha_listen.is_some() {
                return bad("role", "--master and --ha-listen need --role".into());
            }
            return Ok(());
        };
        match &self.cluster_secret {
            None => {
                return bad(
                    "cluster_secret",
                    "a role needs --cluster-secret (or FERRO_CLUSTER_SECRET)".into(),
                )
            }
            Some(s) if s.len() < crate::ha::MIN_SECRET_BYTES => {
                return bad(
                    "cluster_secret",
                    format!(
                        "is {} bytes, needs at least {}",
                        s.len(),
                        crate::ha::MIN_SECRET_BYTES
                    ),
                )
            }
            Some(_) => {}
        }
        if self.min_sync_replicas == 0 {
            return bad("min_sync_replicas", "must be at least 1".into());
        }
        if self.max_replica_lag_ms < 100 {
            return bad("max_replica_lag_ms", "must be at least 100".into());
        }
        match role {
            crate::ha::Role::Master if self.ha_listen.is_none() => {
                bad("ha_listen", "--role master needs --ha-listen".into())
            }
            crate::ha::Role::Replica if self.master.is_none() => {
                bad("master", "--role replica needs --master".into())
            }
            _ => Ok(()),
        }
    }

    /// The largest frame as the protocol's `u32`; `validate` ensures it fits.
    pub(crate) fn max_frame_bytes(&self) -> u32 {
        u32::try_from(self.max_frame_size.get()).unwrap_or(u32::MAX)
    }

    /// The connection byte budget as a `usize` (saturating on 32-bit targets).
    pub(crate) fn max_pending_bytes(&self) -> usize {
        usize::try_from(self.max_pending_bytes_per_connection.get()).unwrap_or(usize::MAX)
    }

    /// The largest body as the protocol's `u32`; `validate` ensures it fits.
    pub(crate) fn max_message_bytes(&self) -> u32 {
        u32::try_from(self.max_message_size.get()).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_role_needs_a_long_enough_secret_and_its_addresses() {
        use crate::ha::Role;
        let mut c = Config {
            role: Some(Role::Master),
            ha_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Config::default()
        };
        let field = |c: &Config| match c.validate() {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(field(&c), "cluster_secret");
        c.cluster_secret = Some("short".into());
        assert_eq!(field(&c), "cluster_secret");
        c.cluster_secret = Some("0123456789abcdef".into());
        c.validate().unwrap();
        c.role = Some(Role::Replica);
        assert_eq!(field(&c), "master");
        c.role = None;
        assert_eq!(field(&c), "role");
    }

    #[test]
    fn sizes_parse_with_and_without_suffixes() {
        assert_eq!("4096".parse::<ByteSize>().unwrap(), ByteSize(4096));
        assert_eq!("64K".parse::<ByteSize>().unwrap(), ByteSize(64 << 10));
        assert_eq!("256m".parse::<ByteSize>().unwrap(), ByteSize(256 << 20));
        assert_eq!("1G".parse::<ByteSize>().unwrap(), ByteSize(1 << 30));
        assert_eq!("2GiB".parse::<ByteSize>().unwrap(), ByteSize(2 << 30));
        assert_eq!("16 MB".parse::<ByteSize>().unwrap(), ByteSize(16 << 20));
        assert!("lots".parse::<ByteSize>().is_err());
        assert!("".parse::<ByteSize>().is_err());
        assert!("99999999999999T".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(1 << 30).to_string(), "1G");
        assert_eq!(ByteSize(1000).to_string(), "1000");
    }

    #[test]
    fn defaults_are_valid_and_toml_overrides_a_subset() {
        Config::default().validate().unwrap();
        let c: Config = toml::from_str(
            "listen = \"127.0.0.1:9000\"\nflush = \"sync\"\nsegment_size = \"64M\"\nmax_message_size = 1024\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.flush, FlushPolicy::Sync);
        assert_eq!(c.segment_size, ByteSize(64 << 20));
        assert_eq!(c.max_message_size, ByteSize(1024));
        assert_eq!(c.default_queues, 4);
        assert_eq!(c.disk_reserve, DiskReserve::Percent { hundredths: 100 });
        c.validate().unwrap();
        let c: Config = toml::from_str("disk_reserve = \"256M\"").unwrap();
        assert_eq!(c.disk_reserve, DiskReserve::Bytes(256 << 20));
        let c: Config = toml::from_str("disk_reserve = 0").unwrap();
        assert_eq!(c.disk_reserve, DiskReserve::Bytes(0));
        assert!(toml::from_str::<Config>("disk_reserve = \"90%\"").is_err());
        assert!(toml::from_str::<Config>("no_such_field = 1").is_err());
    }

    #[test]
    fn http_listen_is_an_address_or_off_in_flags_and_files() {
        assert_eq!("off".parse::<HttpListen>().unwrap(), HttpListen::Off);
        assert_eq!(
            "127.0.0.1:9090".parse::<HttpListen>().unwrap(),
            HttpListen::At(SocketAddr::from(([127, 0, 0, 1], 9090)))
        );
        assert!("8080".parse::<HttpListen>().is_err());
        let c: Config =
            toml::from_str("http_listen = \"off\"\nmetrics_per_queue = \"off\"").unwrap();
        assert_eq!(c.http_listen, Some(HttpListen::Off));
        assert!(!c.metrics_per_queue.per_queue(1));
        assert_eq!(Config::default().http_listen, None);
        assert!(MetricsPerQueue::Auto.per_queue(MetricsPerQueue::AUTO_MAX_QUEUES));
        assert!(!MetricsPerQueue::Auto.per_queue(MetricsPerQueue::AUTO_MAX_QUEUES + 1));
    }

    #[test]
    fn validation_names_the_bad_field() {
        let c = Config {
            segment_size: ByteSize(100),
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "segment_size",
                ..
            })
        ));
        let c = Config {
            max_frame_size: ByteSize(1024),
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }
}
