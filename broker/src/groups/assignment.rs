//! How a topic's queues are split among the members of a group that subscribe to it.

use std::fmt::Debug;

/// Splits the queues of one topic among the members subscribed to it.
///
/// Called with `members` sorted and unique and `queue_ids` sorted and unique; returns one
/// list per member, in the order of `members`. The result must be a pure function of the
/// arguments so that every broker (and every test) computes the same split. The
/// coordinator drops ids that were not offered and ids handed out twice, so a faulty
/// strategy can leave queues idle but never gives one queue to two members.
pub trait AssignmentStrategy: Send + Sync + Debug {
    /// A short name for logs and `mq group show`.
    fn name(&self) -> &'static str;

    /// For each of `members` (in that order), the ids of `queue_ids` it owns on `topic`.
    fn assign(&self, topic: &str, members: &[&str], queue_ids: &[u32]) -> Vec<Vec<u32>>;
}

/// The default strategy: contiguous blocks of nearly equal size, the first
/// `queues % members` members taking one extra queue (RocketMQ's "averagely").
///
/// Eight queues over three members: `[0 1 2] [3 4 5] [6 7]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ContiguousEvenSplit;

impl AssignmentStrategy for ContiguousEvenSplit {
    fn name(&self) -> &'static str {
        "contiguous-even"
    }

    fn assign(&self, _topic: &str, members: &[&str], queue_ids: &[u32]) -> Vec<Vec<u32>> {
        let m = members.len();
        if m == 0 {
            return Vec::new();
        }
        let base = queue_ids.len() / m;
        let extra = queue_ids.len() % m;
        let mut start = 0;
        (0..m)
            .map(|i| {
                let len = base + usize::from(i < extra);
                let block = queue_ids[start..start + len].to_vec();
                start += len;
                block
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn eight_queues_over_three_members() {
        let q: Vec<u32> = (0..8).collect();
        let got = ContiguousEvenSplit.assign("t", &["a", "b", "c"], &q);
        assert_eq!(got, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7]]);
    }

    #[test]
    fn more_members_than_queues_leaves_the_last_idle() {
        let got = ContiguousEvenSplit.assign("t", &["a", "b", "c"], &[0, 1]);
        assert_eq!(got, vec![vec![0], vec![1], vec![]]);
    }

    #[test]
    fn no_members_or_no_queues() {
        assert!(ContiguousEvenSplit.assign("t", &[], &[0, 1]).is_empty());
        assert_eq!(
            ContiguousEvenSplit.assign("t", &["a", "b"], &[]),
            vec![Vec::<u32>::new(), vec![]]
        );
    }

    #[test]
    fn every_queue_exactly_once_and_sizes_differ_by_at_most_one() {
        let names: Vec<String> = (0..7).map(|i| format!("m{i}")).collect();
        for m in 1..=7 {
            let members: Vec<&str> = names[..m].iter().map(String::as_str).collect();
            for n in 0..20u32 {
                let q: Vec<u32> = (0..n).collect();
                let got = ContiguousEvenSplit.assign("t", &members, &q);
                let flat: Vec<u32> = got.iter().flatten().copied().collect();
                assert_eq!(flat, q, "m={m} n={n}");
                let sizes: Vec<usize> = got.iter().map(Vec::len).collect();
                let (lo, hi) = (sizes.iter().min(), sizes.iter().max());
                assert!(hi.unwrap() - lo.unwrap() <= 1, "m={m} n={n}");
            }
        }
    }
}
