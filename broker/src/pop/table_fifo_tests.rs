//! Message groups in the lease table: one leased message per (queue, message group), the
//! rest parked in order; an expired lease is made ready again in place.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn table_with(groups: &[Option<&str>]) -> (GroupTable, u32, Vec<bool>) {
    let mut t = GroupTable::new(100);
    let q = t.queue("t", 0, || None);
    let offsets: Vec<u64> = (0..groups.len() as u64).collect();
    let epochs: Vec<u64> = offsets.iter().map(|o| o + 1).collect();
    let leased = t.grant_grouped(q, offsets.len() as u64, &offsets, &epochs, groups, 10);
    (t, q, leased)
}

#[test]
fn a_message_group_has_one_message_out_at_a_time_in_send_order() {
    let groups = [Some("a"), Some("b"), Some("a"), None, Some("b"), Some("a")];
    let (mut t, q, leased) = table_with(&groups);
    assert_eq!(leased, vec![true, true, false, true, false, false]);
    assert!(t.ready(q, 10).is_empty());
    // Parked messages hold the committed floor down with the leased ones.
    t.ack(q, 3, 4).unwrap();
    assert_eq!(t.committed(q).0, 0);
    // Acking a's first message makes its next one (offset 2) ready; not the one after.
    t.ack(q, 0, 1).unwrap();
    assert_eq!(t.ready(q, 10), vec![2]);
    assert_eq!(t.lease_ready(q, 2, 50, 20), Some(0));
    assert!(t.ready(q, 10).is_empty());
    assert!(t.check(q, 2, 50).is_ok());
    // A parked slot answers to no handle (its epoch from the grant is void).
    assert!(t.check(q, 5, 6).is_err());
    t.ack(q, 2, 50).unwrap();
    assert_eq!(t.ready(q, 10), vec![5]);
    assert_eq!(t.committed(q).0, 1, "b's first message is still out");
}

#[test]
fn an_expired_message_group_lease_is_delivered_again_in_place() {
    let (mut t, q, _) = table_with(&[Some("a"), Some("a")]);
    let ended = t.expire(10, 10, 99);
    assert_eq!(ended, vec![(q, 0)]);
    assert_eq!(t.fifo_retries(q, 0), Some(0));
    t.make_ready(q, 0);
    assert_eq!(t.ready(q, 10), vec![0], "the same message, before offset 1");
    assert_eq!(t.lease_ready(q, 0, 7, 30), Some(1));
    assert_eq!(t.next_deadline(), Some(30));
    // Dead-lettered past its attempts: ended, and the group moves on.
    assert_eq!(t.expire(30, 10, 100), vec![(q, 0)]);
    t.end(q, 0);
    assert_eq!(t.ready(q, 10), vec![1]);
    // A ready message whose record is gone ends too.
    t.drop_ready(q, 1);
    assert_eq!(t.in_flight(), 0);
    assert_eq!(t.committed(q), (2, Vec::new()));
}
