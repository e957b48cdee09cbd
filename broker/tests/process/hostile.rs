//! Hostile input in volume against the real broker binary, while a well-behaved producer
//! keeps sending: garbage, frames claiming 4 GiB, hundreds of half frames (claiming large
//! but allowed sizes) held open, and thousands of connections opened and closed. The
//! broker must stay up, keep serving the good client without a single failed send, and
//! its resident memory must stay bounded (VmRSS growth well under 200 MiB).
//!
//! Single malformed inputs and the limits (connections, in flight, sizes, names) are
//! covered by `server/protocol.rs` and `server/requests.rs`; this is the volume test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::process::BrokerProcess;
use crate::support::Rng;
use bytes::BytesMut;
use client::{Message, Producer, ProducerOptions};
use protocol::{Frame, FrameKind};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RSS_BOUND_KIB: u64 = 200 << 10;

/// A frame prefix for request code 1 whose length field claims `claimed` bytes.
fn prefix_claiming(claimed: u32, request_id: u64) -> Vec<u8> {
    let mut f = BytesMut::new();
    Frame::encode(&mut f, FrameKind::Request, 1, request_id, b"", b"").unwrap();
    f[..4].copy_from_slice(&claimed.to_le_bytes());
    f.to_vec()
}

/// Reads until the peer closes or `within` passes; true if it closed.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_all).await.is_ok()
}

async fn good_producer(addr: String, stop: Arc<AtomicBool>, ok: Arc<AtomicU64>) -> u64 {
    let producer = Producer::connect(&addr, ProducerOptions::default())
        .await
        .unwrap();
    let mut failed = 0;
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let msg = Message::new(format!("good-{n}")).with_tag("good");
        match producer.send("hostile-good", &msg).await {
            Ok(_) => {
                ok.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                eprintln!("good producer failed: {e}");
                failed += 1;
            }
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_survives_hostile_clients_with_bounded_memory() {
    let tmp = TempDir::new().unwrap();
    let broker = BrokerProcess::start(
        &tmp.path().join("data"),
        &tmp.path().join("logs"),
        &["--segment-size", "4M", "--max-message-size", "64K"],
    );
    let addr = broker.addr.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let good = tokio::spawn(good_producer(addr.clone(), stop.clone(), ok.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = broker.rss_kib();
    let mut rng = Rng::new(7);

    // 1. Garbage: random bytes, then the broker must close the connection.
    for _ in 0..200 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let len = 1 + rng.below(64 << 10) as usize;
        let _ = s.write_all(&rng.bytes(len)).await;
        assert!(
            closed_within(&mut s, Duration::from_secs(10)).await,
            "garbage connection left open"
        );
    }

    // 2. Frames claiming 4 GiB: answered (FrameTooLarge) and closed, nothing allocated.
    for i in 0..200 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(&prefix_claiming(u32::MAX, i)).await.unwrap();
        assert!(closed_within(&mut s, Duration::from_secs(10)).await);
    }

    // 3. Half frames held open: 300 connections each claim a 60 MiB frame (allowed by
    // the 64 MiB limit) and send 4 KiB of it; 18 GiB claimed in total.
    let mut held = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let mut bytes = prefix_claiming(60 << 20, 1000 + i);
        bytes.extend(rng.bytes(4096));
        s.write_all(&bytes).await.unwrap();
        held.push(s);
    }
    // 4. Churn: 3000 connections opened and closed, 100 at a time, some sending a few
    // bytes of a frame first.
    for round in 0..30 {
        let mut batch = Vec::new();
        for j in 0..100 {
            let addr = addr.clone();
            let partial = prefix_claiming(1 << 20, round * 100 + j);
            let cut = (j as usize) % partial.len();
            batch.push(tokio::spawn(async move {
                if let Ok(mut s) = TcpStream::connect(&addr).await {
                    let _ = s.write_all(&partial[..cut]).await;
                }
            }));
        }
        for t in batch {
            t.await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_peak = broker.rss_kib();
    drop(held);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = broker.rss_kib();

    stop.store(true, Ordering::SeqCst);
    let failed = good.await.unwrap();
    eprintln!(
        "VmRSS before {rss_before} KiB, with 300 half frames held {rss_peak} KiB, after \
         {rss_after} KiB; good client: {} sends ok, {failed} failed",
        ok.load(Ordering::SeqCst)
    );
    assert_eq!(
        failed, 0,
        "the well-behaved client was not served throughout"
    );
    assert!(ok.load(Ordering::SeqCst) > 0);
    assert!(
        rss_peak.saturating_sub(rss_before) < RSS_BOUND_KIB,
        "memory grew from {rss_before} KiB to {rss_peak} KiB under hostile clients"
    );
    assert!(rss_after.saturating_sub(rss_before) < RSS_BOUND_KIB);
    // Still up and serving new clients.
    let mut broker = broker;
    assert!(broker.is_running(), "broker died:\n{}", broker.log());
    let producer = Producer::connect(&addr, ProducerOptions::default())
        .await
        .unwrap();
    producer
        .send("hostile-good", &Message::new("after"))
        .await
        .unwrap();
}
