//! Group membership and queue assignment.
//!
//! Members join and stay alive by heartbeating; one silent for longer than the session
//! timeout is dropped (by the next heartbeat of anyone in its group, or by
//! [`GroupCoordinator::expire`], which the server runs periodically), and one that leaves
//! is dropped at once. The assignment is recomputed only when something it depends on
//! changes: the set of members, what they subscribe to, or the queue count of a topic they
//! subscribe to. Each change takes a new generation from one counter shared by all groups,
//! so a generation is never reused, not even after a group empties and comes back.
//!
//! The assignment the strategy computes is each member's *target*. A member is *granted*
//! a queue of its target only when no other live member holds it: a member reports the
//! queues it holds in every heartbeat, and the coordinator also counts as held what it
//! granted in its last reply (the member may not have reported it yet). The old owner of
//! a moving queue learns it lost it at its next heartbeat, commits its acks on it, drops
//! it and heartbeats again reporting it released; only then does the new owner get it, so
//! the new owner starts from a commit that includes every ack of the old one. A member
//! that leaves, expires or whose connection closes releases everything at once.
//!
//! A member is bound to the connection it last heartbeated on: when that connection
//! closes the member is gone at once (a killed process frees its queues without waiting
//! for the session timeout); one that hangs with its connection open is still dropped by
//! the session timeout.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use protocol::messages::{HeartbeatRequest, HeartbeatResponse, MemberInfo, QueueAssignment};
use protocol::names::retry_topic;

use super::assignment::{AssignmentStrategy, ContiguousEvenSplit};

/// Default time after which a silent member is dropped; the broker's
/// `--session-timeout-ms` default too (its only home).
pub const DEFAULT_SESSION_TIMEOUT_MS: u64 = 30_000;

/// Membership and assignment of every consumer group. Send + Sync; share it in an `Arc`.
#[derive(Debug)]
pub struct GroupCoordinator {
    session_timeout_ms: u64,
    strategy: Box<dyn AssignmentStrategy>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    groups: HashMap<String, Group>,
    /// The last generation handed out, by any group.
    last_generation: u64,
    /// When each group last showed life (a heartbeat, a commit, a member leaving), for the
    /// idle-group sweep. One entry per group seen since start, dropped with the group.
    last_active_ms: HashMap<String, u64>,
}

#[derive(Debug, Default)]
struct Group {
    members: BTreeMap<String, Member>,
    /// Queue count of every topic some member subscribes to (retry topic included), as
    /// last seen; topics that do not exist are absent.
    queue_counts: BTreeMap<String, u32>,
    generation: u64,
}

#[derive(Debug)]
struct Member {
    /// Subscribed topics, the group's retry topic included.
    topics: BTreeSet<String>,
    last_heartbeat_ms: u64,
    /// What the strategy gives this member (its target).
    assignment: Vec<QueueAssignment>,
    /// Queues this member may still hold: what it reported in its last heartbeat plus
    /// what the reply to that heartbeat granted it.
    held: BTreeSet<(String, u32)>,
    /// The connection the member last heartbeated on (0: none known).
    connection: u64,
}

impl Default for GroupCoordinator {
    fn default() -> Self {
        Self::new(DEFAULT_SESSION_TIMEOUT_MS, Box::new(ContiguousEvenSplit))
    }
}

impl GroupCoordinator {
    /// A coordinator with no groups yet; a member silent for `session_timeout_ms` is
    /// dropped, and `strategy` splits each topic's queues among the live members.
    pub fn new(session_timeout_ms: u64, strategy: Box<dyn AssignmentStrategy>) -> Self {
        Self {
            session_timeout_ms,
            strategy,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// How long a silent member stays in its group.
    pub fn session_timeout_ms(&self) -> u64 {
        self.session_timeout_ms
    }

    /// The assignment strategy's name, as reported to `mq group show`.
    pub fn strategy_name(&self) -> &'static str {
        self.strategy.name()
    }

    /// Joins or refreshes a member and returns its current assignment.
    ///
    /// `queue_count_of` answers the queue count of a topic (`None` if it does not exist);
    /// it is asked for every topic the group subscribes to, so that a topic that gained
    /// queues, or a retry topic created since, is rebalanced at the next heartbeat.
    pub fn heartbeat(
        &self,
        req: &HeartbeatRequest,
        queue_count_of: &dyn Fn(&str) -> Option<u32>,
        now_ms: u64,
    ) -> HeartbeatResponse {
        let mut inner = self.lock();
        let Inner {
            groups,
            last_generation,
            last_active_ms,
        } = &mut *inner;
        touch(last_active_ms, &req.group, now_ms);
        let group = groups.entry(req.group.clone()).or_default();
        let mut changed = self.drop_silent(group, now_ms);

        let mut topics: BTreeSet<String> =
            req.subscriptions.iter().map(|s| s.topic.clone()).collect();
        topics.insert(retry_topic(&req.group));
        match group.members.get_mut(&req.client_id) {
            Some(member) => {
                member.last_heartbeat_ms = member.last_heartbeat_ms.max(now_ms);
                if member.topics != topics {
                    member.topics = topics;
                    changed = true;
                }
            }
            None => {
                group.members.insert(
                    req.client_id.clone(),
                    Member {
                        topics,
                        last_heartbeat_ms: now_ms,
                        assignment: Vec::new(),
                        held: BTreeSet::new(),
                        connection: 0,
                    },
                );
                changed = true;
            }
        }

        let counts = current_queue_counts(group, queue_count_of);
        if counts != group.queue_counts {
            group.queue_counts = counts;
            changed = true;
        }
        if changed {
            self.rebalance(group, last_generation);
        }
        let (assignment, pending_queues) = grant(group, &req.client_id, &req.held);
        HeartbeatResponse {
            generation: group.generation,
            assignment,
            pending_queues,
            session_timeout_ms: self.session_timeout_ms,
            // Offsets resets are the business of consumer offsets; the server fills it in.
            reset_epoch: 0,
        }
    }

    /// Drops a member at once (a clean shutdown). Returns whether it was a member.
    pub fn leave(&self, group: &str, client_id: &str) -> bool {
        self.remove_member(group, client_id, None)
    }

    /// Binds a member to the connection its heartbeat came on. Returns true when that is
    /// a new binding: the caller then watches the connection and calls
    /// [`GroupCoordinator::connection_closed`] when it closes.
    pub fn bind_connection(&self, group: &str, client_id: &str, connection: u64) -> bool {
        let mut inner = self.lock();
        let Some(member) = inner
            .groups
            .get_mut(group)
            .and_then(|g| g.members.get_mut(client_id))
        else {
            return false;
        };
        let new = member.connection != connection;
        member.connection = connection;
        new
    }

    /// Drops a member at once because the connection it heartbeats on closed, unless it
    /// has moved to another connection since. Returns whether it was dropped.
    pub fn connection_closed(&self, group: &str, client_id: &str, connection: u64) -> bool {
        self.remove_member(group, client_id, Some(connection))
    }

    /// Removes a member (only if bound to `connection`, when given) and rebalances.
    fn remove_member(&self, group: &str, client_id: &str, connection: Option<u64>) -> bool {
        let mut inner = self.lock();
        let Inner {
            groups,
            last_generation,
            last_active_ms,
        } = &mut *inner;
        let Some(g) = groups.get_mut(group) else {
            return false;
        };
        match (g.members.get(client_id), connection) {
            (None, _) => return false,
            (Some(m), Some(c)) if m.connection != c => return false,
            _ => {}
        }
        g.members.remove(client_id);
        if g.members.is_empty() {
            groups.remove(group);
        } else {
            self.rebalance(g, last_generation);
        }
        touch(last_active_ms, group, protocol::time::now_ms());
        true
    }

    /// Records a sign of life of a group that may have no members (a commit).
    pub fn touch(&self, group: &str, now_ms: u64) {
        touch(&mut self.lock().last_active_ms, group, now_ms);
    }

    /// When a group without live members last showed life since the broker started;
    /// `None` while it has members or when it was not seen since start.
    pub fn idle_since_ms(&self, group: &str) -> Option<u64> {
        let inner = self.lock();
        if inner.groups.contains_key(group) {
            return None;
        }
        inner.last_active_ms.get(group).copied()
    }

    /// Forgets a group: its members (who join afresh at their next heartbeat) and its
    /// activity record. Returns the client ids of the members it had.
    pub fn remove_group(&self, group: &str) -> Vec<String> {
        let mut inner = self.lock();
        inner.last_active_ms.remove(group);
        inner
            .groups
            .remove(group)
            .map(|g| g.members.into_keys().collect())
            .unwrap_or_default()
    }

    /// Drops every member silent for longer than the session timeout and rebalances what
    /// they held. Returns the dropped `(group, client_id)` pairs, for the log.
    pub fn expire(&self, now_ms: u64) -> Vec<(String, String)> {
        let mut inner = self.lock();
        let Inner {
            groups,
            last_generation,
            last_active_ms,
        } = &mut *inner;
        let mut dropped = Vec::new();
        for (name, group) in groups.iter_mut() {
            let before: Vec<String> = group.members.keys().cloned().collect();
            if self.drop_silent(group, now_ms) {
                dropped.extend(
                    before
                        .into_iter()
                        .filter(|c| !group.members.contains_key(c))
                        .map(|c| (name.clone(), c)),
                );
                self.rebalance(group, last_generation);
            }
        }
        groups.retain(|name, g| {
            if g.members.is_empty() {
                touch(last_active_ms, name, now_ms);
            }
            !g.members.is_empty()
        });
        dropped
    }

    /// The members of a group and their target assignments, sorted by client id. A queue
    /// moving between members is listed under its new owner even while the old one still
    /// holds it (until the old one's next heartbeat releases it).
    pub fn members(&self, group: &str) -> Vec<MemberInfo> {
        let inner = self.lock();
        inner
            .groups
            .get(group)
            .map(|g| {
                g.members
                    .iter()
                    .map(|(id, m)| MemberInfo {
                        client_id: id.clone(),
                        assignment: m.assignment.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the group has members that have not left or been expired. A member silent
    /// past the timeout counts until the next [`GroupCoordinator::expire`] or heartbeat.
    pub fn has_live_members(&self, group: &str) -> bool {
        self.lock()
            .groups
            .get(group)
            .is_some_and(|g| !g.members.is_empty())
    }

    /// The group's current generation; `None` when it has no members.
    pub fn generation(&self, group: &str) -> Option<u64> {
        self.lock().groups.get(group).map(|g| g.generation)
    }

    /// Names of the groups that have members, sorted.
    pub fn groups(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().groups.keys().cloned().collect();
        names.sort();
        names
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while the lock is held, and every update leaves the state
        // consistent, so a poisoned lock still guards valid data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes members silent past the timeout; true if any was removed.
    fn drop_silent(&self, group: &mut Group, now_ms: u64) -> bool {
        let before = group.members.len();
        let timeout = self.session_timeout_ms;
        group
            .members
            .retain(|_, m| now_ms.saturating_sub(m.last_heartbeat_ms) <= timeout);
        group.members.len() != before
    }

    /// Recomputes every member's assignment from the cached queue counts and takes a new
    /// generation.
    fn rebalance(&self, group: &mut Group, last_generation: &mut u64) {
        let mut owned: BTreeMap<&str, Vec<QueueAssignment>> = group
            .members
            .keys()
            .map(|id| (id.as_str(), Vec::new()))
            .collect();
        for (topic, &count) in &group.queue_counts {
            let subscribers: Vec<&str> = group
                .members
                .iter()
                .filter(|(_, m)| m.topics.contains(topic))
                .map(|(id, _)| id.as_str())
                .collect();
            let queue_ids: Vec<u32> = (0..count).collect();
            let split = self.strategy.assign(topic, &subscribers, &queue_ids);
            let mut taken = BTreeSet::new();
            for (i, id) in subscribers.iter().enumerate() {
                let mut mine: Vec<u32> = split
                    .get(i)
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|q| *q < count && taken.insert(*q))
                    .collect();
                mine.sort_unstable();
                if let Some(list) = owned.get_mut(id) {
                    list.push(QueueAssignment {
                        topic: topic.clone(),
                        queue_ids: mine,
                    });
                }
            }
        }
        let assignments: Vec<(String, Vec<QueueAssignment>)> = owned
            .into_iter()
            .map(|(id, a)| (id.to_string(), a))
            .collect();
        for (id, assignment) in assignments {
            if let Some(m) = group.members.get_mut(&id) {
                m.assignment = assignment;
            }
        }
        *last_generation += 1;
        group.generation = *last_generation;
    }
}

/// Records what `client_id` reports holding, and grants it the queues of its target that
/// no other member holds. Returns the grant and how many target queues are still held
/// elsewhere.
fn grant(
    group: &mut Group,
    client_id: &str,
    reported: &[QueueAssignment],
) -> (Vec<QueueAssignment>, u32) {
    let held_elsewhere: BTreeSet<(&str, u32)> = group
        .members
        .iter()
        .filter(|(id, _)| id.as_str() != client_id)
        .flat_map(|(_, m)| m.held.iter().map(|(t, q)| (t.as_str(), *q)))
        .collect();
    let Some(member) = group.members.get(client_id) else {
        return (Vec::new(), 0);
    };
    let mut pending = 0u32;
    let granted: Vec<QueueAssignment> = member
        .assignment
        .iter()
        .map(|a| {
            let queue_ids: Vec<u32> = a
                .queue_ids
                .iter()
                .copied()
                .filter(|q| {
                    let free = !held_elsewhere.contains(&(a.topic.as_str(), *q));
                    pending += u32::from(!free);
                    free
                })
                .collect();
            QueueAssignment {
                topic: a.topic.clone(),
                queue_ids,
            }
        })
        .collect();
    let mut held: BTreeSet<(String, u32)> = reported
        .iter()
        .flat_map(|a| a.queue_ids.iter().map(|q| (a.topic.clone(), *q)))
        .collect();
    held.extend(
        granted
            .iter()
            .flat_map(|a| a.queue_ids.iter().map(|q| (a.topic.clone(), *q))),
    );
    if let Some(member) = group.members.get_mut(client_id) {
        member.held = held;
    }
    (granted, pending)
}

fn touch(last_active_ms: &mut HashMap<String, u64>, group: &str, now_ms: u64) {
    match last_active_ms.get_mut(group) {
        Some(t) => *t = (*t).max(now_ms),
        None => {
            last_active_ms.insert(group.to_string(), now_ms);
        }
    }
}

/// Asks the queue count of every topic the group's members subscribe to.
fn current_queue_counts(
    group: &Group,
    queue_count_of: &dyn Fn(&str) -> Option<u32>,
) -> BTreeMap<String, u32> {
    let topics: BTreeSet<&String> = group.members.values().flat_map(|m| &m.topics).collect();
    topics
        .into_iter()
        .filter_map(|t| queue_count_of(t).map(|n| (t.clone(), n)))
        .collect()
}

#[cfg(test)]
#[path = "coordinator_tests.rs"]
mod tests;
