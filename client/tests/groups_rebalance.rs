//! Three consumers of one group against an in-process broker: they split 8 queues 3/3/2,
//! each receives only from its own queues, and when one dies without leaving, its queues
//! move to the others; every message is consumed and nothing acked is delivered again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use client::{Message, PullConsumer, ReceivedMessage};
use support::{fast_options, TestBroker, PATIENCE};

const TOPIC: &str = "orders";
const GROUP: &str = "shared";
const QUEUES: u32 = 8;
const PER_QUEUE: usize = 40;

/// The queues of `TOPIC` a consumer owns now.
fn owned(c: &PullConsumer) -> BTreeSet<u32> {
    c.assignment()
        .into_iter()
        .filter(|(t, _)| t == TOPIC)
        .map(|(_, q)| q)
        .collect()
}

/// The queues of `TOPIC` per member, as the broker's group info (what `mq group show`
/// prints) reports them.
async fn broker_view(b: &TestBroker) -> BTreeMap<String, BTreeSet<u32>> {
    let info = b.admin().await.group_info(GROUP).await.unwrap();
    info.members
        .into_iter()
        .map(|m| {
            let qs = m
                .assignment
                .iter()
                .filter(|a| a.topic == TOPIC)
                .flat_map(|a| a.queue_ids.iter().copied())
                .collect();
            (m.client_id, qs)
        })
        .collect()
}

/// Waits until the consumers own the queue counts `want` (sorted) between them, covering
/// every queue once, and the broker reports the same split. Returns each one's queues.
async fn settled(b: &TestBroker, cs: &[&PullConsumer], want: &[usize]) -> Vec<BTreeSet<u32>> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mine: Vec<BTreeSet<u32>> = cs.iter().map(|c| owned(c)).collect();
        let mut sizes: Vec<usize> = mine.iter().map(BTreeSet::len).collect();
        sizes.sort_unstable();
        let union: BTreeSet<u32> = mine.iter().flatten().copied().collect();
        let view = broker_view(b).await;
        let agrees = view.len() == cs.len()
            && cs
                .iter()
                .zip(&mine)
                .all(|(c, m)| view.get(c.client_id()) == Some(m));
        if sizes == want && union.len() == QUEUES as usize && agrees {
            return mine;
        }
        assert!(
            Instant::now() < deadline,
            "no stable {want:?} split: consumers {mine:?}, broker {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `PER_QUEUE` messages to every queue; returns their ids per queue.
async fn produce_round(b: &TestBroker, round: usize) -> BTreeMap<u32, Vec<String>> {
    let p = b.producer().await;
    let mut ids: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    // Round robin: one batch per queue.
    for _ in 0..QUEUES {
        let msgs: Vec<Message> = (0..PER_QUEUE)
            .map(|i| Message::new(format!("r{round}-{i}")))
            .collect();
        for r in p.send_batch(TOPIC, &msgs).await.unwrap() {
            ids.entry(r.queue_id).or_default().push(r.msg_id);
        }
    }
    p.close().await;
    assert_eq!(ids.len(), QUEUES as usize, "every queue got a batch");
    ids
}

/// Receives exactly `n` messages.
async fn take(c: &mut PullConsumer, n: usize) -> Vec<ReceivedMessage> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let m = c
            .recv_timeout(PATIENCE)
            .await
            .unwrap_or_else(|| panic!("only {} of {n} messages arrived", out.len()));
        out.push(m);
    }
    out
}

/// Everything that arrives until `quiet` passes without a message.
async fn drain(c: &mut PullConsumer, quiet: Duration) -> Vec<ReceivedMessage> {
    let mut out = Vec::new();
    while let Some(m) = c.recv_timeout(quiet).await {
        out.push(m);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_consumers_share_eight_queues_and_a_dead_ones_move_without_loss() {
    let b = TestBroker::start().await;
    b.admin().await.create_topic(TOPIC, QUEUES).await.unwrap();
    let connect =
        || async { PullConsumer::connect(&b.addr, GROUP, &[(TOPIC, "*")], fast_options()).await };
    let mut x = connect().await.unwrap();
    let mut y = connect().await.unwrap();
    let mut z = connect().await.unwrap();
    let split = settled(&b, &[&x, &y, &z], &[2, 3, 3]).await;

    // Round 1: each consumer gets exactly the messages of its own queues.
    let ids1 = produce_round(&b, 1).await;
    let n = |i: usize| split[i].len() * PER_QUEUE;
    let (got_x, got_y, got_z) =
        tokio::join!(take(&mut x, n(0)), take(&mut y, n(1)), take(&mut z, n(2)));
    let mut delivered: BTreeMap<String, usize> = BTreeMap::new();
    let mut acked: BTreeSet<String> = BTreeSet::new();
    for (i, got) in [&got_x, &got_y, &got_z].into_iter().enumerate() {
        let queues: BTreeSet<u32> = got.iter().map(ReceivedMessage::queue_id).collect();
        assert_eq!(
            queues, split[i],
            "consumer {i} receives from its queues only"
        );
        for m in got {
            *delivered.entry(m.msg_id()).or_default() += 1;
        }
    }
    // x and y ack everything; z, about to die, acks only even offsets.
    for m in got_x.iter().chain(&got_y) {
        acked.insert(m.msg_id());
    }
    for m in &got_x {
        x.ack(m);
    }
    for m in &got_y {
        y.ack(m);
    }
    let mut never_acked = BTreeSet::new();
    for m in &got_z {
        if m.queue_offset() % 2 == 0 {
            z.ack(m);
            acked.insert(m.msg_id());
        } else {
            never_acked.insert(m.msg_id());
        }
    }
    for c in [&x, &y, &z] {
        c.commit().await.unwrap();
    }
    let dead_id = z.client_id().to_string();
    z.abandon();

    // The broker drops the silent member after its session timeout; x and y take 4 each.
    let split2 = settled(&b, &[&x, &y], &[4, 4]).await;
    assert!(!broker_view(&b).await.contains_key(&dead_id));

    // What z never acked comes back, to whoever owns its queues now, and nothing else.
    let deadline = Instant::now() + PATIENCE;
    let mut redelivered = BTreeSet::new();
    while redelivered.len() < never_acked.len() {
        assert!(
            Instant::now() < deadline,
            "redelivered only {redelivered:?}"
        );
        let (rx, ry) = tokio::join!(
            drain(&mut x, Duration::from_millis(200)),
            drain(&mut y, Duration::from_millis(200))
        );
        for (c, got) in [(&x, rx), (&y, ry)] {
            for m in got {
                let id = m.msg_id();
                assert!(
                    never_acked.contains(&id),
                    "{id} at queue {} offset {} was acked, yet delivered again",
                    m.queue_id(),
                    m.queue_offset()
                );
                assert!(redelivered.insert(id.clone()), "{id} redelivered twice");
                *delivered.entry(id.clone()).or_default() += 1;
                c.ack(&m);
                acked.insert(id);
            }
        }
    }

    // Round 2 after the move: each survivor gets exactly the messages of its new queues.
    let ids2 = produce_round(&b, 2).await;
    let n = |i: usize| split2[i].len() * PER_QUEUE;
    let (got_x, got_y) = tokio::join!(take(&mut x, n(0)), take(&mut y, n(1)));
    for (i, (c, got)) in [(&x, got_x), (&y, got_y)].into_iter().enumerate() {
        let queues: BTreeSet<u32> = got.iter().map(ReceivedMessage::queue_id).collect();
        assert_eq!(
            queues, split2[i],
            "survivor {i} receives from its new queues only"
        );
        for m in got {
            assert!(!never_acked.contains(&m.msg_id()));
            *delivered.entry(m.msg_id()).or_default() += 1;
            c.ack(&m);
            acked.insert(m.msg_id());
        }
    }
    let (rx, ry) = tokio::join!(
        drain(&mut x, Duration::from_millis(300)),
        drain(&mut y, Duration::from_millis(300))
    );
    assert!(
        rx.is_empty() && ry.is_empty(),
        "extra deliveries: {rx:?} {ry:?}"
    );
    x.close().await.unwrap();
    y.close().await.unwrap();

    // Every produced message was consumed and acked; only z's unacked ones came twice.
    let produced: BTreeSet<String> = ids1
        .into_values()
        .chain(ids2.into_values())
        .flatten()
        .collect();
    assert_eq!(produced.len(), 2 * QUEUES as usize * PER_QUEUE);
    assert_eq!(acked, produced);
    for (id, times) in &delivered {
        let expected = if never_acked.contains(id) { 2 } else { 1 };
        assert_eq!(*times, expected, "{id} delivered {times} times");
    }
    let info = b.admin().await.group_info(GROUP).await.unwrap();
    let lag: u64 = info
        .queues
        .iter()
        .filter(|q| q.topic == TOPIC)
        .map(|q| q.lag)
        .sum();
    assert_eq!(lag, 0, "{info:?}");
    b.shutdown().await;
}
