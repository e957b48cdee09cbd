//! Message store: put/get round trips, validation, tags, ids, time search, waiting, topics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::store::{msg, open, read_all, small_config, tagged};
use broker::store::{
    GetRequest, GetStatus, MessageId, MessageStore, PutMessage, QueueOffset, StoreError, TagFilter,
    TopicConfig, TopicScope,
};
use commitlog::FlushPolicy;
use tempfile::TempDir;

#[test]
fn put_then_get_in_order_with_consecutive_offsets() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let bodies: Vec<Vec<u8>> = (0..50).map(|i| format!("m{i}").into_bytes()).collect();
    let msgs: Vec<PutMessage<'_>> = bodies.iter().map(|b| msg(&[], b)).collect();
    let first = store.put_batch("orders", 1, &msgs[..20]).unwrap();
    let rest = store.put_batch("orders", 1, &msgs[20..]).unwrap();
    let offsets: Vec<u64> = first
        .iter()
        .chain(&rest)
        .map(|r| r.queue_offset.get())
        .collect();
    assert_eq!(offsets, (0..50).collect::<Vec<_>>());
    assert_eq!(read_all(&store, "orders", 1, 50), bodies);
    assert_eq!(store.topic("orders").unwrap().queue_count, 4);
    assert_eq!(
        store.queue_range("orders", 1).unwrap(),
        (QueueOffset::new(0), QueueOffset::new(50))
    );

    // Statuses at and past the end, and byte limits (always at least one message).
    let at_end = store
        .get_messages(GetRequest {
            topic: "orders",
            queue_id: 1,
            from: QueueOffset::new(50),
            max_count: 10,
            max_bytes: 1 << 20,
            filter: &TagFilter::All,
        })
        .unwrap();
    assert_eq!(at_end.status, GetStatus::NoNewMessage);
    let past = store
        .get_messages(GetRequest {
            topic: "orders",
            queue_id: 1,
            from: QueueOffset::new(99),
            max_count: 10,
            max_bytes: 1 << 20,
            filter: &TagFilter::All,
        })
        .unwrap();
    assert_eq!(
        (past.status, past.next_offset.get()),
        (GetStatus::OffsetPastMax, 50)
    );
    let tiny = store
        .get_messages(GetRequest {
            topic: "orders",
            queue_id: 1,
            from: QueueOffset::new(3),
            max_count: 10,
            max_bytes: 1,
            filter: &TagFilter::All,
        })
        .unwrap();
    assert_eq!((tiny.messages.len(), tiny.next_offset.get()), (1, 4));
    let empty_queue = store
        .get_messages(GetRequest {
            topic: "orders",
            queue_id: 2,
            from: QueueOffset::new(0),
            max_count: 10,
            max_bytes: 1 << 20,
            filter: &TagFilter::All,
        })
        .unwrap();
    assert_eq!(empty_queue.status, GetStatus::NoNewMessage);
    store.close().unwrap();
}

#[test]
fn validation_errors_are_typed() {
    let dir = TempDir::new().unwrap();
    let mut config = small_config(dir.path());
    config.max_body_bytes = 8;
    let store = MessageStore::open(config).unwrap();
    let ok = msg(&[], b"x");
    let err = |r: Result<_, StoreError>| r.err().unwrap();
    assert!(matches!(
        err(store.put("bad name", 0, &ok)),
        StoreError::InvalidTopicName { .. }
    ));
    assert!(matches!(
        err(store.put("..", 0, &ok)),
        StoreError::InvalidTopicName { .. }
    ));
    assert!(matches!(
        err(store.put("%RETRY%g", 0, &ok)),
        StoreError::InvalidTopicName { .. }
    ));
    assert!(matches!(
        err(store.put("t", 0, &msg(&[], b"123456789"))),
        StoreError::BodyTooLarge { .. }
    ));
    assert!(matches!(
        err(store.put("t", 0, &msg(&[1, 0], b"x"))),
        StoreError::BadProperties(_)
    ));
    assert!(matches!(
        err(store.put("t", 9, &ok)),
        StoreError::QueueNotFound { .. }
    ));
    let internal = store
        .put_batch_scoped(TopicScope::Internal, "%RETRY%g", 0, &[ok])
        .unwrap();
    assert_eq!(internal[0].queue_offset.get(), 0);
    let mut ro = TopicConfig::new("readonly", 1);
    ro.perm.write = false;
    store.create_topic(ro).unwrap();
    assert!(matches!(
        err(store.put("readonly", 0, &ok)),
        StoreError::PermissionDenied { .. }
    ));
    assert!(matches!(
        store.get_messages(GetRequest {
            topic: "nope",
            queue_id: 0,
            from: QueueOffset::new(0),
            max_count: 1,
            max_bytes: 1,
            filter: &TagFilter::All
        }),
        Err(StoreError::TopicNotFound(_))
    ));
    store.close().unwrap();

    let mut config = small_config(dir.path());
    config.auto_create_topics = false;
    let store = MessageStore::open(config).unwrap();
    assert!(matches!(
        err(store.put("fresh", 0, &ok)),
        StoreError::TopicNotFound(_)
    ));
    // Topics survive a reopen.
    assert!(store.topic("readonly").is_some() && store.topic("t").is_some());
    assert!(matches!(
        MessageStore::open(small_config(dir.path())),
        Err(StoreError::Locked { .. })
    ));
}

#[test]
fn tag_filter_scans_and_confirms() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let (red, blue, none) = (tagged("red"), tagged("blue"), Vec::new());
    let props = [&red, &blue, &none, &red, &blue, &red];
    let msgs: Vec<PutMessage<'_>> = props.iter().map(|p| msg(p, b"b")).collect();
    store.put_batch("colors", 0, &msgs).unwrap();
    read_all(&store, "colors", 0, 6);
    let filter = TagFilter::parse("red").unwrap();
    let r = store
        .get_messages(GetRequest {
            topic: "colors",
            queue_id: 0,
            from: QueueOffset::new(0),
            max_count: 2,
            max_bytes: usize::MAX,
            filter: &filter,
        })
        .unwrap();
    let offsets: Vec<u64> = r.messages.iter().map(|m| m.view().queue_offset()).collect();
    assert_eq!((offsets, r.next_offset.get()), (vec![0, 3], 4));
    let r = store
        .get_messages(GetRequest {
            topic: "colors",
            queue_id: 0,
            from: QueueOffset::new(4),
            max_count: 10,
            max_bytes: usize::MAX,
            filter: &TagFilter::parse("red || blue").unwrap(),
        })
        .unwrap();
    let offsets: Vec<u64> = r.messages.iter().map(|m| m.view().queue_offset()).collect();
    assert_eq!(offsets, vec![4, 5]);
    let r = store
        .get_messages(GetRequest {
            topic: "colors",
            queue_id: 0,
            from: QueueOffset::new(0),
            max_count: 10,
            max_bytes: usize::MAX,
            filter: &TagFilter::parse("green").unwrap(),
        })
        .unwrap();
    assert_eq!(
        (r.status, r.next_offset.get()),
        (GetStatus::NoMatchedMessage, 6)
    );
    store.close().unwrap();
}

#[test]
fn get_by_id_and_id_text_form() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let res = store.put("ids", 0, &msg(&[], b"hello")).unwrap();
    let text = res.msg_id.to_string();
    assert_eq!(text.len(), 24);
    let id: MessageId = text.parse().unwrap();
    assert_eq!(store.get_by_id(id).unwrap().view().body(), b"hello");
    let wrong = MessageId::new(id.offset(), id.size() + 1);
    assert!(matches!(
        store.get_by_id(wrong),
        Err(StoreError::MessageNotFound(_))
    ));
    let beyond = MessageId::new(commitlog::PhysicalOffset::new(1 << 40), 10);
    assert!(matches!(
        store.get_by_id(beyond),
        Err(StoreError::MessageNotFound(_))
    ));
    store.close().unwrap();
}

#[test]
fn search_by_time_finds_first_stored_at_or_after() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let mut stamps = Vec::new();
    for i in 0..6u8 {
        let r = store.put("timed", 0, &msg(&[], &[i])).unwrap();
        stamps.push(
            store
                .get_by_id(r.msg_id)
                .unwrap()
                .view()
                .store_timestamp_ms(),
        );
        std::thread::sleep(Duration::from_millis(3));
    }
    read_all(&store, "timed", 0, 6);
    assert_eq!(store.search_offset_by_time("timed", 0, 0).unwrap().get(), 0);
    let expect = stamps.iter().position(|s| *s >= stamps[3]).unwrap() as u64;
    assert_eq!(
        store
            .search_offset_by_time("timed", 0, stamps[3])
            .unwrap()
            .get(),
        expect
    );
    assert_eq!(
        store
            .search_offset_by_time("timed", 0, u64::MAX)
            .unwrap()
            .get(),
        6
    );
    store.close().unwrap();
}

#[test]
fn dispatch_hook_and_blocking_wait() {
    let dir = TempDir::new().unwrap();
    let store = Arc::new(open(dir.path()));
    let seen = Arc::new(AtomicU64::new(0));
    let seen2 = Arc::clone(&seen);
    store.on_dispatch(Arc::new(move |topic: &str, queue: u32, max: u64| {
        if topic == "hook" && queue == 0 {
            seen2.fetch_max(max, Ordering::SeqCst);
        }
    }));
    assert!(!store.wait_for_message("hook", 0, QueueOffset::new(0), Duration::from_millis(30)));
    let writer = Arc::clone(&store);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        writer.put("hook", 0, &msg(&[], b"x")).unwrap();
    });
    assert!(store.wait_for_message("hook", 0, QueueOffset::new(0), Duration::from_secs(10)));
    t.join().unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[test]
fn sync_flush_policy_round_trip_and_concurrent_producers() {
    let dir = TempDir::new().unwrap();
    let mut config = small_config(dir.path());
    config.commitlog.flush = FlushPolicy::Sync;
    let store = Arc::new(MessageStore::open(config).unwrap());
    let handles: Vec<_> = (0..4u32)
        .map(|q| {
            let s = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..25u32 {
                    s.put("durable", q, &msg(&[], &i.to_le_bytes())).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for q in 0..4 {
        let bodies = read_all(&store, "durable", q, 25);
        assert_eq!(
            bodies,
            (0..25u32)
                .map(|i| i.to_le_bytes().to_vec())
                .collect::<Vec<_>>()
        );
    }
    assert!(store.commit_log().flushed_offset() >= store.dispatched_offset());
}

#[test]
fn deleted_topic_records_never_come_back() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    store
        .put_batch("gone", 0, &[msg(&[], b"old1"), msg(&[], b"old2")])
        .unwrap();
    read_all(&store, "gone", 0, 2);
    assert!(store.delete_topic("gone").unwrap());
    assert!(!store.delete_topic("gone").unwrap());
    let r = store.put("gone", 0, &msg(&[], b"new")).unwrap();
    assert_eq!(r.queue_offset.get(), 0);
    assert_eq!(read_all(&store, "gone", 0, 1), vec![b"new".to_vec()]);
    store.close().unwrap();
    // A full replay (no checkpoint) must not resurrect the old records either.
    std::fs::remove_dir_all(dir.path().join("queues")).unwrap();
    let store = open(dir.path());
    assert_eq!(read_all(&store, "gone", 0, 1), vec![b"new".to_vec()]);
}
