//! The `mq` contract as a user drives it: exact JSON field order, one-line usage errors,
//! unknown topics, retries named by their original position, SIGTERM commits, bench names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use client::{Message, PullConsumer};
use serde_json::Value;
use support::cli::{json_lines, mq, mq_bytes, spawn_mq};
use support::{fast_options, TestBroker, PATIENCE};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

/// The keys of a JSON object line in the order they are written.
fn keys_in_order(line: &str) -> Vec<String> {
    // Scanned from the raw text, so the test does not depend on how a parsed map orders
    // its keys: at depth one, a key is the string right after '{' or ','.
    let mut keys = Vec::new();
    let mut depth = 0;
    let mut in_str = false;
    let mut escaped = false;
    let mut start = None;
    let mut prev_structural = ' ';
    for (i, c) in line.char_indices() {
        if in_str {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    in_str = false;
                    if let Some(s) = start.take() {
                        keys.push(line[s..i].to_string());
                    }
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                if depth == 1 && matches!(prev_structural, '{' | ',') {
                    start = Some(i + 1);
                }
            }
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            _ => {}
        }
        if !c.is_whitespace() {
            prev_structural = c;
        }
    }
    keys
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_consume_write_their_fields_in_the_documented_order() {
    let b = TestBroker::start().await;
    b.admin().await.create_topic("order", 1).await.unwrap();
    let out = mq(&b, &["produce", "order", "--tag", "t"], "text\n").await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let line = text.lines().next().unwrap();
    assert_eq!(keys_in_order(line), ["msg_id", "queue", "offset"], "{line}");

    // A body that is not UTF-8 (sent through the library: stdin lines are text).
    let p = b.producer().await;
    p.send("order", &Message::new(vec![0xff, 0xfe, 0x00]))
        .await
        .unwrap();
    p.close().await;

    let out = mq(&b, &["consume", "order", "--group", "g", "--max", "2"], "").await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let fields = [
        "topic",
        "queue",
        "offset",
        "msg_id",
        "reconsume_times",
        "tag",
        "key",
    ];
    let mut with_body = fields.to_vec();
    with_body.push("body");
    assert_eq!(keys_in_order(lines[0]), with_body, "{}", lines[0]);
    let mut with_b64 = fields.to_vec();
    with_b64.push("body_b64");
    assert_eq!(keys_in_order(lines[1]), with_b64, "{}", lines[1]);
    let v: Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(v["body_b64"], "//4A");
    assert_eq!((&v["tag"], &v["key"]), (&Value::Null, &Value::Null));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consuming_a_topic_that_does_not_exist_is_a_one_line_error() {
    let b = TestBroker::start().await;
    let out = mq(
        &b,
        &["consume", "nosuch", "--group", "g", "--idle-exit-ms", "100"],
        "",
    )
    .await;
    assert!(!out.status.success(), "{out:?}");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("mq: error:") && err.contains("nosuch"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_are_one_line_errors_with_exit_2_and_every_command_has_help() {
    let b = TestBroker::start().await;
    let bad: [&[&str]; 6] = [
        &["consume", "t", "--group", "g", "--max", "abc"],
        &["consume", "t"],
        &["consume", "t", "--group", "g", "--from", "yesterday"],
        &["group", "reset", "g", "--topic", "t", "--to", "soon"],
        &["topic", "create", "t", "--queues", "many"],
        &["nonsense"],
    ];
    for args in bad {
        let out = mq(&b, args, "").await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("mq: error: "), "{args:?}: {err}");
    }
    let out = mq(&b, &["consume", "t"], "").await;
    assert!(stderr(&out).contains("--group"), "{out:?}");

    let commands: [&[&str]; 15] = [
        &[],
        &["topic"],
        &["topic", "create"],
        &["topic", "list"],
        &["topic", "show"],
        &["produce"],
        &["consume"],
        &["group"],
        &["group", "show"],
        &["group", "reset"],
        &["dlq"],
        &["dlq", "show"],
        &["dlq", "resend"],
        &["stats"],
        &["bench"],
    ];
    for cmd in commands {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = mq(&b, &args, "").await;
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(
            String::from_utf8(out.stdout).unwrap().contains("Usage: mq"),
            "{args:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_named_by_its_original_topic_queue_offset_and_id() {
    let b = TestBroker::start().await;
    b.topic_with("work", 2, 4).await;

    // --exec: fail each message once; every attempt must see the same position.
    let log = b.dir.path().join("log");
    let script = format!(
        "echo \"$MQ_TOPIC $MQ_QUEUE $MQ_OFFSET $MQ_MSG_ID $MQ_RECONSUME_TIMES\" >> {}; \
         [ \"$MQ_RECONSUME_TIMES\" -ge 1 ]",
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
            "8",
            "--idle-exit-ms",
            "5000",
        ],
        "",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let seen = std::fs::read_to_string(&log).unwrap();
    let mut first = Vec::new();
    let mut retried = Vec::new();
    for line in seen.lines() {
        let (position, attempt) = line.rsplit_once(' ').unwrap();
        match attempt {
            "0" => first.push(position.to_string()),
            "1" => retried.push(position.to_string()),
            other => panic!("attempt {other}: {seen}"),
        }
    }
    first.sort();
    retried.sort();
    assert_eq!(first.len(), 4, "{seen}");
    assert_eq!(first, retried, "{seen}");

    // JSON lines: nack once through the library, then `mq consume` prints the retry
    // under the original position.
    let mut c = PullConsumer::connect(&b.addr, "json-g", &[("work", "*")], fast_options())
        .await
        .unwrap();
    let m = tokio::time::timeout(PATIENCE, c.recv())
        .await
        .unwrap()
        .unwrap();
    let original = (m.queue_id(), m.queue_offset(), m.msg_id());
    c.nack(&m).await.unwrap();
    c.close().await.unwrap();
    let out = mq(
        &b,
        &[
            "consume",
            "work",
            "--group",
            "json-g",
            "--max",
            "4",
            "--idle-exit-ms",
            "5000",
        ],
        "",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let retry = json_lines(&out)
        .into_iter()
        .find(|v| v["reconsume_times"] == 1)
        .expect("the retry is delivered");
    assert_eq!(retry["topic"], "work");
    assert_eq!(
        (
            retry["queue"].as_u64().unwrap(),
            retry["offset"].as_u64().unwrap(),
            retry["msg_id"].as_str().unwrap().to_string()
        ),
        (u64::from(original.0), original.1, original.2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_consume_and_commits_what_was_printed() {
    let b = TestBroker::start().await;
    b.topic_with("term", 1, 3).await;
    let mut child = spawn_mq(
        &b,
        &[
            "consume",
            "term",
            "--group",
            "term-g",
            "--idle-exit-ms",
            "60000",
        ],
    );
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut printed = 0;
    let mut line = String::new();
    while printed < 3 {
        line.clear();
        tokio::time::timeout(PATIENCE, stdout.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        printed += 1;
    }
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).await.unwrap();
    assert!(status.success(), "{status:?}");
    assert!(rest.is_empty(), "{rest}");
    let committed = b
        .admin()
        .await
        .committed("term-g", "term", 0)
        .await
        .unwrap();
    assert_eq!(committed.map(|c| c.offset), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_names_its_workload_in_progress_and_json() {
    let b = TestBroker::start().await;
    let out = mq(
        &b,
        &[
            "bench",
            "sync-latency",
            "--topic",
            "lat",
            "--duration-s",
            "2",
            "--json",
        ],
        "",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains("sync-latency: "), "{err}");
    let figures = json_lines(&out);
    assert_eq!(figures.len(), 1, "{out:?}");
    let f = &figures[0];
    assert_eq!(f["workload"], "sync-latency");
    for key in [
        "messages",
        "secs",
        "msgs_per_s",
        "mb_per_s",
        "p50_us",
        "p99_us",
        "p999_us",
    ] {
        assert!(f[key].is_number(), "{key}: {f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_takes_any_bytes_per_line_and_acks_each() {
    let b = TestBroker::start().await;
    b.admin().await.create_topic("raw", 1).await.unwrap();
    // A non-UTF-8 line, an empty line, a CRLF line and a last line without '\n'.
    let out = mq_bytes(&b, &["produce", "raw"], b"ok\n\xff\xfe\n\nwin\r\nlast").await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json_lines(&out).len(), 5, "{out:?}");

    let out = mq(&b, &["consume", "raw", "--group", "g", "--max", "5"], "").await;
    assert!(out.status.success(), "{out:?}");
    let bodies: Vec<String> = json_lines(&out)
        .iter()
        .map(|m| match m.get("body") {
            Some(text) => text.as_str().unwrap().to_string(),
            None => format!("b64:{}", m["body_b64"].as_str().unwrap()),
        })
        .collect();
    assert_eq!(bodies, ["ok", "b64://4=", "", "win", "last"]);
}
