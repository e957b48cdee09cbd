//! Pipelined sends on one connection are stored in the order they were sent, under both
//! flush policies, and a refused send in the middle of a pipeline affects only itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::server::start;
use broker::config::FlushPolicy;
use client::protocol::batch::{BatchMessage, BatchWriter};
use client::{Producer, ProducerOptions};
use tempfile::TempDir;

fn one(body: &[u8]) -> BatchWriter {
    let mut w = BatchWriter::with_capacity(16 + body.len());
    w.push(&BatchMessage {
        properties: &[],
        body,
        born_timestamp_ms: 0,
    })
    .unwrap();
    w
}

async fn pipelined_sends_keep_their_order(flush: FlushPolicy, count: u64) {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |c| c.flush = flush).await;
    let addr = broker.local_addr().to_string();
    let producer = Producer::connect(
        &addr,
        ProducerOptions {
            max_in_flight: 1000,
        },
    )
    .await
    .unwrap();
    // Acks are collected while sending: each unacknowledged send holds an in-flight slot.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<client::SendHandle>();
    let collector = tokio::spawn(async move {
        let (mut offsets, mut refused) = (Vec::new(), 0);
        while let Some(h) = rx.recv().await {
            match h.wait().await {
                Ok(r) => offsets.push(r[0].queue_offset),
                Err(e) => {
                    assert!(e.status().is_some(), "{e}");
                    refused += 1;
                }
            }
        }
        (offsets, refused)
    });
    for i in 0..count {
        let body = i.to_le_bytes();
        tx.send(
            producer
                .send_encoded("order", 0, &one(&body))
                .await
                .unwrap(),
        )
        .unwrap();
        if i == count / 2 {
            // Refused on its own (no such queue); the sends around it are stored.
            tx.send(
                producer
                    .send_encoded("order", 99, &one(&body))
                    .await
                    .unwrap(),
            )
            .unwrap();
        }
    }
    drop(tx);
    let (offsets, refused) = collector.await.unwrap();
    assert_eq!(refused, 1);
    assert_eq!(offsets, (0..count).collect::<Vec<_>>());
    producer.close().await;
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_pipelined_sends_stored_out_of_order_async_flush() {
    pipelined_sends_keep_their_order(FlushPolicy::default(), 3000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_pipelined_sends_stored_out_of_order_sync_flush() {
    pipelined_sends_keep_their_order(FlushPolicy::Sync, 500).await;
}
