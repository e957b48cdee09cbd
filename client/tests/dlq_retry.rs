//! Handlers that fail, through a `PushConsumer` against an in-process broker: retries come
//! back under the original identity after the configured delays, and a message that keeps
//! failing ends in the dead-letter queue intact, where `mq dlq show` lists it and
//! `mq dlq resend` puts it back on its topic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use client::protocol::names::dlq_topic;
use client::{Message, PullConsumer, PushConsumer, ReceivedMessage};
use serde_json::Value;
use support::{fast_options, TestBroker, PATIENCE};
use tokio::sync::mpsc;

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// What a handler saw on one call.
#[derive(Debug, Clone)]
struct Attempt {
    at_ms: u64,
    topic: String,
    msg_id: String,
    reconsume_times: u32,
    body: Vec<u8>,
    trace: Option<String>,
}

impl Attempt {
    fn of(m: &ReceivedMessage) -> Self {
        Self {
            at_ms: now_ms(),
            topic: m.topic().to_string(),
            msg_id: m.msg_id(),
            reconsume_times: m.reconsume_times(),
            body: m.body().to_vec(),
            trace: m.property("trace").map(str::to_string),
        }
    }
}

/// A push consumer whose handler reports every call and fails while `fails(attempt)`.
async fn push(
    b: &TestBroker,
    group: &str,
    topic: &str,
    max_reconsume: Option<u32>,
    fails: fn(&Attempt) -> bool,
) -> (PushConsumer, mpsc::UnboundedReceiver<Attempt>) {
    let opts = client::ConsumerOptions {
        max_reconsume_times: max_reconsume,
        ..fast_options()
    };
    let consumer = PullConsumer::connect(&b.addr, group, &[(topic, "*")], opts)
        .await
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let push = PushConsumer::start(consumer, 4, move |m: ReceivedMessage| {
        let tx = tx.clone();
        async move {
            let a = Attempt::of(&m);
            let fail = fails(&a);
            tx.send(a).unwrap();
            if fail {
                Err(format!("refusing attempt {}", m.reconsume_times()))
            } else {
                Ok(())
            }
        }
    });
    (push, rx)
}

async fn next_attempt(rx: &mut mpsc::UnboundedReceiver<Attempt>) -> Attempt {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("the handler is called again")
        .unwrap()
}

async fn mq(b: &TestBroker, args: &[&str]) -> Output {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mq"))
        .arg("--broker")
        .arg(&b.addr)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "mq {args:?}: {out:?}");
    out
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn traced(body: &str) -> Message {
    Message::new(body.to_string())
        .with_tag("card")
        .with_keys("order-7")
        .with_property("trace", "abc")
}

const DELAYS_MS: [u64; 3] = [100, 250, 500];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_failing_k_times_sees_k_delayed_retries_then_succeeds() {
    let b = TestBroker::start_with(|c| c.retry_delays_ms = DELAYS_MS.to_vec()).await;
    b.admin().await.create_topic("flaky", 1).await.unwrap();
    let sent = b
        .producer()
        .await
        .send("flaky", &traced("pay"))
        .await
        .unwrap();

    let k = DELAYS_MS.len();
    let (consumer, mut rx) = push(&b, "flaky-g", "flaky", None, |a| a.reconsume_times < 3).await;
    let mut attempts = Vec::new();
    for _ in 0..=k {
        attempts.push(next_attempt(&mut rx).await);
    }
    // Succeeded on attempt k: nothing more comes.
    assert!(
        tokio::time::timeout(Duration::from_millis(700), rx.recv())
            .await
            .is_err(),
        "called again after succeeding"
    );
    consumer.close().await.unwrap();

    let times: Vec<u32> = attempts.iter().map(|a| a.reconsume_times).collect();
    assert_eq!(times, (0..=3).collect::<Vec<u32>>());
    for a in &attempts {
        assert_eq!(
            (a.topic.as_str(), &a.msg_id),
            ("flaky", &sent.msg_id),
            "{a:?}"
        );
        assert_eq!(
            (a.body.as_slice(), a.trace.as_deref()),
            (&b"pay"[..], Some("abc"))
        );
    }
    // Retry n is never delivered before its delay after the failure (the delays grow).
    for (n, pair) in attempts.windows(2).enumerate() {
        let waited = pair[1].at_ms - pair[0].at_ms;
        assert!(
            waited >= DELAYS_MS[n],
            "retry {} came {waited} ms after the failure, before its {} ms delay",
            n + 1,
            DELAYS_MS[n]
        );
    }
    let info = b.admin().await.group_info("flaky-g").await.unwrap();
    assert!(info.queues.iter().all(|q| q.lag == 0), "{info:?}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_always_failing_message_is_dead_lettered_intact_listed_and_resent() {
    let b = TestBroker::start().await;
    b.admin().await.create_topic("payments", 1).await.unwrap();
    let sent = b
        .producer()
        .await
        .send("payments", &traced("charge"))
        .await
        .unwrap();

    let (consumer, mut rx) = push(&b, "pay-g", "payments", Some(2), |_| true).await;
    let mut attempts = Vec::new();
    for _ in 0..3 {
        attempts.push(next_attempt(&mut rx).await);
    }
    // The third failure dead-letters it.
    let dlq = dlq_topic("pay-g");
    let deadline = Instant::now() + PATIENCE;
    loop {
        match b.admin().await.get_topic(&dlq).await {
            Ok(t) if t.queues.iter().map(|q| q.max_offset).sum::<u64>() == 1 => break,
            _ => assert!(Instant::now() < deadline, "nothing reached {dlq}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), rx.recv())
            .await
            .is_err(),
        "a dead-lettered message is not delivered again"
    );
    consumer.close().await.unwrap();
    let times: Vec<u32> = attempts.iter().map(|a| a.reconsume_times).collect();
    assert_eq!(times, [0, 1, 2]);
    assert!(attempts.iter().all(|a| a.msg_id == sent.msg_id));

    // `mq dlq show` lists it with its origin; the stored copy keeps every property.
    let shown = json_lines(&mq(&b, &["dlq", "show", "pay-g"]).await);
    assert_eq!(shown.len(), 1, "{shown:?}");
    let d = &shown[0];
    assert_eq!(d["topic"], dlq.as_str());
    assert_eq!(
        (&d["origin_topic"], &d["origin_msg_id"]),
        (&Value::from("payments"), &Value::from(sent.msg_id.clone()))
    );
    assert_eq!(
        (&d["tag"], &d["key"], &d["body"], &d["reconsume_times"]),
        (
            &Value::from("card"),
            &Value::from("order-7"),
            &Value::from("charge"),
            &Value::from(3)
        )
    );
    let stored = b
        .admin()
        .await
        .get_message(d["msg_id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        (stored.property("trace"), stored.tag(), stored.keys()),
        (Some("abc"), Some("card"), Some("order-7"))
    );

    // `mq dlq resend` sends it back to its topic; the group consumes it again.
    let out = mq(&b, &["dlq", "resend", "pay-g"]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("resent 1"),
        "{out:?}"
    );
    assert!(json_lines(&mq(&b, &["dlq", "show", "pay-g"]).await).is_empty());
    let mut again = PullConsumer::connect(&b.addr, "pay-g", &[("payments", "*")], fast_options())
        .await
        .unwrap();
    let m = again
        .recv_timeout(PATIENCE)
        .await
        .expect("the resent message arrives");
    assert_eq!((m.topic(), m.body()), ("payments", &b"charge"[..]));
    assert_eq!(
        (m.property("trace"), m.tag(), m.keys(), m.reconsume_times()),
        (Some("abc"), Some("card"), Some("order-7"), 0)
    );
    again.ack(&m);
    assert!(again
        .recv_timeout(Duration::from_millis(300))
        .await
        .is_none());
    again.close().await.unwrap();
    b.shutdown().await;
}
