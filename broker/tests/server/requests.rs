//! Request handling end to end over a raw connection: topics, send, pull, lookups,
//! offsets and limits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::server::{batch, records, start, RawClient};
use protocol::messages::{
    CommitOffsetRequest, CreateTopicRequest, DeleteTopicRequest, GetMessageRequest,
    GetTopicRequest, ListTopicsRequest, OffsetRange, PullRequest, PullStatus, QueryOffsetRequest,
    QueueCommit, SearchOffsetRequest, StatsRequest, UpdateTopicRequest,
};
use protocol::Status;
use tempfile::TempDir;

fn pull(topic: &str, queue_id: u32, offset: u64, wait_ms: u64) -> PullRequest {
    PullRequest {
        topic: topic.into(),
        queue_id,
        group: "g".into(),
        offset,
        max_messages: 32,
        max_bytes: 0,
        tag_expr: "*".into(),
        max_wait_ms: wait_ms,
    }
}

fn create(topic: &str, queues: u32) -> CreateTopicRequest {
    CreateTopicRequest {
        topic: topic.into(),
        queue_count: queues,
        perm: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_send_pull_and_lookups_round_trip() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(broker.local_addr()).await;

    let (created, _) = c.call(&create("orders", 2), &[]).await;
    assert_eq!(created.topic.queues.len(), 2);
    // Same settings again is fine; other settings are TopicExists.
    c.call(&create("orders", 2), &[]).await;
    assert_eq!(
        c.call_raw(&create("orders", 3), &[]).await.status,
        Status::TopicExists
    );

    let sent = c
        .send_batch("orders", 1, &[b"a", b"bb", b"ccc"], Some("red"))
        .await;
    let offsets: Vec<u64> = sent.receipts.iter().map(|r| r.queue_offset).collect();
    assert_eq!(offsets, [0, 1, 2]);
    c.wait_dispatched("orders", 1, 3).await;

    let (resp, body) = c.call(&pull("orders", 1, 0, 0), &[]).await;
    assert_eq!(
        (resp.status, resp.count, resp.next_offset),
        (PullStatus::Found, 3, 3)
    );
    let got = records(&body);
    assert_eq!(
        got,
        [
            (0, b"a".to_vec()),
            (1, b"bb".to_vec()),
            (2, b"ccc".to_vec())
        ]
    );

    // Tag filters and offsets past the head.
    let mut blue = pull("orders", 1, 0, 0);
    blue.tag_expr = "blue".into();
    let (resp, _) = c.call(&blue, &[]).await;
    assert_eq!(
        (resp.status, resp.next_offset),
        (PullStatus::NoNewMessage, 3)
    );
    let (resp, _) = c.call(&pull("orders", 1, 10, 0), &[]).await;
    assert_eq!(
        (resp.status, resp.max_offset),
        (PullStatus::OffsetPastMax, 3)
    );

    let (topic, _) = c
        .call(
            &GetTopicRequest {
                topic: "orders".into(),
            },
            &[],
        )
        .await;
    assert_eq!(
        (
            topic.topic.queues[1].min_offset,
            topic.topic.queues[1].max_offset
        ),
        (0, 3)
    );
    assert_eq!(topic.topic.queues[0].max_offset, 0);

    let (_, body) = c
        .call(
            &GetMessageRequest {
                msg_id: sent.receipts[1].msg_id.clone(),
            },
            &[],
        )
        .await;
    assert_eq!(records(&body), [(1, b"bb".to_vec())]);
    let bad_id = c
        .call_raw(
            &GetMessageRequest {
                msg_id: "nope".into(),
            },
            &[],
        )
        .await;
    assert_eq!(bad_id.status, Status::BadRequest);

    let search = SearchOffsetRequest {
        topic: "orders".into(),
        queue_id: 1,
        timestamp_ms: 0,
    };
    assert_eq!(c.call(&search, &[]).await.0.offset, 0);

    let update = UpdateTopicRequest {
        topic: "orders".into(),
        queue_count: 4,
        perm: 0,
    };
    assert_eq!(c.call(&update, &[]).await.0.topic.queue_count, 4);
    let shrink = UpdateTopicRequest {
        topic: "orders".into(),
        queue_count: 1,
        perm: 0,
    };
    assert_eq!(c.call_raw(&shrink, &[]).await.status, Status::BadRequest);

    let (stats, _) = c.call(&StatsRequest {}, &[]).await;
    assert_eq!((stats.messages_in, stats.topics), (3, 1));
    assert!(stats.commitlog_write_offset > 0);

    c.call(
        &DeleteTopicRequest {
            topic: "orders".into(),
        },
        &[],
    )
    .await;
    let (list, _) = c.call(&ListTopicsRequest::default(), &[]).await;
    assert!(list.topics.is_empty());
    assert_eq!(
        c.call_raw(&pull("orders", 1, 0, 0), &[]).await.status,
        Status::TopicNotFound
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_are_checked_against_limits_names_and_topics() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |c| {
        c.max_message_size = "1K".parse().unwrap();
        c.max_batch_messages = 4;
        c.auto_create_topics = false;
    })
    .await;
    let mut c = RawClient::connect(broker.local_addr()).await;
    let status = |r: crate::support::server::Reply| r.status;

    let (req, body) = batch("missing", 0, &[b"x"], None);
    assert_eq!(status(c.call_raw(&req, &body).await), Status::TopicNotFound);
    c.call(&create("t", 1), &[]).await;

    let big = vec![0u8; 1025];
    let (req, body) = batch("t", 0, &[&big], None);
    let reply = c.call_raw(&req, &body).await;
    assert_eq!(reply.status, Status::MessageTooLarge);
    assert!(reply.error_message().contains("1025"));

    let (req, body) = batch("t", 0, &[b"1", b"2", b"3", b"4", b"5"], None);
    assert_eq!(status(c.call_raw(&req, &body).await), Status::BatchTooLarge);
    let (req, body) = batch("%RETRY%g", 0, &[b"x"], None);
    assert_eq!(status(c.call_raw(&req, &body).await), Status::Forbidden);
    let (req, body) = batch("bad name", 0, &[b"x"], None);
    assert_eq!(status(c.call_raw(&req, &body).await), Status::InvalidName);
    let (mut req, body) = batch("t", 0, &[b"x", b"y"], None);
    req.count = 3;
    assert_eq!(status(c.call_raw(&req, &body).await), Status::BadRequest);
    let (req, body) = batch("t", 5, &[b"x"], None);
    assert_eq!(status(c.call_raw(&req, &body).await), Status::BadRequest);

    // Nothing above was stored.
    let (resp, _) = c.call(&pull("t", 0, 0, 0), &[]).await;
    assert_eq!(resp.max_offset, 0);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_created_topics_get_the_default_queue_count() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |c| c.default_queues = 3).await;
    let mut c = RawClient::connect(broker.local_addr()).await;
    c.send_batch("fresh", 2, &[b"x"], None).await;
    let (topic, _) = c
        .call(
            &GetTopicRequest {
                topic: "fresh".into(),
            },
            &[],
        )
        .await;
    assert_eq!(topic.topic.queue_count, 3);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_beyond_the_head_are_rejected_and_others_are_queryable() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(broker.local_addr()).await;
    c.call(&create("t", 1), &[]).await;
    c.send_batch("t", 0, &[b"1", b"2", b"3"], None).await;
    c.wait_dispatched("t", 0, 3).await;
    let commit = |offset: u64, acked: Vec<OffsetRange>| CommitOffsetRequest {
        group: "g".into(),
        commits: vec![QueueCommit {
            topic: "t".into(),
            queue_id: 0,
            offset,
            acked_above: acked,
        }],
        reset_epoch: None,
    };
    let reply = c.call_raw(&commit(4, vec![]), &[]).await;
    assert_eq!(reply.status, Status::OffsetOutOfRange);
    let past = vec![OffsetRange { start: 2, end: 9 }];
    assert_eq!(
        c.call_raw(&commit(1, past), &[]).await.status,
        Status::OffsetOutOfRange
    );
    let ok = vec![OffsetRange { start: 2, end: 3 }];
    c.call(&commit(1, ok.clone()), &[]).await;
    let query = QueryOffsetRequest {
        group: "g".into(),
        topic: "t".into(),
        queue_id: 0,
    };
    let (resp, _) = c.call(&query, &[]).await;
    let committed = resp.committed.unwrap();
    assert_eq!((committed.offset, committed.acked_above), (1, ok));
    let other = QueryOffsetRequest {
        group: "h".into(),
        topic: "t".into(),
        queue_id: 0,
    };
    assert!(c.call(&other, &[]).await.0.committed.is_none());
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_permissions_are_enforced() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(broker.local_addr()).await;
    let read_only = CreateTopicRequest {
        perm: protocol::messages::PERM_READ,
        ..create("ro", 1)
    };
    let (created, _) = c.call(&read_only, &[]).await;
    assert_eq!(created.topic.perm, protocol::messages::PERM_READ);
    let (req, body) = batch("ro", 0, &[b"x"], None);
    assert_eq!(c.call_raw(&req, &body).await.status, Status::Forbidden);
    let write_only = CreateTopicRequest {
        perm: protocol::messages::PERM_WRITE,
        ..create("wo", 1)
    };
    c.call(&write_only, &[]).await;
    c.send_batch("wo", 0, &[b"x"], None).await;
    assert_eq!(
        c.call_raw(&pull("wo", 0, 0, 0), &[]).await.status,
        Status::Forbidden
    );
    let internal = DeleteTopicRequest {
        topic: "%DLQ%g".into(),
    };
    assert_eq!(c.call_raw(&internal, &[]).await.status, Status::Forbidden);
    broker.shutdown().await.unwrap();
}

/// A topic listing comes in pages in name order, so that a broker with many topics (or
/// topics with many queues) answers in pieces that fit the protocol's header limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_listed_in_pages_in_name_order() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(broker.local_addr()).await;
    // Seven small topics, then twenty of 1,024 queues: more queues than one page carries.
    let mut want: Vec<String> = (0..7).map(|i| format!("t{i}")).collect();
    want.extend((0..20).map(|i| format!("w{i:02}")));
    for name in &want {
        let queues = if name.starts_with('w') { 1024 } else { 1 };
        c.call(&create(name, queues), &[]).await;
    }

    let (seen, pages) = walk(&mut c, 3).await;
    assert_eq!(seen, want, "every topic once, in name order");
    assert!(pages.iter().all(|&(n, _)| n <= 3), "{pages:?}");
    assert_eq!(pages.len(), 9);

    // The broker's own page size: pages end before 16,384 queues.
    let (seen, pages) = walk(&mut c, 0).await;
    assert_eq!(seen, want);
    assert!(pages.iter().all(|&(_, q)| q <= 16_384), "{pages:?}");
    assert_eq!(pages.len(), 2, "{pages:?}");
    broker.shutdown().await.unwrap();
}

/// Lists every topic page by page with `limit`: the names in order, and per page its topic
/// and queue counts.
async fn walk(c: &mut RawClient, limit: u32) -> (Vec<String>, Vec<(usize, u32)>) {
    let (mut seen, mut pages, mut after) = (Vec::new(), Vec::new(), None);
    loop {
        let req = ListTopicsRequest {
            include_internal: false,
            after: after.take(),
            limit,
        };
        let (page, _) = c.call(&req, &[]).await;
        assert!(!page.topics.is_empty());
        let queues: u32 = page.topics.iter().map(|t| t.queue_count).sum();
        pages.push((page.topics.len(), queues));
        seen.extend(page.topics.into_iter().map(|t| t.name));
        match page.next {
            Some(next) => {
                assert_eq!(Some(&next), seen.last());
                after = Some(next);
            }
            None => return (seen, pages),
        }
    }
}
