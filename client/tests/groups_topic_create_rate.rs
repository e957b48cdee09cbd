//! Measures topic creation against a running broker and what it costs a sender on another
//! topic meanwhile. A measurement, not a check: ignored by default, it prints figures.
//!
//! ```sh
//! MQ_BROKER=127.0.0.1:10911 MQ_CREATE_TOPICS=1000 \
//!   cargo test -p client --test groups_topic_create_rate -- --ignored --nocapture
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::admin::Admin;
use client::{Message, Producer, ProducerOptions};
use hdrhistogram::Histogram;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement against a running broker (MQ_BROKER)"]
async fn topic_creation_rate_and_a_concurrent_senders_latency() {
    let addr = std::env::var("MQ_BROKER").expect("MQ_BROKER names the broker to measure");
    let n: usize = std::env::var("MQ_CREATE_TOPICS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let prefix = format!("rate-{}", std::process::id());
    let admin = Admin::connect(&addr).await.unwrap();
    admin
        .create_topic(&format!("{prefix}-hot"), 1)
        .await
        .unwrap();

    let creating = Arc::new(AtomicBool::new(true));
    let latencies = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap(),
    ));
    let sender = {
        let (creating, latencies) = (Arc::clone(&creating), Arc::clone(&latencies));
        let p = Producer::connect(&addr, ProducerOptions::default())
            .await
            .unwrap();
        let hot = format!("{prefix}-hot");
        tokio::spawn(async move {
            while creating.load(Ordering::Acquire) {
                let t = Instant::now();
                p.send(&hot, &Message::new("x")).await.unwrap();
                let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                latencies.lock().unwrap().saturating_record(us);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            p.close().await;
        })
    };
    let start = Instant::now();
    for i in 0..n {
        admin
            .create_topic(&format!("{prefix}-{i}"), 4)
            .await
            .unwrap();
    }
    let took = start.elapsed();
    creating.store(false, Ordering::Release);
    sender.await.unwrap();
    let h = latencies.lock().unwrap();
    println!(
        "created {n} topics in {:.2} s: {:.0}/s; concurrent sender: {} sends, p50 {} us, p99 {} us, max {} us",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        h.len(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max()
    );
}
