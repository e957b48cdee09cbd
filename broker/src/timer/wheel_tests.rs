//! The wheel against a model: a sorted list of (due, queue offset), with random adds,
//! recalls, clock steps, checkpoint saves and crashes (the wheel dropped unsaved, then
//! reopened and fed again from its indexed offset, as the service does from the log).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

const T0: u64 = 1_700_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    Add(u64),
    Recall(usize),
    Tick(u64),
    Save,
    /// A save begun (the service then waits for the flusher) ...
    BeginSave,
    /// ... and written, with ticks and recalls possibly in between.
    FinishSave,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..4_000).prop_map(Op::Add),
        2 => any::<usize>().prop_map(Op::Recall),
        3 => (0u64..1_500).prop_map(Op::Tick),
        1 => Just(Op::Save),
        1 => Just(Op::BeginSave),
        1 => Just(Op::FinishSave),
        1 => Just(Op::Crash),
    ]
}

fn entry(q: u64, due_ms: u64) -> Entry {
    Entry {
        due_ms,
        queue_offset: q,
        physical: q * 100,
        size: 100,
        topic_id: 0,
        kind: Kind::Timer,
    }
}

struct Model {
    /// Every timer ever added, by queue offset: its due time (the "commit log").
    log: BTreeMap<u64, u64>,
    recalled: BTreeSet<u64>,
    delivered: BTreeSet<u64>,
    /// Delivered before the last crash: may come again.
    may_repeat: BTreeSet<u64>,
    now: u64,
}

fn drain(wheel: &mut Wheel, m: &mut Model) {
    loop {
        let due = wheel.take_due(m.now, 7).unwrap();
        if due.is_empty() {
            return;
        }
        for e in &due {
            assert!(e.due_ms <= m.now, "delivered early: {e:?} at {}", m.now);
            assert!(
                !m.recalled.contains(&e.queue_offset),
                "recalled yet delivered"
            );
            let again = !m.delivered.insert(e.queue_offset);
            assert!(
                !again || m.may_repeat.remove(&e.queue_offset),
                "delivered twice without a crash: {e:?}"
            );
        }
        wheel.delivered(&due);
    }
}

fn reopen(dir: &Path, m: &Model) -> Wheel {
    let mut wheel = Wheel::open(dir, m.now).unwrap();
    let from = wheel.indexed_next();
    let again: Vec<Entry> = m.log.range(from..).map(|(q, d)| entry(*q, *d)).collect();
    let next = m.log.keys().next_back().map_or(0, |q| q + 1);
    wheel.add(&again, next.max(from)).unwrap();
    wheel
}

fn run(ops: &[Op]) {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Model {
        log: BTreeMap::new(),
        recalled: BTreeSet::new(),
        delivered: BTreeSet::new(),
        may_repeat: BTreeSet::new(),
        now: T0,
    };
    let mut wheel = Wheel::open(dir.path(), m.now).unwrap();
    assert_eq!(wheel.topic_id("t").unwrap(), 0);
    let mut saving: Option<SaveSnapshot> = None;
    for op in ops {
        match op {
            Op::Add(delay) => {
                let q = m.log.len() as u64;
                m.log.insert(q, m.now + delay);
                wheel.add(&[entry(q, m.now + delay)], q + 1).unwrap();
            }
            Op::Recall(i) if !m.log.is_empty() => {
                let q = (*i % m.log.len()) as u64;
                let due = m.log[&q];
                let got = wheel.recall(q, due).unwrap();
                let expect_delivered = m.delivered.contains(&q);
                match got {
                    Some(RecallOutcome::Recalled) => {
                        assert!(!m.recalled.contains(&q), "recalled twice");
                        assert!(!expect_delivered || m.may_repeat.contains(&q));
                        m.recalled.insert(q);
                    }
                    Some(RecallOutcome::AlreadyRecalled) => assert!(m.recalled.contains(&q)),
                    Some(RecallOutcome::AlreadyDelivered) => {
                        assert!(expect_delivered || m.recalled.contains(&q), "q={q}");
                    }
                    None => panic!("an indexed timer was not found"),
                }
            }
            Op::Recall(_) => {}
            Op::Tick(ms) => {
                m.now += ms;
                drain(&mut wheel, &mut m);
            }
            Op::Save | Op::FinishSave => {
                if let Some(snapshot) = saving.take() {
                    wheel.finish_save(snapshot).unwrap();
                } else if matches!(op, Op::Save) {
                    wheel.save(|| Ok(())).unwrap();
                }
            }
            Op::BeginSave => {
                if saving.is_none() {
                    saving = wheel.begin_save();
                }
            }
            Op::Crash => {
                saving = None;
                drop(wheel);
                m.may_repeat = m.delivered.clone();
                wheel = reopen(dir.path(), &m);
            }
        }
    }
    // Long after every due time, each timer not recalled was delivered.
    m.now += 10_000;
    drain(&mut wheel, &mut m);
    for q in m.log.keys() {
        assert!(
            m.recalled.contains(q) || m.delivered.contains(q),
            "timer {q} lost"
        );
    }
    assert!(wheel.next_due_ms().is_none());
}

fn cases() -> u32 {
    std::env::var("FERRO_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn the_wheel_delivers_like_a_sorted_list(ops in proptest::collection::vec(op(), 1..80)) {
        run(&ops);
    }
}

#[test]
fn timers_come_out_in_due_order_and_memory_holds_one_second() {
    let dir = tempfile::tempdir().unwrap();
    let mut wheel = Wheel::open(dir.path(), T0).unwrap();
    let dues = [2_500u64, 300, 2_400, 9_000, 301];
    let entries: Vec<Entry> = dues
        .iter()
        .enumerate()
        .map(|(q, d)| entry(q as u64, T0 + d))
        .collect();
    wheel.add(&entries, 5).unwrap();
    let mut got = Vec::new();
    for now in (T0..T0 + 10_000).step_by(50) {
        for e in wheel.take_due(now, 100).unwrap() {
            assert!(e.due_ms <= now);
            got.push(e.due_ms - T0);
            wheel.delivered(&[e]);
        }
        let loaded = wheel.current.as_ref().map_or(0, |c| c.pending.len());
        assert!(loaded <= 2, "more than one second in memory");
    }
    assert_eq!(got, vec![300, 301, 2_400, 2_500, 9_000]);
}

#[test]
fn pending_counts_survive_a_reopen_and_recalls_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut wheel = Wheel::open(dir.path(), T0).unwrap();
    let a = wheel.topic_id("a").unwrap();
    let b = wheel.topic_id("b").unwrap();
    let mut e0 = entry(0, T0 + 5_000);
    e0.topic_id = a;
    let mut e1 = entry(1, T0 + 6_000);
    e1.topic_id = b;
    let mut e2 = entry(2, T0 + 7_000);
    e2.topic_id = b;
    wheel.add(&[e0, e1, e2], 3).unwrap();
    assert_eq!(
        wheel.recall(1, T0 + 6_000).unwrap(),
        Some(RecallOutcome::Recalled)
    );
    wheel.save(|| Ok(())).unwrap();
    drop(wheel);
    let mut wheel = Wheel::open(dir.path(), T0 + 100).unwrap();
    assert_eq!(wheel.pending_of("a"), 1);
    assert_eq!(wheel.pending_of("b"), 1);
    assert_eq!(
        wheel.recall(1, T0 + 6_000).unwrap(),
        Some(RecallOutcome::AlreadyRecalled)
    );
    let due = wheel.take_due(T0 + 8_000, 10).unwrap();
    let qs: Vec<u64> = due.iter().map(|e| e.queue_offset).collect();
    assert_eq!(qs, vec![0]);
}
