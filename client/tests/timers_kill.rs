//! SIGKILL cycles with pending timers: every acknowledged timer message is delivered
//! (at least once) and none before its due time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod restart_support;

use std::collections::HashMap;
use std::time::Duration;

use client::protocol::properties::DELIVER_AT_MS;
use client::{DeliverAt, Message, Producer, ProducerOptions, PullConsumer};
use restart_support::Hosted;

const PATIENCE: Duration = Duration::from_secs(20);
const CYCLES: usize = 3;
const PER_CYCLE: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_cycles_lose_no_timer_and_deliver_none_early() {
    let dir = tempfile::tempdir().unwrap();
    let mut due_of: HashMap<String, u64> = HashMap::new();
    let mut addr: Option<String> = None;
    for cycle in 0..CYCLES {
        let host = Hosted::spawn("broker_host", dir.path(), addr.as_deref());
        addr = Some(host.addr.clone());
        let p = Producer::connect(&host.addr, ProducerOptions::default())
            .await
            .unwrap();
        for i in 0..PER_CYCLE {
            // Some due before the kill, some during the restart, some after.
            let delay = (i as u64 * 97) % 2_500;
            let r = p
                .send_timer(
                    "k",
                    &Message::new(format!("{cycle}-{i}")),
                    DeliverAt::DelayMs(delay),
                )
                .await
                .unwrap();
            due_of.insert(r.msg_id, r.deliver_at_ms);
        }
        // Killed while deliveries are under way.
        tokio::time::sleep(Duration::from_millis(300 * cycle as u64)).await;
        drop(p);
        host.kill();
    }
    let host = Hosted::spawn("broker_host", dir.path(), addr.as_deref());
    let opts = client::ConsumerOptions {
        heartbeat_interval: Duration::from_millis(100),
        long_poll_ms: 1_000,
        ..client::ConsumerOptions::default()
    };
    let mut c = PullConsumer::connect(&host.addr, "g", &[("k", "*")], opts)
        .await
        .unwrap();
    let mut missing = due_of.clone();
    while !missing.is_empty() {
        let m = c
            .recv_timeout(PATIENCE)
            .await
            .unwrap_or_else(|| panic!("{} acknowledged timers lost", missing.len()));
        c.ack(&m);
        let id = m.msg_id();
        let due = *due_of.get(&id).expect("a timer this test sent");
        assert_eq!(m.property(DELIVER_AT_MS), Some(due.to_string().as_str()));
        assert!(m.store_timestamp_ms() >= due, "delivered before due");
        missing.remove(&id);
    }
    c.close().await.unwrap();
    host.kill();
}

/// The broker of the kill test, run in a child process; does nothing otherwise.
#[test]
#[ignore = "the broker host of the kill test, started by it as a child process"]
fn broker_host() {
    restart_support::host_main();
}
