//! Bad requests to the HTTP endpoint get clear errors and cannot stall the broker: unknown
//! paths, huge headers, malformed bodies, slow clients holding connections, too many
//! connections.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod http_support;
mod support;

use std::net::SocketAddr;

use broker::config::HttpListen;
use broker::{Broker, Config};
use http_support::{get, post_json, raw};
use serde_json::json;
use support::TestBroker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn http(b: &TestBroker) -> SocketAddr {
    b.broker.as_ref().unwrap().http_addr().expect("HTTP is on")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_bad_input_get_json_errors() {
    let b = TestBroker::start().await;
    let addr = http(&b);
    let a = get(addr, "/no/such/thing").await;
    assert_eq!(a.status, 404);
    assert!(a.json()["error"]
        .as_str()
        .unwrap()
        .contains("/no/such/thing"));

    let a = get(addr, "/api/messages/not-an-id").await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.json()["error"].is_string());
    let a = get(addr, "/api/messages/000000000000000000000000").await;
    assert!(matches!(a.status, 400 | 404), "{}", a.body);
    let a = get(addr, "/api/groups/nobody").await;
    assert_eq!(a.status, 404);
    assert!(a.json()["error"].as_str().unwrap().contains("nobody"));

    let a = raw(
        addr,
        "POST /api/topics/t/messages HTTP/1.1\r\ncontent-type: application/json",
        b"{not json",
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.json()["error"].is_string());
    let a = post_json(
        addr,
        "/api/topics/%25DLQ%25x/messages",
        &json!({"body": "x"}),
    )
    .await;
    assert!(matches!(a.status, 400 | 403), "{}", a.body);

    // A test message through the API is stored and found again by its id.
    let a = post_json(
        addr,
        "/api/topics/hello/messages",
        &json!({"body": "hi", "tags": "t1"}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.json()["msg_id"].as_str().unwrap().to_owned();
    let m = get(addr, &format!("/api/messages/{id}")).await.json();
    assert_eq!(m["body"], "hi");
    assert_eq!(m["topic"], "hello");
    assert_eq!(m["properties"]["TAGS"], "t1");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_headers_are_refused_with_431() {
    let b = TestBroker::start().await;
    let big = "x".repeat(64 * 1024);
    let a = raw(
        http(&b),
        &format!("GET /metrics HTTP/1.1\r\nx-big: {big}"),
        b"",
    )
    .await;
    assert_eq!(a.status, 431);
    // The endpoint still serves the next client.
    assert_eq!(get(http(&b), "/healthz").await.status, 200);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_stalls_neither_metrics_nor_the_broker() {
    let b = TestBroker::start().await;
    b.topic_with("t", 2, 10).await;
    let addr = http(&b);
    // Half a request head, then silence.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nhost: slow\r\nx-partial: ")
        .await
        .unwrap();
    let a = get(addr, "/metrics").await;
    assert_eq!(a.status, 200);
    assert!(a
        .body
        .contains("ferromq_topic_messages_in_total{topic=\"t\"} 10"));
    b.admin().await.stats().await.unwrap();
    // The slow client is still connected (it has not been answered anything).
    let mut buf = [0u8; 1];
    let pending =
        tokio::time::timeout(std::time::Duration::from_millis(200), slow.read(&mut buf)).await;
    assert!(
        pending.is_err(),
        "the slow client got an answer to half a request"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_get_503_and_the_broker_keeps_serving() {
    let b = TestBroker::start_with(|c| c.http_max_connections = 2).await;
    let addr = http(&b);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metr").await.unwrap();
        held.push(s);
    }
    // The two held connections are accepted before the third arrives.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let a = get(addr, "/healthz").await;
    assert_eq!(a.status, 503);
    assert!(a.json()["error"].as_str().unwrap().contains("too many"));
    b.admin().await.stats().await.unwrap();
    drop(held);
    // Slots come back when the held connections close.
    let mut status = 0;
    for _ in 0..50 {
        status = get(addr, "/healthz").await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_answer_and_off_means_no_endpoint() {
    let b = TestBroker::start().await;
    let a = get(http(&b), "/healthz").await;
    assert_eq!((a.status, a.json()["status"].as_str()), (200, Some("ok")));
    let a = get(http(&b), "/readyz").await;
    assert_eq!((a.status, a.json()["ready"].as_bool()), (200, Some(true)));
    let page = get(http(&b), "/").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<canvas id=\"chart\""));
    assert_eq!(get(http(&b), "/assets/app.js").await.status, 200);
    b.shutdown().await;

    let dir = tempfile::TempDir::new().unwrap();
    let mut config = Config::ephemeral(dir.path());
    config.http_listen = Some(HttpListen::Off);
    let off = Broker::start(config).await.unwrap();
    assert_eq!(off.http_addr(), None);
    off.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_http_address_in_use_stops_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::TempDir::new().unwrap();
    let mut config = Config::ephemeral(dir.path());
    config.http_listen = Some(HttpListen::At(taken.local_addr().unwrap()));
    let err = Broker::start(config).await.err().expect("refused");
    assert!(err.to_string().contains("cannot listen"), "{err}");
}
