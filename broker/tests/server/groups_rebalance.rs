//! The coordinator and consumer offsets together, as the server drives them: members
//! consume their queues out of order, commit exact acks, one dies, its queues move, and the
//! new owners resume from the commits. Nothing is skipped; only unacked (or acked but
//! uncommitted) messages are delivered twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use broker::groups::{ack, ConsumerOffsets, ContiguousEvenSplit, GroupCoordinator};
use protocol::messages::{HeartbeatRequest, OffsetRange, QueueCommit, Subscription};

const TOPIC: &str = "orders";
const QUEUES: u32 = 8;
const PER_QUEUE: u64 = 200;
const TIMEOUT_MS: u64 = 1_000;

fn queue_count(topic: &str) -> Option<u32> {
    (topic == TOPIC).then_some(QUEUES)
}

fn heartbeat(c: &GroupCoordinator, client: &str, now_ms: u64) -> Vec<u32> {
    let resp = c.heartbeat(
        &HeartbeatRequest {
            group: "g".into(),
            client_id: client.into(),
            subscriptions: vec![Subscription {
                topic: TOPIC.into(),
                tag_expr: "*".into(),
            }],
            max_reconsume_times: None,
            held: Vec::new(),
        },
        &queue_count,
        now_ms,
    );
    resp.assignment
        .into_iter()
        .find(|a| a.topic == TOPIC)
        .map(|a| a.queue_ids)
        .unwrap_or_default()
}

/// Acked offsets to ranges (what a client sends).
fn ranges(acked: &BTreeSet<u64>) -> Vec<OffsetRange> {
    let mut out: Vec<OffsetRange> = Vec::new();
    for &o in acked {
        match out.last_mut() {
            Some(r) if r.end == o => r.end = o + 1,
            _ => out.push(OffsetRange {
                start: o,
                end: o + 1,
            }),
        }
    }
    out
}

/// What a new owner must deliver on a queue: everything the commit does not cover.
fn pending(offsets: &ConsumerOffsets, queue_id: u32) -> Vec<u64> {
    let (offset, acked) = offsets
        .get("g", TOPIC, queue_id)
        .map_or((0, Vec::new()), |c| (c.offset, c.acked_above));
    (0..PER_QUEUE)
        .filter(|o| !ack::is_acked(offset, &acked, *o))
        .collect()
}

#[test]
fn a_member_dies_its_queues_move_and_nothing_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let offsets = ConsumerOffsets::open(dir.path()).unwrap();
    let c = GroupCoordinator::new(TIMEOUT_MS, Box::new(ContiguousEvenSplit));
    let mut owned: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for id in ["c1", "c2", "c3"] {
        heartbeat(&c, id, 0);
    }
    for id in ["c1", "c2", "c3"] {
        owned.insert(id, heartbeat(&c, id, 10));
    }
    assert_eq!(owned["c1"], vec![0, 1, 2]);
    assert_eq!(owned["c3"], vec![6, 7]);

    // Everyone processes its queues out of order: every offset except multiples of 7.
    // c1 and c3 commit; c2 acks in memory but dies before committing its last batch.
    let mut processed: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for (id, queues) in &owned {
        for &q in queues {
            let acked: BTreeSet<u64> = (0..PER_QUEUE).rev().filter(|o| o % 7 != 3).collect();
            let committed: BTreeSet<u64> = if *id == "c2" {
                acked.iter().copied().filter(|o| *o < 100).collect()
            } else {
                acked.clone()
            };
            processed.insert(q, acked);
            offsets
                .commit(
                    "g",
                    &[QueueCommit {
                        topic: TOPIC.into(),
                        queue_id: q,
                        offset: 0,
                        acked_above: ranges(&committed),
                    }],
                )
                .unwrap();
        }
    }
    offsets.persist().unwrap();

    // c2 goes silent; the others keep heartbeating until it expires.
    for now in [500, 1_000, 1_500] {
        heartbeat(&c, "c1", now);
        heartbeat(&c, "c3", now);
    }
    assert_eq!(c.members("g").len(), 2);
    let c1 = heartbeat(&c, "c1", 1_600);
    let c3 = heartbeat(&c, "c3", 1_600);
    assert_eq!(c1, vec![0, 1, 2, 3]);
    assert_eq!(c3, vec![4, 5, 6, 7]);

    // The broker restarts too: the new owners read the persisted commits.
    drop(offsets);
    let offsets = ConsumerOffsets::open(dir.path()).unwrap();
    for q in 0..QUEUES {
        let redelivered = pending(&offsets, q);
        // No message skipped: every unprocessed one is pending.
        for o in 0..PER_QUEUE {
            if !processed[&q].contains(&o) {
                assert!(redelivered.contains(&o), "queue {q} offset {o} skipped");
            }
        }
        // Exactly the unacked ones come again on queues whose owner committed; on c2's
        // queues also what it acked after its last commit.
        let expected: Vec<u64> = if [3, 4, 5].contains(&q) {
            (0..PER_QUEUE).filter(|o| o % 7 == 3 || *o >= 100).collect()
        } else {
            (0..PER_QUEUE).filter(|o| o % 7 == 3).collect()
        };
        assert_eq!(redelivered, expected, "queue {q}");
    }
}

#[test]
fn acked_all_but_ten_the_next_consumer_gets_ten_only() {
    let dir = tempfile::tempdir().unwrap();
    let offsets = ConsumerOffsets::open(dir.path()).unwrap();
    let acked: BTreeSet<u64> = (0..1000).filter(|o| *o != 10).collect();
    offsets
        .commit(
            "g",
            &[QueueCommit {
                topic: TOPIC.into(),
                queue_id: 0,
                offset: 0,
                acked_above: ranges(&acked),
            }],
        )
        .unwrap();
    offsets.persist().unwrap();
    drop(offsets);
    let offsets = ConsumerOffsets::open(dir.path()).unwrap();
    let c = offsets.get("g", TOPIC, 0).unwrap();
    let redelivered: Vec<u64> = (0..1000)
        .filter(|o| !ack::is_acked(c.offset, &c.acked_above, *o))
        .collect();
    assert_eq!(redelivered, vec![10]);
}
