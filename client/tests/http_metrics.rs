//! `/metrics` read by a real Prometheus text parser (Python's `prometheus_client`, installed
//! by `scripts/test-deps`), checked against known traffic: N sends and M acks show as
//! counters and lag; receive leases and pending timers; plus per-topic aggregation and a
//! scrape of 10,000 queues.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod http_support;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use broker::config::MetricsPerQueue;
use client::{DeliverAt, Message, PullConsumer, SimpleConsumer, SimpleConsumerOptions};
use http_support::{get, parse_metrics, select, sum};
use protocol::messages::{CommitOffsetRequest, QueueCommit};
use support::{fast_options, TestBroker, PATIENCE};

const N: usize = 30;
const M: usize = 12;

fn http(b: &TestBroker) -> SocketAddr {
    b.broker.as_ref().unwrap().http_addr().expect("HTTP is on")
}

/// Sends N messages to `orders` (2 queues), acks M of them as group `billing` and nacks one
/// more as group `nackers` (a retry is scheduled). Returns the body bytes sent.
async fn traffic(b: &TestBroker) -> u64 {
    b.admin().await.create_topic("orders", 2).await.unwrap();
    let p = b.producer().await;
    let mut bytes = 0;
    for i in 0..N {
        let body = format!("order-{i}");
        bytes += body.len() as u64;
        p.send("orders", &Message::new(body)).await.unwrap();
    }
    p.close().await;
    let mut c = PullConsumer::connect(&b.addr, "billing", &[("orders", "*")], fast_options())
        .await
        .unwrap();
    for _ in 0..M {
        let m = c.recv_timeout(PATIENCE).await.expect("a message");
        c.ack(&m);
    }
    c.close().await.unwrap();
    let mut n = PullConsumer::connect(&b.addr, "nackers", &[("orders", "*")], fast_options())
        .await
        .unwrap();
    let m = n.recv_timeout(PATIENCE).await.expect("a message");
    n.nack(&m).await.unwrap();
    n.abandon();
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic_per_topic_and_queue() {
    let b = TestBroker::start().await;
    let bytes = traffic(&b).await;
    // Lag ages count whole seconds from the store time of the oldest unacked message.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let answer = get(http(&b), "/metrics").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.headers["content-type"].contains("text"),
        "{:?}",
        answer.headers
    );
    let s = parse_metrics(&answer.body);

    let orders = [("topic", "orders")];
    assert_eq!(
        sum(&s, "ferromq_topic_messages_in_total", &orders),
        N as f64
    );
    assert_eq!(
        sum(&s, "ferromq_topic_bytes_in_total", &orders),
        bytes as f64
    );
    assert!(sum(&s, "ferromq_topic_messages_out_total", &orders) >= (M + 1) as f64);
    assert_eq!(sum(&s, "ferromq_topic_queues", &orders), 2.0);

    let billing = [("group", "billing"), ("topic", "orders")];
    let lag = select(&s, "ferromq_group_lag_messages", &billing);
    assert_eq!(lag.len(), 2, "one series per queue: {lag:?}");
    assert!(lag.iter().all(|l| l.labels.contains_key("queue")));
    assert_eq!(
        sum(&s, "ferromq_group_lag_messages", &billing),
        (N - M) as f64
    );
    assert_eq!(
        sum(&s, "ferromq_group_committed_offset", &billing),
        M as f64
    );
    assert_eq!(sum(&s, "ferromq_group_max_offset", &billing), N as f64);
    for age in select(&s, "ferromq_group_oldest_unacked_age_seconds", &billing) {
        assert!(age.value >= 1.0, "behind for over a second: {age:?}");
    }
    assert_eq!(
        sum(&s, "ferromq_group_members", &[("group", "billing")]),
        0.0
    );
    assert_eq!(
        sum(&s, "ferromq_group_dlq_messages", &[("group", "billing")]),
        0.0
    );
    assert_eq!(sum(&s, "ferromq_retries_scheduled_total", &[]), 1.0);
    assert_eq!(sum(&s, "ferromq_dead_lettered_total", &[]), 0.0);

    // Latency histograms: every send was timed, and the storage layers reported.
    let sends = select(
        &s,
        "ferromq_request_duration_seconds_count",
        &[("kind", "send")],
    );
    assert_eq!(sends.len(), 1);
    assert!(sends[0].value >= N as f64, "{sends:?}");
    let inf = select(
        &s,
        "ferromq_request_duration_seconds_bucket",
        &[("kind", "send"), ("le", "+Inf")],
    );
    assert_eq!(
        inf[0].value, sends[0].value,
        "+Inf bucket holds every observation"
    );
    for h in [
        "ferromq_commitlog_append_duration_seconds_count",
        "ferromq_dispatch_duration_seconds_count",
    ] {
        assert!(sum(&s, h, &[]) >= 1.0, "{h} recorded nothing");
    }
    assert!(!select(&s, "ferromq_commitlog_flush_duration_seconds_count", &[]).is_empty());
    assert!(sum(&s, "ferromq_disk_used_bytes", &[]) > 0.0);
    assert!(sum(&s, "ferromq_disk_free_bytes", &[]) > 0.0);
    assert!(sum(&s, "ferromq_resident_memory_bytes", &[]) > 1e6);
    assert_eq!(sum(&s, "ferromq_disk_full", &[]), 0.0);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_queue_series_can_be_folded_into_per_topic_ones() {
    let b = TestBroker::start_with(|c| c.metrics_per_queue = MetricsPerQueue::Off).await;
    traffic(&b).await;
    let s = parse_metrics(&get(http(&b), "/metrics").await.body);
    let billing = [("group", "billing"), ("topic", "orders")];
    let lag = select(&s, "ferromq_group_lag_messages", &billing);
    assert_eq!(lag.len(), 1, "one series per topic: {lag:?}");
    assert!(!lag[0].labels.contains_key("queue"));
    assert_eq!(lag[0].value, (N - M) as f64);
    assert_eq!(
        sum(&s, "ferromq_group_committed_offset", &billing),
        M as f64
    );
    b.shutdown().await;
}

/// 10,000 queues, each one message behind for one group: the scrape completes with every
/// series (how long it took is printed and recorded in BENCHMARKS.md, never asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_of_ten_thousand_lagging_queues_completes() {
    const TOPICS: u32 = 10;
    const QUEUES: u32 = 1_000;
    let b = TestBroker::start_with(|c| c.metrics_per_queue = MetricsPerQueue::On).await;
    let admin = b.admin().await;
    let p = b.producer().await;
    for t in 0..TOPICS {
        let topic = format!("wide-{t}");
        admin.create_topic(&topic, QUEUES).await.unwrap();

        // Round robin: one message per queue.
        for q in 0..QUEUES {
            p.send(&topic, &Message::new(format!("{q}"))).await.unwrap();
        }

        let commits = (0..QUEUES)
            .map(|q| QueueCommit {
                topic: topic.clone(),
                queue_id: q,
                offset: 0,
                acked_above: Vec::new(),
            })
            .collect();
        let req = CommitOffsetRequest {
            group: "wide-readers".into(),
            commits,
            reset_epoch: None,
        };
        admin.connection().call(&req, &[]).await.unwrap();
    }
    p.close().await;
    let started = Instant::now();
    let answer = get(http(&b), "/metrics").await;
    let took = started.elapsed();
    assert_eq!(answer.status, 200);
    eprintln!(
        "scrape of {} queues: {took:?}, {} bytes",
        TOPICS * QUEUES,
        answer.body.len()
    );
    let s = parse_metrics(&answer.body);
    let lag = select(
        &s,
        "ferromq_group_lag_messages",
        &[("group", "wide-readers")],
    );
    assert_eq!(lag.len(), (TOPICS * QUEUES) as usize);
    assert!(lag.iter().all(|l| l.value == 1.0));
    // The native protocol kept answering meanwhile.
    admin.stats().await.unwrap();
    b.shutdown().await;
}

/// Receives until `n` leases are held by `c`, within the test's patience.
async fn receive_n(c: &SimpleConsumer, n: usize) -> Vec<client::LeasedMessage> {
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::new();
    while got.len() < n {
        got.extend(
            c.receive(u32::try_from(n - got.len()).unwrap())
                .await
                .unwrap(),
        );
        assert!(Instant::now() < deadline, "received {} of {n}", got.len());
    }
    got
}

/// Scrapes until the unlabelled gauge `name` reads `want` or the test's patience is spent;
/// returns the last scrape.
async fn scrape_until(b: &TestBroker, name: &str, want: f64) -> Vec<http_support::Sample> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s = parse_metrics(&get(http(b), "/metrics").await.body);
        if sum(&s, name, &[]) == want || Instant::now() >= deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_in_flight_and_pending_timers_are_shown() {
    const LEASED: usize = 7;
    const TIMERS: usize = 4;
    let b = TestBroker::start().await;
    let admin = b.admin().await;
    admin.create_topic("tasks", 2).await.unwrap();
    admin.create_topic("later", 1).await.unwrap();
    let p = b.producer().await;
    for i in 0..LEASED + 3 {
        p.send("tasks", &Message::new(format!("task-{i}")))
            .await
            .unwrap();
    }
    let mut handles = Vec::new();
    for i in 0..TIMERS {
        // An hour away: still pending whatever the test's speed.
        let r = p
            .send_timer(
                "later",
                &Message::new(format!("later-{i}")),
                DeliverAt::DelayMs(3_600_000),
            )
            .await
            .unwrap();
        handles.push(r.recall_handle);
    }
    let opts = SimpleConsumerOptions {
        // Far longer than the test: no lease expires while it is checked.
        invisible: Duration::from_secs(600),
        wait: Duration::from_millis(500),
        ..SimpleConsumerOptions::default()
    };
    let c = SimpleConsumer::connect(&b.addr, "workers", "tasks", opts)
        .await
        .unwrap();
    let leased = receive_n(&c, LEASED).await;
    assert_eq!(leased.len(), LEASED);

    // The timer indexes what was sent in the background: wait until it has.
    let s = scrape_until(&b, "ferromq_timers_pending_all_topics", TIMERS as f64).await;
    let workers = [("group", "workers"), ("topic", "tasks")];
    let series = select(&s, "ferromq_group_leases_in_flight", &workers);
    assert!(!series.is_empty() && series.iter().all(|l| l.labels.contains_key("queue")));
    assert_eq!(
        sum(&s, "ferromq_group_leases_in_flight", &workers),
        LEASED as f64
    );
    assert_eq!(
        sum(&s, "ferromq_timers_pending", &[("topic", "later")]),
        TIMERS as f64
    );
    assert_eq!(
        sum(&s, "ferromq_timers_pending_all_topics", &[]),
        TIMERS as f64
    );
    assert_eq!(
        sum(&s, "ferromq_group_retries_pending", &[("group", "workers")]),
        0.0
    );

    // Two acks and one recall later, the gauges follow.
    c.ack(&leased[0]).await.unwrap();
    c.ack(&leased[1]).await.unwrap();
    assert_eq!(
        p.recall("later", &handles[0]).await.unwrap(),
        client::RecallStatus::Recalled
    );
    let s = scrape_until(&b, "ferromq_timers_pending_all_topics", (TIMERS - 1) as f64).await;
    assert_eq!(
        sum(&s, "ferromq_group_leases_in_flight", &workers),
        (LEASED - 2) as f64
    );
    assert_eq!(
        sum(&s, "ferromq_timers_pending", &[("topic", "later")]),
        (TIMERS - 1) as f64
    );
    assert_eq!(
        sum(&s, "ferromq_timers_pending_all_topics", &[]),
        (TIMERS - 1) as f64
    );

    // The JSON API the dashboard reads says the same.
    let groups = get(http(&b), "/api/groups").await.json();
    let g = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "workers")
        .expect("the receiving group is listed");
    assert_eq!(g["leases_in_flight"], (LEASED - 2) as u64);
    let later = get(http(&b), "/api/topics/later").await.json();
    assert_eq!(later["timers_pending"], (TIMERS - 1) as u64);
    let overview = get(http(&b), "/api/overview").await.json();
    assert_eq!(overview["timers_pending"], (TIMERS - 1) as u64);
    p.close().await;
}
