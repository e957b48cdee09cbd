//! No room for index blocks (arena creation fails with ENOSPC, injected through the storage
//! seam, no root needed): sends that would need new blocks are refused with a disk-full
//! error before anything is appended, reads keep working, and sends resume by themselves
//! once space is back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use crate::support::store::{msg, read_all, small_config};
use broker::store::MessageStore;
use commitlog::fault::FaultyStorage;
use tempfile::TempDir;

#[test]
fn sends_needing_index_space_get_disk_full_and_resume_when_space_returns() {
    let dir = TempDir::new().unwrap();
    let faults = Arc::new(FaultyStorage::new());
    let mut config = small_config(dir.path());
    // Room in the log's segment: only the index runs out.
    config.commitlog.segment_size_bytes = 8 << 20;
    config.commitlog.storage = faults.clone();
    let store = MessageStore::open(config).unwrap();
    store.put("seed", 0, &msg(&[], b"first")).unwrap();
    faults.disk_full(true);

    // Each new queue needs a block; the arenas run out, then sends are refused.
    let mut stored = Vec::new();
    let refused = (0..2_000u32).find_map(|i| {
        let topic = format!("q{}", i / 4);
        match store.put(&topic, i % 4, &msg(&[], b"x")) {
            Ok(_) => {
                stored.push((topic, i % 4));
                None
            }
            Err(e) => Some(e),
        }
    });
    let refused = refused.expect("a full disk must refuse sends that cannot be indexed");
    assert!(refused.is_disk_full(), "{refused}");
    let log_end = store.commit_log().write_offset();
    assert!(store
        .put("another", 0, &msg(&[], b"y"))
        .unwrap_err()
        .is_disk_full());
    assert_eq!(
        store.commit_log().write_offset(),
        log_end,
        "a refused send appended"
    );

    // Everything acknowledged is readable meanwhile.
    assert_eq!(read_all(&store, "seed", 0, 1), vec![b"first".to_vec()]);
    for (topic, q) in &stored {
        assert_eq!(read_all(&store, topic, *q, 1), vec![b"x".to_vec()]);
    }

    // Space comes back: sends go through again without a restart (arena creation is
    // retried at most once a second).
    faults.disk_full(false);
    let mut resumed = false;
    for _ in 0..50 {
        if store.put("another", 0, &msg(&[], b"y")).is_ok() {
            resumed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(resumed, "sends did not resume after space came back");
    assert_eq!(read_all(&store, "another", 0, 1), vec![b"y".to_vec()]);
    store.close().unwrap();
}
