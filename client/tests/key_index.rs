//! Lookups by key as a user runs them: `mq message query` and `mq message show` against a
//! broker that is SIGKILLed and started again on the same data.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod restart_support;

use std::process::{Output, Stdio};

use client::admin::Admin;
use client::protocol::Status;
use client::{Message, Producer, ProducerOptions};
use restart_support::Hosted;
use serde_json::Value;

async fn mq(addr: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_mq"))
        .arg("--broker")
        .arg(addr)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap()
}

/// The JSON lines of a successful run.
fn lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "mq failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn bodies(v: &[Value]) -> Vec<String> {
    v.iter()
        .map(|m| m["body"].as_str().unwrap().to_string())
        .collect()
}

/// Sends `n` messages: `o<i> all` as keys, and `hot` on every third one.
async fn send(addr: &str, from: usize, n: usize) -> Vec<client::SendResult> {
    let p = Producer::connect(addr, ProducerOptions::default())
        .await
        .unwrap();
    let msgs: Vec<Message> = (from..from + n)
        .map(|i| {
            let keys = if i % 3 == 0 {
                format!("o{i} all hot")
            } else {
                format!("o{i} all")
            };
            Message::new(format!("m{i}"))
                .with_keys(&keys)
                .with_tag("t1")
        })
        .collect();
    let mut sent = Vec::new();
    for chunk in msgs.chunks(500) {
        sent.extend(p.send_batch("orders", chunk).await.unwrap());
    }
    p.close().await;
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_and_show_find_messages_by_key_before_and_after_a_sigkill() {
    let dir = tempfile::TempDir::new().unwrap();
    let host = Hosted::spawn("broker_host", dir.path(), None);
    let addr = host.addr.clone();
    Admin::connect(&addr)
        .await
        .unwrap()
        .create_topic("orders", 4)
        .await
        .unwrap();
    let sent = send(&addr, 0, 3_000).await;

    // One key of several: the one message, printed as `mq consume` prints it.
    let out = mq(&addr, &["message", "query", "orders", "--key", "o42"]).await;
    let found = lines(&out);
    assert_eq!(found.len(), 1);
    let m = &found[0];
    let raw = String::from_utf8(out.stdout.clone()).unwrap();
    let fields = [
        "topic",
        "queue",
        "offset",
        "msg_id",
        "reconsume_times",
        "tag",
        "key",
        "body",
    ];
    let at: Vec<usize> = fields
        .iter()
        .map(|f| raw.find(&format!("\"{f}\":")).unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "field order: {raw}");
    assert_eq!(m.as_object().unwrap().len(), fields.len(), "{raw}");
    assert_eq!(m["msg_id"], sent[42].msg_id.as_str());
    assert_eq!(
        (m["queue"].as_u64(), m["offset"].as_u64()),
        (
            Some(u64::from(sent[42].queue_id)),
            Some(sent[42].queue_offset)
        )
    );
    assert_eq!(
        (m["key"].as_str(), m["tag"].as_str(), m["body"].as_str()),
        (Some("o42 all hot"), Some("t1"), Some("m42"))
    );

    // `show` prints every property.
    let shown = lines(&mq(&addr, &["message", "show", &sent[42].msg_id]).await);
    assert_eq!(shown[0]["properties"]["KEYS"], "o42 all hot");
    assert_eq!(shown[0]["properties"]["TAGS"], "t1");

    // A key with thousands of messages, all of them in send order, and the newest N.
    let all = lines(
        &mq(
            &addr,
            &[
                "message", "query", "orders", "--key", "all", "--max", "10000",
            ],
        )
        .await,
    );
    assert_eq!(
        bodies(&all),
        (0..3_000).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    let newest = lines(
        &mq(
            &addr,
            &["message", "query", "orders", "--key", "hot", "--max", "5"],
        )
        .await,
    );
    assert_eq!(
        bodies(&newest),
        ["m2985", "m2988", "m2991", "m2994", "m2997"]
    );
    // A time range after every message finds nothing.
    let later = (u64::MAX / 2).to_string();
    assert!(lines(
        &mq(
            &addr,
            &["message", "query", "orders", "--key", "all", "--from", &later]
        )
        .await
    )
    .is_empty());
    host.kill();

    // After a crash the index is as complete as the log, and keeps indexing.
    let host = Hosted::spawn("broker_host", dir.path(), Some(&addr));
    send(&host.addr, 3_000, 300).await;
    let all = lines(
        &mq(
            &host.addr,
            &[
                "message", "query", "orders", "--key", "all", "--max", "10000",
            ],
        )
        .await,
    );
    assert_eq!(
        bodies(&all),
        (0..3_300).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    let one = lines(
        &mq(
            &host.addr,
            &["message", "query", "orders", "--key", "o3100"],
        )
        .await,
    );
    assert_eq!(bodies(&one), ["m3100"]);

    // Bad input is refused with a clear error; an unknown topic is named.
    let admin = Admin::connect(&host.addr).await.unwrap();
    let e = admin
        .query_by_key("orders", "", 0, u64::MAX, 1)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(Status::BadRequest), "{e}");
    let e = admin
        .query_by_key("nope", "k", 0, u64::MAX, 1)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(Status::TopicNotFound), "{e}");
    let out = mq(
        &host.addr,
        &["message", "query", "orders", "--key", "k", "--max", "0"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    host.kill();
}

/// The broker of the kill test, run in a child process; does nothing otherwise.
#[test]
#[ignore = "the broker host of the kill test, started by it as a child process"]
fn broker_host() {
    restart_support::host_main();
}
