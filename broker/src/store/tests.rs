//! Unit tests that need the store's internals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use commitlog::FlushPolicy;
use protocol::properties::{PropertiesBuilder, TAGS};

use super::*;

fn msg<'a>(props: &'a [u8], body: &'a [u8]) -> PutMessage<'a> {
    PutMessage {
        properties: props,
        body,
        born_timestamp_ms: 0,
        reconsume_times: 0,
    }
}

#[test]
fn forced_hash_collision_never_delivers_a_wrong_tag() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = MessageStore::open(StoreConfig::new(dir.path())).unwrap();
    let red = PropertiesBuilder::new().with(TAGS, "red").build();
    let blue = PropertiesBuilder::new().with(TAGS, "blue").build();
    store
        .put_batch(
            "c",
            0,
            &[msg(&red, b"r0"), msg(&blue, b"b1"), msg(&red, b"r2")],
        )
        .unwrap();
    assert!(store.wait_for_message("c", 0, QueueOffset::new(2), Duration::from_secs(10)));
    // A filter for "blue" whose hash collides with "red": every red entry passes the hash
    // check and must be rejected on the record's properties.
    let colliding = TagFilter::with_hashes(vec![("blue".into(), tag_hash("red"))]);
    let r = store
        .get_messages(GetRequest {
            topic: "c",
            queue_id: 0,
            from: QueueOffset::new(0),
            max_count: 10,
            max_bytes: usize::MAX,
            filter: &colliding,
        })
        .unwrap();
    assert!(r.messages.is_empty());
    assert_eq!(
        (r.status, r.next_offset.get()),
        (GetStatus::NoMatchedMessage, 3)
    );
    let both = TagFilter::with_hashes(vec![
        ("blue".into(), tag_hash("red")),
        ("blue".into(), tag_hash("blue")),
    ]);
    let r = store
        .get_messages(GetRequest {
            topic: "c",
            queue_id: 0,
            from: QueueOffset::new(0),
            max_count: 10,
            max_bytes: usize::MAX,
            filter: &both,
        })
        .unwrap();
    let bodies: Vec<&[u8]> = r.messages.iter().map(|m| m.view().body()).collect();
    assert_eq!(bodies, vec![&b"b1"[..]]);
    store.close().unwrap();
}

#[test]
fn append_groups_refuses_bad_groups_alone_and_continues_a_queue_across_groups() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = MessageStore::open(StoreConfig::new(dir.path())).unwrap();
    store.create_topic(TopicConfig::new("t", 2)).unwrap();
    let (a, b) = (msg(&[], b"a"), msg(&[], b"b"));
    let first = [a, b];
    let one = [a];
    let send = |queue_id, msgs| {
        store
            .validate_send(TopicScope::Client, "t", queue_id, msgs)
            .unwrap()
    };
    let groups = [
        send(0, &first[..]),
        send(9, &one[..]),
        send(0, &one[..]),
        send(1, &one[..]),
    ];
    let done = store.append_groups(&groups).unwrap();
    let offsets: Vec<Option<Vec<u64>>> = done
        .results
        .iter()
        .map(|r| {
            r.as_ref()
                .ok()
                .map(|v| v.iter().map(|p| p.queue_offset.get()).collect())
        })
        .collect();
    assert_eq!(
        offsets,
        vec![Some(vec![0, 1]), None, Some(vec![2]), Some(vec![0])]
    );
    assert!(matches!(
        done.results[1],
        Err(StoreError::QueueNotFound { queue_id: 9, .. })
    ));
    assert_eq!(done.end, store.commit_log().write_offset());
    assert!(store.wait_for_message("t", 0, QueueOffset::new(2), Duration::from_secs(10)));
    let r = store
        .get_messages(GetRequest {
            topic: "t",
            queue_id: 0,
            from: QueueOffset::new(0),
            max_count: 10,
            max_bytes: usize::MAX,
            filter: &TagFilter::parse("*").unwrap(),
        })
        .unwrap();
    let bodies: Vec<&[u8]> = r.messages.iter().map(|m| m.view().body()).collect();
    assert_eq!(bodies, vec![&b"a"[..], b"b", b"a"]);
    store.close().unwrap();
}

/// A batch validated from ranges of a shared buffer (how the server hands a request body
/// from its connection task to the appender) stores exactly the bytes those ranges name,
/// tag hash included, and a range outside the buffer is refused, never read.
#[test]
fn validate_batch_stores_its_ranges_and_refuses_ranges_outside_its_data() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = MessageStore::open(StoreConfig::new(dir.path())).unwrap();
    store.create_topic(TopicConfig::new("t", 1)).unwrap();
    let red = PropertiesBuilder::new().with(TAGS, "red").build();
    let mut data = red.to_vec();
    data.extend_from_slice(b"one");
    data.extend_from_slice(b"two");
    let n = red.len();
    let data = bytes::Bytes::from(data);
    let range = |properties, body| PutRange {
        properties,
        body,
        born_timestamp_ms: 0,
        reconsume_times: 0,
    };
    let msgs = vec![range(0..n, n..n + 3), range(0..0, n + 3..n + 6)];
    let batch = store
        .validate_batch(TopicScope::Client, "t".into(), 0, data.clone(), msgs)
        .unwrap();
    let done = store.append_groups(&[batch.send()]).unwrap();
    assert!(done.results[0].is_ok());
    assert!(store.wait_for_message("t", 0, QueueOffset::new(1), Duration::from_secs(10)));
    let read = |filter: &str| {
        let r = store
            .get_messages(GetRequest {
                topic: "t",
                queue_id: 0,
                from: QueueOffset::new(0),
                max_count: 10,
                max_bytes: usize::MAX,
                filter: &TagFilter::parse(filter).unwrap(),
            })
            .unwrap();
        r.messages
            .iter()
            .map(|m| m.view().body().to_vec())
            .collect::<Vec<_>>()
    };
    assert_eq!(read("*"), vec![b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(read("red"), vec![b"one".to_vec()]);

    let outside = vec![range(0..0, 0..1), range(0..0, n + 3..n + 7)];
    let refused = store
        .validate_batch(TopicScope::Client, "t".into(), 0, data, outside)
        .unwrap_err();
    assert_eq!(refused.message, Some(1));
    assert!(matches!(refused.error, StoreError::BadProperties(_)));
    store.close().unwrap();
}

/// A stored message is indexed by the time the write returns (async flush) or its durability
/// wait returns (sync flush), when no other write is being indexed at that moment: a
/// consumer asking right after the acknowledgement finds it, without waiting on the
/// dispatcher thread. (With concurrent writers, whoever holds the indexing round indexes
/// the others' records right after its own.)
#[test]
fn a_message_is_readable_as_soon_as_it_is_acknowledged() {
    for flush in [FlushPolicy::Async { interval_ms: 500 }, FlushPolicy::Sync] {
        let dir = tempfile::TempDir::new().unwrap();
        let mut config = StoreConfig::new(dir.path());
        config.commitlog.flush = flush;
        let store = MessageStore::open(config).unwrap();
        for i in 0..200u64 {
            let body = i.to_le_bytes();
            if i % 2 == 0 {
                store.put("t", 0, &msg(&[], &body)).unwrap();
            } else {
                let one = [msg(&[], &body)];
                let group = store
                    .validate_send(TopicScope::Client, "t", 0, &one[..])
                    .unwrap();
                let done = store.append_groups(std::slice::from_ref(&group)).unwrap();
                store.wait_durable(done.end).unwrap();
            }
            let r = store
                .get_messages(GetRequest {
                    topic: "t",
                    queue_id: 0,
                    from: QueueOffset::new(i),
                    max_count: 1,
                    max_bytes: usize::MAX,
                    filter: &TagFilter::All,
                })
                .unwrap();
            assert_eq!(r.status, GetStatus::Found, "{flush:?}: message {i}");
            assert_eq!(r.messages[0].view().body(), &body[..]);
        }
        store.close().unwrap();
    }
}

#[test]
fn a_full_disk_refuses_puts_before_auto_creating_a_topic_and_still_serves_reads() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.commitlog.segment_size_bytes = 1 << 20;
    config.disk_reserve = DiskReserve::Bytes(0);
    let store = MessageStore::open(config.clone()).unwrap();
    store.put("kept", 0, &msg(&[], b"stored before")).unwrap();
    store.close().unwrap();

    // A reserve no filesystem can meet: the store opens full.
    config.disk_reserve = DiskReserve::Bytes(u64::MAX);
    let store = MessageStore::open(config).unwrap();
    assert_eq!(store.disk().state(), DiskState::Full);
    let err = store
        .put("new-topic", 0, &msg(&[], b"refused"))
        .unwrap_err();
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err}");
    assert!(
        store.topic("new-topic").is_none(),
        "a refused put created its topic"
    );
    let err = store.put("kept", 0, &msg(&[], b"refused")).unwrap_err();
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err}");
    assert_eq!(store.disk().status().sends_refused, 2);
    let r = store
        .get_messages(GetRequest {
            topic: "kept",
            queue_id: 0,
            from: QueueOffset::new(0),
            max_count: 10,
            max_bytes: usize::MAX,
            filter: &TagFilter::All,
        })
        .unwrap();
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.messages[0].view().body(), b"stored before");
    assert_eq!(store.queue_range("kept", 0).unwrap().1.get(), 1);
}
