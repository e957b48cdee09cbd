//! How topic metadata is kept on disk: an append-only journal of changes,
//! `config/topics.jnl`, over a compact snapshot, `config/topics.snap`.
//!
//! A create appends one small frame instead of rewriting every topic, and the fsync that
//! makes it durable is shared by all creates waiting at that moment (group commit) and
//! taken outside every lock. The snapshot is rewritten (atomically) only once the journal
//! has grown past twice its size, so the cost of a change does not grow with the number
//! of topics.
//!
//! **Frame** (journal, and the snapshot after its header): the CRC frame of
//! [`super::journal_frame`], whose body is a kind byte (1 Put, 2 Remove) and a payload.
//!
//! Put: `queue_count` u32, `perm` u8 (bit 0 read, bit 1 write), `created_at_physical` u64,
//! `name_len` u8, name. Remove: `name_len` u8, name. Both carry whole values, so replaying
//! a frame twice changes nothing: a journal left over by a crash during compaction
//! replays harmlessly over the newer snapshot.
//!
//! **Snapshot header** (16 bytes): magic `FMTS`, version u16 = 1, reserved u16, topic
//! count u32, CRC32 of bytes 0..12; then one Put frame per topic.
//!
//! A torn tail ends the journal and is cut off at open; a bad frame with data after it is
//! corruption and refuses the open.

use std::collections::BTreeMap;

use super::journal_frame::{encode_frame, read_u32, split_frames};
use super::topic_config::{Permission, TopicConfig};
const KIND_PUT: u8 = 1;
const KIND_REMOVE: u8 = 2;
pub(crate) const SNAPSHOT_MAGIC: &[u8; 4] = b"FMTS";
pub(crate) const SNAPSHOT_VERSION: u16 = 1;
pub(crate) const SNAPSHOT_HEADER_BYTES: usize = 16;
const _: () = assert!(SNAPSHOT_HEADER_BYTES == 4 + 2 + 2 + 4 + 4);

/// One change of the topic table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Put(TopicConfig),
    Remove(String),
}

impl Change {
    pub(crate) fn apply(self, topics: &mut BTreeMap<String, TopicConfig>) {
        match self {
            Self::Put(t) => {
                topics.insert(t.name.clone(), t);
            }
            Self::Remove(name) => {
                topics.remove(&name);
            }
        }
    }

    /// Appends this change as one frame to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(64);
        let name = match self {
            Self::Put(t) => {
                body.push(KIND_PUT);
                body.extend_from_slice(&t.queue_count.to_le_bytes());
                body.push(u8::from(t.perm.read) | (u8::from(t.perm.write) << 1));
                body.extend_from_slice(&t.created_at_physical.to_le_bytes());
                &t.name
            }
            Self::Remove(name) => {
                body.push(KIND_REMOVE);
                name
            }
        };
        // Topic names are at most 127 bytes (validated before any change is made).
        let name = &name.as_bytes()[..name.len().min(255)];
        body.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
        body.extend_from_slice(name);
        encode_frame(out, &body);
    }

    fn decode(body: &[u8]) -> Result<Self, String> {
        let (&kind, rest) = body.split_first().ok_or("empty frame")?;
        let (fixed, rest) = match kind {
            KIND_PUT if rest.len() >= 13 => rest.split_at(13),
            KIND_REMOVE => rest.split_at(0),
            other => return Err(format!("unknown or short frame of kind {other}")),
        };
        let (&name_len, name) = rest.split_first().ok_or("frame without a name")?;
        if name.len() != usize::from(name_len) {
            return Err(format!(
                "name of {} bytes where {name_len} were announced",
                name.len()
            ));
        }
        let name = std::str::from_utf8(name)
            .map_err(|e| format!("name is not UTF-8: {e}"))?
            .to_string();
        if kind == KIND_REMOVE {
            return Ok(Self::Remove(name));
        }
        let u32_at =
            |o: usize| u32::from_le_bytes([fixed[o], fixed[o + 1], fixed[o + 2], fixed[o + 3]]);
        let mut created = [0u8; 8];
        created.copy_from_slice(&fixed[5..13]);
        Ok(Self::Put(TopicConfig {
            name,
            queue_count: u32_at(0),
            perm: Permission {
                read: fixed[4] & 1 != 0,
                write: fixed[4] & 2 != 0,
            },
            created_at_physical: u64::from_le_bytes(created),
        }))
    }
}

/// What reading a run of frames found.
#[derive(Debug)]
pub(crate) struct Frames {
    pub(crate) changes: Vec<Change>,
    /// Bytes of whole, valid frames from the start; anything after is a torn tail.
    pub(crate) good_len: usize,
}

/// Reads frames until the end of `bytes`.
///
/// # Errors
/// A sentence naming the offset of a bad frame that has data after it (corruption), or a
/// frame that passes its checksum but does not decode.
pub(crate) fn decode_frames(bytes: &[u8]) -> Result<Frames, String> {
    let (bodies, good_len) = split_frames(bytes)?;
    let changes = bodies
        .into_iter()
        .map(Change::decode)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Frames { changes, good_len })
}

/// The snapshot of `topics`: header, then a Put frame each.
pub(crate) fn encode_snapshot(topics: &BTreeMap<String, TopicConfig>) -> Vec<u8> {
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + topics.len() * 48);
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(
        &u32::try_from(topics.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    let crc = crc32fast::hash(&out[..12]);
    out.extend_from_slice(&crc.to_le_bytes());
    for t in topics.values() {
        Change::Put(t.clone()).encode(&mut out);
    }
    out
}

/// The topics of a snapshot.
///
/// # Errors
/// A sentence saying what is wrong: a snapshot is written atomically, so any damage,
/// a torn end included, is corruption.
pub(crate) fn decode_snapshot(bytes: &[u8]) -> Result<BTreeMap<String, TopicConfig>, String> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES || &bytes[..4] != SNAPSHOT_MAGIC {
        return Err("not a topics snapshot (bad magic)".into());
    }
    if crc32fast::hash(&bytes[..12]) != read_u32(bytes, 12) {
        return Err("snapshot header checksum mismatch".into());
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != SNAPSHOT_VERSION {
        return Err(format!("unsupported snapshot version {version}"));
    }
    let count = read_u32(bytes, 8) as usize;
    let body = &bytes[SNAPSHOT_HEADER_BYTES..];
    let frames = decode_frames(body)?;
    if frames.good_len != body.len() || frames.changes.len() != count {
        return Err(format!(
            "snapshot holds {} whole topics of {count} announced",
            frames.changes.len()
        ));
    }
    let mut topics = BTreeMap::new();
    for c in frames.changes {
        c.apply(&mut topics);
    }
    Ok(topics)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn topic(name: &str, queues: u32, at: u64) -> TopicConfig {
        let mut t = TopicConfig::new(name, queues);
        t.created_at_physical = at;
        t.perm.write = queues.is_multiple_of(2);
        t
    }

    #[test]
    fn frames_round_trip_and_a_torn_tail_ends_the_journal() {
        let changes = vec![
            Change::Put(topic("a", 4, 7)),
            Change::Put(topic(&"x".repeat(127), 1, u64::MAX)),
            Change::Remove("a".into()),
        ];
        let mut bytes = Vec::new();
        for c in &changes {
            c.encode(&mut bytes);
        }
        let whole = bytes.len();
        let f = decode_frames(&bytes).unwrap();
        assert_eq!((f.changes, f.good_len), (changes.clone(), whole));
        // Cut anywhere inside the last frame: the first two survive.
        let mut second_end = Vec::new();
        changes[0].encode(&mut second_end);
        changes[1].encode(&mut second_end);
        for cut in second_end.len() + 1..whole {
            let f = decode_frames(&bytes[..cut]).unwrap();
            assert_eq!(f.good_len, second_end.len(), "cut at {cut}");
        }
        // Zeros after the last frame (preallocated or never written) are a torn tail too.
        let mut zeros = bytes.clone();
        zeros.extend_from_slice(&[0; 64]);
        assert_eq!(decode_frames(&zeros).unwrap().good_len, whole);
    }

    #[test]
    fn a_bad_frame_followed_by_good_ones_is_corruption() {
        let mut bytes = Vec::new();
        Change::Put(topic("a", 4, 7)).encode(&mut bytes);
        Change::Put(topic("b", 4, 7)).encode(&mut bytes);
        bytes[10] ^= 0xff;
        let err = decode_frames(&bytes).unwrap_err();
        assert!(err.contains("byte 0"), "{err}");
    }

    #[test]
    fn snapshots_round_trip_and_reject_damage() {
        let mut topics = BTreeMap::new();
        for (i, name) in ["a", "b", "%RETRY%g"].into_iter().enumerate() {
            topics.insert(name.to_string(), topic(name, i as u32 + 1, i as u64 * 100));
        }
        let bytes = encode_snapshot(&topics);
        assert_eq!(decode_snapshot(&bytes).unwrap(), topics);
        assert!(decode_snapshot(&bytes[..bytes.len() - 1]).is_err());
        let mut bad = bytes.clone();
        bad[2] = b'X';
        assert!(decode_snapshot(&bad).is_err());
        assert_eq!(
            decode_snapshot(&encode_snapshot(&BTreeMap::new()))
                .unwrap()
                .len(),
            0
        );
    }
}
