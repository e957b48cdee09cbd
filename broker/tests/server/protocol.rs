//! Hostile and broken input at the frame level: every case gets an error response or a
//! closed connection, and the broker keeps serving other clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::server::{start, RawClient};
use protocol::messages::{
    CreateTopicRequest, HelloRequest, HelloResponse, ListTopicsRequest, PullRequest,
};
use protocol::{header, Status, PROTOCOL_VERSION};
use tempfile::TempDir;

fn hello() -> HelloRequest {
    HelloRequest {
        protocol_version: PROTOCOL_VERSION,
        client_id: "test".into(),
    }
}

/// A second client that must still be served after each abuse.
async fn assert_still_serving(addr: std::net::SocketAddr) {
    let mut c = RawClient::connect(addr).await;
    let (resp, _) = c.call(&hello(), &[]).await;
    assert_eq!(resp.protocol_version, PROTOCOL_VERSION);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_answers_with_the_limits() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(broker.local_addr()).await;
    let (resp, _): (HelloResponse, _) = c.call(&hello(), &[]).await;
    assert_eq!(resp.max_message_bytes, 4 << 20);
    let wrong = HelloRequest {
        protocol_version: 9,
        client_id: "future".into(),
    };
    let reply = c.call_raw(&wrong, &[]).await;
    assert_eq!(reply.status, Status::UnsupportedVersion);
    assert!(
        reply.error_message().contains("version 9"),
        "{}",
        reply.error_message()
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_only_that_connection() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut bad = RawClient::connect(broker.local_addr()).await;
    bad.send_raw(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    assert!(bad.is_closed().await);
    assert_still_serving(broker.local_addr()).await;
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_claiming_4_gib_gets_frame_too_large_then_close() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut bad = RawClient::connect(broker.local_addr()).await;
    // A real prefix (magic, version, request id 42) under a length of u32::MAX.
    let mut frame = bytes::BytesMut::new();
    protocol::Frame::encode(&mut frame, protocol::FrameKind::Request, 1, 42, b"", b"").unwrap();
    frame[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    bad.send_raw(&frame).await;
    let reply = bad
        .read_reply()
        .await
        .expect("an error response before the close");
    assert_eq!(reply.status, Status::FrameTooLarge);
    assert_eq!(reply.request_id, 42);
    assert!(bad.is_closed().await);
    assert_still_serving(broker.local_addr()).await;
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frames_do_not_block_other_clients() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut frame = bytes::BytesMut::new();
    let h = header::encode(&hello()).unwrap();
    protocol::Frame::encode(&mut frame, protocol::FrameKind::Request, 1, 7, &h, b"").unwrap();
    // One client sends half a frame and holds the connection open.
    let mut half = RawClient::connect(broker.local_addr()).await;
    half.send_raw(&frame[..frame.len() / 2]).await;
    // Another sends half a frame and goes away.
    let mut gone = RawClient::connect(broker.local_addr()).await;
    gone.send_raw(&frame[..10]).await;
    drop(gone);
    assert_still_serving(broker.local_addr()).await;
    // The held frame completes later and is answered.
    half.send_raw(&frame[frame.len() / 2..]).await;
    let reply = half.read_reply().await.unwrap();
    assert_eq!((reply.request_id, reply.status), (7, Status::Ok));
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_versions_codes_and_headers_get_error_responses_and_the_connection_lives() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(broker.local_addr()).await;

    let id = c.send_frame(999, b"", b"").await;
    let reply = c.read_reply().await.unwrap();
    assert_eq!((reply.request_id, reply.status), (id, Status::UnknownCode));
    assert!(reply.error_message().contains("999"));

    // A frame of protocol version 2 is skipped whole and answered.
    let mut frame = bytes::BytesMut::new();
    protocol::Frame::encode(&mut frame, protocol::FrameKind::Request, 1, 77, b"xx", b"").unwrap();
    frame[6] = 2;
    c.send_raw(&frame).await;
    let reply = c.read_reply().await.unwrap();
    assert_eq!(
        (reply.request_id, reply.status),
        (77, Status::UnsupportedVersion)
    );

    // A header that does not decode as the code's request type.
    let id = c
        .send_frame(u16::from(protocol::RequestCode::Pull), &[0xFF; 3], b"")
        .await;
    let reply = c.read_reply().await.unwrap();
    assert_eq!((reply.request_id, reply.status), (id, Status::BadRequest));
    assert!(
        reply.error_message().contains("PullRequest"),
        "{}",
        reply.error_message()
    );

    // The same connection still works.
    let (list, _) = c.call(&ListTopicsRequest::default(), &[]).await;
    assert!(list.topics.is_empty());
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_in_flight_limit_are_busy() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |c| c.max_inflight_per_connection = 1).await;
    let mut c = RawClient::connect(broker.local_addr()).await;
    let create = CreateTopicRequest {
        topic: "t".into(),
        queue_count: 1,
        perm: 0,
    };
    c.call(&create, &[]).await;
    let pull = PullRequest {
        topic: "t".into(),
        queue_id: 0,
        group: "g".into(),
        offset: 0,
        max_messages: 1,
        max_bytes: 0,
        tag_expr: "*".into(),
        max_wait_ms: 1_000,
    };
    // The first pull is held at the head; the second finds no free slot.
    let held = c.send_request(&pull, &[]).await;
    let busy = c.send_request(&pull, &[]).await;
    let first = c.read_reply().await.unwrap();
    assert_eq!((first.request_id, first.status), (busy, Status::Busy));
    let second = c.read_reply().await.unwrap();
    assert_eq!((second.request_id, second.status), (held, Status::Ok));
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused_with_busy() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |c| c.max_connections = 2).await;
    let mut a = RawClient::connect(broker.local_addr()).await;
    let mut b = RawClient::connect(broker.local_addr()).await;
    a.call(&hello(), &[]).await;
    b.call(&hello(), &[]).await;
    let mut c = RawClient::connect(broker.local_addr()).await;
    let reply = c.read_reply().await.expect("a refusal");
    assert_eq!(reply.status, Status::Busy);
    assert!(reply.error_message().contains("too many connections"));
    assert!(c.is_closed().await);
    drop(a);
    // The freed slot is reused once the broker notices the close.
    let mut served = false;
    for _ in 0..50 {
        let mut d = RawClient::connect(broker.local_addr()).await;
        let id = d.send_request(&hello(), &[]).await;
        if let Some(r) = d.read_reply().await {
            if r.request_id == id && r.status == Status::Ok {
                served = true;
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(served);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_short_lived_connections_leaves_the_broker_serving() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |c| c.max_connections = 64).await;
    let addr = broker.local_addr();
    let mut tasks = Vec::new();
    for i in 0..1_000u32 {
        tasks.push(tokio::spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                return;
            };
            use tokio::io::AsyncWriteExt;
            // Some say nothing, some send a partial frame, some send garbage.
            let _ = match i % 3 {
                0 => Ok(()),
                1 => s.write_all(&[40, 0, 0, 0, 0x4D, 0x46]).await,
                _ => s.write_all(b"\xff\xff\xff\xff garbage").await,
            };
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Closed connections free their slots; a new client is served.
    let mut served = false;
    for _ in 0..100 {
        let mut c = RawClient::connect(addr).await;
        let id = c.send_request(&hello(), &[]).await;
        if let Some(r) = c.read_reply().await {
            if r.request_id == id && r.status == Status::Ok {
                served = true;
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(served);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_stalled_mid_frame_is_closed() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |c| c.partial_frame_timeout_ms = 200).await;
    let mut idle = RawClient::connect(broker.local_addr()).await;
    let mut stalled = RawClient::connect(broker.local_addr()).await;
    stalled.send_raw(&[60, 0, 0, 0, 0x4D, 0x46, 1]).await;
    assert!(stalled.is_closed().await);
    // A connection idle between frames is left alone.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    idle.call(&hello(), &[]).await;
    broker.shutdown().await.unwrap();
}
