//! A nacked message whose retry is still pending when the broker stops: after a graceful
//! restart, or a SIGKILL and restart, on the same data dir the retry still arrives, under
//! its original topic and id, and not before its delay.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod restart_support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use client::{
    ConnectOptions, Connection, Message, Producer, ProducerOptions, PullConsumer, ReceivedMessage,
};
use restart_support::{Hosted, Restartable, FIRST_RETRY_MS};

const PATIENCE: Duration = Duration::from_secs(15);

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn opts() -> client::ConsumerOptions {
    client::ConsumerOptions {
        heartbeat_interval: Duration::from_millis(100),
        commit_interval: Duration::from_millis(50),
        long_poll_ms: 1_000,
        ..client::ConsumerOptions::default()
    }
}

/// Sends one message, receives it in `group` and nacks it. Returns its id and when the
/// nack was sent.
async fn send_and_nack(addr: &str, group: &str) -> (String, u64) {
    let p = Producer::connect(addr, ProducerOptions::default())
        .await
        .unwrap();
    let sent = p.send("jobs", &Message::new("job-1")).await.unwrap();
    p.close().await;
    let mut c = PullConsumer::connect(addr, group, &[("jobs", "*")], opts())
        .await
        .unwrap();
    let m = c.recv_timeout(PATIENCE).await.expect("delivered");
    assert_eq!(m.msg_id(), sent.msg_id);
    let nacked_at = now_ms();
    c.nack(&m).await.unwrap();
    c.close().await.unwrap();
    (sent.msg_id, nacked_at)
}

/// Consumes `group` until the retry arrives; checks it and returns every delivery.
async fn await_retry(addr: &str, group: &str, id: &str, nacked_at: u64) -> Vec<ReceivedMessage> {
    let mut c = PullConsumer::connect(addr, group, &[("jobs", "*")], opts())
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let m = c
            .recv_timeout(PATIENCE)
            .await
            .expect("the retry arrives after the restart");
        let arrived = now_ms();
        c.ack(&m);
        assert_eq!(
            (m.topic(), m.msg_id(), m.body()),
            ("jobs", id.to_string(), &b"job-1"[..])
        );
        let retry = m.reconsume_times() == 1;
        if retry {
            assert!(m.is_retry());
            assert!(
                arrived >= nacked_at + FIRST_RETRY_MS,
                "the retry came {} ms after the nack, before its delay",
                arrived - nacked_at
            );
        }
        seen.push(m);
        if retry {
            break;
        }
    }
    assert!(c.recv_timeout(Duration::from_millis(300)).await.is_none());
    c.close().await.unwrap();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_retry_survives_a_graceful_restart() {
    let mut b = Restartable::start().await;
    let (id, nacked_at) = send_and_nack(&b.addr, "g").await;
    b.restart().await;
    let seen = await_retry(&b.addr, "g", &id, nacked_at).await;
    // Offsets were written at shutdown: the acked original does not come back.
    assert_eq!(seen.len(), 1, "{seen:?}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_retry_survives_a_killed_broker() {
    let dir = tempfile::TempDir::new().unwrap();
    let host = Hosted::spawn("broker_host", dir.path(), None);
    let addr = host.addr.clone();
    let (id, nacked_at) = send_and_nack(&addr, "g").await;
    host.kill();
    let host = Hosted::spawn("broker_host", dir.path(), Some(&addr));
    // A commit not yet written when the broker died may deliver the original again
    // (at least once); the retry itself must arrive.
    let seen = await_retry(&host.addr, "g", &id, nacked_at).await;
    assert!(seen.iter().all(|m| m.reconsume_times() <= 1));
    host.kill();
}

/// The broker of the kill test, run in a child process; does nothing otherwise.
#[test]
#[ignore = "the broker host of the kill test, started by it as a child process"]
fn broker_host() {
    restart_support::host_main();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_while_the_broker_is_down_is_sent_back_once_it_returns() {
    let mut b = Restartable::start().await;
    let p = Producer::connect(&b.addr, ProducerOptions::default())
        .await
        .unwrap();
    let msgs: Vec<Message> = (0..3).map(|i| Message::new(format!("job-{i}"))).collect();
    p.send_batch("jobs", &msgs).await.unwrap();
    p.close().await;
    // A short connect timeout: calls fail soon while the broker is away.
    let conn = Connection::connect(
        &b.addr,
        ConnectOptions {
            connect_timeout: Duration::from_millis(500),
            ..ConnectOptions::default()
        },
    )
    .await
    .unwrap();
    let mut c = PullConsumer::with_connection(conn, "g", &[("jobs", "*")], opts())
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(c.recv_timeout(PATIENCE).await.expect("delivered"));
    }
    c.ack(&got[0]);
    c.ack(&got[2]);
    c.commit().await.unwrap();

    b.stop().await;
    // Unreachable broker: the nack is kept and retried in the background.
    c.nack(&got[1]).await.unwrap();
    assert!(c.commit().await.is_err());
    b.start_again().await;

    let m = c
        .recv_timeout(PATIENCE)
        .await
        .expect("the kept nack reaches the broker and the retry comes back");
    assert_eq!(
        (m.topic(), m.msg_id(), m.reconsume_times(), m.body()),
        ("jobs", got[1].msg_id(), 1, &b"job-1"[..])
    );
    c.ack(&m);
    // The committed offset never passed the nacked message until it was sent back; now
    // the whole queue is done, and nothing acked came back.
    let admin = client::admin::Admin::connect(&b.addr).await.unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while admin
        .committed("g", "jobs", 0)
        .await
        .unwrap()
        .map(|q| q.offset)
        != Some(3)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "queue never committed to 3"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(c.recv_timeout(Duration::from_millis(300)).await.is_none());
    c.close().await.unwrap();
    b.shutdown().await;
}
