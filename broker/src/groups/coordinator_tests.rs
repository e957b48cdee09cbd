#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use protocol::messages::Subscription;

use super::*;

const TIMEOUT: u64 = 1_000;

fn coordinator() -> GroupCoordinator {
    GroupCoordinator::new(TIMEOUT, Box::new(ContiguousEvenSplit))
}

fn req(group: &str, client: &str, topics: &[&str]) -> HeartbeatRequest {
    HeartbeatRequest {
        group: group.into(),
        client_id: client.into(),
        subscriptions: topics
            .iter()
            .map(|t| Subscription {
                topic: (*t).into(),
                tag_expr: "*".into(),
            })
            .collect(),
        max_reconsume_times: None,
        held: Vec::new(),
    }
}

/// A heartbeat reporting that `client` holds `held` (topic, queues).
fn holding(client: &str, held: &[(&str, Vec<u32>)]) -> HeartbeatRequest {
    HeartbeatRequest {
        held: held
            .iter()
            .map(|(t, q)| QueueAssignment {
                topic: (*t).into(),
                queue_ids: q.clone(),
            })
            .collect(),
        ..req("g", client, &["orders"])
    }
}

fn eight_queues(topic: &str) -> Option<u32> {
    match topic {
        "orders" => Some(8),
        "%RETRY%g" => Some(1),
        "audit" => Some(2),
        _ => None,
    }
}

fn queues_of(resp: &HeartbeatResponse, topic: &str) -> Vec<u32> {
    resp.assignment
        .iter()
        .find(|a| a.topic == topic)
        .map(|a| a.queue_ids.clone())
        .unwrap_or_default()
}

fn all_owned(c: &GroupCoordinator, group: &str, topic: &str) -> BTreeMap<String, Vec<u32>> {
    c.members(group)
        .into_iter()
        .map(|m| {
            let q = m
                .assignment
                .iter()
                .find(|a| a.topic == topic)
                .map(|a| a.queue_ids.clone())
                .unwrap_or_default();
            (m.client_id, q)
        })
        .collect()
}

#[test]
fn three_members_share_eight_queues_evenly() {
    let c = coordinator();
    for id in ["c3", "c1", "c2"] {
        c.heartbeat(&req("g", id, &["orders"]), &eight_queues, 0);
    }
    let owned = all_owned(&c, "g", "orders");
    assert_eq!(owned["c1"], vec![0, 1, 2]);
    assert_eq!(owned["c2"], vec![3, 4, 5]);
    assert_eq!(owned["c3"], vec![6, 7]);
    // The retry topic is subscribed implicitly; its one queue goes to the first member.
    let retry = all_owned(&c, "g", "%RETRY%g");
    assert_eq!(retry["c1"], vec![0]);
    assert!(retry["c2"].is_empty() && retry["c3"].is_empty());
    // A heartbeat returns the member's own assignment, once c3, which held every queue
    // since it joined first, has heartbeated again and so released the others'.
    c.heartbeat(&req("g", "c3", &["orders"]), &eight_queues, 5);
    let r = c.heartbeat(&req("g", "c2", &["orders"]), &eight_queues, 10);
    assert_eq!(queues_of(&r, "orders"), vec![3, 4, 5]);
    assert_eq!(r.session_timeout_ms, TIMEOUT);
}

#[test]
fn join_order_does_not_change_the_split() {
    let a = coordinator();
    let b = coordinator();
    for id in ["x", "y", "z"] {
        a.heartbeat(&req("g", id, &["orders"]), &eight_queues, 0);
    }
    for id in ["z", "x", "y"] {
        b.heartbeat(&req("g", id, &["orders"]), &eight_queues, 0);
    }
    assert_eq!(a.members("g"), b.members("g"));
}

#[test]
fn a_silent_member_expires_and_its_queues_move() {
    let c = coordinator();
    for id in ["c1", "c2", "c3"] {
        c.heartbeat(&req("g", id, &["orders"]), &eight_queues, 0);
    }
    let gen_before = c.generation("g").unwrap();
    // c1 and c3 keep heartbeating; c2 goes silent.
    c.heartbeat(&req("g", "c1", &["orders"]), &eight_queues, 900);
    c.heartbeat(&req("g", "c3", &["orders"]), &eight_queues, 900);
    assert_eq!(c.generation("g"), Some(gen_before), "nothing changed yet");
    // Exactly at the timeout the member is still alive.
    assert!(c.expire(TIMEOUT).is_empty());
    let dropped = c.expire(TIMEOUT + 1);
    assert_eq!(dropped, vec![("g".to_string(), "c2".to_string())]);
    assert!(c.generation("g").unwrap() > gen_before);
    let owned = all_owned(&c, "g", "orders");
    assert_eq!(owned.len(), 2);
    assert_eq!(owned["c1"], vec![0, 1, 2, 3]);
    assert_eq!(owned["c3"], vec![4, 5, 6, 7]);
}

#[test]
fn a_heartbeat_drops_silent_peers_without_expire() {
    let c = coordinator();
    c.heartbeat(&req("g", "a", &["orders"]), &eight_queues, 0);
    c.heartbeat(&req("g", "b", &["orders"]), &eight_queues, 0);
    let r = c.heartbeat(&req("g", "a", &["orders"]), &eight_queues, 5_000);
    assert_eq!(queues_of(&r, "orders"), (0..8).collect::<Vec<_>>());
    assert_eq!(c.members("g").len(), 1);
}

#[test]
fn leave_drops_at_once_and_the_last_one_removes_the_group() {
    let c = coordinator();
    c.heartbeat(&req("g", "a", &["orders"]), &eight_queues, 0);
    c.heartbeat(&req("g", "b", &["orders"]), &eight_queues, 0);
    assert!(c.leave("g", "a"));
    assert!(!c.leave("g", "a"), "second leave is a no-op");
    assert_eq!(
        all_owned(&c, "g", "orders")["b"],
        (0..8).collect::<Vec<_>>()
    );
    assert!(c.has_live_members("g"));
    assert!(c.leave("g", "b"));
    assert!(!c.has_live_members("g"));
    assert!(c.members("g").is_empty());
    assert!(!c.leave("nope", "b"));
}

#[test]
fn generation_changes_only_when_the_assignment_inputs_change() {
    let c = coordinator();
    let g1 = c
        .heartbeat(&req("g", "a", &["orders"]), &eight_queues, 0)
        .generation;
    let g2 = c
        .heartbeat(&req("g", "a", &["orders"]), &eight_queues, 100)
        .generation;
    assert_eq!(g1, g2);
    // A new subscription changes it.
    let g3 = c
        .heartbeat(&req("g", "a", &["orders", "audit"]), &eight_queues, 200)
        .generation;
    assert!(g3 > g2);
    // A topic growing changes it.
    let grown = |t: &str| {
        if t == "orders" {
            Some(12)
        } else {
            eight_queues(t)
        }
    };
    let r = c.heartbeat(&req("g", "a", &["orders", "audit"]), &grown, 300);
    assert!(r.generation > g3);
    assert_eq!(queues_of(&r, "orders").len(), 12);
    // Generations are never reused, even by a group that empties and returns.
    c.leave("g", "a");
    let again = c.heartbeat(&req("g", "a", &["orders"]), &eight_queues, 400);
    assert!(again.generation > r.generation);
}

#[test]
fn members_only_get_queues_of_topics_they_subscribe() {
    let c = coordinator();
    c.heartbeat(&req("g", "a", &["orders", "audit"]), &eight_queues, 0);
    c.heartbeat(&req("g", "b", &["orders"]), &eight_queues, 0);
    let audit = all_owned(&c, "g", "audit");
    assert_eq!(audit["a"], vec![0, 1]);
    assert!(audit["b"].is_empty());
    let orders = all_owned(&c, "g", "orders");
    assert_eq!(orders["a"], vec![0, 1, 2, 3]);
    assert_eq!(orders["b"], vec![4, 5, 6, 7]);
}

#[test]
fn missing_topics_are_left_out_until_they_exist() {
    let c = coordinator();
    let none = |_: &str| None;
    let r = c.heartbeat(&req("g", "a", &["later"]), &none, 0);
    assert!(r.assignment.is_empty());
    let now = |t: &str| (t == "later").then_some(3);
    let r2 = c.heartbeat(&req("g", "a", &["later"]), &now, 100);
    assert!(r2.generation > r.generation);
    assert_eq!(queues_of(&r2, "later"), vec![0, 1, 2]);
}

#[test]
fn groups_are_independent() {
    let c = coordinator();
    c.heartbeat(&req("g", "a", &["orders"]), &eight_queues, 0);
    c.heartbeat(&req("h", "a", &["orders"]), &eight_queues, 0);
    c.heartbeat(&req("h", "b", &["orders"]), &eight_queues, 0);
    assert_eq!(all_owned(&c, "g", "orders")["a"].len(), 8);
    assert_eq!(all_owned(&c, "h", "orders")["a"].len(), 4);
    assert_eq!(c.groups(), vec!["g".to_string(), "h".to_string()]);
}

/// A strategy that hands every queue to everyone and invents queue ids.
#[derive(Debug)]
struct Greedy;

impl AssignmentStrategy for Greedy {
    fn name(&self) -> &'static str {
        "greedy"
    }
    fn assign(&self, _: &str, members: &[&str], queue_ids: &[u32]) -> Vec<Vec<u32>> {
        members
            .iter()
            .map(|_| queue_ids.iter().copied().chain([999]).collect())
            .collect()
    }
}

#[test]
fn a_faulty_strategy_never_gives_a_queue_to_two_members() {
    let c = GroupCoordinator::new(TIMEOUT, Box::new(Greedy));
    c.heartbeat(&req("g", "a", &["audit"]), &eight_queues, 0);
    c.heartbeat(&req("g", "b", &["audit"]), &eight_queues, 0);
    let audit = all_owned(&c, "g", "audit");
    assert_eq!(audit["a"], vec![0, 1]);
    assert!(audit["b"].is_empty());
    assert_eq!(c.strategy_name(), "greedy");
}

mod model {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Member, subscribes to "audit" too, time step.
        Heartbeat(usize, bool, u64),
        Leave(usize),
        Expire(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0usize..5, any::<bool>(), 0u64..700).prop_map(|(m, a, dt)| Op::Heartbeat(m, a, dt)),
            1 => (0usize..5).prop_map(Op::Leave),
            1 => (0u64..1_500).prop_map(Op::Expire),
        ]
    }

    fn cases() -> u32 {
        std::env::var("FERRO_PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        /// Against a model of who is alive: after every step each queue of each topic
        /// belongs to exactly one live subscriber, loads differ by at most one, and the
        /// generation moves whenever an assignment does.
        #[test]
        fn assignment_always_covers_every_queue_once(ops in proptest::collection::vec(op(), 1..60)) {
            let c = coordinator();
            let mut now = 0u64;
            // member -> (last heartbeat, subscribes audit)
            let mut alive: BTreeMap<String, (u64, bool)> = BTreeMap::new();
            let mut last_members = c.members("g");
            let mut last_gen = 0u64;
            for op in ops {
                match op {
                    Op::Heartbeat(m, audit, dt) => {
                        now += dt;
                        alive.retain(|_, (seen, _)| now - *seen <= TIMEOUT);
                        let topics: &[&str] = if audit { &["orders", "audit"] } else { &["orders"] };
                        c.heartbeat(&req("g", &format!("m{m}"), topics), &eight_queues, now);
                        alive.insert(format!("m{m}"), (now, audit));
                    }
                    Op::Leave(m) => {
                        prop_assert_eq!(c.leave("g", &format!("m{m}")), alive.remove(&format!("m{m}")).is_some());
                    }
                    Op::Expire(dt) => {
                        now += dt;
                        c.expire(now);
                        alive.retain(|_, (seen, _)| now - *seen <= TIMEOUT);
                    }
                }
                let members = c.members("g");
                let ids: BTreeSet<String> = members.iter().map(|m| m.client_id.clone()).collect();
                prop_assert_eq!(&ids, &alive.keys().cloned().collect::<BTreeSet<_>>());
                for (topic, count) in [("orders", 8u32), ("audit", 2), ("%RETRY%g", 1)] {
                    let subscribers: BTreeSet<&String> = alive
                        .iter()
                        .filter(|(_, (_, audit))| topic != "audit" || *audit)
                        .map(|(id, _)| id)
                        .collect();
                    let mut seen = BTreeSet::new();
                    let mut loads = Vec::new();
                    for m in &members {
                        let q = m.assignment.iter().find(|a| a.topic == topic).map(|a| a.queue_ids.clone()).unwrap_or_default();
                        if !subscribers.contains(&m.client_id) {
                            prop_assert!(q.is_empty(), "{} owns {} without subscribing", m.client_id, topic);
                            continue;
                        }
                        loads.push(q.len());
                        for x in q {
                            prop_assert!(seen.insert(x), "queue {}/{} owned twice", topic, x);
                        }
                    }
                    if !subscribers.is_empty() {
                        prop_assert_eq!(seen, (0..count).collect::<BTreeSet<_>>());
                        let (lo, hi) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
                        prop_assert!(hi - lo <= 1);
                    }
                }
                let gen = c.generation("g").unwrap_or(last_gen);
                prop_assert!(gen >= last_gen);
                if members != last_members && !members.is_empty() {
                    prop_assert!(gen > last_gen, "assignment changed without a new generation");
                }
                last_members = members;
                last_gen = gen;
            }
        }
    }
}

#[test]
fn a_queue_is_granted_only_once_its_old_owner_releases_it() {
    let c = coordinator();
    let all: Vec<u32> = (0..8).collect();
    let a = c.heartbeat(&holding("a", &[]), &eight_queues, 0);
    assert_eq!(queues_of(&a, "orders"), all);
    assert_eq!(a.pending_queues, 0);
    // b joins: its target is 4..8, but a holds them (granted in its last reply).
    let b = c.heartbeat(&holding("b", &[]), &eight_queues, 10);
    assert!(queues_of(&b, "orders").is_empty());
    assert_eq!(b.pending_queues, 4);
    assert_eq!(
        all_owned(&c, "g", "orders")["b"],
        vec![4, 5, 6, 7],
        "target"
    );
    // a learns it lost 4..8 but still reports holding them (not committed yet).
    let held_all = [("orders", all.clone()), ("%RETRY%g", vec![0])];
    let a = c.heartbeat(&holding("a", &held_all), &eight_queues, 20);
    assert_eq!(queues_of(&a, "orders"), vec![0, 1, 2, 3]);
    let b = c.heartbeat(&holding("b", &[]), &eight_queues, 30);
    assert!(queues_of(&b, "orders").is_empty(), "still held by a");
    assert_eq!(b.pending_queues, 4);
    // a committed and dropped 4..8 and says so: b gets them.
    let held_half = [("orders", vec![0, 1, 2, 3]), ("%RETRY%g", vec![0])];
    c.heartbeat(&holding("a", &held_half), &eight_queues, 40);
    let b = c.heartbeat(&holding("b", &[]), &eight_queues, 50);
    assert_eq!(queues_of(&b, "orders"), vec![4, 5, 6, 7]);
    assert_eq!(b.pending_queues, 0);
    // And a, told again, keeps only its own.
    let a = c.heartbeat(&holding("a", &held_half), &eight_queues, 60);
    assert_eq!(queues_of(&a, "orders"), vec![0, 1, 2, 3]);
    assert_eq!(a.pending_queues, 0);
}

#[test]
fn a_member_that_expires_or_leaves_releases_everything_at_once() {
    let all: Vec<u32> = (0..8).collect();
    let held_all = [("orders", all.clone()), ("%RETRY%g", vec![0])];
    for how in ["expire", "leave"] {
        let c = coordinator();
        c.heartbeat(&holding("a", &[]), &eight_queues, 0);
        c.heartbeat(&holding("a", &held_all), &eight_queues, 100);
        let b = c.heartbeat(&holding("b", &[]), &eight_queues, 200);
        assert!(queues_of(&b, "orders").is_empty(), "{how}");
        match how {
            "expire" => {
                // b keeps heartbeating; a is silent past the timeout.
                let b = c.heartbeat(&holding("b", &[]), &eight_queues, 100 + TIMEOUT);
                assert!(queues_of(&b, "orders").is_empty(), "a is alive still");
                assert_eq!(c.expire(101 + TIMEOUT).len(), 1);
            }
            _ => assert!(c.leave("g", "a")),
        }
        let b = c.heartbeat(&holding("b", &[]), &eight_queues, 102 + TIMEOUT);
        assert_eq!(queues_of(&b, "orders"), all, "{how}");
        assert_eq!(queues_of(&b, "%RETRY%g"), vec![0], "{how}");
        assert_eq!(b.pending_queues, 0, "{how}");
    }
}

#[test]
fn two_members_joining_together_settle_without_sharing_a_queue() {
    // Both join with nothing held; whoever heartbeats first gets everything, and each
    // queue reaches its target owner only after the other let it go.
    let c = coordinator();
    let mut last: BTreeMap<&str, Vec<(String, u32)>> = BTreeMap::new();
    for round in 0..4u64 {
        for id in ["b", "a"] {
            let held: Vec<(&str, Vec<u32>)> = ["orders", "%RETRY%g"]
                .into_iter()
                .map(|t| {
                    let qs = last
                        .get(id)
                        .map(|v| {
                            v.iter()
                                .filter(|(tt, _)| tt == t)
                                .map(|(_, q)| *q)
                                .collect()
                        })
                        .unwrap_or_default();
                    (t, qs)
                })
                .collect();
            let r = c.heartbeat(&holding(id, &held), &eight_queues, round * 10);
            let granted: Vec<(String, u32)> = r
                .assignment
                .iter()
                .flat_map(|a| a.queue_ids.iter().map(|q| (a.topic.clone(), *q)))
                .collect();
            last.insert(id, granted);
            let (a, b) = (last.get("a"), last.get("b"));
            if let (Some(a), Some(b)) = (a, b) {
                assert!(
                    a.iter().all(|q| !b.contains(q)),
                    "round {round}: {a:?} {b:?}"
                );
            }
        }
    }
    let orders = |id: &str| -> Vec<u32> {
        last[id]
            .iter()
            .filter(|(t, _)| t == "orders")
            .map(|(_, q)| *q)
            .collect()
    };
    assert_eq!(orders("a"), vec![0, 1, 2, 3]);
    assert_eq!(orders("b"), vec![4, 5, 6, 7]);
}

#[test]
fn a_closed_connection_releases_its_member_at_once_but_not_after_a_move() {
    let c = coordinator();
    let all: Vec<u32> = (0..8).collect();
    c.heartbeat(&holding("a", &[]), &eight_queues, 0);
    assert!(c.bind_connection("g", "a", 7), "first binding");
    assert!(!c.bind_connection("g", "a", 7), "same connection again");
    c.heartbeat(&holding("a", &[("orders", all.clone())]), &eight_queues, 10);
    let b = c.heartbeat(&holding("b", &[]), &eight_queues, 20);
    assert!(queues_of(&b, "orders").is_empty(), "a still holds them");
    // Another connection's close does nothing; a's own close frees everything now.
    assert!(!c.connection_closed("g", "a", 8));
    assert!(c.connection_closed("g", "a", 7));
    let b = c.heartbeat(&holding("b", &[]), &eight_queues, 30);
    assert_eq!(queues_of(&b, "orders"), all);
    // A member that reconnected is not dropped by the close of its old connection.
    c.bind_connection("g", "b", 1);
    assert!(c.bind_connection("g", "b", 2), "moved");
    assert!(!c.connection_closed("g", "b", 1));
    assert!(c.has_live_members("g"));
}

#[test]
fn a_group_is_idle_only_without_members_and_since_its_last_sign_of_life() {
    let c = coordinator();
    assert_eq!(c.idle_since_ms("g"), None, "never seen");
    c.heartbeat(&holding("a", &[]), &eight_queues, 100);
    assert_eq!(c.idle_since_ms("g"), None, "has a member");
    c.expire(100 + TIMEOUT + 1);
    assert_eq!(c.idle_since_ms("g"), Some(100 + TIMEOUT + 1));
    c.touch("g", 5_000);
    assert_eq!(c.idle_since_ms("g"), Some(5_000));
    c.heartbeat(&holding("a", &[]), &eight_queues, 6_000);
    assert_eq!(c.remove_group("g"), vec!["a".to_string()]);
    assert_eq!(c.idle_since_ms("g"), None, "forgotten");
    assert!(!c.has_live_members("g"));
}
