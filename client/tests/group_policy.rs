//! Per-group retry policies end to end: a backoff policy spaces an offset group's retries
//! and dead-letters after its max attempts; a delay-table policy does the same for a
//! receiving group (the push consumer's receive mode and `SimpleConsumer::nack`); a policy
//! survives a broker restart and a reset returns the group to the broker's defaults;
//! invalid policies are refused with the reason, by the library, the broker and `mq`.
//! Timing is only ever asserted as a lower bound (never delivered before its delay).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod restart_support;
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::admin::Admin;
use client::protocol::group_policy::{
    RetryDelays, RetryPolicy, RetryPolicyError, SetGroupPolicyRequest,
};
use client::protocol::names::dlq_topic;
use client::protocol::time::now_ms;
use client::protocol::Status;
use client::{
    ConnectOptions, Connection, Error, Failure, PullConsumer, PushConsumer, ReceivedMessage,
    SimpleConsumer, SimpleConsumerOptions,
};
use restart_support::Restartable;
use support::cli::{json_lines, mq};
use support::{fast_options, TestBroker, PATIENCE};
use tokio::time::Instant;

/// Everything in a group's dead-letter queue, read by a repair group; checks nothing more
/// arrives.
async fn dead_letters(addr: &str, group: &str, n: usize) -> Vec<ReceivedMessage> {
    let dlq = dlq_topic(group);
    let mut c = PullConsumer::connect(addr, "repair", &[(&dlq, "*")], fast_options())
        .await
        .unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        out.push(c.recv_timeout(PATIENCE).await.expect("dead letter arrives"));
    }
    assert!(c.recv_timeout(Duration::from_millis(300)).await.is_none());
    c.close().await.unwrap();
    out
}

/// Waits until `log` holds `n` entries.
async fn wait_for<T: Clone + std::fmt::Debug>(log: &Mutex<Vec<T>>, n: usize) -> Vec<T> {
    let deadline = Instant::now() + PATIENCE * 2;
    loop {
        let got = log.lock().unwrap().clone();
        if got.len() >= n {
            return got;
        }
        assert!(Instant::now() < deadline, "only {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn table(max: u32, delays: &[u64]) -> RetryPolicy {
    RetryPolicy {
        max_reconsume_times: max,
        delays: Some(RetryDelays::Table(delays.to_vec())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backoff_policy_spaces_retries_and_dead_letters_past_its_max_attempts() {
    let b = TestBroker::start().await;
    b.topic_with("pay", 1, 1).await;
    let out = mq(
        &b,
        &[
            "group",
            "set",
            "fraud",
            "--max-reconsume",
            "2",
            "--retry-backoff",
            "300,2.5,5000",
        ],
        "",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "retry policy (group): max reconsume 2, backoff 300 ms x2.5 up to 5000 ms"
    );

    // A handler that always fails: each failure nacks (a send-back to the broker).
    let seen: Arc<Mutex<Vec<(u32, u64, u64)>>> = Arc::default();
    let log = Arc::clone(&seen);
    let consumer = PullConsumer::connect(&b.addr, "fraud", &[("pay", "*")], fast_options())
        .await
        .unwrap();
    let push = PushConsumer::start(consumer, 1, move |m| {
        let log = Arc::clone(&log);
        async move {
            log.lock()
                .unwrap()
                .push((m.reconsume_times(), m.store_timestamp_ms(), now_ms()));
            Err::<(), _>("card declined")
        }
    });
    wait_for(&seen, 3).await;
    let dead = dead_letters(&b.addr, "fraud", 1).await;
    push.close().await.unwrap();
    let got = seen.lock().unwrap().clone();
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        [0, 1, 2],
        "two retries, then no further delivery: {got:?}"
    );
    // Retry n is stored in %RETRY%fraud no earlier than its delay after the failure
    // before it: 300 ms, then 750 ms.
    for (n, want_ms) in [(1, 300), (2, 750)] {
        let (failed_at, retry_stored) = (got[n - 1].2, got[n].1);
        assert!(
            retry_stored >= failed_at + want_ms,
            "retry {n} came {} ms after the failure, before its {want_ms} ms delay",
            retry_stored.saturating_sub(failed_at)
        );
    }
    assert_eq!(dead[0].reconsume_times(), 3);
    assert_eq!(dead[0].body(), b"m0");

    let out = mq(&b, &["group", "show", "fraud", "--json"], "").await;
    assert!(out.status.success(), "{out:?}");
    let v = &json_lines(&out)[0];
    assert_eq!(v["group"], "fraud");
    assert_eq!(v["retry_policy"]["source"], "group");
    assert_eq!(v["retry_policy"]["max_reconsume_times"], 2);
    assert_eq!(v["retry_policy"]["delays"]["backoff"]["initial_ms"], 300);
    assert_eq!(v["retry_policy"]["delays"]["backoff"]["multiplier"], 2.5);
    assert_eq!(v["retry_policy"]["delays"]["backoff"]["max_ms"], 5000);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_table_policy_paces_a_receiving_group_and_dead_letters_past_its_max() {
    let b = TestBroker::start().await;
    b.topic_with("jobs", 1, 1).await;
    let admin = b.admin().await;
    let resp = admin
        .set_group_policy("workers", Some(table(2, &[300, 700])))
        .await
        .unwrap();
    assert_eq!(resp.policy, Some(table(2, &[300, 700])));
    assert_eq!(resp.effective, table(2, &[300, 700]));

    // The push consumer's receive mode: `Retry` hides the message for the policy's delay.
    let seen: Arc<Mutex<Vec<(u32, u64)>>> = Arc::default();
    let log = Arc::clone(&seen);
    let opts = SimpleConsumerOptions {
        invisible: Duration::from_secs(30),
        wait: Duration::from_millis(500),
        ..SimpleConsumerOptions::default()
    };
    let consumer = SimpleConsumer::connect(&b.addr, "workers", "jobs", opts.clone())
        .await
        .unwrap();
    let push = PushConsumer::start_receiving(consumer, 1, move |m| {
        let log = Arc::clone(&log);
        async move {
            log.lock().unwrap().push((m.delivery_attempt, now_ms()));
            Err::<(), _>(Failure::Retry("busy"))
        }
    });
    let got = wait_for(&seen, 3).await;
    let dead = dead_letters(&b.addr, "workers", 1).await;
    push.close().await.unwrap();
    let got_all = seen.lock().unwrap().clone();
    assert_eq!(
        got_all.iter().map(|g| g.0).collect::<Vec<_>>(),
        [1, 2, 3],
        "attempts counted, none after the last: {got_all:?}"
    );
    for (n, want_ms) in [(1, 300), (2, 700)] {
        let gap = got[n].1 - got[n - 1].1;
        assert!(
            gap >= want_ms,
            "attempt {} came {gap} ms after attempt {n}, before its {want_ms} ms delay",
            n + 1
        );
    }
    assert_eq!(dead[0].reconsume_times(), 3);

    // `SimpleConsumer::nack` follows the same policy, read from the broker.
    b.topic_with("more", 1, 1).await;
    let c = SimpleConsumer::connect(&b.addr, "workers", "more", opts)
        .await
        .unwrap();
    let mut m = c.receive(1).await.unwrap().pop().expect("a message");
    let before = now_ms();
    assert_eq!(c.nack(&mut m).await.unwrap(), Duration::from_millis(300));
    assert!(m.invisible_until_ms >= before + 300);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_survives_a_restart_and_a_reset_returns_the_broker_defaults() {
    let mut b = Restartable::start().await;
    let admin = Admin::connect(&b.addr).await.unwrap();
    admin.create_topic("orders", 1).await.unwrap();
    // Max 1: the broker's default (16) would retry a second time.
    let policy = table(1, &[200]);
    admin
        .set_group_policy("billing", Some(policy.clone()))
        .await
        .unwrap();
    b.restart().await;

    let after = admin.group_policy("billing").await.unwrap();
    assert_eq!(after.policy, Some(policy.clone()));
    assert_eq!(after.effective, policy);
    let p = client::Producer::connect(&b.addr, client::ProducerOptions::default())
        .await
        .unwrap();
    p.send("orders", &client::Message::new("invoice"))
        .await
        .unwrap();
    p.close().await;
    let mut c = PullConsumer::connect(&b.addr, "billing", &[("orders", "*")], fast_options())
        .await
        .unwrap();
    let first = c.recv_timeout(PATIENCE).await.expect("delivered");
    let failed_at = now_ms();
    c.nack(&first).await.unwrap();
    let retry = c.recv_timeout(PATIENCE).await.expect("retried");
    assert_eq!(retry.reconsume_times(), 1);
    assert!(retry.store_timestamp_ms() >= failed_at + 200);
    c.nack(&retry).await.unwrap();
    assert!(
        c.recv_timeout(Duration::from_millis(800)).await.is_none(),
        "past the policy's one retry"
    );
    c.close().await.unwrap();
    assert_eq!(
        dead_letters(&b.addr, "billing", 1).await[0].reconsume_times(),
        2
    );

    // Reset: back to the broker's flags (this test broker: max 16, 2000 ms then 3000 ms),
    // and that too survives a restart.
    let reset = admin.set_group_policy("billing", None).await.unwrap();
    assert_eq!(reset.policy, None);
    b.restart().await;
    let after = admin.group_policy("billing").await.unwrap();
    assert_eq!(after.policy, None);
    assert_eq!(after.effective, table(16, &[2_000, 3_000]));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_policies_are_refused_with_the_reason_and_change_nothing() {
    let b = TestBroker::start_with(|c| c.max_timer_delay_ms = 60_000).await;
    let admin = b.admin().await;
    let backoff = |initial_ms, multiplier, max_ms| RetryPolicy {
        max_reconsume_times: 3,
        delays: Some(RetryDelays::Backoff {
            initial_ms,
            multiplier,
            max_ms,
        }),
    };
    let refused = |e: Error| match e {
        Error::InvalidRetryPolicy(p) => p,
        other => panic!("expected InvalidRetryPolicy, got {other}"),
    };
    let e = admin.set_group_policy("g", Some(table(0, &[100]))).await;
    assert_eq!(refused(e.unwrap_err()), RetryPolicyError::ZeroMaxAttempts);
    let e = admin.set_group_policy("g", Some(table(3, &[]))).await;
    assert_eq!(refused(e.unwrap_err()), RetryPolicyError::EmptyTable);
    let e = admin
        .set_group_policy("g", Some(backoff(100, 0.5, 1_000)))
        .await;
    assert_eq!(
        refused(e.unwrap_err()),
        RetryPolicyError::BadMultiplier(0.5)
    );
    let e = admin
        .set_group_policy("g", Some(backoff(100, 2.0, 0)))
        .await;
    assert_eq!(refused(e.unwrap_err()), RetryPolicyError::ZeroMaxDelay);

    // Over the broker's --max-timer-delay-ms: only the broker knows its limit.
    let e = admin
        .set_group_policy("g", Some(table(3, &[1_000, 120_000])))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(Status::BadRequest), "{e}");
    assert!(e.to_string().contains("--max-timer-delay-ms"), "{e}");
    // The broker checks for itself what a client sends unchecked.
    let conn = Connection::connect(&b.addr, ConnectOptions::default())
        .await
        .unwrap();
    let raw = SetGroupPolicyRequest {
        group: "g".into(),
        policy: Some(backoff(100, 0.9, 1_000)),
    };
    let e = conn.call(&raw, &[]).await.unwrap_err();
    assert_eq!(e.status(), Some(Status::BadRequest), "{e}");
    assert!(e.to_string().contains("multiplier 0.9"), "{e}");

    // `mq`: the policy's reason on one line, exit 1; a malformed flag is a usage error.
    for (args, reason) in [
        (
            vec!["--max-reconsume", "3", "--retry-backoff", "100,0.5,1000"],
            "backoff multiplier 0.5 must be a number of at least 1",
        ),
        (
            vec!["--max-reconsume", "3", "--retry-delays-ms="],
            "the retry delay table is empty",
        ),
        (vec!["--max-reconsume", "0"], "at least 1"),
    ] {
        let mut full = vec!["group", "set", "g"];
        full.extend(args);
        let out = mq(&b, &full, "").await;
        assert_eq!(out.status.code(), Some(1), "{full:?}: {out:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.starts_with("mq: error: invalid retry policy") && err.contains(reason),
            "{full:?}: {err}"
        );
    }
    let out = mq(
        &b,
        &[
            "group",
            "set",
            "g",
            "--max-reconsume",
            "3",
            "--retry-backoff",
            "1,2",
        ],
        "",
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = mq(&b, &["group", "set", "g", "--retry-delays-ms", "5"], "").await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "--max-reconsume is required: {out:?}"
    );

    let now = admin.group_policy("g").await.unwrap();
    assert_eq!(now.policy, None, "nothing was set");
    b.shutdown().await;
}
