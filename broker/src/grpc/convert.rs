//! Messages between RocketMQ 5's `Message` and FerroMQ's records. Tag, keys and message
//! group become the properties `mq` and the native clients use (`TAGS`, `KEYS`,
//! `MSG_GROUP`); user properties are stored under their own names, so a message keeps its
//! body, tag, keys and user properties whichever protocol sends or receives it.

use commitlog::RecordRef;
use md5::{Digest as _, Md5};
use prost_types::Timestamp;
use protocol::properties::{self as props, Properties, PropertiesBuilder};
use protocol::receive::Lease;

use super::codes::status;
use super::pb::{self, Code, DigestType, Encoding, MessageType};
use crate::store::MessageId;

/// A message to store: its property blob, and what decides where and when it goes.
#[derive(Debug)]
pub(super) struct Incoming {
    pub(super) topic: String,
    pub(super) properties: Vec<u8>,
    pub(super) message_group: Option<String>,
    /// Wall-clock ms, for a delay message.
    pub(super) deliver_at_ms: Option<u64>,
    pub(super) born_timestamp_ms: u64,
}

/// Reads a client's message.
///
/// # Errors
/// The in-body status for a reserved property key, an empty topic or a tag with `|`.
pub(super) fn incoming(m: &pb::Message) -> Result<Incoming, pb::Status> {
    let topic = m.topic.as_ref().map(|t| t.name.clone()).unwrap_or_default();
    if topic.is_empty() {
        return Err(status(Code::IllegalTopic, "the message names no topic"));
    }
    let sys = m.system_properties.clone().unwrap_or_default();
    let mut b = PropertiesBuilder::new();
    if let Some(tag) = sys.tag.as_deref().filter(|t| !t.is_empty()) {
        if tag.contains('|') {
            return Err(status(
                Code::IllegalMessageTag,
                format!("tag {tag:?} contains '|'"),
            ));
        }
        b.push(props::TAGS, tag);
    }
    let keys: Vec<&str> = sys
        .keys
        .iter()
        .map(String::as_str)
        .filter(|k| !k.is_empty())
        .collect();
    if keys.iter().any(|k| k.contains(' ')) {
        return Err(status(
            Code::IllegalMessageKey,
            "message keys may not contain spaces (FerroMQ stores them space-separated)",
        ));
    }
    if !keys.is_empty() {
        b.push(props::KEYS, &keys.join(" "));
    }
    let message_group = sys.message_group.clone().filter(|g| !g.is_empty());
    if let Some(g) = &message_group {
        b.push(props::MESSAGE_GROUP, g);
    }
    // Sorted so a message's properties read the same on every delivery.
    let mut user: Vec<(&String, &String)> = m.user_properties.iter().collect();
    user.sort();
    for (k, v) in user {
        if k.is_empty() || props::is_system(k) {
            return Err(status(
                Code::IllegalMessagePropertyKey,
                format!("user property key {k:?} is empty or reserved for the broker"),
            ));
        }
        b.push(k, v);
    }
    Ok(Incoming {
        topic,
        properties: b.build(),
        message_group,
        deliver_at_ms: sys.delivery_timestamp.as_ref().map(timestamp_ms),
        born_timestamp_ms: sys
            .born_timestamp
            .as_ref()
            .map_or_else(protocol::time::now_ms, timestamp_ms),
    })
}

/// A stored record as a delivered message: the original topic and id of a retried or
/// timer copy, an MD5 digest of the body, and the lease's receipt handle and attempt.
pub(super) fn outgoing(record: &RecordRef, lease: Option<&Lease>) -> pb::Message {
    let view = record.view();
    let p = Properties::new(view.properties());
    let get = |k: &str| p.get(k).filter(|v| !v.is_empty()).map(str::to_owned);
    let topic = get(props::ORIGIN_TOPIC).unwrap_or_else(|| view.topic().to_owned());
    let message_id = get(props::ORIGIN_MSG_ID)
        .unwrap_or_else(|| MessageId::new(record.offset(), record.size()).to_text());
    let message_group = get(props::MESSAGE_GROUP);
    let deliver_at = get(props::DELIVER_AT_MS).and_then(|v| v.parse::<u64>().ok());
    let message_type = if message_group.is_some() {
        MessageType::Fifo
    } else if deliver_at.is_some() {
        MessageType::Delay
    } else {
        MessageType::Normal
    };
    let user_properties = p
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, _)| !props::is_system(k))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let body = view.body();
    let queue_id = get(props::ORIGIN_QUEUE_ID)
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or_else(|| i32::try_from(view.queue_id()).unwrap_or(i32::MAX));
    let system = pb::SystemProperties {
        tag: get(props::TAGS),
        keys: get(props::KEYS)
            .map(|k| {
                k.split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        message_id,
        body_digest: Some(pb::Digest {
            r#type: DigestType::Md5 as i32,
            checksum: md5_upper_hex(body),
        }),
        body_encoding: Encoding::Identity as i32,
        message_type: message_type as i32,
        born_timestamp: Some(ms_timestamp(view.born_timestamp_ms())),
        store_timestamp: Some(ms_timestamp(view.store_timestamp_ms())),
        delivery_timestamp: deliver_at.map(ms_timestamp),
        receipt_handle: lease.map(|l| l.receipt_handle.to_string()),
        queue_id,
        queue_offset: i64::try_from(view.queue_offset()).ok(),
        delivery_attempt: lease
            .map(|l| i32::try_from(l.delivery_attempt.max(1)).unwrap_or(i32::MAX)),
        message_group,
        ..Default::default()
    };
    pb::Message {
        topic: Some(pb::Resource {
            resource_namespace: String::new(),
            name: topic,
        }),
        user_properties,
        system_properties: Some(system),
        body: body.to_vec(),
    }
}

/// The digest both official clients check: MD5, uppercase hex.
pub(super) fn md5_upper_hex(body: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let d = Md5::digest(body);
    let mut out = String::with_capacity(32);
    for b in d {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xF)]));
    }
    out
}

/// Wall-clock ms of a protobuf timestamp (before the epoch: 0).
pub(super) fn timestamp_ms(t: &Timestamp) -> u64 {
    let secs = u64::try_from(t.seconds).unwrap_or(0);
    let nanos = u64::try_from(t.nanos).unwrap_or(0);
    secs.saturating_mul(1000).saturating_add(nanos / 1_000_000)
}

/// A protobuf timestamp of wall-clock ms.
pub(super) fn ms_timestamp(ms: u64) -> Timestamp {
    Timestamp {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

/// Ms of a protobuf duration (negative: 0).
pub(super) fn duration_ms(d: &prost_types::Duration) -> u64 {
    let secs = u64::try_from(d.seconds).unwrap_or(0);
    let nanos = u64::try_from(d.nanos).unwrap_or(0);
    secs.saturating_mul(1000).saturating_add(nanos / 1_000_000)
}

/// A protobuf duration of `ms`.
pub(super) fn ms_duration(ms: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn message(user: &[(&str, &str)]) -> pb::Message {
        pb::Message {
            topic: Some(pb::Resource {
                resource_namespace: String::new(),
                name: "orders".into(),
            }),
            user_properties: user
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            system_properties: Some(pb::SystemProperties {
                tag: Some("paid".into()),
                keys: vec!["k1".into(), "k2".into()],
                message_group: Some("order-7".into()),
                ..Default::default()
            }),
            body: b"hi".to_vec(),
        }
    }

    #[test]
    fn tag_keys_group_and_user_properties_become_the_brokers_properties() {
        let m = incoming(&message(&[("colour", "red")])).unwrap();
        let p = Properties::new(&m.properties);
        assert_eq!(p.get(props::TAGS), Some("paid"));
        assert_eq!(p.get(props::KEYS), Some("k1 k2"));
        assert_eq!(p.get(props::MESSAGE_GROUP), Some("order-7"));
        assert_eq!(p.get("colour"), Some("red"));
        assert_eq!(m.message_group.as_deref(), Some("order-7"));
    }

    #[test]
    fn a_reserved_user_property_key_is_refused_with_its_code() {
        let e = incoming(&message(&[("ORIGIN_TOPIC", "x")])).unwrap_err();
        assert_eq!(e.code, Code::IllegalMessagePropertyKey as i32);
        assert!(e.message.contains("ORIGIN_TOPIC"), "{}", e.message);
    }

    #[test]
    fn the_digest_is_uppercase_md5() {
        assert_eq!(md5_upper_hex(b""), "D41D8CD98F00B204E9800998ECF8427E");
    }

    #[test]
    fn times_survive_the_round_trip_through_protobuf() {
        assert_eq!(
            timestamp_ms(&ms_timestamp(1_700_000_000_123)),
            1_700_000_000_123
        );
        assert_eq!(duration_ms(&ms_duration(15_500)), 15_500);
    }
}
