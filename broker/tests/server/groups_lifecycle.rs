//! The life of a consumer group on the broker: joining writes nothing (the retry topic
//! comes with the first nack), a member whose connection closes is gone at once, and a
//! group's names are reclaimed by `DeleteGroup` or after it idles past the expiry.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::server::{start, RawClient, PATIENCE};
use protocol::messages::{
    CommitOffsetRequest, DeleteGroupRequest, HeartbeatRequest, HeartbeatResponse,
    LeaveGroupRequest, ListTopicsRequest, PullRequest, PullStatus, QueryOffsetRequest,
    QueueAssignment, QueueCommit, SendBackRequest, Subscription,
};
use protocol::names::{dlq_topic, retry_topic};
use protocol::Status;
use tempfile::TempDir;

fn heartbeat(group: &str, client_id: &str, held: &[(&str, Vec<u32>)]) -> HeartbeatRequest {
    HeartbeatRequest {
        group: group.into(),
        client_id: client_id.into(),
        subscriptions: vec![Subscription {
            topic: "t".into(),
            tag_expr: "*".into(),
        }],
        max_reconsume_times: None,
        held: held
            .iter()
            .map(|(t, q)| QueueAssignment {
                topic: (*t).into(),
                queue_ids: q.clone(),
            })
            .collect(),
    }
}

fn owned(resp: &HeartbeatResponse, topic: &str) -> Vec<u32> {
    resp.assignment
        .iter()
        .find(|a| a.topic == topic)
        .map(|a| a.queue_ids.clone())
        .unwrap_or_default()
}

async fn topic_names(c: &mut RawClient) -> Vec<String> {
    let list = ListTopicsRequest {
        include_internal: true,
        ..ListTopicsRequest::default()
    };
    let (resp, _) = c.call(&list, &[]).await;
    resp.topics.into_iter().map(|t| t.name).collect()
}

fn commit(group: &str, offset: u64) -> CommitOffsetRequest {
    CommitOffsetRequest {
        group: group.into(),
        commits: vec![QueueCommit {
            topic: "t".into(),
            queue_id: 0,
            offset,
            acked_above: vec![],
        }],
        reset_epoch: None,
    }
}

async fn committed(c: &mut RawClient, group: &str) -> Option<u64> {
    let q = QueryOffsetRequest {
        group: group.into(),
        topic: "t".into(),
        queue_id: 0,
    };
    c.call(&q, &[]).await.0.committed.map(|c| c.offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_creates_no_retry_topic_and_its_pull_is_simply_empty() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(broker.local_addr()).await;
    let sent = c.send_batch("t", 0, &[b"a"], None).await;
    let (joined, _) = c.call(&heartbeat("g", "a", &[]), &[]).await;
    assert!(owned(&joined, &retry_topic("g")).is_empty());
    assert!(!topic_names(&mut c).await.contains(&retry_topic("g")));

    let pull = PullRequest {
        topic: retry_topic("g"),
        queue_id: 0,
        group: "g".into(),
        offset: 0,
        max_messages: 10,
        max_bytes: 0,
        tag_expr: "*".into(),
        max_wait_ms: 20,
    };
    let (resp, body) = c.call(&pull, &[]).await;
    assert_eq!((resp.status, resp.count), (PullStatus::NoNewMessage, 0));
    assert!(body.is_empty());
    assert!(
        !topic_names(&mut c).await.contains(&retry_topic("g")),
        "a pull creates nothing"
    );

    // The first nack creates it, and the next heartbeat assigns its queue.
    let back = SendBackRequest {
        group: "g".into(),
        msg_id: sent.receipts[0].msg_id.clone(),
        max_reconsume_times: None,
    };
    c.call(&back, &[]).await;
    assert!(topic_names(&mut c).await.contains(&retry_topic("g")));
    let (again, _) = c.call(&heartbeat("g", "a", &[]), &[]).await;
    assert_eq!(owned(&again, &retry_topic("g")), vec![0]);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_connection_closes_releases_its_queues_at_once() {
    let dir = TempDir::new().unwrap();
    // A session timeout far beyond the test's patience: only the close can free them.
    let broker = start(dir.path(), |c| c.session_timeout_ms = 600_000).await;
    let mut admin = RawClient::connect(broker.local_addr()).await;
    admin.send_batch("t", 0, &[b"a"], None).await;
    let mut a = RawClient::connect(broker.local_addr()).await;
    let (first, _) = a.call(&heartbeat("g", "a", &[]), &[]).await;
    let all = owned(&first, "t");
    assert_eq!(all.len(), 4);
    a.call(&heartbeat("g", "a", &[("t", all.clone())]), &[])
        .await;
    let mut b = RawClient::connect(broker.local_addr()).await;
    let (pending, _) = b.call(&heartbeat("g", "b", &[]), &[]).await;
    assert!(owned(&pending, "t").is_empty(), "a holds everything");
    drop(a);

    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (resp, _) = b.call(&heartbeat("g", "b", &[]), &[]).await;
        if owned(&resp, "t") == all {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a's queues never moved"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_group_removes_offsets_and_both_topics_and_guards_live_members() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(broker.local_addr()).await;
    let sent = c.send_batch("t", 0, &[b"a", b"b"], None).await;
    c.wait_dispatched("t", 0, 2).await;
    c.call(&heartbeat("g", "a", &[]), &[]).await;
    c.call(&commit("g", 1), &[]).await;
    c.call(&commit("other", 2), &[]).await;
    for (i, max) in [(0, None), (1, Some(0))] {
        let back = SendBackRequest {
            group: "g".into(),
            msg_id: sent.receipts[i].msg_id.clone(),
            max_reconsume_times: max,
        };
        c.call(&back, &[]).await;
    }
    let names = topic_names(&mut c).await;
    assert!(names.contains(&retry_topic("g")) && names.contains(&dlq_topic("g")));

    let delete = |force| DeleteGroupRequest {
        group: "g".into(),
        force,
    };
    let refused = c.call_raw(&delete(false), &[]).await;
    assert_eq!(refused.status, Status::GroupHasMembers);
    let leave = LeaveGroupRequest {
        group: "g".into(),
        client_id: "a".into(),
    };
    c.call(&leave, &[]).await;
    let (gone, _) = c.call(&delete(false), &[]).await;
    assert_eq!(gone.offsets, 1);
    assert_eq!(gone.topics.len(), 2, "{gone:?}");
    let names = topic_names(&mut c).await;
    assert!(!names.contains(&retry_topic("g")) && !names.contains(&dlq_topic("g")));
    assert_eq!(committed(&mut c, "g").await, None);
    assert_eq!(
        committed(&mut c, "other").await,
        Some(2),
        "other groups kept"
    );
    let again = c.call_raw(&delete(false), &[]).await;
    assert_eq!(again.status, Status::NotFound, "{}", again.error_message());

    // Forced, a group with a live member goes too; the member rejoins afresh.
    c.call(&heartbeat("g", "a", &[]), &[]).await;
    c.call(&commit("g", 1), &[]).await;
    let (forced, _) = c.call(&delete(true), &[]).await;
    assert_eq!((forced.members, forced.offsets), (1, 1));
    assert_eq!(committed(&mut c, "g").await, None);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_idle_past_the_expiry_is_removed_and_a_live_one_is_kept() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |c| c.group_idle_expiry_ms = 200).await;
    let mut c = RawClient::connect(broker.local_addr()).await;
    let sent = c.send_batch("t", 0, &[b"a"], None).await;
    c.wait_dispatched("t", 0, 1).await;
    for group in ["idle", "live"] {
        c.call(&heartbeat(group, "m", &[]), &[]).await;
        c.call(&commit(group, 1), &[]).await;
        let back = SendBackRequest {
            group: group.into(),
            msg_id: sent.receipts[0].msg_id.clone(),
            max_reconsume_times: None,
        };
        c.call(&back, &[]).await;
    }
    let leave = LeaveGroupRequest {
        group: "idle".into(),
        client_id: "m".into(),
    };
    c.call(&leave, &[]).await;

    let deadline = tokio::time::Instant::now() + PATIENCE;
    while topic_names(&mut c).await.contains(&retry_topic("idle")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "idle group never removed"
        );
        // The live member keeps heartbeating (its session timeout is the default 30 s).
        c.call(&heartbeat("live", "m", &[]), &[]).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(committed(&mut c, "idle").await, None);
    assert_eq!(committed(&mut c, "live").await, Some(1));
    assert!(topic_names(&mut c).await.contains(&retry_topic("live")));
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topic_limit_refuses_creates_and_deleting_a_group_frees_its_names() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |c| c.max_topics = 2).await;
    let mut c = RawClient::connect(broker.local_addr()).await;
    let sent = c.send_batch("t", 0, &[b"a"], None).await;
    let back = SendBackRequest {
        group: "g".into(),
        msg_id: sent.receipts[0].msg_id.clone(),
        max_reconsume_times: None,
    };
    c.call(&back, &[]).await;
    // "t" and "%RETRY%g" fill the limit: an explicit create and an auto-create both fail.
    let create = protocol::messages::CreateTopicRequest {
        topic: "u".into(),
        queue_count: 1,
        perm: 0,
    };
    let refused = c.call_raw(&create, &[]).await;
    assert_eq!(
        refused.status,
        Status::TopicLimit,
        "{}",
        refused.error_message()
    );
    assert!(refused.error_message().contains("limit of 2 topics"));
    let (req, body) = crate::support::server::batch("v", 0, &[b"x"], None);
    let refused = c.call_raw(&req, &body).await;
    assert_eq!(
        refused.status,
        Status::TopicLimit,
        "{}",
        refused.error_message()
    );
    // Messages to existing topics still go through.
    c.send_batch("t", 0, &[b"b"], None).await;

    let delete = DeleteGroupRequest {
        group: "g".into(),
        force: false,
    };
    c.call(&delete, &[]).await;
    c.call(&create, &[]).await;
    broker.shutdown().await.unwrap();
}
