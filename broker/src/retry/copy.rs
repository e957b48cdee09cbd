//! The properties of the copies a send-back makes: the retry copy parked in a schedule
//! topic, the copy delivered from there to the retry topic, and the dead-letter copy.
//! Pure functions over property blobs, no I/O.

use protocol::properties::{
    Properties, PropertiesBuilder, DELAY_LEVEL, DUE_AT_MS, ORIGIN_MSG_ID, ORIGIN_QUEUE_ID,
    ORIGIN_QUEUE_OFFSET, ORIGIN_TOPIC, REAL_QUEUE_ID, REAL_TOPIC,
};
use protocol::ProtocolError;

/// Properties that only mean something while a message waits in a schedule topic.
const SCHEDULE_KEYS: [&str; 4] = [REAL_TOPIC, REAL_QUEUE_ID, DUE_AT_MS, DELAY_LEVEL];
const ORIGIN_KEYS: [&str; 4] = [
    ORIGIN_TOPIC,
    ORIGIN_MSG_ID,
    ORIGIN_QUEUE_ID,
    ORIGIN_QUEUE_OFFSET,
];

/// Where a message was first stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin<'a> {
    pub topic: &'a str,
    pub msg_id: String,
    pub queue_id: u32,
    pub queue_offset: u64,
}

/// Properties of the copy of a nacked message: its own (tags, keys, user properties)
/// without schedule keys, plus where it came from. A message that already carries an
/// origin (it is itself a retry) keeps it, so every retry names the first topic and id.
///
/// # Errors
/// The message's properties do not decode.
pub(crate) fn copy_properties(
    props: &[u8],
    origin: &Origin<'_>,
) -> Result<PropertiesBuilder, ProtocolError> {
    let view = Properties::new(props);
    view.validate()?;
    if view.get(ORIGIN_MSG_ID).is_some() {
        return PropertiesBuilder::without(props, &SCHEDULE_KEYS);
    }
    let drop: Vec<&str> = SCHEDULE_KEYS.iter().chain(&ORIGIN_KEYS).copied().collect();
    let mut b = PropertiesBuilder::without(props, &drop)?;
    b.push(ORIGIN_TOPIC, origin.topic);
    b.push(ORIGIN_MSG_ID, &origin.msg_id);
    b.push(ORIGIN_QUEUE_ID, &origin.queue_id.to_string());
    b.push(ORIGIN_QUEUE_OFFSET, &origin.queue_offset.to_string());
    Ok(b)
}

/// Adds what the legacy scheduler needs to deliver a parked copy (tests build the
/// `%SCHEDULE%` messages of older brokers with it).
#[cfg(test)]
pub(crate) fn park(
    mut copy: PropertiesBuilder,
    real_topic: &str,
    real_queue_id: u32,
    due_at_ms: u64,
    level: u32,
) -> Vec<u8> {
    copy.push(REAL_TOPIC, real_topic);
    copy.push(REAL_QUEUE_ID, &real_queue_id.to_string());
    copy.push(DUE_AT_MS, &due_at_ms.to_string());
    copy.push(DELAY_LEVEL, &level.to_string());
    copy.build()
}

/// A parked copy's destination and due time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parked<'a> {
    pub real_topic: &'a str,
    pub real_queue_id: u32,
    pub due_at_ms: u64,
}

/// Reads a parked copy's schedule properties.
///
/// # Errors
/// A static description of what is missing or malformed.
pub(crate) fn parked(props: &[u8]) -> Result<Parked<'_>, &'static str> {
    let view = Properties::new(props);
    view.validate().map_err(|_| "malformed properties")?;
    let real_topic = view.get(REAL_TOPIC).ok_or("no REAL_TOPIC property")?;
    let real_queue_id = view
        .get(REAL_QUEUE_ID)
        .ok_or("no REAL_QUEUE_ID property")?
        .parse()
        .map_err(|_| "REAL_QUEUE_ID is not a number")?;
    let due_at_ms = view
        .get(DUE_AT_MS)
        .ok_or("no DUE_AT_MS property")?
        .parse()
        .map_err(|_| "DUE_AT_MS is not a number")?;
    Ok(Parked {
        real_topic,
        real_queue_id,
        due_at_ms,
    })
}

/// Properties of the copy delivered from a schedule topic to its real topic.
///
/// # Errors
/// The parked properties do not decode.
pub(crate) fn unpark(props: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    PropertiesBuilder::without(props, &SCHEDULE_KEYS).map(PropertiesBuilder::build)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use protocol::properties::{KEYS, TAGS};

    use super::*;

    fn origin() -> Origin<'static> {
        Origin {
            topic: "orders",
            msg_id: "00000000000000100000004A".into(),
            queue_id: 2,
            queue_offset: 77,
        }
    }

    #[test]
    fn first_retry_records_the_origin_and_keeps_tags_and_keys() {
        let props = PropertiesBuilder::new()
            .with(TAGS, "red")
            .with(KEYS, "k1 k2")
            .build();
        let copy = copy_properties(&props, &origin()).unwrap().build();
        let p = Properties::new(&copy);
        assert_eq!(p.get(TAGS), Some("red"));
        assert_eq!(p.get(KEYS), Some("k1 k2"));
        assert_eq!(p.get(ORIGIN_TOPIC), Some("orders"));
        assert_eq!(p.get(ORIGIN_MSG_ID), Some("00000000000000100000004A"));
        assert_eq!(p.get(ORIGIN_QUEUE_ID), Some("2"));
        assert_eq!(p.get(ORIGIN_QUEUE_OFFSET), Some("77"));
    }

    #[test]
    fn a_retry_of_a_retry_keeps_the_first_origin() {
        let first = copy_properties(&[], &origin()).unwrap();
        let parked_props = park(first, "%RETRY%g", 0, 123, 1);
        let delivered = unpark(&parked_props).unwrap();
        let again = Origin {
            topic: "%RETRY%g",
            msg_id: "0000000000000900000000AA".into(),
            queue_id: 0,
            queue_offset: 5,
        };
        let copy = copy_properties(&delivered, &again).unwrap().build();
        let p = Properties::new(&copy);
        assert_eq!(p.get(ORIGIN_TOPIC), Some("orders"));
        assert_eq!(p.get(ORIGIN_MSG_ID), Some("00000000000000100000004A"));
        assert_eq!(p.get(ORIGIN_QUEUE_OFFSET), Some("77"));
        assert_eq!(p.get(REAL_TOPIC), None);
        // Each key appears once.
        assert_eq!(Properties::new(&copy).iter().count(), 4);
    }

    #[test]
    fn park_and_unpark() {
        let copy =
            copy_properties(&PropertiesBuilder::new().with(TAGS, "t").build(), &origin()).unwrap();
        let props = park(copy, "%RETRY%g", 0, 1_700_000_000_123, 3);
        assert_eq!(
            parked(&props).unwrap(),
            Parked {
                real_topic: "%RETRY%g",
                real_queue_id: 0,
                due_at_ms: 1_700_000_000_123
            }
        );
        let out = unpark(&props).unwrap();
        let p = Properties::new(&out);
        assert_eq!(p.get(DUE_AT_MS), None);
        assert_eq!(p.get(DELAY_LEVEL), None);
        assert_eq!(p.get(TAGS), Some("t"));
        assert_eq!(p.get(ORIGIN_TOPIC), Some("orders"));
    }

    #[test]
    fn broken_schedule_properties_are_named() {
        assert_eq!(parked(&[]), Err("no REAL_TOPIC property"));
        let bad = PropertiesBuilder::new()
            .with(REAL_TOPIC, "x")
            .with(REAL_QUEUE_ID, "zero")
            .build();
        assert_eq!(parked(&bad), Err("REAL_QUEUE_ID is not a number"));
        assert_eq!(parked(&[1, 2, 3]), Err("malformed properties"));
        assert!(copy_properties(&[9, 9, 9], &origin()).is_err());
    }
}
