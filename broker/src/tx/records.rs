//! The records a transaction leaves in its two system topics, all described by their
//! properties (protocol property blobs); only a half message has a body.
//!
//! | topic | `TXK` | other properties | body |
//! |---|---|---|---|
//! | `%TXN_HALF%` | `B` begin | `TX_GROUP`, `TX_TIMEOUT_MS` | empty; the transaction id is this record's commit-log offset |
//! | `%TXN_HALF%` | `M` message | `TX_ID`, `TX_INDEX`, `REAL_TOPIC`, `REAL_QUEUE_ID`, then the message's own | the message's |
//! | `%TXN_HALF%` | `A` ack | `TX_ID`, `TX_ACK_GROUP`, `TX_ACK_TOPIC`, `TX_ACK_QUEUE`, `TX_ACK_OFFSET` | empty |
//! | `%TXN_OP%` | `C` commit | `TX_ID`, `TX_FROM`: the committed copies of messages `TX_FROM..` follow this record in the same append | empty |
//! | `%TXN_OP%` | `R` rollback | `TX_ID`, `TX_REASON` | empty |
//! | `%TXN_OP%` | `D` done | `TX_ID`: every copy is stored and every ack written | empty |

use protocol::properties::{Properties, PropertiesBuilder, REAL_QUEUE_ID, REAL_TOPIC};
use protocol::tx::{TX_ID, TX_INDEX};

use super::error::TxError;

const KIND: &str = "TXK";
const GROUP: &str = "TX_GROUP";
const TIMEOUT_MS: &str = "TX_TIMEOUT_MS";
const ACK_GROUP: &str = "TX_ACK_GROUP";
const ACK_TOPIC: &str = "TX_ACK_TOPIC";
const ACK_QUEUE: &str = "TX_ACK_QUEUE";
const ACK_OFFSET: &str = "TX_ACK_OFFSET";
const FROM: &str = "TX_FROM";
const REASON: &str = "TX_REASON";

/// A transaction id: the commit-log offset of its begin record, as 16 hex digits.
pub(crate) fn id_text(id: u64) -> String {
    format!("{id:016x}")
}

/// Parses a transaction id.
///
/// # Errors
/// `BadId` when it is not 1 to 16 hex digits.
pub(crate) fn parse_id(text: &str) -> Result<u64, TxError> {
    let ok = !text.is_empty() && text.len() <= 16 && text.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| u64::from_str_radix(text, 16).ok())
        .flatten()
        .ok_or_else(|| TxError::BadId {
            id: text.chars().take(40).collect(),
        })
}

/// One acknowledgement a transaction applies on commit, resolved to a queue offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckItem {
    /// The consumer group.
    pub group: String,
    /// The topic of the queue.
    pub topic: String,
    /// The queue.
    pub queue_id: u32,
    /// The acknowledged queue offset.
    pub offset: u64,
    /// The (extended) lease of a receive-mode ack, valid in this broker run only.
    pub handle: Option<protocol::receive::ReceiptHandle>,
}

/// A record of either system topic, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TxRecord {
    Begin { group: String, timeout_ms: u64 },
    Message { tx: u64, index: u32 },
    Ack { tx: u64, ack: AckItem },
    Commit { tx: u64, from: u32 },
    Rollback { tx: u64, reason: String },
    Done { tx: u64 },
}

pub(crate) fn begin(group: &str, timeout_ms: u64) -> Vec<u8> {
    PropertiesBuilder::new()
        .with(KIND, "B")
        .with(GROUP, group)
        .with(TIMEOUT_MS, &timeout_ms.to_string())
        .build()
}

/// A half message: the transaction's keys first (a lookup finds the first of a key), then
/// the message's own properties.
pub(crate) fn half_message(tx: u64, index: u32, topic: &str, queue_id: u32, own: &[u8]) -> Vec<u8> {
    let mut blob = PropertiesBuilder::new()
        .with(KIND, "M")
        .with(TX_ID, &id_text(tx))
        .with(TX_INDEX, &index.to_string())
        .with(REAL_TOPIC, topic)
        .with(REAL_QUEUE_ID, &queue_id.to_string())
        .build();
    blob.extend_from_slice(own);
    blob
}

/// The committed copy's properties: the message's own plus `TX_ID` and `TX_INDEX`.
///
/// # Errors
/// A malformed half-message blob.
pub(crate) fn committed_copy(half: &[u8]) -> Result<Vec<u8>, TxError> {
    let p = Properties::new(half);
    let (Some(tx), Some(index)) = (p.get(TX_ID), p.get(TX_INDEX)) else {
        return Err(TxError::Corrupt(
            "a half message without its transaction keys",
        ));
    };
    let own = PropertiesBuilder::without(half, &[KIND, TX_ID, TX_INDEX, REAL_TOPIC, REAL_QUEUE_ID])
        .map_err(|_| TxError::Corrupt("a half message with malformed properties"))?;
    let mut blob = PropertiesBuilder::new()
        .with(TX_ID, tx)
        .with(TX_INDEX, index)
        .build();
    blob.extend_from_slice(&own.build());
    Ok(blob)
}

/// Where a half message goes on commit.
pub(crate) fn destination(half: &[u8]) -> Option<(String, u32)> {
    let p = Properties::new(half);
    Some((
        p.get(REAL_TOPIC)?.to_owned(),
        p.get(REAL_QUEUE_ID)?.parse().ok()?,
    ))
}

pub(crate) fn ack(tx: u64, a: &AckItem) -> Vec<u8> {
    PropertiesBuilder::new()
        .with(KIND, "A")
        .with(TX_ID, &id_text(tx))
        .with(ACK_GROUP, &a.group)
        .with(ACK_TOPIC, &a.topic)
        .with(ACK_QUEUE, &a.queue_id.to_string())
        .with(ACK_OFFSET, &a.offset.to_string())
        .build()
}

pub(crate) fn commit(tx: u64, from: u32) -> Vec<u8> {
    PropertiesBuilder::new()
        .with(KIND, "C")
        .with(TX_ID, &id_text(tx))
        .with(FROM, &from.to_string())
        .build()
}

pub(crate) fn rollback(tx: u64, reason: &str) -> Vec<u8> {
    PropertiesBuilder::new()
        .with(KIND, "R")
        .with(TX_ID, &id_text(tx))
        .with(REASON, reason)
        .build()
}

pub(crate) fn done(tx: u64) -> Vec<u8> {
    PropertiesBuilder::new()
        .with(KIND, "D")
        .with(TX_ID, &id_text(tx))
        .build()
}

/// The transaction a record belongs to, if it carries `TX_ID` (committed copies do).
pub(crate) fn tx_of(blob: &[u8]) -> Option<u64> {
    parse_id(Properties::new(blob).get(TX_ID)?).ok()
}

/// Decodes a record of `%TXN_HALF%` or `%TXN_OP%`; `None` for anything else.
pub(crate) fn decode(blob: &[u8]) -> Option<TxRecord> {
    let p = Properties::new(blob);
    let num = |k: &str| p.get(k).and_then(|v| v.parse::<u64>().ok());
    let tx = || tx_of(blob);
    Some(match p.get(KIND)? {
        "B" => TxRecord::Begin {
            group: p.get(GROUP)?.to_owned(),
            timeout_ms: num(TIMEOUT_MS)?,
        },
        "M" => TxRecord::Message {
            tx: tx()?,
            index: u32::try_from(num(TX_INDEX)?).ok()?,
        },
        "A" => TxRecord::Ack {
            tx: tx()?,
            ack: AckItem {
                group: p.get(ACK_GROUP)?.to_owned(),
                topic: p.get(ACK_TOPIC)?.to_owned(),
                queue_id: u32::try_from(num(ACK_QUEUE)?).ok()?,
                offset: num(ACK_OFFSET)?,
                handle: None,
            },
        },
        "C" => TxRecord::Commit {
            tx: tx()?,
            from: u32::try_from(num(FROM)?).ok()?,
        },
        "R" => TxRecord::Rollback {
            tx: tx()?,
            reason: p.get(REASON).unwrap_or("").to_owned(),
        },
        "D" => TxRecord::Done { tx: tx()? },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn records_round_trip_and_copies_keep_only_the_message_properties() {
        let own = PropertiesBuilder::new().with("TAGS", "a").build();
        let half = half_message(0xabc, 3, "orders", 2, &own);
        assert_eq!(
            decode(&half),
            Some(TxRecord::Message {
                tx: 0xabc,
                index: 3
            })
        );
        assert_eq!(destination(&half), Some(("orders".into(), 2)));
        let copy = committed_copy(&half).unwrap();
        let p = Properties::new(&copy);
        assert_eq!(p.get(TX_ID), Some("0000000000000abc"));
        assert_eq!(p.get(TX_INDEX), Some("3"));
        assert_eq!(p.get("TAGS"), Some("a"));
        assert_eq!(p.get(REAL_TOPIC), None);
        assert_eq!(
            decode(&copy),
            None,
            "a committed copy is no transaction record"
        );
        assert_eq!(
            decode(&commit(7, 2)),
            Some(TxRecord::Commit { tx: 7, from: 2 })
        );
        assert_eq!(
            decode(&rollback(7, "why")),
            Some(TxRecord::Rollback {
                tx: 7,
                reason: "why".into()
            })
        );
        assert_eq!(parse_id(&id_text(u64::MAX)).unwrap(), u64::MAX);
        assert!(
            parse_id("").is_err() && parse_id("xyz").is_err() && parse_id(&"1".repeat(17)).is_err()
        );
    }
}
