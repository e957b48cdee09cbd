//! Access rules with `--auth on`: pub, sub and admin per topic and group, deny by default,
//! a deny that wins over a wider allow, and the retry and dead-letter topics of a group
//! following that group's rights.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod security_support;
mod support;

use broker::security::AuthMode;
use client::admin::Admin;
use client::{Connection, Credentials, Message, Producer, ProducerOptions, PullConsumer};
use protocol::Status;
use security_support::connect;
use support::{fast_options, TestBroker, PATIENCE};

struct Setup {
    b: TestBroker,
    admin: Admin,
}

impl Setup {
    async fn new() -> Self {
        let b = TestBroker::start_with(|c| c.auth = AuthMode::On).await;
        let (ak, sk) = b.broker.as_ref().unwrap().generated_admin().unwrap();
        let root = Credentials::new(ak, sk);
        let admin = Admin::new(connect(&b.addr, None, Some(root)).await.unwrap());
        admin.create_topic("orders", 1).await.unwrap();
        admin.create_topic("payments", 1).await.unwrap();
        Self { b, admin }
    }

    /// A user with `rules` (resource, actions, decision), connected.
    async fn user(&self, name: &str, rules: &[(&str, &[&str], &str)]) -> Connection {
        let keys = self.admin.add_user(name, false).await.unwrap();
        for (resource, actions, decision) in rules {
            self.admin
                .set_acl(name, resource, actions, decision)
                .await
                .unwrap();
        }
        self.connect_as(name, &keys.secret_key).await
    }

    async fn connect_as(&self, name: &str, secret: &str) -> Connection {
        connect(&self.b.addr, None, Some(Credentials::new(name, secret)))
            .await
            .unwrap()
    }

    /// Another connection with the same keys as `conn` (closing a consumer closes its
    /// connection).
    async fn again(&self, conn: &Connection) -> Connection {
        let c = conn.options().credentials.clone().unwrap();
        self.connect_as(&c.access_key, &c.secret_key).await
    }
}

fn denied<T: std::fmt::Debug>(r: client::Result<T>) -> String {
    let e = r.expect_err("refused");
    assert_eq!(e.status(), Some(Status::AccessDenied), "{e}");
    e.to_string()
}

#[tokio::test]
async fn pub_on_one_topic_cannot_consume_it_produce_elsewhere_or_create_topics() {
    let s = Setup::new().await;
    let conn = s.user("shop", &[("topic:orders", &["pub"], "allow")]).await;
    let p = Producer::with_connection(conn.clone(), ProducerOptions::default());
    p.send("orders", &Message::new("o1")).await.unwrap();
    p.send_batch("orders", &[Message::new("o2"), Message::new("o3")])
        .await
        .unwrap();
    let why = denied(p.send("payments", &Message::new("x")).await);
    assert!(why.contains("shop") && why.contains("payments"), "{why}");
    denied(Admin::new(conn.clone()).create_topic("mine", 1).await);
    denied(Admin::new(conn.clone()).delete_topic("orders").await);
    denied(Admin::new(conn.clone()).list_users().await);
    let consumer =
        PullConsumer::with_connection(conn.clone(), "shop", &[("orders", "*")], fast_options())
            .await;
    assert!(consumer.is_err(), "a pub-only user joined a consumer group");
    // A refusal leaves the connection serving what is allowed.
    p.send("orders", &Message::new("o4")).await.unwrap();
    s.b.shutdown().await;
}

#[tokio::test]
async fn sub_rights_need_both_the_topic_and_the_group() {
    let s = Setup::new().await;
    let shop = s.user("shop", &[("topic:orders", &["pub"], "allow")]).await;
    Producer::with_connection(shop, ProducerOptions::default())
        .send("orders", &Message::new("hello"))
        .await
        .unwrap();
    let conn = s
        .user(
            "billing",
            &[
                ("topic:orders", &["sub"], "allow"),
                ("group:billing-*", &["sub"], "allow"),
            ],
        )
        .await;
    let mut c = PullConsumer::with_connection(
        conn.clone(),
        "billing-eu",
        &[("orders", "*")],
        fast_options(),
    )
    .await
    .unwrap();
    let m = c.recv_timeout(PATIENCE).await.expect("a message");
    assert_eq!(m.body(), b"hello");
    c.ack(&m);
    c.close().await.unwrap();
    let conn = s.again(&conn).await;
    denied(
        Producer::with_connection(conn.clone(), ProducerOptions::default())
            .send("orders", &Message::new("x"))
            .await,
    );
    let other_group =
        PullConsumer::with_connection(conn.clone(), "audit", &[("orders", "*")], fast_options())
            .await;
    assert!(other_group.is_err());
    // The group's right alone does not open another topic.
    let conn = s.again(&conn).await;
    let pull = |topic: &str, group: &str| protocol::messages::PullRequest {
        topic: topic.into(),
        queue_id: 0,
        group: group.into(),
        offset: 0,
        max_messages: 10,
        max_bytes: 1 << 20,
        tag_expr: "*".into(),
        max_wait_ms: 0,
    };
    let (found, _) = conn.call(&pull("orders", "billing-eu"), &[]).await.unwrap();
    assert_eq!(found.status, protocol::messages::PullStatus::Found);
    denied(conn.call(&pull("payments", "billing-eu"), &[]).await);
    denied(conn.call(&pull("orders", "audit"), &[]).await);
    s.b.shutdown().await;
}

#[tokio::test]
async fn a_deny_wins_over_a_wider_allow() {
    let s = Setup::new().await;
    let conn = s
        .user(
            "wide",
            &[
                ("topic:*", &["pub"], "allow"),
                ("topic:payments", &["pub"], "deny"),
            ],
        )
        .await;
    let p = Producer::with_connection(conn, ProducerOptions::default());
    p.send("orders", &Message::new("ok")).await.unwrap();
    denied(p.send("payments", &Message::new("no")).await);
    // Rules change under a live connection: removing the deny takes effect at once.
    s.admin.remove_acl("wide", "topic:payments").await.unwrap();
    p.send("payments", &Message::new("now")).await.unwrap();
    s.b.shutdown().await;
}

#[tokio::test]
async fn retry_and_dead_letter_topics_follow_the_group() {
    let s = Setup::new().await;
    let shop = s.user("shop", &[("topic:orders", &["pub"], "allow")]).await;
    Producer::with_connection(shop, ProducerOptions::default())
        .send("orders", &Message::new("retry me"))
        .await
        .unwrap();
    let conn = s
        .user(
            "billing",
            &[
                ("topic:orders", &["sub"], "allow"),
                ("group:billing", &["sub"], "allow"),
            ],
        )
        .await;
    let mut c =
        PullConsumer::with_connection(conn.clone(), "billing", &[("orders", "*")], fast_options())
            .await
            .unwrap();
    let first = c.recv_timeout(PATIENCE).await.expect("the message");
    c.nack(&first).await.unwrap();
    // The redelivery comes from %RETRY%billing, which the group's right covers.
    let again = c.recv_timeout(PATIENCE).await.expect("the redelivery");
    assert_eq!(again.body(), b"retry me");
    assert_eq!(again.reconsume_times(), 1);
    c.ack(&again);
    c.close().await.unwrap();
    Admin::new(s.again(&conn).await)
        .search_offset("%RETRY%billing", 0, 0)
        .await
        .unwrap();
    // Subscribing to every topic is not a right on some group's retry or dead letters.
    let peeker = s.user("peeker", &[("topic:*", &["sub"], "allow")]).await;
    let admin = Admin::new(peeker);
    admin.search_offset("orders", 0, 0).await.unwrap();
    denied(admin.search_offset("%RETRY%billing", 0, 0).await);
    denied(admin.search_offset("%DLQ%billing", 0, 0).await);
    s.b.shutdown().await;
}
