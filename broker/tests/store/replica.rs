//! Replica mode of the store: a replica built from a master's raw records indexes them
//! itself (only up to the confirm watermark), a truncation cuts the consume queues with
//! the log, and a promoted replica continues every queue after its last record.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use broker::store::{MessageStore, PhysicalOffset, QueueOffset, StoreConfig};
use tempfile::TempDir;

use crate::support::store::{msg, read_all, small_config};

fn replicated(data: &std::path::Path) -> StoreConfig {
    let mut c = small_config(data);
    c.replicated = true;
    c
}

/// Ships every record of `master` above the replica's end, as the HA stream does.
fn ship(master: &MessageStore, replica: &MessageStore) {
    let (m, r) = (master.commit_log(), replica.commit_log());
    while r.write_offset() < m.write_offset() {
        let from = r.write_offset();
        let chunk = m
            .raw_chunk(from, PhysicalOffset::new(u64::MAX), 1 << 20)
            .unwrap();
        let end = replica.replicate(from, chunk.bytes()).unwrap();
        if chunk.seal() {
            replica.seal_segment(end).unwrap();
        }
    }
}

fn put_n(store: &MessageStore, topic: &str, n: usize, tag: &str) {
    for i in 0..n {
        let body = format!("{tag}-{i}");
        store.put(topic, 0, &msg(b"", body.as_bytes())).unwrap();
    }
}

#[test]
fn a_replica_indexes_only_confirmed_records() {
    let (m_dir, r_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let master = MessageStore::open(replicated(m_dir.path())).unwrap();
    let replica = MessageStore::open(replicated(r_dir.path())).unwrap();
    put_n(&master, "orders", 10, "a");
    // Unconfirmed on the master: not served.
    assert!(!master.wait_for_message("orders", 0, QueueOffset::new(0), Duration::from_millis(50)));
    ship(&master, &replica);
    assert!(!replica.wait_for_message("orders", 0, QueueOffset::new(0), Duration::from_millis(50)));
    let confirm = master.advance_confirm(replica.commit_log().write_offset());
    replica.advance_confirm(confirm);
    assert_eq!(read_all(&master, "orders", 0, 10).len(), 10);
    assert_eq!(
        read_all(&replica, "orders", 0, 10),
        read_all(&master, "orders", 0, 10)
    );
}

#[test]
fn truncation_cuts_consume_queues_and_survives_a_restart() {
    let (m_dir, r_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let master = MessageStore::open(replicated(m_dir.path())).unwrap();
    let replica = MessageStore::open(replicated(r_dir.path())).unwrap();
    put_n(&master, "orders", 30, "a");
    ship(&master, &replica);
    let cut = replica.commit_log().write_offset();
    put_n(&master, "orders", 20, "b");
    ship(&master, &replica);
    replica.advance_confirm(replica.commit_log().write_offset());
    assert_eq!(read_all(&replica, "orders", 0, 50).len(), 50);
    replica.truncate_to(cut).unwrap();
    let left = read_all(&replica, "orders", 0, 30);
    assert_eq!(left.len(), 30);
    assert_eq!(left[29], b"a-29");
    drop(replica);
    let replica = MessageStore::open(replicated(r_dir.path())).unwrap();
    assert_eq!(replica.commit_log().write_offset(), cut);
    replica.advance_confirm(cut);
    assert_eq!(read_all(&replica, "orders", 0, 30).len(), 30);
}

#[test]
fn a_promoted_replica_never_reuses_a_queue_offset() {
    let (m_dir, r_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let master = MessageStore::open(replicated(m_dir.path())).unwrap();
    let replica = MessageStore::open(replicated(r_dir.path())).unwrap();
    put_n(&master, "orders", 5, "a");
    ship(&master, &replica);
    replica.advance_confirm(PhysicalOffset::new(0));
    // Nothing confirmed on the replica yet: its queue is empty, but the log holds 5.
    replica.seed_writer_from_log().unwrap();
    let r = replica.put("orders", 0, &msg(b"", b"new")).unwrap();
    assert_eq!(r.queue_offset, QueueOffset::new(5));
}
