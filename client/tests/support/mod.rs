//! Shared helpers: an in-process broker on an ephemeral port with its data in a temp dir.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

pub mod cli;

use std::time::Duration;

use broker::{Broker, Config, RunningBroker};
use client::admin::Admin;
use client::{ConsumerOptions, Message, Producer, ProducerOptions, StartFrom};
use tempfile::TempDir;

/// Generous bound on any single wait; never a performance assertion.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct TestBroker {
    pub broker: Option<RunningBroker>,
    pub addr: String,
    pub dir: TempDir,
}

impl TestBroker {
    /// A broker with a short session timeout and short retry delays, so tests are fast.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = TempDir::new().unwrap();
        let mut config = Config::ephemeral(dir.path());
        config.session_timeout_ms = 1_000;
        config.retry_delays_ms = vec![50, 100, 150, 200];
        config.offsets_persist_interval_ms = 100;
        tweak(&mut config);
        let broker = Broker::start(config).await.expect("broker starts");
        let addr = broker.local_addr().to_string();
        Self {
            broker: Some(broker),
            addr,
            dir,
        }
    }

    pub async fn admin(&self) -> Admin {
        Admin::connect(&self.addr).await.unwrap()
    }

    pub async fn producer(&self) -> Producer {
        Producer::connect(&self.addr, ProducerOptions::default())
            .await
            .unwrap()
    }

    /// Creates `topic` with `queues` queues and sends `n` messages "m0".."m{n-1}" to it.
    pub async fn topic_with(&self, topic: &str, queues: u32, n: usize) {
        self.admin()
            .await
            .create_topic(topic, queues)
            .await
            .unwrap();
        let p = self.producer().await;
        let msgs: Vec<Message> = (0..n).map(|i| Message::new(format!("m{i}"))).collect();
        for chunk in msgs.chunks(500) {
            p.send_batch(topic, chunk).await.unwrap();
        }
        p.close().await;
    }

    pub async fn shutdown(mut self) {
        if let Some(b) = self.broker.take() {
            b.shutdown().await.unwrap();
        }
    }
}

/// Consumer options that react fast in tests.
pub fn fast_options() -> ConsumerOptions {
    ConsumerOptions {
        start_from: StartFrom::Earliest,
        heartbeat_interval: Duration::from_millis(100),
        commit_interval: Duration::from_millis(50),
        long_poll_ms: 2_000,
        ..ConsumerOptions::default()
    }
}
