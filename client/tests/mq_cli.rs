//! The `mq` tool against an in-process broker: commands, JSON fields, exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use support::cli::{json_lines, mq};
use support::TestBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_then_consume_prints_the_contract_fields() {
    let b = TestBroker::start().await;
    let out = mq(&b, &["topic", "create", "cli", "--queues", "2"], "").await;
    assert!(out.status.success(), "{out:?}");

    let out = mq(
        &b,
        &["produce", "cli", "--tag", "t1", "--key", "k1"],
        "one\ntwo\nthree\n",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let acks = json_lines(&out);
    assert_eq!(acks.len(), 3);
    for a in &acks {
        assert_eq!(a["msg_id"].as_str().unwrap().len(), 24);
        assert!(a["queue"].is_u64() && a["offset"].is_u64(), "{a}");
    }

    let out = mq(
        &b,
        &[
            "consume",
            "cli",
            "--group",
            "cli-g",
            "--max",
            "3",
            "--idle-exit-ms",
            "3000",
        ],
        "",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let msgs = json_lines(&out);
    let bodies: Vec<&str> = msgs.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(
        bodies,
        ["one", "two", "three"],
        "one key keeps one queue and its order"
    );
    for (m, a) in msgs.iter().zip(&acks) {
        assert_eq!(m["topic"], "cli");
        assert_eq!(
            (&m["tag"], &m["key"]),
            (&Value::from("t1"), &Value::from("k1"))
        );
        assert_eq!(m["reconsume_times"], 0);
        assert_eq!(
            (&m["msg_id"], &m["queue"], &m["offset"]),
            (&a["msg_id"], &a["queue"], &a["offset"])
        );
    }

    // Committed before exit: the group has nothing left.
    let out = mq(
        &b,
        &[
            "consume",
            "cli",
            "--group",
            "cli-g",
            "--idle-exit-ms",
            "500",
        ],
        "",
    )
    .await;
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    let out = mq(&b, &["group", "show", "cli-g"], "").await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("total lag 0"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_show_and_errors_are_one_line_with_a_failing_exit() {
    let b = TestBroker::start().await;
    b.topic_with("shown", 2, 10).await;
    let out = mq(&b, &["topic", "show", "shown"], "").await;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("MIN_OFFSET") && text.lines().count() == 4,
        "{text}"
    );

    let out = mq(&b, &["topic", "show", "missing"], "").await;
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("mq: error:"), "{err}");

    let out = mq(&b, &["produce", "%bad%"], "x\n").await;
    assert!(!out.status.success(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_nacks_on_failure_and_the_retry_carries_its_environment() {
    let b = TestBroker::start().await;
    b.topic_with("work", 1, 1).await;
    // Fails on the first attempt, succeeds on the retry; logs what it saw.
    let log = b.dir.path().join("log");
    let script = format!(
        "echo \"$MQ_TOPIC $MQ_RECONSUME_TIMES $(cat)\" >> {}; [ \"$MQ_RECONSUME_TIMES\" -ge 1 ]",
        log.display()
    );
    let out = mq(
        &b,
        &[
            "consume",
            "work",
            "--group",
            "exec-g",
            "--exec",
            &script,
            "--max",
            "2",
            "--idle-exit-ms",
            "5000",
        ],
        "",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let seen = std::fs::read_to_string(&log).unwrap();
    assert_eq!(seen, "work 0 m0\nwork 1 m0\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_shows_the_disk_state_free_space_and_refused_sends() {
    let b = TestBroker::start().await;
    let out = mq(&b, &["stats"], "").await;
    assert!(out.status.success(), "{out:?}");
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["disk_state"], "ok", "{stats}");
    assert!(stats["disk_free_bytes"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(stats["sends_refused_disk_full"], 0, "{stats}");
}
