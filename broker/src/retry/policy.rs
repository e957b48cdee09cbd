//! Consumer groups' own retry policies ([`RetryPolicy`]), kept in memory and saved to
//! `<data>/config/group_policies` on every change (atomic replace through the storage seam,
//! before the change is answered).
//!
//! # File format, version 1
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `FMGP` |
//! | 4 | 4 | format version, u32 LE (1) |
//! | 8 | 4 | CRC32 of the payload, u32 LE |
//! | 12 | n | payload: JSON `{"groups": {"<group>": {"max_reconsume_times": 4, "delays": {"backoff": {...}}}}}` |
//!
//! The file is small (one entry per group with a policy) and read once, at start; a file
//! that fails any check stops the start with [`RetryError::CorruptPolicies`] rather than
//! silently dropping policies.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use commitlog::storage::Storage;
use protocol::group_policy::RetryPolicy;
use serde::{Deserialize, Serialize};

use super::error::RetryError;
use crate::store::fsutil::atomic_write_on;

/// Name of the file under `<data>/config`.
pub const FILE_NAME: &str = "group_policies";
const MAGIC: [u8; 4] = *b"FMGP";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 12;
const VERSION_AT: usize = 4;
const CRC_AT: usize = 8;
const _: () = assert!(CRC_AT + 4 == HEADER_LEN);

#[derive(Serialize, Deserialize)]
struct Payload {
    groups: BTreeMap<String, RetryPolicy>,
}

/// The groups' own retry policies.
#[derive(Debug)]
pub(crate) struct GroupPolicies {
    path: PathBuf,
    storage: Arc<dyn Storage>,
    map: RwLock<HashMap<String, RetryPolicy>>,
    /// One change at a time, so the file always ends up holding the latest map.
    write: Mutex<()>,
}

impl GroupPolicies {
    /// Loads `<config_dir>/group_policies`; no file means no group has a policy.
    ///
    /// # Errors
    /// [`RetryError::CorruptPolicies`] for a file that fails a check; I/O errors.
    pub(crate) fn load(config_dir: &Path, storage: Arc<dyn Storage>) -> Result<Self, RetryError> {
        let path = config_dir.join(FILE_NAME);
        let map = match fs::read(&path) {
            Ok(bytes) => decode(&bytes).map_err(|reason| RetryError::CorruptPolicies {
                path: path.clone(),
                reason,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => HashMap::new(),
            Err(source) => {
                return Err(RetryError::Io {
                    op: "read",
                    path,
                    source,
                })
            }
        };
        Ok(Self {
            path,
            storage,
            map: RwLock::new(map),
            write: Mutex::new(()),
        })
    }

    /// A group's policy, if it has one.
    pub(crate) fn get(&self, group: &str) -> Option<RetryPolicy> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(group)
            .cloned()
    }

    /// Sets (or with `None` removes) a group's policy and saves the file; returns whether
    /// the group had a policy before. Blocking (a file write and fsyncs).
    ///
    /// # Errors
    /// The save failed; the policies in force are then unchanged.
    pub(crate) fn set(&self, group: &str, policy: Option<RetryPolicy>) -> Result<bool, RetryError> {
        let _one = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let had = match policy {
            Some(p) => next.insert(group.to_string(), p).is_some(),
            None => {
                let had = next.remove(group).is_some();
                if !had {
                    return Ok(false);
                }
                had
            }
        };
        let bytes = encode(&next).map_err(|reason| RetryError::CorruptPolicies {
            path: self.path.clone(),
            reason,
        })?;
        atomic_write_on(self.storage.as_ref(), &self.path, &bytes).map_err(|source| {
            RetryError::Store {
                op: "saving",
                target: self.path.display().to_string(),
                source: Box::new(source),
            }
        })?;
        *self.map.write().unwrap_or_else(PoisonError::into_inner) = next;
        Ok(had)
    }
}

fn encode(map: &HashMap<String, RetryPolicy>) -> Result<Vec<u8>, String> {
    let payload = Payload {
        groups: map.iter().map(|(g, p)| (g.clone(), p.clone())).collect(),
    };
    let json = serde_json::to_vec(&payload).map_err(|e| format!("cannot encode: {e}"))?;
    let mut out = Vec::with_capacity(HEADER_LEN + json.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

fn decode(bytes: &[u8]) -> Result<HashMap<String, RetryPolicy>, String> {
    let word = |at: usize| {
        bytes
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
    };
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "{} bytes, shorter than its {HEADER_LEN}-byte header",
            bytes.len()
        ));
    }
    if bytes[..VERSION_AT] != MAGIC {
        return Err("bad magic (not a group policies file)".into());
    }
    let version = word(VERSION_AT).unwrap_or(0);
    if version != VERSION {
        return Err(format!(
            "format version {version} (this broker reads {VERSION})"
        ));
    }
    let stored = word(CRC_AT).unwrap_or(0);
    let json = &bytes[HEADER_LEN..];
    let actual = crc32fast::hash(json);
    if stored != actual {
        return Err(format!(
            "checksum mismatch: stored {stored:#010x}, computed {actual:#010x}"
        ));
    }
    let payload: Payload =
        serde_json::from_slice(json).map_err(|e| format!("payload does not parse: {e}"))?;
    for (group, p) in &payload.groups {
        // The timer's maximum is checked where the delay is used: it is a flag and may
        // have changed since the policy was set.
        p.validate(u64::MAX)
            .map_err(|e| format!("policy of group {group} is invalid: {e}"))?;
    }
    Ok(payload.groups.into_iter().collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use protocol::group_policy::RetryDelays;

    use super::*;

    fn storage() -> Arc<dyn Storage> {
        Arc::new(commitlog::storage::RealFs)
    }

    fn policy(max: u32) -> RetryPolicy {
        RetryPolicy {
            max_reconsume_times: max,
            delays: Some(RetryDelays::Backoff {
                initial_ms: 100,
                multiplier: 1.5,
                max_ms: 10_000,
            }),
        }
    }

    #[test]
    fn policies_survive_a_reload_and_a_reset_removes_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = GroupPolicies::load(dir.path(), storage()).unwrap();
        assert_eq!(p.get("a"), None);
        assert!(!p.set("a", Some(policy(3))).unwrap());
        assert!(p.set("a", Some(policy(4))).unwrap());
        p.set(
            "b",
            Some(RetryPolicy {
                max_reconsume_times: 2,
                delays: Some(RetryDelays::Table(vec![10, 20])),
            }),
        )
        .unwrap();
        assert!(!p.set("nobody", None).unwrap());
        let again = GroupPolicies::load(dir.path(), storage()).unwrap();
        assert_eq!(again.get("a"), Some(policy(4)));
        assert_eq!(again.get("b").unwrap().max_reconsume_times, 2);
        assert!(again.set("a", None).unwrap());
        let third = GroupPolicies::load(dir.path(), storage()).unwrap();
        assert_eq!(third.get("a"), None);
        assert!(third.get("b").is_some());
    }

    #[test]
    fn a_damaged_file_stops_the_load_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let p = GroupPolicies::load(dir.path(), storage()).unwrap();
        p.set("a", Some(policy(3))).unwrap();
        let path = dir.path().join(FILE_NAME);
        let good = fs::read(&path).unwrap();
        let reason = |bytes: &[u8]| {
            fs::write(&path, bytes).unwrap();
            match GroupPolicies::load(dir.path(), storage()) {
                Err(RetryError::CorruptPolicies { reason, .. }) => reason,
                other => panic!("expected corruption, got {other:?}"),
            }
        };
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 0x20;
        assert!(reason(&flipped).contains("checksum mismatch"));
        assert!(reason(&good[..7]).contains("shorter than"));
        let mut magic = good.clone();
        magic[0] = b'X';
        assert!(reason(&magic).contains("bad magic"));
        let mut version = good.clone();
        version[VERSION_AT] = 9;
        assert!(reason(&version).contains("format version 9"));
        let mut zero = encode(&HashMap::from([("z".to_string(), policy(0))])).unwrap();
        assert!(reason(&zero).contains("policy of group z is invalid"));
        zero.truncate(HEADER_LEN);
        assert!(reason(&zero).contains("checksum mismatch"));
    }
}
