//! Long polling: a pull at the head is held and answered as soon as a matching message
//! is dispatched, or when its wait runs out, or at shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use crate::support::server::{records, start, RawClient};
use protocol::messages::{CreateTopicRequest, PullRequest, PullResponse, PullStatus};
use protocol::{header, Status};
use tempfile::TempDir;

fn held_pull(tag_expr: &str, wait_ms: u64) -> PullRequest {
    PullRequest {
        topic: "t".into(),
        queue_id: 0,
        group: "g".into(),
        offset: 0,
        max_messages: 32,
        max_bytes: 0,
        tag_expr: tag_expr.into(),
        max_wait_ms: wait_ms,
    }
}

async fn setup(dir: &TempDir) -> (broker::RunningBroker, RawClient) {
    let broker = start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(broker.local_addr()).await;
    let create = CreateTopicRequest {
        topic: "t".into(),
        queue_count: 1,
        perm: 0,
    };
    c.call(&create, &[]).await;
    (broker, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_pull_wakes_when_a_matching_message_arrives() {
    let dir = TempDir::new().unwrap();
    let (broker, mut consumer) = setup(&dir).await;
    let mut producer = RawClient::connect(broker.local_addr()).await;
    // The wait is far longer than the test may take: only a wake-up answers in time.
    let started = Instant::now();
    let id = consumer.send_request(&held_pull("red", 30_000), &[]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A message the filter rejects does not answer the pull ...
    producer
        .send_batch("t", 0, &[b"skip me"], Some("blue"))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ... a matching one does.
    producer.send_batch("t", 0, &[b"wanted"], Some("red")).await;
    let reply = consumer.read_reply().await.unwrap();
    assert_eq!((reply.request_id, reply.status), (id, Status::Ok));
    let resp: PullResponse = header::decode(&reply.header).unwrap();
    assert_eq!(
        (resp.status, resp.count, resp.next_offset),
        (PullStatus::Found, 1, 2)
    );
    assert_eq!(records(&reply.body), [(1, b"wanted".to_vec())]);
    assert!(started.elapsed() < Duration::from_secs(20));
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_pull_answers_no_new_message_when_its_wait_runs_out() {
    let dir = TempDir::new().unwrap();
    let (broker, mut c) = setup(&dir).await;
    let started = Instant::now();
    let (resp, body) = c.call(&held_pull("*", 300), &[]).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        (resp.status, resp.count, resp.next_offset),
        (PullStatus::NoNewMessage, 0, 0)
    );
    assert!(body.is_empty());
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_held_pulls_at_once() {
    let dir = TempDir::new().unwrap();
    let (broker, mut c) = setup(&dir).await;
    let id = c.send_request(&held_pull("*", 30_000), &[]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let stopping = tokio::spawn(broker.shutdown());
    let reply = c.read_reply().await.unwrap();
    assert_eq!((reply.request_id, reply.status), (id, Status::Ok));
    let resp: PullResponse = header::decode(&reply.header).unwrap();
    assert_eq!(resp.status, PullStatus::NoNewMessage);
    assert!(c.is_closed().await);
    stopping.await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
}
