//! The RocketMQ 5 gRPC endpoint driven by the official Python client
//! (`rocketmq-python-client`, installed into `client/tests/grpc/.venv` by
//! `scripts/test-deps`): producer, SimpleConsumer and PushConsumer against a real broker,
//! and interop with `mq produce` / `mq consume`. Without the client installed these tests
//! fail, saying how to install it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use support::cli::{json_lines, mq};
use support::TestBroker;

/// Longest one client script may run; a hang fails the test rather than blocking CI.
const SCRIPT_LIMIT: Duration = Duration::from_secs(120);

fn python() -> PathBuf {
    let py = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/grpc/.venv/bin/python");
    assert!(
        py.exists(),
        "the official RocketMQ Python client is not installed: run `bash scripts/test-deps` \
         (it creates client/tests/grpc/.venv with rocketmq-python-client==5.1.2); missing {}",
        py.display()
    );
    py
}

fn endpoint(b: &TestBroker) -> String {
    let addr = b
        .broker
        .as_ref()
        .and_then(broker::RunningBroker::grpc_addr)
        .expect("the test broker serves gRPC");
    addr.to_string()
}

/// Runs one command of `tests/grpc/rocketmq_py.py` and returns the JSON it printed last.
async fn py(command: &str, args: Value) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/grpc/rocketmq_py.py");
    // The client writes its logs under $HOME/logs; keep them out of the real home.
    let home = tempfile::TempDir::new().unwrap();
    let child = tokio::process::Command::new(python())
        .arg(&script)
        .arg(command)
        .arg(args.to_string())
        .env("HOME", home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(SCRIPT_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("python {command} did not finish within {SCRIPT_LIMIT:?}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(home.path().join("logs/rocketmq_python/rocketmq_client.log"))
        .unwrap_or_default();
    assert!(
        out.status.success(),
        "python {command} failed: {}\nstdout: {stdout}\nstderr: {}\nclient log tail: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    let last = stdout.lines().last().unwrap_or_default();
    let mut v: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("python {command} printed {stdout:?}: {e}"));
    // What the client logged: some server answers (a failed route) reach only its log.
    v["client_log"] = log.into();
    v
}

async fn create_topic(b: &TestBroker, topic: &str, queues: u32) {
    b.admin().await.create_topic(topic, queues).await.unwrap();
}

fn bodies(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_producer_to_simple_consumer_keeps_body_tag_keys_and_properties() {
    let b = TestBroker::start().await;
    create_topic(&b, "orders", 4).await;
    let ep = endpoint(&b);
    let sent = py(
        "produce",
        json!({"endpoint": ep, "topic": "orders", "bodies": ["a", "b", "c"], "tag": "paid",
               "keys": ["k1", "k2"], "props": {"colour": "red"}}),
    )
    .await;
    assert_eq!(sent["errors"], json!([]), "{sent}");
    let ids: Vec<&str> = sent["sent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);

    let got = py(
        "receive",
        json!({"endpoint": ep, "topic": "orders", "group": "billing", "want": 3}),
    )
    .await;
    assert_eq!(bodies(&got), ["a", "b", "c"], "{got}");
    for m in got["messages"].as_array().unwrap() {
        assert_eq!(m["tag"], "paid");
        assert_eq!(m["keys"], json!(["k1", "k2"]));
        assert_eq!(m["properties"], json!({"colour": "red"}));
        assert_eq!(m["attempt"], 1);
        assert_eq!(m["corrupted"], false, "the MD5 digest matches the body");
        assert!(
            ids.contains(&m["id"].as_str().unwrap()),
            "delivered under the id the send answered: {m}"
        );
    }

    // Everything was acked: the next poll is empty (MESSAGE_NOT_FOUND), not an error.
    let empty = py(
        "receive",
        json!({"endpoint": ep, "topic": "orders", "group": "billing", "want": 1, "polls": 1, "await_s": 1}),
    )
    .await;
    assert_eq!(empty["messages"], json!([]));
    assert_eq!(empty["empty_polls"], 1);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mq_and_the_python_client_read_each_others_messages() {
    let b = TestBroker::start().await;
    create_topic(&b, "mixed", 2).await;
    let ep = endpoint(&b);

    let out = mq(
        &b,
        &[
            "produce",
            "mixed",
            "--tag",
            "native",
            "--key",
            "nk",
            "--property",
            "origin=mq",
        ],
        "from-mq-1\nfrom-mq-2\n",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = py(
        "receive",
        json!({"endpoint": ep, "topic": "mixed", "group": "py-reader", "want": 2}),
    )
    .await;
    assert_eq!(bodies(&got), ["from-mq-1", "from-mq-2"], "{got}");
    for m in got["messages"].as_array().unwrap() {
        assert_eq!(m["tag"], "native");
        assert_eq!(m["keys"], json!(["nk"]));
        assert_eq!(m["properties"], json!({"origin": "mq"}));
    }

    let sent = py(
        "produce",
        json!({"endpoint": ep, "topic": "mixed", "bodies": ["from-py"], "tag": "py",
               "keys": ["pk"], "props": {"origin": "python"}}),
    )
    .await;
    assert_eq!(sent["errors"], json!([]), "{sent}");
    let out = mq(
        &b,
        &[
            "consume",
            "mixed",
            "--group",
            "mq-reader",
            "--max",
            "3",
            "--idle-exit-ms",
            "5000",
        ],
        "",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    let py_msg = lines
        .iter()
        .find(|l| l["body"] == "from-py")
        .unwrap_or_else(|| panic!("mq consume did not see the python message: {lines:?}"));
    assert_eq!(py_msg["tag"], "py");
    assert_eq!(py_msg["key"], "pk");
    assert_eq!(py_msg["properties"], json!({"origin": "python"}));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topics_bad_receipt_handles_and_oversized_bodies_are_clear_errors() {
    let b = TestBroker::start_with(|c| {
        c.auto_create_topics = false;
        c.max_message_size = broker::config::ByteSize(64 << 10);
    })
    .await;
    create_topic(&b, "small", 1).await;
    let ep = endpoint(&b);

    let missing = py(
        "produce",
        json!({"endpoint": ep, "topic": "nowhere", "bodies": ["x"]}),
    )
    .await;
    // The client raises its own "failed to fetch topic:nowhere route." and logs the
    // broker's answer.
    assert_eq!(missing["sent"], json!([]));
    assert!(
        missing["errors"][0]["text"]
            .as_str()
            .unwrap()
            .contains("nowhere"),
        "{missing}"
    );
    assert!(
        missing["client_log"]
            .as_str()
            .unwrap()
            .contains("topic nowhere does not exist"),
        "{missing}"
    );

    let big = "x".repeat((64 << 10) + 1);
    let too_big = py(
        "produce",
        json!({"endpoint": ep, "topic": "small", "bodies": [big]}),
    )
    .await;
    let text = too_big["errors"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // Refused by the broker (41301) or, once the client has the broker's settings, by the
    // client with the broker's limit; either way the limit is named.
    assert!(text.contains("65536"), "{text}");
    assert_eq!(too_big["sent"], json!([]));

    py(
        "produce",
        json!({"endpoint": ep, "topic": "small", "bodies": ["ok"]}),
    )
    .await;
    let bad = py(
        "bad_handle",
        json!({"endpoint": ep, "topic": "small", "group": "g"}),
    )
    .await;
    assert_eq!(bad["error"]["code"], 40013, "{bad}");
    assert!(
        bad["error"]["text"]
            .as_str()
            .unwrap()
            .contains("not-a-receipt-handle"),
        "{bad}"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacked_message_comes_back_with_the_next_attempt_and_its_old_handle_is_refused() {
    let b = TestBroker::start().await;
    create_topic(&b, "leases", 1).await;
    let ep = endpoint(&b);
    py(
        "produce",
        json!({"endpoint": ep, "topic": "leases", "bodies": ["once"]}),
    )
    .await;
    let r = py(
        "redeliver",
        json!({"endpoint": ep, "topic": "leases", "group": "g"}),
    )
    .await;
    assert_eq!(r["first"]["attempt"], 1, "{r}");
    assert_eq!(r["second"]["attempt"], 2, "{r}");
    assert_eq!(r["second"]["body"], "once");
    assert_eq!(
        r["first"]["id"], r["second"]["id"],
        "a redelivery keeps the message id"
    );
    assert_eq!(r["stale_ack"]["code"], 40013, "{r}");
    assert_eq!(r["acked"], true);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_consumer_that_fails_twice_sees_attempts_one_to_three() {
    let b = TestBroker::start().await;
    create_topic(&b, "pushy", 2).await;
    let ep = endpoint(&b);
    let out = mq(
        &b,
        &[
            "group",
            "set",
            "pushers",
            "--max-reconsume",
            "5",
            "--retry-delays-ms",
            "1000,2000",
        ],
        "",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    py(
        "produce",
        json!({"endpoint": ep, "topic": "pushy", "bodies": ["p"]}),
    )
    .await;
    let r = py(
        "push",
        json!({"endpoint": ep, "topic": "pushy", "group": "pushers", "fail_times": 2, "stop_after": 3}),
    )
    .await;
    let attempts: Vec<u64> = r["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 3], "{r}");
    // Acked on the third attempt: nothing is left for the group.
    let left = py(
        "receive",
        json!({"endpoint": ep, "topic": "pushy", "group": "pushers", "want": 1, "polls": 1, "await_s": 2}),
    )
    .await;
    assert_eq!(left["messages"], json!([]), "{left}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_consumer_that_always_fails_ends_in_the_groups_dead_letter_queue() {
    let b = TestBroker::start().await;
    create_topic(&b, "poison", 1).await;
    let ep = endpoint(&b);
    let out = mq(
        &b,
        &[
            "group",
            "set",
            "doomed",
            "--max-reconsume",
            "2",
            "--retry-delays-ms",
            "1000",
        ],
        "",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    py(
        "produce",
        json!({"endpoint": ep, "topic": "poison", "bodies": ["bad"]}),
    )
    .await;
    let r = py(
        "push",
        json!({"endpoint": ep, "topic": "poison", "group": "doomed", "fail_times": -1, "stop_after": 3}),
    )
    .await;
    let attempts: Vec<u64> = r["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(
        attempts,
        [1, 2, 3],
        "max reconsume 2: three deliveries, {r}"
    );
    let mut dlq = Vec::new();
    for _ in 0..50 {
        let out = mq(&b, &["dlq", "show", "doomed"], "").await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dlq = json_lines(&out);
        if !dlq.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0]["body"], "bad");
    assert_eq!(dlq[0]["origin_topic"], "poison");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_groups_are_received_in_send_order() {
    let b = TestBroker::start().await;
    create_topic(&b, "fifo", 4).await;
    let ep = endpoint(&b);
    for g in ["order-1", "order-2"] {
        let bodies: Vec<String> = (0..8).map(|i| format!("{g}:{i}")).collect();
        let sent = py(
            "produce",
            json!({"endpoint": ep, "topic": "fifo", "bodies": bodies, "message_group": g}),
        )
        .await;
        assert_eq!(sent["errors"], json!([]), "{sent}");
    }
    let got = py(
        "receive",
        json!({"endpoint": ep, "topic": "fifo", "group": "shipper", "want": 16, "polls": 40}),
    )
    .await;
    let msgs = got["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 16, "{got}");
    for g in ["order-1", "order-2"] {
        let seen: Vec<&str> = msgs
            .iter()
            .filter(|m| m["message_group"] == g)
            .map(|m| m["body"].as_str().unwrap())
            .collect();
        let want: Vec<String> = (0..8).map(|i| format!("{g}:{i}")).collect();
        assert_eq!(seen, want, "message group {g} out of order: {got}");
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_message_is_not_delivered_before_its_time_and_can_be_recalled() {
    let b = TestBroker::start().await;
    create_topic(&b, "later", 1).await;
    let ep = endpoint(&b);
    let sent = py(
        "produce",
        json!({"endpoint": ep, "topic": "later", "bodies": ["soon"], "delay_s": 3}),
    )
    .await;
    assert_eq!(sent["errors"], json!([]), "{sent}");
    let got = py(
        "receive",
        json!({"endpoint": ep, "topic": "later", "group": "g", "want": 1, "polls": 20, "await_s": 2}),
    )
    .await;
    let m = &got["messages"][0];
    assert_eq!(m["body"], "soon", "{got}");
    let due = m["delivery_timestamp"].as_u64().unwrap();
    assert!(
        m["received_at"].as_u64().unwrap() >= due,
        "delivered before its delivery time: {m}"
    );

    // A message due in an hour is recalled through the gRPC endpoint; mq then finds it
    // already recalled.
    let sent = py(
        "produce",
        json!({"endpoint": ep, "topic": "later", "bodies": ["never"], "delay_s": 3600}),
    )
    .await;
    let handle = sent["sent"][0]["recall_handle"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!handle.is_empty(), "{sent}");
    let r = py(
        "recall",
        json!({"endpoint": ep, "topic": "later", "handle": handle}),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    let out = mq(&b, &["recall", "later", &handle], "").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_lines(&out)[0]["status"], "already_recalled");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_simple_consumers_share_a_group_without_double_deliveries() {
    let b = TestBroker::start().await;
    create_topic(&b, "shared", 4).await;
    let ep = endpoint(&b);
    let bodies: Vec<String> = (0..40).map(|i| format!("m{i:02}")).collect();
    py(
        "produce",
        json!({"endpoint": ep, "topic": "shared", "bodies": bodies}),
    )
    .await;
    let args = json!({"endpoint": ep, "topic": "shared", "group": "workers", "want": 40,
                      "max": 4, "polls": 30, "await_s": 1, "max_empty": 2});
    let (x, y) = tokio::join!(py("receive", args.clone()), py("receive", args));
    let mut all = bodies_of(&x);
    all.extend(bodies_of(&y));
    all.sort();
    assert_eq!(all, bodies, "each message acked once, by one of the two");
    b.shutdown().await;
}

fn bodies_of(v: &Value) -> Vec<String> {
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_between_receives_loses_nothing_and_redelivers_nothing_acked() {
    let mut b = TestBroker::start().await;
    create_topic(&b, "durable", 2).await;
    let bodies: Vec<String> = (0..10).map(|i| format!("d{i}")).collect();
    let ep = endpoint(&b);
    py(
        "produce",
        json!({"endpoint": ep, "topic": "durable", "bodies": bodies}),
    )
    .await;
    let first = py(
        "receive",
        json!({"endpoint": ep, "topic": "durable", "group": "g", "want": 4, "max": 1}),
    )
    .await;
    let mut seen = bodies_of(&first);
    assert_eq!(seen.len(), 4, "{first}");

    // Acks are answered once written: a restart keeps them.
    b.broker.take().unwrap().shutdown().await.unwrap();
    let mut config = broker::Config::ephemeral(b.dir.path());
    config.offsets_persist_interval_ms = 100;
    b.broker = Some(broker::Broker::start(config).await.unwrap());
    let ep = endpoint(&b);
    let rest = py(
        "receive",
        json!({"endpoint": ep, "topic": "durable", "group": "g", "want": 6, "polls": 10,
               "await_s": 1, "max_empty": 2}),
    )
    .await;
    seen.extend(bodies_of(&rest));
    seen.sort();
    assert_eq!(
        seen, bodies,
        "every message once across the restart: {rest}"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_roll_back_and_an_orphan_is_resolved_by_the_clients_checker() {
    let b = TestBroker::start_with(|c| {
        c.tx_timeout_ms = 1_000;
        c.tx_check_interval_ms = 500;
    })
    .await;
    create_topic(&b, "payments", 2).await;
    let ep = endpoint(&b);
    let r = py("transaction", json!({"endpoint": ep, "topic": "payments"})).await;
    let checked = r["checked"].as_array().unwrap();
    assert!(!checked.is_empty(), "the orphan was checked back: {r}");
    assert!(
        checked
            .iter()
            .all(|c| c["body"] == "orphan" && c["corrupted"] == false),
        "{r}"
    );
    let got = py(
        "receive",
        json!({"endpoint": ep, "topic": "payments", "group": "ledger", "want": 3, "polls": 10,
               "await_s": 1, "max_empty": 2}),
    )
    .await;
    assert_eq!(
        bodies(&got),
        ["committed", "orphan"],
        "the rolled-back message never shows: {got}"
    );
    b.shutdown().await;
}
