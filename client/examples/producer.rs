//! Sends messages to a topic: one awaited send, a batch, and a pipelined burst.
//!
//! `cargo run -p client --example producer -- [BROKER] [TOPIC]`

use client::{Message, Producer, ProducerOptions};

#[tokio::main]
async fn main() -> Result<(), client::Error> {
    let mut args = std::env::args().skip(1);
    let broker = args.next().unwrap_or_else(|| "127.0.0.1:10911".into());
    let topic = args.next().unwrap_or_else(|| "example".into());
    let producer = Producer::connect(&broker, ProducerOptions::default()).await?;

    // One message, waiting for its ack.
    let r = producer
        .send(
            &topic,
            &Message::new("hello")
                .with_tag("greeting")
                .with_keys("order-1"),
        )
        .await?;
    println!(
        "sent {} to queue {} at offset {}",
        r.msg_id, r.queue_id, r.queue_offset
    );

    // A batch: stored all together in one queue, acked once.
    let batch: Vec<Message> = (0..10)
        .map(|i| Message::new(format!("batch {i}")))
        .collect();
    let results = producer.send_batch(&topic, &batch).await?;
    println!(
        "batch of {} stored in queue {}",
        results.len(),
        results[0].queue_id
    );

    // Pipelined: many sends on the wire at once, acks collected afterwards.
    let mut handles = Vec::new();
    for i in 0..1000 {
        handles.push(
            producer
                .send_async(&topic, &Message::new(format!("burst {i}")))
                .await?,
        );
    }
    for h in handles {
        h.wait().await?;
    }
    println!("1000 pipelined sends acked");
    producer.close().await;
    Ok(())
}
