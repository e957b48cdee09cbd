//! Retention interplay: after the commit log drops old segments, consume queues drop theirs
//! and a consumer below the minimum is told the new minimum, before and after a reopen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::store::{msg, small_config};
use broker::store::{GetRequest, GetStatus, MessageStore, PutMessage, QueueOffset, TagFilter};
use commitlog::Retention;
use tempfile::TempDir;

#[test]
fn consumer_below_min_is_told_the_new_minimum() {
    let dir = TempDir::new().unwrap();
    let mut config = small_config(dir.path());
    config.commitlog.segment_size_bytes = 4096;
    config.commitlog.retention = Retention {
        max_age_ms: None,
        max_total_bytes: Some(3 * 4096),
    };
    let store = MessageStore::open(config.clone()).unwrap();
    let body = vec![7u8; 200];
    let msgs: Vec<PutMessage<'_>> = (0..10).map(|_| msg(&[], &body)).collect();
    for _ in 0..10 {
        store.put_batch("old", 0, &msgs).unwrap();
    }
    assert!(store.wait_for_message(
        "old",
        0,
        QueueOffset::new(99),
        std::time::Duration::from_secs(10)
    ));
    // Retention only removes flushed segments; flush here rather than race the 20 ms
    // background flusher.
    store.flush().unwrap();
    store.apply_retention(u64::MAX / 2).unwrap();
    let log_min = store.commit_log().min_offset().get();
    assert!(log_min > 0, "retention removed nothing");

    let r = store
        .get_messages(GetRequest {
            topic: "old",
            queue_id: 0,
            from: QueueOffset::new(0),
            max_count: 32,
            max_bytes: usize::MAX,
            filter: &TagFilter::All,
        })
        .unwrap();
    let GetStatus::OffsetBelowMin { min } = r.status else {
        panic!("expected OffsetBelowMin, got {:?}", r.status)
    };
    assert!(min.get() > 0 && r.next_offset == min);
    let from_min = store
        .get_messages(GetRequest {
            topic: "old",
            queue_id: 0,
            from: min,
            max_count: 1,
            max_bytes: usize::MAX,
            filter: &TagFilter::All,
        })
        .unwrap();
    assert_eq!(from_min.status, GetStatus::Found);
    let first = &from_min.messages[0];
    assert_eq!(first.view().queue_offset(), min.get());
    assert!(first.offset().get() >= log_min);
    assert_eq!(
        store.queue_range("old", 0).unwrap(),
        (min, QueueOffset::new(100))
    );
    store.close().unwrap();

    // After a reopen the minimum is recomputed from the log, and new puts continue at 100.
    let store = MessageStore::open(config).unwrap();
    assert_eq!(store.queue_range("old", 0).unwrap().0, min);
    let r = store.put("old", 0, &msg(&[], b"new")).unwrap();
    assert_eq!(r.queue_offset.get(), 100);
    store.close().unwrap();
}
