//! Torn and corrupt files under the real broker binary: it starts, logs what it dropped,
//! serves the valid prefix, and a consumer group whose committed offset lies past the new
//! end of a queue is moved back, so messages produced after the restart reach it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::OpenOptions;
use std::path::Path;
use std::time::Duration;

use crate::support::log_segments;
use crate::support::process::BrokerProcess;
use client::admin::Admin;
use client::{ConsumerOptions, Message, Producer, ProducerOptions, PullConsumer};
use tempfile::TempDir;

const TOPIC: &str = "torn";
const GROUP: &str = "torn-group";

fn args() -> Vec<&'static str> {
    vec![
        "--flush",
        "sync",
        "--segment-size",
        "1M",
        "--max-message-size",
        "64K",
        "--offsets-persist-interval-ms",
        "50",
    ]
}

/// Physical offset encoded in the first 16 hex digits of a message id.
fn physical_offset(msg_id: &str) -> u64 {
    u64::from_str_radix(&msg_id[..16], 16).unwrap()
}

fn cut_log_at(data: &Path, physical: u64) {
    for seg in log_segments(data) {
        let start: u64 = seg.file_name().unwrap().to_str().unwrap().parse().unwrap();
        if start <= physical && physical < start + (1 << 20) {
            let f = OpenOptions::new().write(true).open(&seg).unwrap();
            f.set_len(physical - start).unwrap();
        }
    }
}

async fn consume(consumer: &mut PullConsumer, n: usize) -> Vec<(u64, Vec<u8>)> {
    let mut got = Vec::new();
    while got.len() < n {
        let Some(m) = consumer.recv_timeout(Duration::from_secs(10)).await else {
            break;
        };
        consumer.ack(&m);
        got.push((m.queue_offset(), m.body().to_vec()));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_past_the_recovered_end_is_moved_back_after_a_torn_log() {
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    let logs = tmp.path().join("logs");
    let mut broker = BrokerProcess::start(&data, &logs, &args());
    let admin = Admin::connect(&broker.addr).await.unwrap();
    admin.create_topic(TOPIC, 1).await.unwrap();
    let producer = Producer::connect(&broker.addr, ProducerOptions::default())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..40 {
        let body = format!("old-{i}-{}", "x".repeat(300));
        let r = producer.send(TOPIC, &Message::new(body)).await.unwrap();
        assert_eq!(r.queue_offset, i);
        ids.push(r.msg_id);
    }
    // The group consumes and commits all 40.
    let mut consumer = PullConsumer::connect(
        &broker.addr,
        GROUP,
        &[(TOPIC, "*")],
        ConsumerOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(consume(&mut consumer, 40).await.len(), 40);
    consumer.close().await.unwrap();
    let committed = admin.committed(GROUP, TOPIC, 0).await.unwrap();
    assert_eq!(committed.map(|c| c.offset), Some(40));
    broker.terminate(Duration::from_secs(10));

    // Tear the log in the middle of message 30: 30..40 are gone.
    cut_log_at(&data, physical_offset(&ids[30]) + 10);
    let broker = BrokerProcess::start(&data, &logs, &args());
    let log = broker.log();
    assert!(
        log.contains("commit log recovery"),
        "the broker does not say what it dropped:\n{log}"
    );
    let admin = Admin::connect(&broker.addr).await.unwrap();
    let topic = admin.get_topic(TOPIC).await.unwrap();
    eprintln!("after recovery: {topic:?}");

    // New messages land at 30.. and the group, committed at 40, must get them.
    let producer = Producer::connect(&broker.addr, ProducerOptions::default())
        .await
        .unwrap();
    for i in 0..5 {
        let r = producer
            .send(TOPIC, &Message::new(format!("new-{i}")))
            .await
            .unwrap();
        assert_eq!(r.queue_offset, 30 + i, "valid prefix is not 0..30");
    }
    let mut consumer = PullConsumer::connect(
        &broker.addr,
        GROUP,
        &[(TOPIC, "*")],
        ConsumerOptions::default(),
    )
    .await
    .unwrap();
    let got = consume(&mut consumer, 5).await;
    let want: Vec<(u64, Vec<u8>)> = (0..5)
        .map(|i| (30 + i, format!("new-{i}").into_bytes()))
        .collect();
    assert_eq!(got, want, "consumer past the new end was not moved back");
    consumer.close().await.unwrap();
    // The valid prefix is still served, byte for byte.
    let mut fresh = PullConsumer::connect(
        &broker.addr,
        "torn-fresh",
        &[(TOPIC, "*")],
        ConsumerOptions::default(),
    )
    .await
    .unwrap();
    let all = consume(&mut fresh, 35).await;
    assert_eq!(all.len(), 35);
    for (i, (off, body)) in all.iter().enumerate() {
        assert_eq!(*off, i as u64);
        if i < 30 {
            assert!(body.starts_with(format!("old-{i}-").as_bytes()));
        }
    }
    fresh.close().await.unwrap();
}
