//! Message properties: string keys and values, stored as an opaque blob in each
//! commit-log record and carried unchanged on the wire.
//!
//! ```text
//! repeated until the end of the blob:
//!   u16 key_len | key (UTF-8) | u32 value_len | value (UTF-8)
//! ```
//! Little-endian lengths. An empty blob means no properties.

use crate::ProtocolError;

/// The message's tag, used for filtering (`a || b`).
pub const TAGS: &str = "TAGS";
/// Business keys, space-separated.
pub const KEYS: &str = "KEYS";
/// Delay level chosen by the retry schedule. Producers may not set it: delayed delivery
/// of their own messages is not offered yet, and a send carrying it is refused
/// (never silently delivered at once).
pub const DELAY_LEVEL: &str = "DELAY";
/// Why a producer's `DELAY` property is refused.
pub const DELAY_UNSUPPORTED: &str =
    "delayed delivery is not supported yet; send the message without it";
/// On a retried or dead-lettered message: the topic it was first sent to.
pub const ORIGIN_TOPIC: &str = "ORIGIN_TOPIC";
/// On a retried or dead-lettered message: the id it had when first stored.
pub const ORIGIN_MSG_ID: &str = "ORIGIN_MSG_ID";
/// On a retried or dead-lettered message: its first queue id and queue offset.
pub const ORIGIN_QUEUE_ID: &str = "ORIGIN_QUEUE_ID";
/// On a retried or dead-lettered message: its first queue offset.
pub const ORIGIN_QUEUE_OFFSET: &str = "ORIGIN_QUEUE_OFFSET";
/// On a message parked in a schedule topic: where it goes when due.
pub const REAL_TOPIC: &str = "REAL_TOPIC";
/// On a message parked in a schedule topic: the queue it goes to when due.
pub const REAL_QUEUE_ID: &str = "REAL_QUEUE_ID";
/// Wall-clock millisecond at which a scheduled message becomes due.
pub const DUE_AT_MS: &str = "DUE_AT_MS";
/// On a timer message delivered to its topic: the delivery time it was sent with
/// (wall-clock ms). Its `ORIGIN_MSG_ID` is the id its send was acknowledged with.
pub const DELIVER_AT_MS: &str = "TIMER_DELIVER_MS";
/// A message's message group (e.g. an order id): a receiving group gets the messages of
/// one message group in send order, the next only once the previous one is acked.
pub const MESSAGE_GROUP: &str = "MSG_GROUP";

/// Builds a property blob.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PropertiesBuilder {
    buf: Vec<u8>,
}

impl PropertiesBuilder {
    /// An empty blob.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts from an existing blob (e.g. to add retry properties to a message).
    pub fn from_blob(blob: &[u8]) -> Self {
        Self { buf: blob.to_vec() }
    }

    /// Appends a key and value. A key longer than 64 KiB is cut; values up to 4 GiB.
    #[must_use]
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.push(key, value);
        self
    }

    /// Appends a key and value in place; see [`PropertiesBuilder::with`].
    pub fn push(&mut self, key: &str, value: &str) {
        let key = &key.as_bytes()[..key.len().min(u16::MAX as usize)];
        let value = &value.as_bytes()[..value.len().min(u32::MAX as usize)];
        self.buf
            .extend_from_slice(&(key.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(key);
        self.buf
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(value);
    }

    /// Builds a blob from `blob` without the entries named in `keys`.
    ///
    /// # Errors
    /// If `blob` is malformed.
    pub fn without(blob: &[u8], keys: &[&str]) -> Result<Self, ProtocolError> {
        let mut out = Self::new();
        for entry in Properties::new(blob).iter() {
            let (k, v) = entry?;
            if !keys.contains(&k) {
                out.push(k, v);
            }
        }
        Ok(out)
    }

    /// The blob.
    pub fn build(self) -> Vec<u8> {
        self.buf
    }

    /// The blob so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// A read-only view over a property blob.
#[derive(Debug, Clone, Copy)]
pub struct Properties<'a> {
    blob: &'a [u8],
}

impl<'a> Properties<'a> {
    /// A view over `blob`; nothing is checked until read.
    pub fn new(blob: &'a [u8]) -> Self {
        Self { blob }
    }

    /// The entries in order; an `Err` item at the first malformed byte.
    pub fn iter(&self) -> PropertiesIter<'a> {
        PropertiesIter { rest: self.blob }
    }

    /// The first value stored under `key`; `None` if absent, if its value is not UTF-8,
    /// or if the blob is truncated before it (use [`Properties::validate`] to tell these
    /// apart). Keys are compared as bytes, so a non-UTF-8 key before it is skipped.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        // Compares raw key bytes and checks UTF-8 of the match only: receives look up a
        // property of every message they hand out.
        let mut b = self.blob;
        while !b.is_empty() {
            let (klen, rest) = split_len::<2>(b).ok()?;
            let k = rest.get(..klen)?;
            let (vlen, rest) = split_len::<4>(&rest[klen..]).ok()?;
            let v = rest.get(..vlen)?;
            if k == key.as_bytes() {
                return std::str::from_utf8(v).ok();
            }
            b = &rest[vlen..];
        }
        None
    }

    /// Checks the whole blob.
    ///
    /// # Errors
    /// `Properties` naming what is wrong.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        self.iter().try_for_each(|e| e.map(|_| ()))
    }
}

/// The entries of a property blob; see [`Properties::iter`].
pub struct PropertiesIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for PropertiesIter<'a> {
    type Item = Result<(&'a str, &'a str), ProtocolError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = split_entry(self.rest);
        match item {
            Ok((k, v, rest)) => {
                self.rest = rest;
                Some(Ok((k, v)))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

type Entry<'a> = (&'a str, &'a str, &'a [u8]);

fn split_entry(b: &[u8]) -> Result<Entry<'_>, ProtocolError> {
    let (klen, b) = split_len::<2>(b)?;
    let (key, b) = split_str(b, klen)?;
    let (vlen, b) = split_len::<4>(b)?;
    let (value, b) = split_str(b, vlen)?;
    Ok((key, value, b))
}

fn split_len<const N: usize>(b: &[u8]) -> Result<(usize, &[u8]), ProtocolError> {
    if b.len() < N {
        return Err(ProtocolError::Properties("truncated length"));
    }
    let mut raw = [0u8; 8];
    raw[..N].copy_from_slice(&b[..N]);
    Ok((u64::from_le_bytes(raw) as usize, &b[N..]))
}

fn split_str(b: &[u8], len: usize) -> Result<(&str, &[u8]), ProtocolError> {
    if b.len() < len {
        return Err(ProtocolError::Properties("truncated key or value"));
    }
    let s = std::str::from_utf8(&b[..len])
        .map_err(|_| ProtocolError::Properties("key or value is not UTF-8"))?;
    Ok((s, &b[len..]))
}

/// The properties the broker itself sets or reads; every other property is a user
/// property, carried unchanged between producers and consumers of either protocol.
pub const SYSTEM_KEYS: &[&str] = &[
    TAGS,
    KEYS,
    DELAY_LEVEL,
    ORIGIN_TOPIC,
    ORIGIN_MSG_ID,
    ORIGIN_QUEUE_ID,
    ORIGIN_QUEUE_OFFSET,
    REAL_TOPIC,
    REAL_QUEUE_ID,
    DUE_AT_MS,
    DELIVER_AT_MS,
    MESSAGE_GROUP,
    crate::tx::TX_ID,
    crate::tx::TX_INDEX,
];

/// Whether `key` is one of [`SYSTEM_KEYS`] rather than a user property.
pub fn is_system(key: &str) -> bool {
    SYSTEM_KEYS.contains(&key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn builds_and_reads_back() {
        let blob = PropertiesBuilder::new()
            .with(TAGS, "red")
            .with(KEYS, "order-1 order-2")
            .build();
        let p = Properties::new(&blob);
        assert_eq!(p.get(TAGS), Some("red"));
        assert_eq!(p.get(KEYS), Some("order-1 order-2"));
        assert_eq!(p.get(ORIGIN_TOPIC), None);
        p.validate().unwrap();
        let stripped = PropertiesBuilder::without(&blob, &[TAGS]).unwrap().build();
        assert_eq!(Properties::new(&stripped).get(TAGS), None);
        assert_eq!(
            Properties::new(&stripped).get(KEYS),
            Some("order-1 order-2")
        );
    }

    proptest! {
        #[test]
        fn round_trip(pairs in proptest::collection::vec(("[a-zA-Z_]{1,12}", ".{0,40}"), 0..8)) {
            let mut b = PropertiesBuilder::new();
            for (k, v) in &pairs {
                b.push(k, v);
            }
            let blob = b.build();
            let back: Vec<(String, String)> = Properties::new(&blob)
                .iter()
                .map(|e| e.map(|(k, v)| (k.to_string(), v.to_string())))
                .collect::<Result<_, _>>()
                .unwrap();
            prop_assert_eq!(back, pairs);
        }

        #[test]
        fn get_agrees_with_the_checked_entries(
            pairs in proptest::collection::vec(("[a-c]{1,2}", ".{0,8}"), 0..6),
            cut in 0usize..80,
        ) {
            let mut b = PropertiesBuilder::new();
            for (k, v) in &pairs {
                b.push(k, v);
            }
            let blob = b.build();
            // Whole or truncated: get returns what a walk of the valid entries finds.
            let blob = &blob[..cut.min(blob.len())];
            for key in ["a", "b", "c", "ab", "zz"] {
                let expected = Properties::new(blob)
                    .iter()
                    .map_while(Result::ok)
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v);
                prop_assert_eq!(Properties::new(blob).get(key), expected);
            }
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Properties::new(&bytes).validate();
            let _ = Properties::new(&bytes).get(TAGS);
        }
    }
}
