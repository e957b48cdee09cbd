//! What a new user runs into in the first hour: bad tag expressions, messages skipped by
//! retention, a DELAY property, existing topics, unknown groups, dead-letter queues,
//! topic and message commands, Ctrl-C during an --exec handler.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use broker::store::{MessageStore, StoreConfig};
use broker::{Broker, Config};
use client::{
    ConsumerEvent, Delivery, Error, Message, Producer, ProducerOptions, PullConsumer, PushConsumer,
};
use protocol::messages::PERM_WRITE;
use protocol::properties::DELAY_LEVEL;
use protocol::Status;
use support::cli::{json_lines, mq};
use support::{fast_options, TestBroker, PATIENCE};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_tag_expression_fails_at_once_instead_of_waiting_silently() {
    let b = TestBroker::start().await;
    b.topic_with("tagged", 1, 1).await;
    for expr in ["a ||", "a b"] {
        // Without --idle-exit-ms: the old behaviour was to wait forever.
        let out = mq(
            &b,
            &["consume", "tagged", "--group", "g", "--tag", expr],
            "",
        )
        .await;
        assert_eq!(out.status.code(), Some(1), "{expr}: {out:?}");
        let err = stderr(&out);
        assert!(
            err.starts_with("mq: error: invalid tag expression") && err.lines().count() == 1,
            "{expr}: {err}"
        );
    }
    let refused = PullConsumer::connect(&b.addr, "g", &[("tagged", "x ||")], fast_options()).await;
    assert!(
        matches!(refused, Err(Error::InvalidTagExpression { .. })),
        "{:?}",
        refused.err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_hears_when_the_broker_refuses_its_pulls() {
    let b = TestBroker::start().await;
    b.topic_with("sealed", 1, 1).await;
    b.admin()
        .await
        .update_topic("sealed", 1, PERM_WRITE)
        .await
        .unwrap();
    let mut c = PullConsumer::connect(&b.addr, "g", &[("sealed", "*")], fast_options())
        .await
        .unwrap();
    let d = tokio::time::timeout(PATIENCE, c.recv_delivery())
        .await
        .unwrap();
    match d {
        Some(Delivery::Event(ConsumerEvent::PullRefused {
            topic,
            status: Status::Forbidden,
            ..
        })) => assert_eq!(topic, "sealed"),
        other => panic!("expected a refused pull, got {other:?}"),
    }
    c.close().await.unwrap();

    // A push consumer passes the event on too.
    let c = PullConsumer::connect(&b.addr, "g3", &[("sealed", "*")], fast_options())
        .await
        .unwrap();
    let mut push = PushConsumer::start(c, 1, |_m| async { Ok::<(), String>(()) });
    let e = tokio::time::timeout(PATIENCE, push.next_event())
        .await
        .unwrap();
    assert!(
        matches!(e, Some(ConsumerEvent::PullRefused { .. })),
        "{e:?}"
    );
    push.close().await.unwrap();

    let out = mq(&b, &["consume", "sealed", "--group", "g2"], "").await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("refused to pull sealed"), "{out:?}");
}

fn retention_broker_config(dir: &std::path::Path) -> Config {
    let mut c = Config::ephemeral(dir);
    c.segment_size = "128K".parse().unwrap();
    c.max_message_size = "1K".parse().unwrap();
    c.session_timeout_ms = 1_000;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_removed_by_retention_before_a_group_read_them_are_reported() {
    let dir = tempfile::TempDir::new().unwrap();
    let broker = Broker::start(retention_broker_config(dir.path()))
        .await
        .unwrap();
    let addr = broker.local_addr().to_string();
    client::admin::Admin::connect(&addr)
        .await
        .unwrap()
        .create_topic("old", 1)
        .await
        .unwrap();
    let p = Producer::connect(&addr, ProducerOptions::default())
        .await
        .unwrap();
    p.send("old", &Message::new("first")).await.unwrap();
    // The group reads one message and commits, then falls behind.
    let mut c = PullConsumer::connect(&addr, "late", &[("old", "*")], fast_options())
        .await
        .unwrap();
    let m = tokio::time::timeout(PATIENCE, c.recv())
        .await
        .unwrap()
        .unwrap();
    c.ack(&m);
    c.close().await.unwrap();
    let msgs: Vec<Message> = (0..2000).map(|_| Message::new(vec![b'x'; 300])).collect();
    for chunk in msgs.chunks(200) {
        p.send_batch("old", chunk).await.unwrap();
    }
    p.close().await;
    broker.shutdown().await.unwrap();

    // Retention as the broker's flusher would apply it, without waiting for its timer.
    let mut sc = StoreConfig::new(dir.path());
    sc.commitlog.segment_size_bytes = 128 << 10;
    sc.commitlog.retention.max_total_bytes = Some(256 << 10);
    let store = MessageStore::open(sc).unwrap();
    store.apply_retention(u64::MAX / 2).unwrap();
    store.close().unwrap();

    let broker = Broker::start({
        let mut c = retention_broker_config(dir.path());
        c.listen = addr.parse().unwrap();
        c
    })
    .await
    .unwrap();
    let b = TestBroker {
        broker: Some(broker),
        addr,
        dir,
    };
    let out = mq(&b, &["group", "show", "late"], "").await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("SKIPPED"), "{text}");
    let row = text.lines().find(|l| l.starts_with("old ")).unwrap();
    let cols: Vec<u64> = row
        .split_whitespace()
        .skip(1)
        .map(|c| c.parse().unwrap())
        .collect();
    // QUEUE COMMITTED MAX_OFFSET LAG SKIPPED
    let (committed, max, lag, skipped) = (cols[1], cols[2], cols[3], cols[4]);
    assert_eq!(committed, 1);
    assert!(skipped > 0, "{text}");
    assert_eq!(committed + skipped + lag, max, "{text}");
    assert!(text.contains(&format!("total skipped {skipped}")), "{text}");

    let out = mq(
        &b,
        &[
            "consume",
            "old",
            "--group",
            "late",
            "--idle-exit-ms",
            "1000",
        ],
        "",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let err = stderr(&out);
    let warning = format!(
        "mq: warning: {skipped} messages of old queue 0 (offsets 1..{}) were removed by retention",
        1 + skipped
    );
    assert!(err.starts_with(&warning), "{err}");
    assert_eq!(json_lines(&out).len() as u64, lag);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_property_is_refused_never_delivered_at_once() {
    let b = TestBroker::start().await;
    let p = b.producer().await;
    let delayed = Message::new("later").with_property(DELAY_LEVEL, "3");
    let e = p.send("delays", &delayed).await.unwrap_err();
    assert!(matches!(e, Error::UnsupportedProperty { .. }), "{e}");

    // Past the client's check (a raw batch), the broker refuses it too.
    let mut w = protocol::batch::BatchWriter::with_capacity(64);
    let props = protocol::properties::PropertiesBuilder::new()
        .with(DELAY_LEVEL, "3")
        .build();
    w.push(&protocol::batch::BatchMessage {
        properties: &props,
        body: b"later",
        born_timestamp_ms: 0,
    })
    .unwrap();
    let e = p
        .send_encoded("delays", 0, &w)
        .await
        .unwrap()
        .wait()
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(Status::BadRequest), "{e}");
    assert!(e.to_string().contains("DELAY"), "{e}");
    let t = b.admin().await.get_topic("delays").await;
    let stored: u64 = t.map_or(0, |t| t.queues.iter().map(|q| q.max_offset).sum());
    assert_eq!(stored, 0, "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_an_existing_topic_says_so_and_fails_only_on_other_settings() {
    let b = TestBroker::start_with(|c| c.default_queues = 2).await;
    let out = mq(&b, &["topic", "create", "orders"], "").await;
    assert_eq!(
        stdout(&out),
        "created topic orders with 2 queues\n",
        "{out:?}"
    );
    let out = mq(&b, &["topic", "create", "orders", "--queues", "2"], "").await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "topic orders exists with 2 queues\n");
    let out = mq(&b, &["topic", "create", "orders", "--queues", "8"], "").await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains("topic orders exists with 2 queues"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_uses_the_brokers_default_queue_count_for_new_topics() {
    let b = TestBroker::start_with(|c| c.default_queues = 2).await;
    let p = b.producer().await;
    // Round robin over 4 assumed queues would hit queues 2 and 3, which do not exist.
    for i in 0..6 {
        let r = p.send("fresh", &Message::new(format!("m{i}"))).await;
        assert!(r.is_ok(), "send {i}: {r:?}");
    }
    let t = b.admin().await.get_topic("fresh").await.unwrap();
    assert_eq!(t.queue_count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_groups_are_errors_and_counts_are_singular_when_one() {
    let b = TestBroker::start().await;
    for args in [["group", "show", "ghost"], ["dlq", "show", "ghost"]] {
        let out = mq(&b, &args, "").await;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(
            stderr(&out).starts_with("mq: error: unknown group ghost"),
            "{args:?}: {out:?}"
        );
    }

    b.topic_with("pay", 1, 1).await;
    let out = mq(
        &b,
        &[
            "consume",
            "pay",
            "--group",
            "fraud",
            "--max-reconsume",
            "0",
            "--max",
            "1",
            "--exec",
            "exit 1",
        ],
        "",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    // A known group with its dead letter now there.
    let mut shown = Vec::new();
    for _ in 0..100 {
        let out = mq(&b, &["dlq", "show", "fraud"], "").await;
        assert!(out.status.success(), "{out:?}");
        shown = json_lines(&out);
        if !shown.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(shown.len(), 1);

    // Consuming the group's own DLQ points at the dlq commands; another group may.
    let out = mq(&b, &["consume", "%DLQ%fraud", "--group", "fraud"], "").await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("mq dlq show fraud"), "{out:?}");
    let out = mq(
        &b,
        &[
            "consume",
            "%DLQ%fraud",
            "--group",
            "repair",
            "--max",
            "1",
            "--idle-exit-ms",
            "5000",
        ],
        "",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let repaired = json_lines(&out);
    assert_eq!(repaired.len(), 1, "{out:?}");
    assert_eq!(repaired[0]["body"], "m0");

    let out = mq(&b, &["dlq", "resend", "fraud"], "").await;
    assert_eq!(
        stdout(&out),
        "resent 1 message from %DLQ%fraud\n",
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_update_and_delete_and_messages_show_by_id() {
    let b = TestBroker::start().await;
    let out = mq(&b, &["produce", "inv", "--tag", "t"], "hello\n").await;
    let id = json_lines(&out)[0]["msg_id"].as_str().unwrap().to_string();

    let out = mq(&b, &["message", "show", &id], "").await;
    assert!(out.status.success(), "{out:?}");
    let m = &json_lines(&out)[0];
    assert_eq!(
        (&m["msg_id"], &m["body"], &m["tag"]),
        (&id.clone().into(), &"hello".into(), &"t".into())
    );
    assert!(m["store_timestamp_ms"].as_u64().unwrap() > 0);
    let out = mq(&b, &["message", "show", "00000000000000000000ffff"], "").await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    let out = mq(
        &b,
        &["topic", "update", "inv", "--queues", "6", "--perm", "r"],
        "",
    )
    .await;
    assert_eq!(
        stdout(&out),
        "updated topic inv: 6 queues, perm r-\n",
        "{out:?}"
    );
    let out = mq(&b, &["produce", "inv"], "refused\n").await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // Printed once, with its reason, then summed up.
    let err = stderr(&out);
    assert_eq!(err.matches("does not allow").count(), 1, "{err}");

    let out = mq(&b, &["topic", "delete", "inv"], "").await;
    assert_eq!(stdout(&out), "deleted topic inv\n", "{out:?}");
    let out = mq(&b, &["topic", "show", "inv"], "").await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_an_exec_handler_releases_the_message_without_an_attempt() {
    let b = TestBroker::start().await;
    b.topic_with("jobs", 1, 1).await;
    let started = b.dir.path().join("started");
    let script = format!(
        "echo \"$MQ_RECONSUME_TIMES\" >> {}; sleep 30",
        started.display()
    );
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_mq"));
    cmd.args([
        "--broker", &b.addr, "consume", "jobs", "--group", "w", "--exec", &script,
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true)
    // Its own process group, as a shell job is: Ctrl-C signals the whole group.
    .process_group(0);
    let child = cmd.spawn().unwrap();
    let pid = i32::try_from(child.id().unwrap()).unwrap();
    for _ in 0..200 {
        if started.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.exists(), "the handler never started");
    // SAFETY: kill(2) with plain integers; the group is the test's own child's.
    unsafe {
        libc::kill(-pid, libc::SIGINT);
    }
    let out = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains("released without counting an attempt"),
        "{out:?}"
    );

    // Delivered again with the same attempt count; nothing went to the retry topic.
    let out = mq(
        &b,
        &[
            "consume",
            "jobs",
            "--group",
            "w",
            "--max",
            "1",
            "--idle-exit-ms",
            "5000",
        ],
        "",
    )
    .await;
    let again = json_lines(&out);
    assert_eq!(again.len(), 1, "{out:?}");
    assert_eq!(again[0]["reconsume_times"], 0);
    assert_eq!(std::fs::read_to_string(&started).unwrap(), "0\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_keep_the_value_the_reason_and_the_suggestion_on_one_line() {
    let b = TestBroker::start().await;
    let cases: [(&[&str], &str); 4] = [
        (
            &["consume", "t", "--group", "g", "--max", "abc"],
            "invalid value 'abc' for '--max <MAX>': invalid digit found in string",
        ),
        (
            &["topc"],
            "unrecognized subcommand 'topc'; did you mean 'topic'?",
        ),
        (
            &["consume", "t", "--grup", "g"],
            "unexpected argument '--grup'; did you mean '--group'?",
        ),
        (
            &["topic", "update", "t", "--perm", "x"],
            "invalid value 'x' for '--perm <PERM>': expected rw, r, w or -",
        ),
    ];
    for (args, want) in cases {
        let out = mq(&b, args, "").await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!("mq: error: {want}")) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
}

/// Bytes allocated on disk under `dir` (what `du` counts).
#[cfg(unix)]
fn allocated_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            allocated_bytes(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_data_directory_takes_two_default_segments_not_gigabytes() {
    let b = TestBroker::start().await;
    let seg = broker::config::DEFAULT_SEGMENT_SIZE.get();
    assert_eq!(
        seg,
        64 << 20,
        "README states the footprint for 64 MiB segments"
    );
    b.topic_with("first", 4, 10).await;
    // The active segment and at most one preallocated spare, plus small metadata.
    let used = allocated_bytes(b.dir.path());
    assert!(used <= 2 * seg + (4 << 20), "{used} bytes allocated");
    b.shutdown().await;
}
