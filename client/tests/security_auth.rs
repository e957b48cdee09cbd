//! Authentication with `--auth on`: the challenge-response handshake (wrong secret,
//! unknown user, no handshake at all), the failure rate limit per address, the first
//! administrator, users that survive a restart, `mq user` and the global key flags, and
//! HTTP credentials for the dashboard and metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod http_support;
mod security_support;
mod support;

use base64::Engine as _;
use broker::security::AuthMode;
use broker::{Broker, Config};
use client::admin::Admin;
use client::{Credentials, Error};
use protocol::Status;
use security_support::connect;
use support::TestBroker;

async fn auth_broker(tweak: impl FnOnce(&mut Config)) -> (TestBroker, Credentials) {
    let b = TestBroker::start_with(|c| {
        c.auth = AuthMode::On;
        tweak(c);
    })
    .await;
    let (ak, sk) = b
        .broker
        .as_ref()
        .unwrap()
        .generated_admin()
        .expect("a generated admin");
    let admin = Credentials::new(ak, sk);
    (b, admin)
}

fn status_of(e: &Error) -> Option<Status> {
    e.status()
}

#[tokio::test]
async fn wrong_secret_unknown_user_and_no_handshake_are_refused() {
    let (b, root) = auth_broker(|_| {}).await;
    let admin = Admin::new(connect(&b.addr, None, Some(root.clone())).await.unwrap());
    let keys = admin.add_user("app", false).await.unwrap();
    assert_eq!(keys.access_key, "app");

    let wrong = connect(
        &b.addr,
        None,
        Some(Credentials::new("app", "not-the-secret")),
    )
    .await
    .unwrap_err();
    assert_eq!(status_of(&wrong), Some(Status::AuthFailed), "{wrong}");
    let unknown = connect(
        &b.addr,
        None,
        Some(Credentials::new("nobody", &keys.secret_key)),
    )
    .await
    .unwrap_err();
    assert_eq!(status_of(&unknown), Some(Status::AuthFailed), "{unknown}");
    // The same sentence for both: nothing tells which users exist.
    assert_eq!(wrong.to_string(), unknown.to_string());

    // Without credentials the Hello passes, and the first other request closes the
    // connection with a sentence that says what to do.
    let anonymous = connect(&b.addr, None, None).await.unwrap();
    let e = Admin::new(anonymous.clone())
        .create_topic("t", 1)
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), Some(Status::Unauthenticated), "{e}");
    assert!(e.to_string().contains("--access-key"), "{e}");

    let app = connect(
        &b.addr,
        None,
        Some(Credentials::new("app", keys.secret_key)),
    )
    .await
    .unwrap();
    // Authenticated, but no rule yet: deny by default.
    let e = Admin::new(app).create_topic("t", 1).await.unwrap_err();
    assert_eq!(status_of(&e), Some(Status::AccessDenied), "{e}");
    b.shutdown().await;
}

#[tokio::test]
async fn failed_attempts_are_rate_limited_per_address() {
    let (b, root) = auth_broker(|c| c.auth_max_failures = 3).await;
    for _ in 0..3 {
        let e = connect(
            &b.addr,
            None,
            Some(Credentials::new(&root.access_key, "guess")),
        )
        .await
        .unwrap_err();
        assert_eq!(status_of(&e), Some(Status::AuthFailed));
    }
    // The right secret from the same address is refused until the window passes.
    let e = connect(&b.addr, None, Some(root)).await.unwrap_err();
    assert_eq!(status_of(&e), Some(Status::TooManyAttempts), "{e}");
    assert!(e.to_string().contains("try again in"), "{e}");
    b.shutdown().await;
}

#[tokio::test]
async fn users_and_rules_survive_a_restart_and_the_first_admin_is_made_once() {
    let dir = tempfile::TempDir::new().unwrap();
    let config = || Config {
        auth: AuthMode::On,
        ..Config::ephemeral(dir.path())
    };
    let first = Broker::start(config()).await.unwrap();
    let (ak, sk) = first.generated_admin().unwrap();
    let root = Credentials::new(ak, sk);
    let addr = first.local_addr().to_string();
    let admin = Admin::new(connect(&addr, None, Some(root.clone())).await.unwrap());
    let app = admin.add_user("app", false).await.unwrap();
    admin
        .set_acl("app", "topic:orders", &["pub"], "allow")
        .await
        .unwrap();
    admin.connection().close();
    first.shutdown().await.unwrap();

    let second = Broker::start(config()).await.unwrap();
    assert!(
        second.generated_admin().is_none(),
        "an admin was generated twice"
    );
    let addr = second.local_addr().to_string();
    let admin = Admin::new(connect(&addr, None, Some(root)).await.unwrap());
    let users: Vec<_> = admin
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| (u.access_key, u.admin))
        .collect();
    assert_eq!(
        users,
        [("admin".to_string(), true), ("app".to_string(), false)]
    );
    let rules = admin.list_acls(Some("app")).await.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].resource, "topic:orders");
    connect(&addr, None, Some(Credentials::new("app", app.secret_key)))
        .await
        .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("config/users"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    admin.connection().close();
    second.shutdown().await.unwrap();
}

#[tokio::test]
async fn mq_manages_users_and_authenticates_with_flags_or_environment() {
    let (b, root) = auth_broker(|_| {}).await;
    let as_root = [
        "--access-key",
        &root.access_key,
        "--secret-key",
        &root.secret_key,
    ];
    let mut args = as_root.to_vec();
    args.extend(["user", "add", "app"]);
    let out = support::cli::mq(&b, &args, "").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let added = &support::cli::json_lines(&out)[0];
    let secret = added["secret_key"].as_str().unwrap().to_string();
    assert_eq!(added["access_key"], "app");

    let mut args = as_root.to_vec();
    args.extend(["acl", "set", "app", "topic:orders", "pub,admin"]);
    let out = support::cli::mq(&b, &args, "").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut args = as_root.to_vec();
    args.extend(["user", "list"]);
    let listed = support::cli::json_lines(&support::cli::mq(&b, &args, "").await);
    assert!(listed.iter().all(|u| u.get("secret_key").is_none()));
    assert_eq!(listed.len(), 2);

    // The user's keys from the environment.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mq"))
        .args([
            "--broker", &b.addr, "topic", "create", "orders", "--queues", "1",
        ])
        .env("MQ_ACCESS_KEY", "app")
        .env("MQ_SECRET_KEY", &secret)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without keys: refused with the reason.
    let out = support::cli::mq(&b, &["topic", "create", "other"], "").await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("authentication required"), "{stderr}");

    let mut args = as_root.to_vec();
    args.extend(["user", "remove", "app"]);
    assert!(support::cli::mq(&b, &args, "").await.status.success());
    let e = connect(&b.addr, None, Some(Credentials::new("app", secret)))
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), Some(Status::AuthFailed));
    b.shutdown().await;
}

#[tokio::test]
async fn http_takes_basic_or_bearer_credentials_when_auth_is_on() {
    let (b, root) = auth_broker(|_| {}).await;
    let admin = Admin::new(connect(&b.addr, None, Some(root.clone())).await.unwrap());
    let viewer = admin.add_user("viewer", false).await.unwrap();
    let http = b.broker.as_ref().unwrap().http_addr().unwrap();
    let get_as = |auth: Option<String>, path: &'static str| async move {
        let head = match auth {
            Some(a) => format!("GET {path} HTTP/1.1\r\nauthorization: {a}"),
            None => format!("GET {path} HTTP/1.1"),
        };
        http_support::raw(http, &head, b"").await
    };
    assert_eq!(get_as(None, "/healthz").await.status, 200);
    let anonymous = get_as(None, "/api/overview").await;
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.headers["www-authenticate"].starts_with("Basic"));
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", root.access_key, root.secret_key));
    assert_eq!(
        get_as(Some(format!("Basic {basic}")), "/api/overview")
            .await
            .status,
        200
    );
    let bearer = format!("Bearer viewer:{}", viewer.secret_key);
    assert_eq!(get_as(Some(bearer.clone()), "/metrics").await.status, 200);
    assert_eq!(get_as(Some(bearer), "/api/overview").await.status, 403);
    assert_eq!(
        get_as(Some("Bearer viewer:wrong".into()), "/metrics")
            .await
            .status,
        401
    );
    b.shutdown().await;
}
