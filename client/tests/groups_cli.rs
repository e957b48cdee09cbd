//! `mq group delete` and the topic limit as a user meets them on the command line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use client::PullConsumer;
use support::cli::mq;
use support::{fast_options, TestBroker};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_delete_refuses_live_members_unless_forced_and_names_an_unknown_group() {
    let b = TestBroker::start().await;
    let out = mq(&b, &["produce", "cli"], "one\n").await;
    assert!(out.status.success(), "{out:?}");
    let mut c = PullConsumer::connect(&b.addr, "billing", &[("cli", "*")], fast_options())
        .await
        .unwrap();
    let m = c.recv_timeout(support::PATIENCE).await.unwrap();
    c.nack(&m).await.unwrap();

    let out = mq(&b, &["group", "delete", "billing"], "").await;
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("live members"), "{}", stderr(&out));

    let out = mq(&b, &["group", "delete", "billing", "--force"], "").await;
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("deleted group billing"), "{said}");
    assert!(said.contains("%RETRY%billing"), "{said}");
    c.abandon();

    let out = mq(&b, &["topic", "list", "--all"], "").await;
    assert!(!String::from_utf8_lossy(&out.stdout).contains("%RETRY%billing"));
    let out = mq(&b, &["group", "delete", "nobody"], "").await;
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("unknown"), "{}", stderr(&out));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_past_the_topic_limit_is_refused_with_a_clear_error() {
    let b = TestBroker::start_with(|c| c.max_topics = 1).await;
    let out = mq(&b, &["topic", "create", "first"], "").await;
    assert!(out.status.success(), "{out:?}");
    let out = mq(&b, &["topic", "create", "second"], "").await;
    assert!(!out.status.success(), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains("TopicLimit") && err.contains("limit of 1 topics"),
        "{err}"
    );
    let out = mq(&b, &["produce", "third"], "x\n").await;
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("TopicLimit"), "{}", stderr(&out));
    b.shutdown().await;
}
