//! Group requests over a raw connection: heartbeat and assignment, group report with
//! lag, offset reset guarded by live members, and send-back to the dead-letter topic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::server::{start, RawClient};
use protocol::messages::{
    CommitOffsetRequest, CreateTopicRequest, GetTopicRequest, GroupInfoRequest, HeartbeatRequest,
    LeaveGroupRequest, QueueCommit, ResetOffsetRequest, ResetTarget, SendBackRequest, Subscription,
};
use protocol::names::dlq_topic;
use protocol::Status;
use tempfile::TempDir;

fn heartbeat(client_id: &str) -> HeartbeatRequest {
    HeartbeatRequest {
        group: "g".into(),
        client_id: client_id.into(),
        subscriptions: vec![Subscription {
            topic: "t".into(),
            tag_expr: "*".into(),
        }],
        max_reconsume_times: None,
        held: Vec::new(),
    }
}

fn reset(force: bool) -> ResetOffsetRequest {
    ResetOffsetRequest {
        group: "g".into(),
        topic: "t".into(),
        to: ResetTarget::Earliest,
        force,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_lag_and_guarded_reset() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(broker.local_addr()).await;
    let create = CreateTopicRequest {
        topic: "t".into(),
        queue_count: 2,
        perm: 0,
    };
    c.call(&create, &[]).await;
    c.send_batch("t", 0, &[b"a", b"b", b"c"], None).await;
    c.wait_dispatched("t", 0, 3).await;

    let (a, _) = c.call(&heartbeat("a"), &[]).await;
    let owned: Vec<(String, Vec<u32>)> = a
        .assignment
        .iter()
        .map(|q| (q.topic.clone(), q.queue_ids.clone()))
        .collect();
    // The retry topic is created by the group's first nack, not by joining.
    assert_eq!(owned, vec![("t".to_string(), vec![0, 1])]);
    let (b, _) = c.call(&heartbeat("b"), &[]).await;
    assert!(b.generation > a.generation);

    let commit = CommitOffsetRequest {
        group: "g".into(),
        commits: vec![QueueCommit {
            topic: "t".into(),
            queue_id: 0,
            offset: 1,
            acked_above: vec![],
        }],
        reset_epoch: None,
    };
    c.call(&commit, &[]).await;
    let (info, _) = c.call(&GroupInfoRequest { group: "g".into() }, &[]).await;
    assert_eq!(info.members.len(), 2);
    let q0 = info
        .queues
        .iter()
        .find(|q| q.topic == "t" && q.queue_id == 0)
        .unwrap();
    assert_eq!((q0.committed, q0.max_offset, q0.lag), (Some(1), 3, 2));

    let refused = c.call_raw(&reset(false), &[]).await;
    assert_eq!(refused.status, Status::GroupHasMembers);
    let (forced, _) = c.call(&reset(true), &[]).await;
    assert_eq!(forced.queues.len(), 2);
    assert!(forced.queues.iter().all(|q| q.offset == 0));

    for id in ["a", "b"] {
        let leave = LeaveGroupRequest {
            group: "g".into(),
            client_id: id.into(),
        };
        c.call(&leave, &[]).await;
    }
    let latest = ResetOffsetRequest {
        to: ResetTarget::Latest,
        ..reset(false)
    };
    let (reset_resp, _) = c.call(&latest, &[]).await;
    let q0 = reset_resp.queues.iter().find(|q| q.queue_id == 0).unwrap();
    assert_eq!(q0.offset, 3);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_back_past_the_last_attempt_goes_to_the_dead_letter_topic() {
    let dir = TempDir::new().unwrap();
    let broker = start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(broker.local_addr()).await;
    let sent = c.send_batch("t", 0, &[b"poison"], None).await;
    let back = SendBackRequest {
        group: "g".into(),
        msg_id: sent.receipts[0].msg_id.clone(),
        max_reconsume_times: Some(0),
    };
    let (resp, _) = c.call(&back, &[]).await;
    assert!(resp.dead_lettered);
    let dlq = dlq_topic("g");
    c.wait_dispatched(&dlq, 0, 1).await;
    let (topic, _) = c.call(&GetTopicRequest { topic: dlq }, &[]).await;
    assert_eq!(topic.topic.queues[0].max_offset, 1);

    let unknown = SendBackRequest {
        msg_id: "000000000FFFFFFF00000040".into(),
        ..back
    };
    assert_eq!(c.call_raw(&unknown, &[]).await.status, Status::NotFound);
    broker.shutdown().await.unwrap();
}
