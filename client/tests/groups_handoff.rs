//! Queue handoff between members of a group: a queue moves to its new owner only after the
//! old owner committed what it acked on it, so acked messages are never delivered twice,
//! even when the old owner had not committed them yet, and nothing is lost.
//!
//! Messages an owner received but never acked go to the new owner; that is the only
//! redelivery allowed.
//!
//! The tests run on a current-thread runtime: a message received and acked without an
//! await in between cannot have its queue revoked in between, so every delivery counted
//! here was acked, and any second delivery would be a real duplicate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use client::{ConsumerOptions, Message, PullConsumer, ReceivedMessage};
use support::{fast_options, TestBroker, PATIENCE};

const GROUP: &str = "handoff";
const QUEUES: u32 = 4;

/// Consumer options that never commit on their own during a test: only a lost queue, or
/// close, commits.
fn lazy_committer() -> ConsumerOptions {
    ConsumerOptions {
        commit_interval: Duration::from_secs(600),
        commit_every_acks: usize::MAX,
        ..fast_options()
    }
}

/// Creates `topic` and sends `n` distinct messages spread over its queues; returns their
/// ids.
async fn fill(b: &TestBroker, topic: &str, n: usize) -> BTreeSet<String> {
    b.admin().await.create_topic(topic, QUEUES).await.unwrap();
    let p = b.producer().await;
    let msgs: Vec<Message> = (0..n).map(|i| Message::new(format!("m{i}"))).collect();
    let mut ids = BTreeSet::new();
    let mut queues = BTreeSet::new();
    // Small batches: each goes to the next queue.
    for chunk in msgs.chunks(5) {
        for r in p.send_batch(topic, chunk).await.unwrap() {
            queues.insert(r.queue_id);
            assert!(ids.insert(r.msg_id));
        }
    }
    p.close().await;
    assert_eq!(queues.len(), QUEUES as usize, "every queue has messages");
    ids
}

/// The queues of `topic` a consumer owns now.
fn owned(c: &PullConsumer, topic: &str) -> usize {
    c.assignment().iter().filter(|(t, _)| t == topic).count()
}

/// Receives and acks messages from both consumers until every id in `want` was seen
/// and nothing more arrives for a while; counts deliveries per id.
async fn drain_both(
    a: &mut PullConsumer,
    b: &mut PullConsumer,
    want: &BTreeSet<String>,
    delivered: &mut BTreeMap<String, usize>,
) {
    let deadline = Instant::now() + PATIENCE;
    let mut quiet_since = Instant::now();
    loop {
        let all_seen = want.iter().all(|id| delivered.contains_key(id));
        if all_seen && quiet_since.elapsed() > Duration::from_millis(500) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {} messages arrived",
            want.iter().filter(|id| delivered.contains_key(*id)).count(),
            want.len()
        );
        let got = tokio::select! {
            m = a.recv_timeout(Duration::from_millis(50)) => m.inspect(|m| a.ack(m)),
            m = b.recv_timeout(Duration::from_millis(50)) => m.inspect(|m| b.ack(m)),
        };
        if let Some(m) = got {
            *delivered.entry(m.msg_id()).or_default() += 1;
            quiet_since = Instant::now();
        }
    }
}

fn assert_exactly_once(delivered: &BTreeMap<String, usize>, produced: &BTreeSet<String>) {
    let twice: Vec<_> = delivered.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let ids: BTreeSet<String> = delivered.keys().cloned().collect();
    assert_eq!(&ids, produced, "every message, and only those, delivered");
}

#[tokio::test]
async fn acked_but_uncommitted_messages_are_not_delivered_again_when_a_second_member_joins() {
    const TOPIC: &str = "handoff-join";
    const ACKED_BELOW: u64 = 15;
    let broker = TestBroker::start().await;
    let produced = fill(&broker, TOPIC, 120).await;

    let mut a = PullConsumer::connect(&broker.addr, GROUP, &[(TOPIC, "*")], lazy_committer())
        .await
        .unwrap();
    assert_eq!(owned(&a, TOPIC), QUEUES as usize);
    // A receives everything and acks the first half of every queue, committing nothing.
    let mut first: Vec<ReceivedMessage> = Vec::new();
    let mut acked_by_a = BTreeSet::new();
    let mut kept = Vec::new();
    while first.len() < produced.len() {
        let m = a.recv_timeout(PATIENCE).await.expect("a message for a");
        if m.queue_offset() < ACKED_BELOW {
            a.ack(&m);
            acked_by_a.insert(m.msg_id());
        } else {
            kept.push(m.clone());
        }
        first.push(m);
    }
    assert_eq!(acked_by_a.len(), QUEUES as usize * ACKED_BELOW as usize);

    // B joins; A does not receive meanwhile, its heartbeats hand two queues over.
    let mut b = PullConsumer::connect(&broker.addr, GROUP, &[(TOPIC, "*")], lazy_committer())
        .await
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while !(owned(&a, TOPIC) == 2 && owned(&b, TOPIC) == 2) {
        assert!(
            Instant::now() < deadline,
            "no 2/2 split: a {:?}, b {:?}",
            a.assignment(),
            b.assignment()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let moved: BTreeSet<u32> = b.assignment().into_iter().map(|(_, q)| q).collect();

    // A acks the rest of what it still owns; the rest of the moved queues goes to B.
    let mut delivered: BTreeMap<String, usize> = BTreeMap::new();
    for m in &kept {
        if !moved.contains(&m.queue_id()) {
            a.ack(m);
            delivered.insert(m.msg_id(), 1);
        }
    }
    for id in &acked_by_a {
        delivered.insert(id.clone(), 1);
    }
    let expect_from_b: BTreeSet<String> = kept
        .iter()
        .filter(|m| moved.contains(&m.queue_id()))
        .map(ReceivedMessage::msg_id)
        .collect();
    let mut later: BTreeMap<String, usize> = BTreeMap::new();
    drain_both(&mut a, &mut b, &expect_from_b, &mut later).await;
    for id in later.keys() {
        assert!(
            !acked_by_a.contains(id),
            "{id} was acked by a, yet delivered again after the handoff"
        );
    }
    assert_eq!(
        later.keys().cloned().collect::<BTreeSet<_>>(),
        expect_from_b,
        "after the handoff: exactly what a received on the moved queues but never acked"
    );
    for (id, n) in later {
        *delivered.entry(id).or_default() += n;
    }
    assert_exactly_once(&delivered, &produced);
    a.close().await.unwrap();
    b.close().await.unwrap();
    broker.shutdown().await;
}

#[tokio::test]
async fn two_members_started_together_get_each_message_once() {
    const TOPIC: &str = "handoff-together";
    let broker = TestBroker::start().await;
    let produced = fill(&broker, TOPIC, 200).await;

    let connect = || PullConsumer::connect(&broker.addr, GROUP, &[(TOPIC, "*")], lazy_committer());
    let (a, b) = tokio::join!(connect(), connect());
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    let mut delivered: BTreeMap<String, usize> = BTreeMap::new();
    drain_both(&mut a, &mut b, &produced, &mut delivered).await;
    assert_exactly_once(&delivered, &produced);
    // By now the queues are split between them.
    let deadline = Instant::now() + PATIENCE;
    while !(owned(&a, TOPIC) == 2 && owned(&b, TOPIC) == 2) {
        assert!(Instant::now() < deadline, "no 2/2 split");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.close().await.unwrap();
    b.close().await.unwrap();
    broker.shutdown().await;
}
