//! Consumes a topic as a member of a group, first by pulling, then with a push handler.
//!
//! `cargo run -p client --example consumer -- [BROKER] [TOPIC] [GROUP]`

use std::time::Duration;

use client::{ConsumerOptions, PullConsumer, PushConsumer};

#[tokio::main]
async fn main() -> Result<(), client::Error> {
    let mut args = std::env::args().skip(1);
    let broker = args.next().unwrap_or_else(|| "127.0.0.1:10911".into());
    let topic = args.next().unwrap_or_else(|| "example".into());
    let group = args.next().unwrap_or_else(|| "example-group".into());

    // Pull: the application asks for messages and acks each one.
    let mut consumer = PullConsumer::connect(
        &broker,
        &group,
        &[(&topic, "*")],
        ConsumerOptions::default(),
    )
    .await?;
    while let Some(msg) = consumer.recv_timeout(Duration::from_secs(2)).await {
        println!(
            "{} q{} @{} (retry {}): {}",
            msg.topic(),
            msg.queue_id(),
            msg.queue_offset(),
            msg.reconsume_times(),
            String::from_utf8_lossy(msg.body())
        );
        consumer.ack(&msg);
    }

    // Push: a handler on 8 workers; Ok acks, Err nacks (the message comes back later).
    let push = PushConsumer::start(consumer, 8, |msg| async move {
        if msg.body().starts_with(b"fail") {
            return Err("refusing messages that start with 'fail'");
        }
        println!("handled {}", msg.msg_id());
        Ok(())
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    push.close().await
}
