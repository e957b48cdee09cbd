//! Messages: what a producer sends and what a consumer receives.

use std::sync::Arc;

use bytes::Bytes;
use protocol::hash::key_hash;
use protocol::names::RETRY_PREFIX;
use protocol::properties::{self, Properties, PropertiesBuilder};
use protocol::record::{RecordView, HEADER_LEN};

use crate::error::Result;

/// A message to send: a body plus properties (tag, keys, anything else).
#[derive(Debug, Clone, Default)]
pub struct Message {
    pub(crate) body: Bytes,
    pub(crate) properties: PropertiesBuilder,
    /// Hash of the keys, when set: messages with equal keys go to the same queue.
    pub(crate) key_hash: Option<u64>,
    /// Set by [`Message::with_message_group`]: the group, not the keys, picks the queue.
    pub(crate) routed_by_group: bool,
}

impl Message {
    /// A message with `body` and no properties.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Self {
            body: body.into(),
            ..Self::default()
        }
    }

    /// Sets the tag consumers filter on (`a || b`).
    #[must_use]
    pub fn with_tag(mut self, tag: &str) -> Self {
        self.properties.push(properties::TAGS, tag);
        self
    }

    /// Sets the business keys (space separated). The producer routes messages with equal
    /// keys to the same queue, which keeps them in order.
    #[must_use]
    pub fn with_keys(mut self, keys: &str) -> Self {
        self.properties.push(properties::KEYS, keys);
        if !self.routed_by_group {
            self.key_hash = Some(key_hash(keys));
        }
        self
    }

    /// Adds any other property.
    #[must_use]
    pub fn with_property(mut self, key: &str, value: &str) -> Self {
        self.properties.push(key, value);
        self
    }

    /// Uses an already encoded property blob (e.g. copied from a received message).
    #[must_use]
    pub fn with_properties_blob(mut self, blob: &[u8]) -> Self {
        self.properties = PropertiesBuilder::from_blob(blob);
        self
    }

    /// Sets the message group (e.g. an order id). A receiving group ([`crate::SimpleConsumer`])
    /// gets one message group's messages in send order, the next only once the previous
    /// one is acked; different message groups go in parallel. The producer routes the
    /// messages of one message group to one queue (the group, not the keys, picks it).
    #[must_use]
    pub fn with_message_group(mut self, group: &str) -> Self {
        self.properties.push(properties::MESSAGE_GROUP, group);
        self.key_hash = Some(key_hash(group));
        self.routed_by_group = true;
        self
    }

    /// The payload.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The property blob, in [`protocol::properties`] encoding.
    pub fn properties(&self) -> &[u8] {
        self.properties.as_bytes()
    }
}

/// The consumer queue that delivered a message and takes its acknowledgement. A trait, so
/// that a message does not depend on the consumer that made it.
pub(crate) trait AckQueue: Send + Sync {
    /// Whether the consumer gave the queue up; its messages are then not its to ack.
    fn is_revoked(&self) -> bool;
    /// Marks the message at `queue_offset` (a record of `record_len` bytes) done; whether
    /// it was still outstanding.
    fn ack(&self, queue_offset: u64, record_len: usize) -> bool;
}

/// A message as stored and delivered: a zero-copy slice of the pull response holding one
/// commit-log record, with its fixed fields decoded once.
#[derive(Clone)]
pub struct ReceivedMessage {
    record: Bytes,
    topic_len: usize,
    properties_len: usize,
    queue_id: u32,
    queue_offset: u64,
    physical_offset: u64,
    born_timestamp_ms: u64,
    store_timestamp_ms: u64,
    reconsume_times: u32,
    /// The consumer queue that delivered it, for acks; `None` for a get-by-id.
    pub(crate) queue: Option<Arc<dyn AckQueue>>,
}

impl std::fmt::Debug for ReceivedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceivedMessage")
            .field("topic", &self.topic())
            .field("queue_id", &self.queue_id)
            .field("queue_offset", &self.queue_offset)
            .field("msg_id", &self.msg_id())
            .field("reconsume_times", &self.reconsume_times)
            .field("body_len", &self.body().len())
            .finish()
    }
}

impl ReceivedMessage {
    /// Marks the message done in the consumer queue that delivered it (an ack applied by a
    /// committed transaction), so that the consumer's next commit includes it.
    pub(crate) fn mark_acked(&self) {
        if let Some(q) = &self.queue {
            if !q.is_revoked() {
                q.ack(self.queue_offset, self.record_len());
            }
        }
    }
}

impl ReceivedMessage {
    /// Decodes the record at the start of `buf` (CRC checked). `buf` is usually a slice of
    /// a pull response; the message keeps a reference to it, nothing is copied.
    ///
    /// # Errors
    /// `Record` when the bytes are not a valid record.
    pub fn decode(buf: &Bytes) -> Result<Self> {
        let view = RecordView::decode(buf)?;
        let len = view.total_len() as usize;
        Ok(Self {
            record: buf.slice(..len),
            topic_len: view.topic().len(),
            properties_len: view.properties().len(),
            queue_id: view.queue_id(),
            queue_offset: view.queue_offset(),
            physical_offset: view.physical_offset(),
            born_timestamp_ms: view.born_timestamp_ms(),
            store_timestamp_ms: view.store_timestamp_ms(),
            reconsume_times: view.reconsume_times(),
            queue: None,
        })
    }

    /// Encoded size of the record; the next record of a pull response starts here.
    pub fn record_len(&self) -> usize {
        self.record.len()
    }

    /// The whole encoded record.
    pub fn record(&self) -> &Bytes {
        &self.record
    }

    /// The topic the record is stored in (`%RETRY%G` for a retry).
    pub fn stored_topic(&self) -> &str {
        let bytes = &self.record[HEADER_LEN..HEADER_LEN + self.topic_len];
        // Checked as UTF-8 when decoded.
        std::str::from_utf8(bytes).unwrap_or("")
    }

    /// True for a message delivered from the group's retry topic.
    pub fn is_retry(&self) -> bool {
        self.stored_topic().starts_with(RETRY_PREFIX)
    }

    /// The topic the message was sent to: for a retry, its original topic.
    pub fn topic(&self) -> &str {
        if self.is_retry() {
            if let Some(t) = self.property(properties::ORIGIN_TOPIC) {
                return t;
            }
        }
        self.stored_topic()
    }

    /// The id the message was first stored under; a retry keeps its original id so that
    /// handlers can deduplicate by it.
    pub fn msg_id(&self) -> String {
        // A timer message delivered when due also keeps the id its send was answered with.
        if self.is_retry() || self.property(properties::DELIVER_AT_MS).is_some() {
            if let Some(id) = self.property(properties::ORIGIN_MSG_ID) {
                return id.to_string();
            }
        }
        self.delivered_msg_id()
    }

    /// The id of this very record (what a nack names).
    pub fn delivered_msg_id(&self) -> String {
        format!("{:016X}{:08X}", self.physical_offset, self.record.len())
    }

    /// The queue it was stored in (for a retry, the retry topic's).
    pub fn queue_id(&self) -> u32 {
        self.queue_id
    }

    /// Its offset in that queue.
    pub fn queue_offset(&self) -> u64 {
        self.queue_offset
    }

    /// Where its record starts in the broker's commit log.
    pub fn physical_offset(&self) -> u64 {
        self.physical_offset
    }

    /// When the producer made it (wall-clock ms).
    pub fn born_timestamp_ms(&self) -> u64 {
        self.born_timestamp_ms
    }

    /// When the broker stored it (wall-clock ms).
    pub fn store_timestamp_ms(&self) -> u64 {
        self.store_timestamp_ms
    }

    /// How many times the message was handed back before this delivery.
    pub fn reconsume_times(&self) -> u32 {
        self.reconsume_times
    }

    /// The raw property blob.
    pub fn properties(&self) -> &[u8] {
        let start = HEADER_LEN + self.topic_len;
        &self.record[start..start + self.properties_len]
    }

    /// One property by name.
    pub fn property(&self, key: &str) -> Option<&str> {
        Properties::new(self.properties()).get(key)
    }

    /// Its tag, if it has one.
    pub fn tag(&self) -> Option<&str> {
        self.property(properties::TAGS)
    }

    /// Its business keys, if it has any.
    pub fn keys(&self) -> Option<&str> {
        self.property(properties::KEYS)
    }

    /// Its message group, if it has one ([`Message::with_message_group`]).
    pub fn message_group(&self) -> Option<&str> {
        self.property(properties::MESSAGE_GROUP)
    }

    /// The payload.
    pub fn body(&self) -> &[u8] {
        &self.record[HEADER_LEN + self.topic_len + self.properties_len..]
    }

    /// The body as a zero-copy `Bytes`.
    pub fn body_bytes(&self) -> Bytes {
        self.record
            .slice(HEADER_LEN + self.topic_len + self.properties_len..)
    }
}

/// Decodes every record of a pull response body, end to end.
///
/// # Errors
/// `Record` at the first record that does not decode.
pub(crate) fn decode_records(
    body: &Bytes,
    count: u32,
    out: &mut Vec<ReceivedMessage>,
) -> Result<()> {
    let mut rest = body.clone();
    for _ in 0..count {
        if rest.is_empty() {
            break;
        }
        let msg = ReceivedMessage::decode(&rest)?;
        let len = msg.record_len();
        out.push(msg);
        bytes::Buf::advance(&mut rest, len);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use protocol::record::{encode_into, encoded_len, RecordIn};

    /// Encodes a record as the broker would store it.
    pub(crate) fn record(topic: &str, queue_offset: u64, props: &[u8], body: &[u8]) -> Vec<u8> {
        let rec = RecordIn {
            topic,
            queue_id: 2,
            queue_offset,
            reconsume_times: 1,
            properties: props,
            body,
            ..RecordIn::default()
        };
        let mut buf = vec![0u8; encoded_len(&rec).unwrap()];
        encode_into(&rec, 4096 + queue_offset, &mut buf).unwrap();
        buf
    }

    #[test]
    fn decodes_records_end_to_end_without_copying() {
        let props = PropertiesBuilder::new()
            .with(properties::TAGS, "red")
            .build();
        let mut body = record("orders", 7, &props, b"hello");
        body.extend(record("orders", 8, &[], b"world"));
        let body = Bytes::from(body);
        let mut out = Vec::new();
        decode_records(&body, 2, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].topic(), "orders");
        assert_eq!(out[0].tag(), Some("red"));
        assert_eq!(out[0].body(), b"hello");
        assert_eq!(out[1].queue_offset(), 8);
        assert_eq!(out[1].body(), b"world");
        assert_eq!(out[1].reconsume_times(), 1);
        assert_eq!(out[0].delivered_msg_id().len(), 24);
        assert_eq!(out[0].body_bytes().as_ptr(), out[0].body().as_ptr());
    }

    #[test]
    fn a_retry_shows_its_original_topic_and_id() {
        let props = PropertiesBuilder::new()
            .with(properties::ORIGIN_TOPIC, "orders")
            .with(properties::ORIGIN_MSG_ID, "00000000000000000000002A")
            .build();
        let body = Bytes::from(record("%RETRY%g", 0, &props, b"x"));
        let msg = ReceivedMessage::decode(&body).unwrap();
        assert!(msg.is_retry());
        assert_eq!(msg.topic(), "orders");
        assert_eq!(msg.msg_id(), "00000000000000000000002A");
        assert_ne!(msg.delivered_msg_id(), msg.msg_id());
    }

    #[test]
    fn a_corrupted_record_is_an_error() {
        let mut raw = record("t", 0, &[], b"abc");
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert!(ReceivedMessage::decode(&Bytes::from(raw)).is_err());
    }
}
