//! Message groups for receiving groups: one message group's messages in send order, the
//! next only once the previous one is acked (an expired lease delivers the same message
//! again, in place), different message groups in parallel; `mq produce --message-group`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{
    Failure, LeasedMessage, Message, PushConsumer, SimpleConsumer, SimpleConsumerOptions,
};
use support::cli::{json_lines, mq};
use support::{TestBroker, PATIENCE};
use tokio::time::Instant;

const GROUPS: [&str; 3] = ["a", "b", "c"];
const PER_GROUP: usize = 5;

/// One queue, the groups' messages interleaved: a0 b0 c0 a1 b1 c1 ...
async fn send_grouped(b: &TestBroker, topic: &str) {
    b.admin().await.create_topic(topic, 1).await.unwrap();
    let p = b.producer().await;
    for seq in 0..PER_GROUP {
        for g in GROUPS {
            let m = Message::new(format!("{g}{seq}")).with_message_group(g);
            p.send(topic, &m).await.unwrap();
        }
    }
    p.close().await;
}

async fn receiver(b: &TestBroker, topic: &str, invisible_ms: u64) -> SimpleConsumer {
    let opts = SimpleConsumerOptions {
        invisible: Duration::from_millis(invisible_ms),
        wait: Duration::from_millis(200),
        ..SimpleConsumerOptions::default()
    };
    SimpleConsumer::connect(&b.addr, "shipping", topic, opts)
        .await
        .unwrap()
}

fn body(m: &LeasedMessage) -> String {
    String::from_utf8(m.message.body().to_vec()).unwrap()
}

fn bodies(ms: &[LeasedMessage]) -> BTreeSet<String> {
    ms.iter().map(body).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_group_is_delivered_in_send_order_one_message_at_a_time() {
    let b = TestBroker::start().await;
    send_grouped(&b, "orders").await;
    let c = receiver(&b, "orders", 60_000).await;
    let first = c.receive(32).await.unwrap();
    assert_eq!(
        bodies(&first),
        BTreeSet::from(["a0".into(), "b0".into(), "c0".into()])
    );
    assert_eq!(first[0].message.message_group(), Some("a"));
    assert!(
        c.receive(32).await.unwrap().is_empty(),
        "every group has one out"
    );
    let b0 = first.iter().find(|m| body(m) == "b0").unwrap();
    c.ack(b0).await.unwrap();
    let next = c.receive(32).await.unwrap();
    assert_eq!(bodies(&next), BTreeSet::from(["b1".into()]));
    // A lease that runs out gives the same message again, before the group's next.
    let mut a0 = first.iter().find(|m| body(m) == "a0").unwrap().clone();
    c.change_invisibility(&mut a0, Duration::from_millis(1))
        .await
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let again = loop {
        let got = c.receive(32).await.unwrap();
        if let Some(m) = got.into_iter().find(|m| body(m).starts_with('a')) {
            break m;
        }
        assert!(Instant::now() < deadline, "a0 never came again");
    };
    assert_eq!(body(&again), "a0");
    assert_eq!(again.delivery_attempt, 2);
    c.close();
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_groups_proceed_in_parallel_each_in_order() {
    let b = TestBroker::start().await;
    send_grouped(&b, "orders").await;
    let c = receiver(&b, "orders", 30_000).await;
    let seen: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
    let running: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (s, r, n, m) = (
        Arc::clone(&seen),
        Arc::clone(&running),
        Arc::clone(&now),
        Arc::clone(&most),
    );
    let push = PushConsumer::start_receiving(c, 8, move |msg: LeasedMessage| {
        let (s, r, n, m) = (
            Arc::clone(&s),
            Arc::clone(&r),
            Arc::clone(&n),
            Arc::clone(&m),
        );
        async move {
            let text = body(&msg);
            let group = msg.message.message_group().unwrap().to_string();
            if !r.lock().unwrap().insert(group.clone()) {
                // Checked after the run: a panic here would only stall the handler.
                s.lock()
                    .unwrap()
                    .entry(format!("overlap in {group}"))
                    .or_default();
            }
            m.fetch_max(n.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(30)).await;
            n.fetch_sub(1, Ordering::SeqCst);
            r.lock().unwrap().remove(&group);
            s.lock().unwrap().entry(group).or_default().push(text);
            Ok::<(), Failure<String>>(())
        }
    });
    let deadline = Instant::now() + PATIENCE;
    while seen.lock().unwrap().values().map(Vec::len).sum::<usize>() < GROUPS.len() * PER_GROUP {
        assert!(Instant::now() < deadline, "not every message was handled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    push.close().await.unwrap();
    for (g, got) in seen.lock().unwrap().iter() {
        let expected: Vec<String> = (0..PER_GROUP).map(|i| format!("{g}{i}")).collect();
        assert_eq!(got, &expected, "message group {g}");
    }
    assert!(
        most.load(Ordering::SeqCst) >= 2,
        "message groups never ran side by side"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mq_produce_message_group_is_received_in_order() {
    let b = TestBroker::start().await;
    b.admin().await.create_topic("cli", 2).await.unwrap();
    let out = mq(
        &b,
        &["produce", "cli", "--message-group", "order-7"],
        "x\ny\nz\n",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = mq(
        &b,
        &[
            "consume",
            "cli",
            "--group",
            "g",
            "--pop",
            "--max",
            "3",
            "--idle-exit-ms",
            "3000",
        ],
        "",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<String> = json_lines(&out)
        .iter()
        .map(|v| v["body"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ["x", "y", "z"]);
    let queues: BTreeSet<u64> = json_lines(&out)
        .iter()
        .map(|v| v["queue"].as_u64().unwrap())
        .collect();
    assert_eq!(queues.len(), 1, "one message group goes to one queue");
    b.shutdown().await;
}
