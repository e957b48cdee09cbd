//! How far the scheduler got in each schedule topic, saved to
//! `<data>/config/schedule_offsets` (atomic write):
//!
//! ```text
//! { "version": 1, "next": { "%SCHEDULE%1": 42, "%SCHEDULE%2": 7 } }
//! ```
//!
//! `next` is the queue offset of the first message not yet delivered. The file may lag
//! behind: messages between it and the real progress are delivered again after a crash
//! (at-least-once), never skipped.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use commitlog::storage::Storage;
use serde::{Deserialize, Serialize};

use super::error::RetryError;
use crate::store::fsutil::atomic_write_on;

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    next: BTreeMap<String, u64>,
}

/// Per schedule topic, the next offset to deliver.
#[derive(Debug)]
pub(crate) struct ScheduleProgress {
    path: PathBuf,
    /// The store's file-system seam.
    storage: Arc<dyn Storage>,
    next: BTreeMap<String, u64>,
    dirty: bool,
}

impl ScheduleProgress {
    /// Loads the file under `config_dir`; no file means nothing delivered yet.
    ///
    /// # Errors
    /// I/O errors; a file that does not parse or has another version.
    pub(crate) fn load(config_dir: &Path, storage: Arc<dyn Storage>) -> Result<Self, RetryError> {
        let path = config_dir.join("schedule_offsets");
        let next = match fs::read(&path) {
            Ok(bytes) => {
                let corrupt = |reason: String| RetryError::CorruptProgress {
                    path: path.clone(),
                    reason,
                };
                let file: File =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                if file.version != VERSION {
                    return Err(corrupt(format!(
                        "format version {} (this broker reads {VERSION})",
                        file.version
                    )));
                }
                file.next
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
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
            next,
            dirty: false,
        })
    }

    pub(crate) fn next(&self, topic: &str) -> u64 {
        self.next.get(topic).copied().unwrap_or(0)
    }

    pub(crate) fn set(&mut self, topic: &str, next: u64) {
        if self.next(topic) != next {
            self.next.insert(topic.to_string(), next);
            self.dirty = true;
        }
    }

    pub(crate) fn topics(&self) -> impl Iterator<Item = &str> {
        self.next.keys().map(String::as_str)
    }

    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Writes the file if anything changed.
    ///
    /// # Errors
    /// Encoding or I/O errors; the progress stays dirty.
    pub(crate) fn save(&mut self) -> Result<(), RetryError> {
        if !self.dirty {
            return Ok(());
        }
        let file = File {
            version: VERSION,
            next: self.next.clone(),
        };
        let bytes = serde_json::to_vec(&file).map_err(|e| RetryError::CorruptProgress {
            path: self.path.clone(),
            reason: format!("cannot encode: {e}"),
        })?;
        atomic_write_on(self.storage.as_ref(), &self.path, &bytes).map_err(|source| {
            RetryError::Store {
                op: "saving",
                target: self.path.display().to_string(),
                source: Box::new(source),
            }
        })?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let mut p =
            ScheduleProgress::load(dir.path(), Arc::new(commitlog::storage::RealFs)).unwrap();
        assert_eq!(p.next("%SCHEDULE%1"), 0);
        p.set("%SCHEDULE%1", 0);
        assert!(!p.is_dirty());
        p.set("%SCHEDULE%1", 5);
        p.set("%SCHEDULE%3", 2);
        assert!(p.is_dirty());
        p.save().unwrap();
        assert!(!p.is_dirty());
        let back =
            ScheduleProgress::load(dir.path(), Arc::new(commitlog::storage::RealFs)).unwrap();
        assert_eq!(back.next("%SCHEDULE%1"), 5);
        assert_eq!(
            back.topics().collect::<Vec<_>>(),
            ["%SCHEDULE%1", "%SCHEDULE%3"]
        );

        fs::write(dir.path().join("schedule_offsets"), b"{\"version\":1,").unwrap();
        let err =
            ScheduleProgress::load(dir.path(), Arc::new(commitlog::storage::RealFs)).unwrap_err();
        assert!(matches!(err, RetryError::CorruptProgress { .. }), "{err}");
        fs::write(
            dir.path().join("schedule_offsets"),
            b"{\"version\":2,\"next\":{}}",
        )
        .unwrap();
        assert!(ScheduleProgress::load(dir.path(), Arc::new(commitlog::storage::RealFs)).is_err());
    }
}
