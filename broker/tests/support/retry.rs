//! Helpers shared by the retry integration tests: a store in a temp dir, a retry service
//! with a short delay table, and reading a topic's messages back.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use broker::retry::{RetryConfig, RetryService};
use broker::store::{
    GetRequest, MessageId, MessageStore, PutMessage, QueueOffset, RecordRef, StoreConfig, TagFilter,
};
use protocol::messages::{SendBackRequest, SendBackResponse};
use protocol::properties::{Properties, PropertiesBuilder, KEYS, TAGS};

pub const DELAYS_MS: [u64; 3] = [50, 100, 200];
pub const WAIT: Duration = Duration::from_secs(10);

pub fn open_store(dir: &Path) -> Arc<MessageStore> {
    let mut config = StoreConfig::new(dir);
    config.commitlog.segment_size_bytes = 4 << 20;
    Arc::new(MessageStore::open(config).unwrap())
}

pub fn retry_config(max_reconsume_times: u32) -> RetryConfig {
    RetryConfig {
        delay_levels_ms: DELAYS_MS.to_vec(),
        max_reconsume_times,
    }
}

pub fn start(store: &Arc<MessageStore>, max_reconsume_times: u32) -> RetryService {
    RetryService::start(Arc::clone(store), retry_config(max_reconsume_times)).unwrap()
}

/// Closes the service, then the store (which needs the service's reference back).
pub fn shut_down(service: RetryService, store: Arc<MessageStore>) {
    service.try_close().unwrap();
    Arc::try_unwrap(store).unwrap().close().unwrap();
}

/// Stores one message with a tag and keys in `orders` queue 1; returns its id.
pub fn produce(store: &MessageStore, body: &[u8]) -> String {
    let props = PropertiesBuilder::new()
        .with(TAGS, "red")
        .with(KEYS, "order-7")
        .build();
    let r = store
        .put(
            "orders",
            1,
            &PutMessage {
                properties: &props,
                body,
                born_timestamp_ms: 1_000,
                reconsume_times: 0,
            },
        )
        .unwrap();
    r.msg_id.to_string()
}

pub fn nack(service: &RetryService, group: &str, msg_id: &str) -> SendBackResponse {
    service
        .send_back(&SendBackRequest {
            group: group.into(),
            msg_id: msg_id.into(),
            max_reconsume_times: None,
        })
        .unwrap()
}

/// Waits for message `offset` of queue 0 of `topic` and returns it.
pub fn wait_message(store: &MessageStore, topic: &str, offset: u64) -> RecordRef {
    assert!(
        store.wait_for_message(topic, 0, QueueOffset::new(offset), WAIT),
        "no message {offset} in {topic} within {WAIT:?}"
    );
    let got = store
        .get_messages(GetRequest {
            topic,
            queue_id: 0,
            from: QueueOffset::new(offset),
            max_count: 1,
            max_bytes: 1 << 20,
            filter: &TagFilter::All,
        })
        .unwrap();
    got.messages.into_iter().next().unwrap()
}

/// How many messages queue 0 of `topic` holds (0 if the topic does not exist).
pub fn count(store: &MessageStore, topic: &str) -> u64 {
    store
        .queue_range(topic, 0)
        .map_or(0, |(min, max)| max.get() - min.get())
}

pub fn id_of(rec: &RecordRef) -> String {
    MessageId::new(rec.offset(), rec.size()).to_string()
}

pub fn prop(rec: &RecordRef, key: &str) -> Option<String> {
    Properties::new(rec.view().properties())
        .get(key)
        .map(str::to_string)
}
