//! Send-back against a real message store: growing delays, origin preserved on every
//! retry, dead letters past the last attempt, bad requests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::retry::*;
use broker::retry::RetryError;
use broker::store::PutMessage;
use protocol::group_policy::RetryPolicy;
use protocol::messages::SendBackRequest;
use protocol::properties::{
    DUE_AT_MS, KEYS, ORIGIN_MSG_ID, ORIGIN_QUEUE_ID, ORIGIN_QUEUE_OFFSET, ORIGIN_TOPIC, REAL_TOPIC,
    TAGS,
};

#[test]
fn nacked_k_times_sees_growing_delays_and_the_original_identity() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let service = start(&store, 16);
    let original = produce(&store, b"pay order 7");

    let k = 4u32;
    let mut delivered_id = original.clone();
    let mut delays = Vec::new();
    for attempt in 1..=k {
        let sent_at = retry_support_now();
        let resp = nack(&service, "billing", &delivered_id);
        assert!(!resp.dead_lettered);
        assert_eq!(resp.reconsume_times, attempt);
        delays.push(resp.due_at_ms - sent_at);

        let rec = wait_message(&store, "%RETRY%billing", u64::from(attempt - 1));
        let view = rec.view();
        // Never delivered before it is due.
        assert!(
            view.store_timestamp_ms() >= resp.due_at_ms,
            "attempt {attempt} delivered early"
        );
        assert_eq!(view.reconsume_times(), attempt);
        assert_eq!(view.body(), b"pay order 7");
        assert_eq!(view.born_timestamp_ms(), 1_000);
        assert_eq!(prop(&rec, ORIGIN_TOPIC).as_deref(), Some("orders"));
        assert_eq!(prop(&rec, ORIGIN_MSG_ID), Some(original.clone()));
        assert_eq!(prop(&rec, ORIGIN_QUEUE_ID).as_deref(), Some("1"));
        assert_eq!(prop(&rec, ORIGIN_QUEUE_OFFSET).as_deref(), Some("0"));
        assert_eq!(prop(&rec, TAGS).as_deref(), Some("red"));
        assert_eq!(prop(&rec, KEYS).as_deref(), Some("order-7"));
        assert_eq!(prop(&rec, REAL_TOPIC), None, "schedule properties stripped");
        assert_eq!(prop(&rec, DUE_AT_MS), None);
        // The consumer nacks the retry it was given, by that retry's own id.
        delivered_id = id_of(&rec);
    }
    // 50, 100, 200, then the last entry again (the bound above only allows for a slow machine).
    let expected = [50, 100, 200, 200];
    for (got, want) in delays.iter().zip(expected) {
        assert!(
            (want..want + 2_000).contains(got),
            "delays {delays:?}, expected {expected:?}"
        );
    }
    assert_eq!(count(&store, "%RETRY%billing"), u64::from(k));
    shut_down(service, store);
}

fn retry_support_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn past_max_reconsume_times_the_message_is_dead_lettered_intact() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let service = start(&store, 2);
    let original = produce(&store, b"poison");

    let mut delivered_id = original.clone();
    for attempt in 1..=2u64 {
        let resp = nack(&service, "g", &delivered_id);
        assert!(!resp.dead_lettered);
        delivered_id = id_of(&wait_message(&store, "%RETRY%g", attempt - 1));
    }
    let resp = nack(&service, "g", &delivered_id);
    assert!(resp.dead_lettered);
    assert_eq!((resp.reconsume_times, resp.due_at_ms), (3, 0));

    let dead = wait_message(&store, "%DLQ%g", 0);
    assert_eq!(dead.view().topic(), "%DLQ%g");
    assert_eq!(dead.view().reconsume_times(), 3);
    assert_eq!(dead.view().body(), b"poison");
    assert_eq!(prop(&dead, ORIGIN_TOPIC).as_deref(), Some("orders"));
    assert_eq!(prop(&dead, ORIGIN_MSG_ID), Some(original));
    assert_eq!(prop(&dead, TAGS).as_deref(), Some("red"));
    assert_eq!(prop(&dead, KEYS).as_deref(), Some("order-7"));
    assert_eq!(store.topic("%DLQ%g").unwrap().queue_count, 1);
    assert_eq!(store.topic("%RETRY%g").unwrap().queue_count, 1);
    assert_eq!(count(&store, "%RETRY%g"), 2, "no third retry");
    // A dead letter is not sent back again.
    let err = service
        .send_back(&SendBackRequest {
            group: "g".into(),
            msg_id: id_of(&dead),
            max_reconsume_times: None,
        })
        .unwrap_err();
    assert!(matches!(err, RetryError::NotRetryable { .. }), "{err}");
    shut_down(service, store);
}

#[test]
fn group_policy_and_request_override_of_max_reconsume_times() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let service = start(&store, 16);
    // A first retry: nacking it asks for the second.
    let id = store
        .put(
            "orders",
            1,
            &PutMessage {
                properties: &[],
                body: b"x",
                born_timestamp_ms: 1_000,
                reconsume_times: 1,
            },
        )
        .unwrap()
        .msg_id
        .to_string();

    let strict = RetryPolicy {
        max_reconsume_times: 1,
        delays: None,
    };
    assert!(!service.set_group_policy("strict", Some(strict)).unwrap());
    assert_eq!(service.group_max_reconsume_times("strict"), Some(1));
    assert!(nack(&service, "strict", &id).dead_lettered);
    // The request's override beats the group's setting.
    let resp = service
        .send_back(&SendBackRequest {
            group: "strict".into(),
            msg_id: id.clone(),
            max_reconsume_times: Some(5),
        })
        .unwrap();
    assert!(!resp.dead_lettered);
    assert!(service.set_group_policy("strict", None).unwrap());
    assert!(!nack(&service, "strict", &id).dead_lettered);
    shut_down(service, store);
}

#[test]
fn bad_requests_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let service = start(&store, 16);
    let id = produce(&store, b"x");
    let send = |group: &str, msg_id: &str| {
        service.send_back(&SendBackRequest {
            group: group.into(),
            msg_id: msg_id.into(),
            max_reconsume_times: None,
        })
    };

    let err = send("g", "not-an-id").unwrap_err();
    assert!(matches!(err, RetryError::BadMessageId { .. }) && err.is_bad_request());
    let err = send("g", "00000000FFFFFFFF00000040").unwrap_err();
    assert!(err.is_bad_request(), "{err}");
    let err = send("%evil", &id).unwrap_err();
    assert!(matches!(err, RetryError::InvalidGroup { .. }), "{err}");
    assert!(service.ensure_retry_topic("bad group").is_err());

    // Parked copies are never handed to consumers, so they cannot be sent back.
    nack(&service, "g", &id);
    let parked = wait_message(&store, protocol::names::TIMER_TOPIC, 0);
    let err = send("g", &id_of(&parked)).unwrap_err();
    assert!(matches!(err, RetryError::NotRetryable { .. }), "{err}");

    service.close();
    // Closing let go of the store.
    std::sync::Arc::try_unwrap(store).unwrap().close().unwrap();
}

#[test]
fn ensure_retry_topic_creates_one_queue_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let service = start(&store, 16);
    service.ensure_retry_topic("g").unwrap();
    service.ensure_retry_topic("g").unwrap();
    assert_eq!(store.topic("%RETRY%g").unwrap().queue_count, 1);
    shut_down(service, store);
}
