//! The properties of a timer message while it waits, and of the copy delivered when
//! due. Pure functions over property blobs.

use protocol::properties::{
    Properties, PropertiesBuilder, DELAY_LEVEL, DELIVER_AT_MS, DUE_AT_MS, ORIGIN_MSG_ID,
    ORIGIN_TOPIC, REAL_QUEUE_ID, REAL_TOPIC,
};
use protocol::ProtocolError;

/// Keys that only mean something while a message waits.
const WAITING_KEYS: [&str; 4] = [REAL_TOPIC, REAL_QUEUE_ID, DUE_AT_MS, DELAY_LEVEL];

/// A waiting message's destination and due time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Waiting<'a> {
    pub(crate) real_topic: &'a str,
    pub(crate) real_queue_id: u32,
    pub(crate) due_ms: u64,
}

/// The properties a message waits with: its own plus destination and due time.
pub(crate) fn waiting(own: &[u8], real_topic: &str, real_queue_id: u32, due_ms: u64) -> Vec<u8> {
    let mut b = PropertiesBuilder::from_blob(own);
    b.push(REAL_TOPIC, real_topic);
    b.push(REAL_QUEUE_ID, &real_queue_id.to_string());
    b.push(DUE_AT_MS, &due_ms.to_string());
    b.build()
}

/// Reads a waiting message's destination and due time.
///
/// # Errors
/// A static description of what is missing or malformed.
pub(crate) fn parse(props: &[u8]) -> Result<Waiting<'_>, &'static str> {
    let view = Properties::new(props);
    view.validate().map_err(|_| "malformed properties")?;
    let real_topic = view.get(REAL_TOPIC).ok_or("no REAL_TOPIC property")?;
    let real_queue_id = view
        .get(REAL_QUEUE_ID)
        .ok_or("no REAL_QUEUE_ID property")?
        .parse()
        .map_err(|_| "REAL_QUEUE_ID is not a number")?;
    let due_ms = view
        .get(DUE_AT_MS)
        .ok_or("no DUE_AT_MS property")?
        .parse()
        .map_err(|_| "DUE_AT_MS is not a number")?;
    Ok(Waiting {
        real_topic,
        real_queue_id,
        due_ms,
    })
}

/// Properties of the copy delivered when due: the message's own, and, unless it already
/// names an origin (a retry's copy does), the id its send was acknowledged with, its topic
/// and its delivery time, so consumers see the id the producer saw.
///
/// # Errors
/// The waiting properties do not decode.
pub(crate) fn delivered(props: &[u8], timer_msg_id: &str) -> Result<Vec<u8>, ProtocolError> {
    let w = parse(props).ok();
    let view = Properties::new(props);
    let has_origin = view.get(ORIGIN_MSG_ID).is_some();
    let mut b = PropertiesBuilder::without(props, &WAITING_KEYS)?;
    if !has_origin {
        if let Some(w) = w {
            b.push(ORIGIN_MSG_ID, timer_msg_id);
            b.push(ORIGIN_TOPIC, w.real_topic);
            b.push(DELIVER_AT_MS, &w.due_ms.to_string());
        }
    }
    Ok(b.build())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use protocol::properties::TAGS;

    use super::*;

    #[test]
    fn a_delivered_copy_keeps_its_own_properties_and_names_its_send() {
        let own = PropertiesBuilder::new().with(TAGS, "red").build();
        let w = waiting(&own, "orders", 2, 1234);
        let p = parse(&w).unwrap();
        assert_eq!(
            (p.real_topic, p.real_queue_id, p.due_ms),
            ("orders", 2, 1234)
        );
        let d = delivered(&w, "ID1").unwrap();
        let v = Properties::new(&d);
        assert_eq!(v.get(TAGS), Some("red"));
        assert_eq!(v.get(ORIGIN_MSG_ID), Some("ID1"));
        assert_eq!(v.get(ORIGIN_TOPIC), Some("orders"));
        assert_eq!(v.get(DELIVER_AT_MS), Some("1234"));
        assert_eq!(v.get(REAL_TOPIC), None);
        assert_eq!(v.get(DUE_AT_MS), None);
    }

    #[test]
    fn a_retry_copy_keeps_its_first_origin() {
        let own = PropertiesBuilder::new()
            .with(ORIGIN_MSG_ID, "FIRST")
            .with(ORIGIN_TOPIC, "orders")
            .build();
        let d = delivered(&waiting(&own, "%RETRY%g", 0, 5), "SECOND").unwrap();
        let v = Properties::new(&d);
        assert_eq!(v.get(ORIGIN_MSG_ID), Some("FIRST"));
        assert_eq!(v.get(DELIVER_AT_MS), None);
    }
}
