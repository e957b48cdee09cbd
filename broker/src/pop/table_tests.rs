#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

/// Offsets in the one queue the tests use.
const LEN: u64 = 40;

#[derive(Debug, Clone)]
enum Op {
    /// Receive up to n messages; a tag filter leases only offsets not divisible by `skip_every`.
    Receive {
        n: usize,
        skip_every: u64,
    },
    Ack(usize),
    Change {
        handle: usize,
        ms: u64,
    },
    Reject(usize),
    Tick(u64),
    /// Expire what is due; write the copies (ok) or fail to.
    Expire {
        write_ok: bool,
    },
    /// Broker restart: leases are lost, the table reloads from its committed state.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..6, 2u64..7).prop_map(|(n, skip_every)| Op::Receive { n, skip_every }),
        (0usize..64).prop_map(Op::Ack),
        ((0usize..64), 0u64..30).prop_map(|(handle, ms)| Op::Change { handle, ms }),
        (0usize..64).prop_map(Op::Reject),
        (1u64..20).prop_map(Op::Tick),
        any::<bool>().prop_map(|write_ok| Op::Expire { write_ok }),
        Just(Op::Restart),
    ]
}

/// What a user of the broker may rely on, in the plainest form.
#[derive(Default)]
struct Model {
    /// Offsets done for good (acked, rejected, filtered out, copied on expiry).
    done: BTreeSet<u64>,
    /// Offset -> (epoch, deadline) of each live lease.
    leased: BTreeMap<u64, (u64, u64)>,
    /// Ending leases (copy being written).
    ending: BTreeSet<u64>,
}

fn cases() -> u32 {
    std::env::var("FERRO_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Random receives, acks, changes, rejects, expiries and restarts, checked against a
    /// model: a handle is accepted exactly when it names a live lease, no offset is leased
    /// twice at once, the in-flight limit holds, and the committed state is exactly the
    /// done set, so a restart hands out exactly what is not done.
    #[test]
    fn the_lease_table_agrees_with_a_model(ops in proptest::collection::vec(op(), 1..80), max in 1usize..12) {
        let mut t = GroupTable::new(max);
        let mut q = t.queue("t", 0, || None);
        let mut m = Model::default();
        let mut handles: Vec<(u64, u64)> = Vec::new();
        let mut epoch = 0u64;
        let mut now = 1_000u64;
        let next = |epoch: &mut u64| { *epoch += 1; *epoch };
        for op in ops {
            match op {
                Op::Receive { n, skip_every } => {
                    let n = n.min(t.room());
                    let mut offsets = Vec::new();
                    let mut o = t.cursor(q);
                    while offsets.len() < n && o < LEN {
                        if !t.is_skipped(q, o) {
                            prop_assert!(!m.done.contains(&o), "offset {} handed out again after done", o);
                            if o.is_multiple_of(skip_every) {
                                m.done.insert(o);
                            } else {
                                offsets.push(o);
                            }
                        }
                        o += 1;
                    }
                    let epochs: Vec<u64> = offsets.iter().map(|_| next(&mut epoch)).collect();
                    t.grant(q, o, &offsets, &epochs, now + 10);
                    for (o, e) in offsets.iter().zip(&epochs) {
                        prop_assert!(!m.leased.contains_key(o) && !m.ending.contains(o), "offset {} leased twice", o);
                        m.leased.insert(*o, (*e, now + 10));
                        handles.push((*o, *e));
                    }
                }
                Op::Ack(h) => {
                    let Some(&(o, e)) = handles.get(h) else { continue };
                    let live = m.leased.get(&o).is_some_and(|l| l.0 == e);
                    prop_assert_eq!(t.ack(q, o, e).is_ok(), live);
                    if live {
                        m.leased.remove(&o);
                        m.done.insert(o);
                    }
                }
                Op::Change { handle, ms } => {
                    let Some(&(o, e)) = handles.get(handle) else { continue };
                    let live = m.leased.get(&o).is_some_and(|l| l.0 == e);
                    let ne = next(&mut epoch);
                    prop_assert_eq!(t.change(q, o, e, ne, now + ms).is_ok(), live);
                    if live {
                        m.leased.insert(o, (ne, now + ms));
                        handles.push((o, ne));
                    }
                }
                Op::Reject(h) => {
                    let Some(&(o, e)) = handles.get(h) else { continue };
                    let live = m.leased.get(&o).is_some_and(|l| l.0 == e);
                    let ne = next(&mut epoch);
                    prop_assert_eq!(t.begin_end(q, o, e, ne).is_ok(), live);
                    if live {
                        // The dead-letter write succeeds.
                        t.end(q, o);
                        m.leased.remove(&o);
                        m.done.insert(o);
                    }
                }
                Op::Tick(ms) => now += ms,
                Op::Expire { write_ok } => {
                    let ne = next(&mut epoch);
                    let due: BTreeSet<u64> = m.leased.iter().filter(|(_, l)| l.1 <= now).map(|(o, _)| *o).collect();
                    let got: BTreeSet<u64> = t.expire(now, usize::MAX, ne).into_iter().map(|(_, o)| o).collect();
                    prop_assert_eq!(&got, &due);
                    for o in due {
                        m.leased.remove(&o);
                        prop_assert!(t.check(q, o, ne).is_err(), "an ending lease takes no handle");
                        if write_ok {
                            t.end(q, o);
                            m.done.insert(o);
                        } else {
                            let e = next(&mut epoch);
                            t.unend(q, o, e, now + 5);
                            m.leased.insert(o, (e, now + 5));
                        }
                    }
                }
                Op::Restart => {
                    let (floor, ranges) = t.committed(q);
                    t = GroupTable::new(max);
                    q = t.queue("t", 0, || Some((floor, ranges)));
                    m.leased.clear();
                    m.ending.clear();
                    handles.clear();
                }
            }
            prop_assert!(t.in_flight() <= max);
            prop_assert_eq!(t.in_flight(), m.leased.len() + m.ending.len());
            let (floor, ranges) = t.committed(q);
            for o in 0..LEN {
                prop_assert_eq!(ack::is_acked(floor, &ranges, o), m.done.contains(&o), "offset {}", o);
            }
            for (o, (e, _)) in &m.leased {
                prop_assert!(t.check(q, *o, *e).is_ok());
            }
            prop_assert_eq!(t.next_deadline(), m.leased.values().map(|l| l.1).min());
        }
    }
}

#[test]
fn the_committed_state_is_bounded_and_only_forgets_acks() {
    let n = MAX_ACK_RANGES as u64 * 3;
    let mut t = GroupTable::new(usize::MAX);
    let q = t.queue("t", 0, || None);
    let offsets: Vec<u64> = (0..n).collect();
    let epochs: Vec<u64> = (1..=n).collect();
    t.grant(q, n, &offsets, &epochs, 10);
    // Ack every other one: n/2 gaps.
    for o in (0..n).step_by(2) {
        t.ack(q, o, o + 1).unwrap();
    }
    let (floor, ranges) = t.committed(q);
    assert_eq!(floor, 1);
    assert!(ranges.len() <= MAX_ACK_RANGES);
    for o in (1..n).step_by(2) {
        assert!(
            !ack::is_acked(floor, &ranges, o),
            "in flight {o} reads as acked"
        );
    }
}

fn rss_anon_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Memory of the lease table per in-flight lease, measured as the growth of the process's
/// anonymous memory while one table holds a million leases over 8 queues (the figure in
/// BENCHMARKS.md). Run with
/// `cargo test --release -p broker --lib lease_table_memory -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn lease_table_memory_per_in_flight_lease() {
    const LEASES: u64 = 1_024_000;
    let before = rss_anon_kib();
    let mut t = GroupTable::new(usize::MAX);
    let per_queue = LEASES / 8;
    for qid in 0..8 {
        let q = t.queue("orders", qid, || None);
        for chunk in 0..per_queue / 32 {
            let offsets: Vec<u64> = (chunk * 32..chunk * 32 + 32).collect();
            let epochs: Vec<u64> = offsets.iter().map(|o| o + 1).collect();
            t.grant(q, chunk * 32 + 32, &offsets, &epochs, 1_000 + chunk);
        }
    }
    assert_eq!(t.in_flight() as u64, LEASES);
    let after = rss_anon_kib();
    let per_lease = (after - before) as f64 * 1024.0 / LEASES as f64;
    println!(
        "lease table: {LEASES} in-flight leases, {} KiB, {per_lease:.1} bytes per lease",
        after - before
    );
    drop(t);
}
