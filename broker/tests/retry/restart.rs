//! Delays survive a restart of the store and the retry service; a crash before the
//! scheduler saved its progress redelivers, never loses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;

use crate::support::retry::*;
use protocol::properties::ORIGIN_MSG_ID;

#[test]
fn a_scheduled_retry_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let service = start(&store, 16);
    let id = produce(&store, b"later");
    // Two attempts' worth: the second copy waits on level 2 (100 ms).
    let first = nack(&service, "g", &id);
    let rec = wait_message(&store, "%RETRY%g", 0);
    let second = nack(&service, "g", &id_of(&rec));
    assert!(second.due_at_ms > first.due_at_ms);
    // Shut down before the second is due.
    shut_down(service, store);
    let saved = fs::read_to_string(dir.path().join("timer").join("checkpoint")).unwrap();
    assert!(saved.contains("indexed_next"), "{saved}");

    let store = open_store(dir.path());
    let service = start(&store, 16);
    let again = wait_message(&store, "%RETRY%g", 1);
    assert!(again.view().store_timestamp_ms() >= second.due_at_ms);
    assert_eq!(again.view().reconsume_times(), 2);
    assert_eq!(prop(&again, ORIGIN_MSG_ID), Some(id));
    shut_down(service, store);

    // Delivered copies are not delivered again by a clean restart.
    let store = open_store(dir.path());
    let service = start(&store, 16);
    assert!(!store.wait_for_message(
        "%RETRY%g",
        0,
        broker::store::QueueOffset::new(2),
        std::time::Duration::from_millis(300)
    ));
    assert_eq!(count(&store, "%RETRY%g"), 2);
    shut_down(service, store);
}

#[test]
fn progress_lost_in_a_crash_redelivers_rather_than_loses() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let service = start(&store, 16);
    let id = produce(&store, b"once or more");
    nack(&service, "g", &id);
    wait_message(&store, "%RETRY%g", 0);
    shut_down(service, store);

    // A crash right after delivery, before the timer saved anything: no checkpoint, no
    // delivery marks.
    fs::remove_dir_all(dir.path().join("timer")).unwrap();

    let store = open_store(dir.path());
    let service = start(&store, 16);
    let dup = wait_message(&store, "%RETRY%g", 1);
    assert_eq!(prop(&dup, ORIGIN_MSG_ID), Some(id));
    assert_eq!(dup.view().reconsume_times(), 1);
    shut_down(service, store);
}

#[test]
fn a_corrupt_progress_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    fs::create_dir_all(dir.path().join("config")).unwrap();
    fs::write(
        dir.path().join("config").join("schedule_offsets"),
        b"{\"vers",
    )
    .unwrap();
    let err = broker::retry::RetryService::start(std::sync::Arc::clone(&store), retry_config(16))
        .unwrap_err();
    assert!(err.to_string().contains("schedule_offsets"), "{err}");
}
