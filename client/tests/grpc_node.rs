//! The RocketMQ 5 gRPC endpoint driven by the official Node.js client
//! (`rocketmq-client-nodejs`, installed into `client/tests/grpc/node_modules` by
//! `scripts/test-deps`): producer, SimpleConsumer and PushConsumer against a real broker,
//! and interop with `mq`. Without the client installed these tests fail, saying how to
//! install it.

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

fn script_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/grpc");
    assert!(
        dir.join("node_modules/rocketmq-client-nodejs").is_dir(),
        "the official RocketMQ Node.js client is not installed: run `bash scripts/test-deps` \
         (it runs `npm ci` in client/tests/grpc for rocketmq-client-nodejs@1.0.8)"
    );
    dir
}

fn endpoint(b: &TestBroker) -> String {
    b.broker
        .as_ref()
        .and_then(broker::RunningBroker::grpc_addr)
        .expect("the test broker serves gRPC")
        .to_string()
}

/// Runs one command of `tests/grpc/rocketmq_node.js` and returns the JSON it printed last.
async fn node(command: &str, args: Value) -> Value {
    let dir = script_dir();
    let home = tempfile::TempDir::new().unwrap();
    let child = tokio::process::Command::new("node")
        .current_dir(&dir)
        .arg("rocketmq_node.js")
        .arg(command)
        .arg(args.to_string())
        .env("HOME", home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node ({e}); scripts/test-deps installs it"));
    let out = tokio::time::timeout(SCRIPT_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("node {command} did not finish within {SCRIPT_LIMIT:?}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "node {command} failed: {}\nstdout: {stdout}\nstderr tail: {}",
        out.status,
        stderr.lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("node {command} printed {stdout:?}: {e}"))
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
async fn node_producer_to_simple_consumer_over_every_queue_keeps_the_message() {
    let b = TestBroker::start().await;
    // Four queues: the Node client only ever names queue 0, so the broker must spread the
    // sends and pop across all of them.
    create_topic(&b, "orders", 4).await;
    let ep = endpoint(&b);
    let sent = node(
        "produce",
        json!({"endpoint": ep, "topic": "orders", "bodies": ["a", "b", "c", "d", "e"], "tag": "paid",
               "keys": ["k1"], "props": {"colour": "red"}}),
    )
    .await;
    assert_eq!(sent["errors"], json!([]), "{sent}");
    assert_eq!(sent["sent"].as_array().unwrap().len(), 5);
    let got = node(
        "receive",
        json!({"endpoint": ep, "topic": "orders", "group": "billing", "want": 5}),
    )
    .await;
    assert_eq!(bodies(&got), ["a", "b", "c", "d", "e"], "{got}");
    for m in got["messages"].as_array().unwrap() {
        assert_eq!(m["tag"], "paid");
        assert_eq!(m["keys"], json!(["k1"]));
        assert_eq!(m["properties"], json!({"colour": "red"}));
        assert_eq!(m["attempt"], 1);
        assert_eq!(m["corrupted"], false);
    }
    let empty = node(
        "receive",
        json!({"endpoint": ep, "topic": "orders", "group": "billing", "want": 1, "polls": 1, "await_s": 1}),
    )
    .await;
    assert_eq!(empty["messages"], json!([]));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mq_and_the_node_client_read_each_others_messages() {
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
        "from-mq\n",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = node(
        "receive",
        json!({"endpoint": ep, "topic": "mixed", "group": "node-reader", "want": 1}),
    )
    .await;
    assert_eq!(bodies(&got), ["from-mq"], "{got}");
    assert_eq!(got["messages"][0]["tag"], "native");
    assert_eq!(got["messages"][0]["keys"], json!(["nk"]));
    assert_eq!(got["messages"][0]["properties"], json!({"origin": "mq"}));

    let sent = node(
        "produce",
        json!({"endpoint": ep, "topic": "mixed", "bodies": ["from-node"], "tag": "js",
               "keys": ["jk"], "props": {"origin": "node"}}),
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
            "2",
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
    let m = lines
        .iter()
        .find(|l| l["body"] == "from-node")
        .unwrap_or_else(|| panic!("mq consume did not see the node message: {lines:?}"));
    assert_eq!(m["tag"], "js");
    assert_eq!(m["key"], "jk");
    assert_eq!(m["properties"], json!({"origin": "node"}));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_push_consumer_that_always_fails_ends_in_the_groups_dead_letter_queue() {
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
            "200",
        ],
        "",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    node(
        "produce",
        json!({"endpoint": ep, "topic": "poison", "bodies": ["bad"]}),
    )
    .await;
    let r = node(
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
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_transactions_commit_roll_back_and_an_orphan_is_resolved_by_the_checker() {
    let b = TestBroker::start_with(|c| {
        c.tx_timeout_ms = 1_000;
        c.tx_check_interval_ms = 500;
    })
    .await;
    create_topic(&b, "payments", 2).await;
    let ep = endpoint(&b);
    let r = node("transaction", json!({"endpoint": ep, "topic": "payments"})).await;
    let checked = r["checked"].as_array().unwrap();
    assert!(!checked.is_empty(), "the orphan was checked back: {r}");
    assert!(
        checked
            .iter()
            .all(|c| c["body"] == "orphan" && c["corrupted"] == false),
        "{r}"
    );
    let got = node(
        "receive",
        json!({"endpoint": ep, "topic": "payments", "group": "ledger", "want": 3, "polls": 3, "await_s": 1}),
    )
    .await;
    assert_eq!(
        bodies(&got),
        ["committed", "orphan"],
        "the rolled-back message never shows: {got}"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_push_consumer_that_fails_twice_sees_attempts_one_to_three() {
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
            "200,400",
        ],
        "",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    node(
        "produce",
        json!({"endpoint": ep, "topic": "pushy", "bodies": ["p"]}),
    )
    .await;
    let r = node(
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
    b.shutdown().await;
}
