//! TLS on the broker's listeners: TLS and plaintext clients on one port (permissive),
//! plaintext refused with a clear error (required), mutual TLS, and a certificate
//! reloaded on SIGHUP without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod security_support;
mod support;

use std::sync::Arc;

use broker::security::TlsMode;
use client::admin::Admin;
use client::{ClientTls, Error, Message, Producer, ProducerOptions};
use protocol::Status;
use security_support::{connect, trusting, Pki};
use support::{TestBroker, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn tls_broker(pki_dir: &std::path::Path, mode: TlsMode, mtls: bool) -> (TestBroker, Pki) {
    let pki = Pki::new(pki_dir, "a");
    let (cert, key) = pki.server("server");
    let ca = pki.ca_path("a");
    let b = TestBroker::start_with(|c| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
        c.tls_mode = mode;
        if mtls {
            c.tls_client_ca = Some(ca);
        }
    })
    .await;
    (b, pki)
}

#[tokio::test]
async fn permissive_serves_tls_and_plaintext_clients_on_one_port() {
    let certs = tempfile::TempDir::new().unwrap();
    let (b, pki) = tls_broker(certs.path(), TlsMode::Permissive, false).await;
    let plain = connect(&b.addr, None, None).await.unwrap();
    Admin::new(plain.clone())
        .create_topic("mixed", 1)
        .await
        .unwrap();
    let tls = connect(&b.addr, Some(trusting(&pki.ca_path("a"))), None)
        .await
        .unwrap();
    let by_plain = Producer::with_connection(plain, ProducerOptions::default());
    let by_tls = Producer::with_connection(tls.clone(), ProducerOptions::default());
    by_plain
        .send("mixed", &Message::new("plain"))
        .await
        .unwrap();
    by_tls
        .send("mixed", &Message::new("encrypted"))
        .await
        .unwrap();
    // A batch large enough to take several TLS records each way.
    let batch: Vec<Message> = (0..200)
        .map(|i| Message::new(vec![i as u8; 2048]))
        .collect();
    by_tls.send_batch("mixed", &batch).await.unwrap();
    // Acknowledged means stored; the consume queue follows once the dispatcher ran.
    let admin = Admin::new(tls);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut max_offset = 0;
    while std::time::Instant::now() < deadline {
        max_offset = admin.get_topic("mixed").await.unwrap().queues[0].max_offset;
        if max_offset == 202 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(max_offset, 202);

    // The HTTP endpoint speaks TLS on its port too.
    let http = b.broker.as_ref().unwrap().http_addr().unwrap();
    let answer = https_get(&pki.ca_path("a"), http, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    b.shutdown().await;
}

#[tokio::test]
async fn required_refuses_plaintext_with_a_clear_error() {
    let certs = tempfile::TempDir::new().unwrap();
    let (b, pki) = tls_broker(certs.path(), TlsMode::Required, false).await;
    let err = connect(&b.addr, None, None).await.unwrap_err();
    match &err {
        Error::Broker { status, message } => {
            assert_eq!(*status, Status::TlsRequired);
            assert!(message.contains("requires TLS"), "{message}");
        }
        other => panic!("expected a TlsRequired refusal, got {other}"),
    }
    let tls = connect(&b.addr, Some(trusting(&pki.ca_path("a"))), None)
        .await
        .unwrap();
    Admin::new(tls).create_topic("secure", 1).await.unwrap();
    // A client that does not trust the broker's CA refuses it (not retried).
    let other = Pki::new(certs.path(), "other");
    let err = connect(&b.addr, Some(trusting(&other.ca_path("other"))), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    b.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_of_the_client_ca() {
    let certs = tempfile::TempDir::new().unwrap();
    let (b, pki) = tls_broker(certs.path(), TlsMode::Required, true).await;
    let ca = pki.ca_path("a");
    assert!(connect(&b.addr, Some(trusting(&ca)), None).await.is_err());
    let stranger = Pki::new(certs.path(), "stranger");
    let (bad_cert, bad_key) = stranger.client("stranger-client");
    let bad = ClientTls::with_ca_file(&ca, Some((&bad_cert, &bad_key))).unwrap();
    assert!(connect(&b.addr, Some(bad), None).await.is_err());
    let (cert, key) = pki.client("client");
    let good = ClientTls::with_ca_file(&ca, Some((&cert, &key))).unwrap();
    let conn = connect(&b.addr, Some(good), None).await.unwrap();
    Admin::new(conn).create_topic("mtls", 1).await.unwrap();
    b.shutdown().await;
}

#[tokio::test]
async fn sighup_reloads_the_certificate_for_new_connections() {
    let certs = tempfile::TempDir::new().unwrap();
    let (b, old) = tls_broker(certs.path(), TlsMode::Required, false).await;
    let kept = connect(&b.addr, Some(trusting(&old.ca_path("a"))), None)
        .await
        .unwrap();
    // A new CA issues a new certificate into the same files.
    let new = Pki::new(certs.path(), "b");
    let (cert, key) = new.server("next");
    std::fs::copy(&cert, certs.path().join("server.pem")).unwrap();
    std::fs::copy(&key, certs.path().join("server.key")).unwrap();
    // The broker's SIGHUP handler is installed (TLS is on): the signal reloads instead of
    // ending the process.
    assert_eq!(sighup_self(), 0);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let reloaded = loop {
        if let Ok(c) = connect(&b.addr, Some(trusting(&new.ca_path("b"))), None).await {
            break c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "certificate not reloaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    Admin::new(reloaded)
        .create_topic("after-reload", 1)
        .await
        .unwrap();
    // Clients of the old CA no longer connect; the connection opened before still works.
    assert!(connect(&b.addr, Some(trusting(&old.ca_path("a"))), None)
        .await
        .is_err());
    Admin::new(kept).get_topic("after-reload").await.unwrap();
    b.shutdown().await;
}

/// SIGHUP to this process.
fn sighup_self() -> i32 {
    let pid = std::process::id() as libc::pid_t;
    // SAFETY: kill(2) takes no pointers; our own pid, a signal with a handler installed.
    unsafe { libc::kill(pid, libc::SIGHUP) }
}

/// `GET path` over TLS, trusting `ca`; the raw answer.
async fn https_get(ca: &std::path::Path, addr: std::net::SocketAddr, path: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
