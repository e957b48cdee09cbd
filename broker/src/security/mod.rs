//! Security: TLS on every listener, users with access keys and secrets, and per-user
//! access rules on topics and groups.
//!
//! - `tls`: [`TlsAcceptor`]: TLS or plaintext on one port (first byte), reload on SIGHUP,
//!   optional client certificates.
//! - `users`: [`UserTable`] in `<data>/config/users`, [`User::may`] decides an action.
//! - `access`: [`classify`] every native request code, [`classify_grpc`] every RocketMQ 5
//!   method, [`named`] reads the topic and group out of a native header.
//! - `rocketmq`: [`verify_rocketmq_v2`], the RocketMQ 5 `authorization` header.
//! - `limiter`: failed authentications per source address.
//!
//! [`Security`] ties them together for a running broker: the native handshake
//! ([`NativeAuth`]), the gRPC header ([`Security::verify_grpc`]), HTTP basic or bearer
//! credentials ([`Security::verify_http`]) and [`Security::authorize`].
//!
//! # Wiring another listener (the RocketMQ 5 gRPC endpoint)
//!
//! The broker's `Services` hold one `Arc<Security>`. A listener:
//! 1. TLS: `security.tls().map(|t| t.with_alpn(vec![b"h2".to_vec()]))`, then per accepted
//!    socket `acceptor.accept(tcp).await` gives a [`MaybeTlsStream`] (TLS or plaintext, one
//!    port) or [`AcceptError::PlaintextRefused`] in `required` mode. SIGHUP reloads reach
//!    every acceptor cloned from it.
//! 2. Authentication, when [`Security::auth_enabled`]: per request,
//!    `security.verify_grpc(peer_ip, authorization, x_mq_date_time, SystemTime::now())`
//!    gives a [`Principal`] or an error to answer as `UNAUTHORIZED` (40100).
//! 3. Authorization: `security.authorize(&mut principal, classify_grpc(method)?, &Named {
//!    topic, group })`, with the topic and group of the request message; `None` from
//!    [`classify_grpc`] means an unclassified method, to be refused. An error answers
//!    `FORBIDDEN` (40300).

mod access;
mod limiter;
mod rocketmq;
mod tls;
mod users;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use protocol::auth::{AuthenticateRequest, NONCE_BYTES};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use access::{classify, classify_grpc, named, Named, Requirement};
pub use limiter::FailureLimiter;
pub use rocketmq::{
    parse_authorization, parse_date_time, verify_rocketmq_v2, Authorization, ALGORITHM,
    AUTHORIZATION_HEADER, DATE_TIME_HEADER,
};
pub use tls::{
    read_certificates, AcceptError, MaybeTlsStream, TlsAcceptor, TlsFiles, TlsMode,
    TLS_HANDSHAKE_BYTE,
};
pub use users::{
    effective, generate_secret, AclRule, Action, Decision, Resource, ResourceKind, User, UserTable,
};

/// Environment variable naming the first administrator's access key.
pub const ADMIN_ACCESS_KEY_ENV: &str = "FERRO_ADMIN_ACCESS_KEY";
/// Environment variable holding the first administrator's secret key.
pub const ADMIN_SECRET_KEY_ENV: &str = "FERRO_ADMIN_SECRET_KEY";
/// Access key of a generated first administrator.
pub const GENERATED_ADMIN: &str = "admin";
/// How long an address that failed too often is refused.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Why a security step failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SecurityError {
    /// A certificate, key or CA file cannot be used.
    #[error("TLS file {path}: {reason}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The users file cannot be read or written.
    #[error("users file {path}: {reason}")]
    Users {
        /// `<data>/config/users`.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Unknown access key or wrong secret (never told apart to the client).
    #[error("authentication failed: unknown access key or wrong secret")]
    AuthFailed,
    /// The connection must authenticate first.
    #[error("authentication required: this broker runs with --auth on; connect with an access key and secret key (mq --access-key, --secret-key)")]
    Unauthenticated,
    /// The source address failed too often.
    #[error("too many failed authentications from {ip}; try again in {retry_after_secs} s")]
    TooManyAttempts {
        /// The address.
        ip: IpAddr,
        /// Seconds until it may try again.
        retry_after_secs: u64,
    },
    /// A gRPC `authorization` or `x-mq-date-time` header is missing or malformed.
    #[error("bad RocketMQ signature headers: {0}")]
    BadSignature(String),
    /// The signed time is too far from the broker's clock.
    #[error("signature time is {skew_secs} s away from the broker's clock (at most {max_secs} s; see --auth-max-skew-secs)")]
    ClockSkew {
        /// How far.
        skew_secs: u64,
        /// The window.
        max_secs: u64,
    },
    /// The user's rules do not allow the request.
    #[error("access denied: user {user:?} may not {action} {what}")]
    AccessDenied {
        /// The user.
        user: String,
        /// What it tried.
        action: String,
        /// On what.
        what: String,
    },
    /// A user of that access key exists already.
    #[error("user {0:?} exists already")]
    UserExists(String),
    /// No user has that access key.
    #[error("no user {0:?}")]
    NoSuchUser(String),
    /// The user has no rule on that resource.
    #[error("user {user:?} has no rule on {resource}")]
    NoSuchRule {
        /// The user.
        user: String,
        /// The resource.
        resource: String,
    },
    /// A user name, resource, action or decision that does not parse.
    #[error("{0}")]
    Invalid(String),
    /// The system's random source failed.
    #[error("the system random source failed")]
    Random,
}

/// Whether connections must authenticate (`--auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every connection authenticates before any other request; access rules apply.
    On,
    /// Anyone who reaches the port may do everything (the one-command start).
    #[default]
    Off,
}

impl FromStr for AuthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => Err(format!("{other:?} is not on or off")),
        }
    }
}

/// Who a connection or request is, once authenticated. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Principal {
    user: Arc<User>,
    /// The table generation `user` was read at; a change of users or rules re-reads it.
    generation: u64,
}

impl Principal {
    /// The access key.
    pub fn access_key(&self) -> &str {
        &self.user.access_key
    }

    /// Whether the user is an administrator.
    pub fn is_admin(&self) -> bool {
        self.user.admin
    }
}

type Snapshot = Arc<BTreeMap<String, Arc<User>>>;

/// The broker's security state: TLS acceptor, users and rules, failure limiter.
#[derive(Debug)]
pub struct Security {
    auth: AuthMode,
    tls: Option<TlsAcceptor>,
    /// The file and its table; held only by changes (file writes), never by checks.
    table: Mutex<UserTable>,
    /// What checks read: replaced whole after each change.
    snapshot: RwLock<Snapshot>,
    generation: AtomicU64,
    limiter: FailureLimiter,
    max_skew: Option<Duration>,
}

impl Security {
    /// Reads the users of `data_dir`. `max_skew` bounds gRPC signature times (`None`: no
    /// bound); `max_failures` failed authentications from one address within
    /// [`FAILURE_WINDOW`] refuse it until the window has passed.
    ///
    /// # Errors
    /// `Users` when the users file cannot be read.
    pub fn open(
        data_dir: &std::path::Path,
        auth: AuthMode,
        tls: Option<TlsAcceptor>,
        max_skew: Option<Duration>,
        max_failures: u32,
    ) -> Result<Self, SecurityError> {
        let table = UserTable::open(data_dir)?;
        let snapshot = snapshot_of(&table);
        Ok(Self {
            auth,
            tls,
            table: Mutex::new(table),
            snapshot: RwLock::new(snapshot),
            generation: AtomicU64::new(0),
            limiter: FailureLimiter::new(max_failures, FAILURE_WINDOW),
            max_skew,
        })
    }

    /// Whether connections must authenticate.
    pub fn auth_enabled(&self) -> bool {
        self.auth == AuthMode::On
    }

    /// The TLS acceptor every listener shares, when TLS is on.
    pub fn tls(&self) -> Option<&TlsAcceptor> {
        self.tls.as_ref()
    }

    /// With auth on and no user yet, creates the first administrator from
    /// `FERRO_ADMIN_ACCESS_KEY` / `FERRO_ADMIN_SECRET_KEY` as `env` reads them, or generates
    /// one. Returns the generated keys (to be shown once), `None` otherwise.
    ///
    /// # Errors
    /// `Users` when the file cannot be written; `Invalid` when only one variable is set.
    pub fn bootstrap_admin(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<(String, String)>, SecurityError> {
        if !self.auth_enabled() || !self.snapshot().is_empty() {
            return Ok(None);
        }
        let (ak, sk) = (env(ADMIN_ACCESS_KEY_ENV), env(ADMIN_SECRET_KEY_ENV));
        let (access_key, secret_key, generated) = match (ak, sk) {
            (Some(ak), Some(sk)) if !ak.is_empty() && !sk.is_empty() => (ak, sk, false),
            (None, None) => (GENERATED_ADMIN.to_string(), generate_secret()?, true),
            _ => {
                return Err(SecurityError::Invalid(format!(
                    "set both {ADMIN_ACCESS_KEY_ENV} and {ADMIN_SECRET_KEY_ENV}, or neither"
                )))
            }
        };
        validate_user_name(&access_key)?;
        self.change(|t| {
            t.add(User {
                access_key: access_key.clone(),
                secret_key: secret_key.clone(),
                admin: true,
                rules: Vec::new(),
            })
        })?;
        tracing::info!(access_key = %access_key, generated, "first administrator created");
        Ok(generated.then_some((access_key, secret_key)))
    }

    fn snapshot(&self) -> Snapshot {
        match self.snapshot.read() {
            Ok(s) => Arc::clone(&s),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Applies one change to the table (writing the file) and publishes it to checks.
    fn change<T>(
        &self,
        f: impl FnOnce(&mut UserTable) -> Result<T, SecurityError>,
    ) -> Result<T, SecurityError> {
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let out = f(&mut table)?;
        let next = snapshot_of(&table);
        match self.snapshot.write() {
            Ok(mut s) => *s = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        self.generation.fetch_add(1, Ordering::Release);
        Ok(out)
    }

    fn principal(&self, access_key: &str) -> Option<Principal> {
        // Generation first: a change between the two reads is seen as stale, never missed.
        let generation = self.generation.load(Ordering::Acquire);
        let user = self.snapshot().get(access_key).cloned()?;
        Some(Principal { user, generation })
    }

    fn check_limit(&self, ip: IpAddr) -> Result<(), SecurityError> {
        self.limiter
            .check(ip, Instant::now())
            .map_err(|wait| SecurityError::TooManyAttempts {
                ip,
                retry_after_secs: wait.as_secs().max(1),
            })
    }

    fn record_failure(&self, ip: IpAddr, access_key: &str, how: &str, why: &SecurityError) {
        let failures = self.limiter.failed(ip, Instant::now());
        tracing::warn!(%ip, access_key, how, failures, reason = %why, "authentication failed");
    }

    /// Verifies a RocketMQ 5 request's `authorization` and `x-mq-date-time` headers
    /// against the users, with the skew window and the failure limiter: what the gRPC
    /// endpoint calls per request (or once per connection and caches) when auth is on.
    ///
    /// # Errors
    /// `TooManyAttempts`, `BadSignature`, `ClockSkew` or `AuthFailed`.
    pub fn verify_grpc(
        &self,
        peer: IpAddr,
        authorization: Option<&str>,
        date_time: Option<&str>,
        now: SystemTime,
    ) -> Result<Principal, SecurityError> {
        self.check_limit(peer)?;
        let snapshot = self.snapshot();
        let verified = verify_rocketmq_v2(
            authorization,
            date_time,
            |ak| snapshot.get(ak).map(|u| u.secret_key.clone()),
            now,
            self.max_skew,
        )
        .and_then(|ak| self.principal(&ak).ok_or(SecurityError::AuthFailed));
        match verified {
            Ok(p) => {
                self.limiter.succeeded(peer);
                Ok(p)
            }
            Err(e) => {
                let ak = authorization
                    .and_then(|a| parse_authorization(a).ok())
                    .map(|a| a.access_key)
                    .unwrap_or_default();
                self.record_failure(peer, &ak, "grpc", &e);
                Err(e)
            }
        }
    }

    /// Verifies an HTTP `Authorization` header: `Basic base64(AK:SK)` or `Bearer AK:SK`.
    ///
    /// # Errors
    /// `Unauthenticated` without a header, `TooManyAttempts`, or `AuthFailed`.
    pub fn verify_http(
        &self,
        peer: IpAddr,
        authorization: Option<&str>,
    ) -> Result<Principal, SecurityError> {
        use base64::Engine as _;
        let value = authorization.ok_or(SecurityError::Unauthenticated)?;
        self.check_limit(peer)?;
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let pair = match scheme.to_ascii_lowercase().as_str() {
            "basic" => base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok()),
            "bearer" => Some(rest.trim().to_string()),
            _ => None,
        };
        let (ak, sk) = pair
            .as_deref()
            .and_then(|p| p.split_once(':'))
            .unwrap_or(("", ""));
        let found = self
            .principal(ak)
            .filter(|p| constant_time_eq(p.user.secret_key.as_bytes(), sk.as_bytes()));
        match found {
            Some(p) => {
                self.limiter.succeeded(peer);
                Ok(p)
            }
            None => {
                let e = SecurityError::AuthFailed;
                self.record_failure(peer, ak, "http", &e);
                Err(e)
            }
        }
    }

    /// Whether `principal` may make a request with `requirement` naming `named`. The
    /// principal is refreshed when users or rules changed since it was read (a removed
    /// user is refused).
    ///
    /// # Errors
    /// `AccessDenied` saying what was refused; `Unauthenticated` for a removed user.
    pub fn authorize(
        &self,
        principal: &mut Principal,
        requirement: Requirement,
        named: &Named,
    ) -> Result<(), SecurityError> {
        if self.generation.load(Ordering::Acquire) != principal.generation {
            *principal = self
                .principal(&principal.user.access_key)
                .ok_or(SecurityError::Unauthenticated)?;
        }
        let user = &principal.user;
        if user.admin {
            return Ok(());
        }
        let deny = |action: Action, what: String| SecurityError::AccessDenied {
            user: user.access_key.clone(),
            action: action.to_string(),
            what,
        };
        let check = |action: Action, kind: ResourceKind, name: Option<&str>| {
            let word = match kind {
                ResourceKind::Topic => "topic",
                ResourceKind::Group => "group",
            };
            let name = name.unwrap_or_default();
            if user.may(action, kind, name) {
                Ok(())
            } else {
                Err(deny(action, format!("{word} {name:?}")))
            }
        };
        let (topic, group) = (named.topic.as_deref(), named.group.as_deref());
        match requirement {
            Requirement::Open | Requirement::Authenticated => Ok(()),
            Requirement::Topic(action) => check(action, ResourceKind::Topic, topic),
            Requirement::Group(action) => check(action, ResourceKind::Group, group),
            Requirement::Consume => {
                check(Action::Sub, ResourceKind::Group, group)?;
                check(Action::Sub, ResourceKind::Topic, topic)
            }
            Requirement::Admin => Err(deny(Action::Admin, "the broker".into())),
        }
    }

    // ---- user and rule management ----

    /// Adds a user with a generated secret; returns the secret.
    ///
    /// # Errors
    /// `Invalid` name, `UserExists`, or `Users` when the file cannot be written.
    pub fn add_user(&self, name: &str, admin: bool) -> Result<String, SecurityError> {
        validate_user_name(name)?;
        let secret = generate_secret()?;
        self.change(|t| {
            t.add(User {
                access_key: name.to_string(),
                secret_key: secret.clone(),
                admin,
                rules: Vec::new(),
            })
        })?;
        Ok(secret)
    }

    /// Removes a user.
    ///
    /// # Errors
    /// `NoSuchUser`, or `Users` when the file cannot be written.
    pub fn remove_user(&self, name: &str) -> Result<(), SecurityError> {
        self.change(|t| t.remove(name))
    }

    /// Every user, sorted by access key.
    pub fn users(&self) -> Vec<Arc<User>> {
        self.snapshot().values().cloned().collect()
    }

    /// Sets a rule (replacing the user's rule on the same resource).
    ///
    /// # Errors
    /// `NoSuchUser`, or `Users` when the file cannot be written.
    pub fn set_rule(&self, user: &str, rule: AclRule) -> Result<(), SecurityError> {
        self.change(|t| t.set_rule(user, rule))
    }

    /// Removes the user's rule on `resource`.
    ///
    /// # Errors
    /// `NoSuchUser`, `NoSuchRule`, or `Users` when the file cannot be written.
    pub fn remove_rule(&self, user: &str, resource: &Resource) -> Result<(), SecurityError> {
        self.change(|t| t.remove_rule(user, resource))
    }
}

fn snapshot_of(table: &UserTable) -> Snapshot {
    Arc::new(
        table
            .iter()
            .map(|u| (u.access_key.clone(), Arc::new(u.clone())))
            .collect(),
    )
}

/// User names follow the topic naming rules (letters, digits, `-`, `_`, ...).
fn validate_user_name(name: &str) -> Result<(), SecurityError> {
    protocol::names::validate_user_name(name)
        .map_err(|e| SecurityError::Invalid(format!("invalid user name {name:?}: {e}")))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One native connection's side of the handshake: the nonce it was challenged with and,
/// once it has proved its secret, who it is.
#[derive(Debug)]
pub struct NativeAuth {
    peer: IpAddr,
    nonce: Option<[u8; NONCE_BYTES]>,
    principal: Option<Principal>,
}

impl NativeAuth {
    /// A connection from `peer` that has not authenticated.
    pub fn new(peer: IpAddr) -> Self {
        Self {
            peer,
            nonce: None,
            principal: None,
        }
    }

    /// Who the connection is, once authenticated.
    pub fn principal_mut(&mut self) -> Option<&mut Principal> {
        self.principal.as_mut()
    }

    /// Answers an `AuthChallenge`: a fresh nonce, remembered for the proof.
    ///
    /// # Errors
    /// `TooManyAttempts` while the address is refused; `Random`.
    pub fn challenge(&mut self, security: &Security) -> Result<Vec<u8>, SecurityError> {
        security.check_limit(self.peer)?;
        let mut nonce = [0u8; NONCE_BYTES];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| SecurityError::Random)?;
        self.nonce = Some(nonce);
        Ok(nonce.to_vec())
    }

    /// Checks an `Authenticate` proof against the last challenge; the nonce is used once.
    ///
    /// # Errors
    /// `TooManyAttempts`, or `AuthFailed` (no challenge, unknown key, wrong proof); the
    /// failure is logged and counted against the address.
    pub fn authenticate(
        &mut self,
        security: &Security,
        req: &AuthenticateRequest,
    ) -> Result<&Principal, SecurityError> {
        security.check_limit(self.peer)?;
        let nonce = self.nonce.take();
        let verified = nonce.and_then(|nonce| {
            let principal = security.principal(&req.access_key)?;
            let key = ring::hmac::Key::new(
                ring::hmac::HMAC_SHA256,
                principal.user.secret_key.as_bytes(),
            );
            let message = protocol::auth::proof_message(&nonce, &req.client_nonce, &req.access_key);
            ring::hmac::verify(&key, &message, &req.proof)
                .ok()
                .map(|()| principal)
        });
        match verified {
            Some(p) => {
                security.limiter.succeeded(self.peer);
                tracing::debug!(peer = %self.peer, access_key = %p.access_key(), "authenticated");
                Ok(self.principal.insert(p))
            }
            None => {
                let e = SecurityError::AuthFailed;
                let how = if nonce.is_none() {
                    "native, no challenge"
                } else {
                    "native"
                };
                security.record_failure(self.peer, &req.access_key, how, &e);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn security(dir: &std::path::Path) -> Security {
        Security::open(dir, AuthMode::On, None, Some(Duration::from_secs(300)), 3).unwrap()
    }

    fn prove(secret: &str, nonce: &[u8], ak: &str) -> AuthenticateRequest {
        let client_nonce = vec![7u8; NONCE_BYTES];
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let proof = ring::hmac::sign(
            &key,
            &protocol::auth::proof_message(nonce, &client_nonce, ak),
        );
        AuthenticateRequest {
            access_key: ak.into(),
            client_nonce,
            proof: proof.as_ref().to_vec(),
        }
    }

    #[test]
    fn the_handshake_accepts_the_secret_once_per_challenge_and_limits_failures() {
        let dir = tempfile::TempDir::new().unwrap();
        let s = security(dir.path());
        let secret = s.add_user("app", false).unwrap();
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let mut a = NativeAuth::new(ip);
        let nonce = a.challenge(&s).unwrap();
        let good = prove(&secret, &nonce, "app");
        assert_eq!(a.authenticate(&s, &good).unwrap().access_key(), "app");
        // The same proof again: the nonce was spent.
        assert!(matches!(
            a.authenticate(&s, &good),
            Err(SecurityError::AuthFailed)
        ));
        let nonce = a.challenge(&s).unwrap();
        assert!(a.authenticate(&s, &prove("wrong", &nonce, "app")).is_err());
        let nonce = a.challenge(&s).unwrap();
        assert!(a
            .authenticate(&s, &prove(&secret, &nonce, "nobody"))
            .is_err());
        // Three failures: the address is refused, even with the right secret.
        assert!(matches!(
            a.challenge(&s),
            Err(SecurityError::TooManyAttempts { .. })
        ));
    }

    #[test]
    fn first_admin_comes_from_the_environment_or_is_generated_once() {
        let dir = tempfile::TempDir::new().unwrap();
        let s = security(dir.path());
        let env = |k: &str| match k {
            ADMIN_ACCESS_KEY_ENV => Some("root".to_string()),
            ADMIN_SECRET_KEY_ENV => Some("root-secret".to_string()),
            _ => None,
        };
        assert_eq!(s.bootstrap_admin(env).unwrap(), None);
        assert!(s.users()[0].admin);
        assert_eq!(s.bootstrap_admin(|_| None).unwrap(), None);
        let dir2 = tempfile::TempDir::new().unwrap();
        let s2 = security(dir2.path());
        let (ak, sk) = s2.bootstrap_admin(|_| None).unwrap().unwrap();
        assert_eq!(ak, GENERATED_ADMIN);
        assert!(sk.len() >= 32);
        let reopened = security(dir2.path());
        assert_eq!(reopened.users().len(), 1);
        let half = |k: &str| (k == ADMIN_ACCESS_KEY_ENV).then(|| "x".to_string());
        assert!(security(tempfile::TempDir::new().unwrap().path())
            .bootstrap_admin(half)
            .is_err());
    }

    #[test]
    fn authorization_follows_rule_changes_on_a_live_principal() {
        let dir = tempfile::TempDir::new().unwrap();
        let s = security(dir.path());
        let secret = s.add_user("app", false).unwrap();
        let mut p = s
            .verify_http(
                "127.0.0.1".parse().unwrap(),
                Some(&format!("Bearer app:{secret}")),
            )
            .unwrap();
        let send = Named {
            topic: Some("orders".into()),
            group: None,
        };
        let pubr = Requirement::Topic(Action::Pub);
        assert!(matches!(
            s.authorize(&mut p, pubr, &send),
            Err(SecurityError::AccessDenied { .. })
        ));
        let rule = AclRule {
            resource: "topic:orders".parse().unwrap(),
            actions: vec![Action::Pub],
            decision: Decision::Allow,
        };
        s.set_rule("app", rule).unwrap();
        s.authorize(&mut p, pubr, &send).unwrap();
        assert!(s
            .authorize(&mut p, Requirement::Admin, &Named::default())
            .is_err());
        s.remove_user("app").unwrap();
        assert!(matches!(
            s.authorize(&mut p, pubr, &send),
            Err(SecurityError::Unauthenticated)
        ));
    }

    #[test]
    fn http_basic_and_bearer_credentials() {
        use base64::Engine as _;
        let dir = tempfile::TempDir::new().unwrap();
        let s = security(dir.path());
        let secret = s.add_user("ops", true).unwrap();
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("ops:{secret}"));
        assert!(s
            .verify_http(ip, Some(&format!("Basic {basic}")))
            .unwrap()
            .is_admin());
        assert!(matches!(
            s.verify_http(ip, None),
            Err(SecurityError::Unauthenticated)
        ));
        assert!(matches!(
            s.verify_http(ip, Some("Bearer ops:nope")),
            Err(SecurityError::AuthFailed)
        ));
    }
}
