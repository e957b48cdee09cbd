//! Topic metadata: names, queue counts, permissions; persisted in `<data>/config/topics`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use super::fsutil::atomic_write;
use super::{StoreError, StoreResult};

/// Largest queue count a topic may have; bounds the per-topic vectors and folder count.
pub const MAX_QUEUE_COUNT: u32 = 1024;

/// Who is naming a topic: clients may not use the reserved `%` prefix, the broker may
/// (`%RETRY%group`, `%DLQ%group`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicScope {
    Client,
    Internal,
}

/// Read/write permissions of a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub read: bool,
    pub write: bool,
}

impl Default for Permission {
    fn default() -> Self {
        Self {
            read: true,
            write: true,
        }
    }
}

/// Metadata of one topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub name: String,
    /// Number of queues, `1..=MAX_QUEUE_COUNT`.
    pub queue_count: u32,
    #[serde(default)]
    pub perm: Permission,
    /// Commit-log write offset when the topic was (re)created. Records of an earlier,
    /// deleted topic of the same name lie below it and are never dispatched again.
    #[serde(default)]
    pub created_at_physical: u64,
}

impl TopicConfig {
    /// A read-write topic with `queue_count` queues.
    pub fn new(name: impl Into<String>, queue_count: u32) -> Self {
        Self {
            name: name.into(),
            queue_count,
            perm: Permission::default(),
            created_at_physical: 0,
        }
    }
}

/// Checks a topic name: 1..=127 characters of `[A-Za-z0-9_.%-]`, the `%` prefix reserved for
/// [`TopicScope::Internal`], and never `.`/`..` (names become folder names).
///
/// # Errors
/// `InvalidTopicName` with the broken rule.
pub fn validate_topic_name(name: &str, scope: TopicScope) -> StoreResult<()> {
    let checked = match scope {
        TopicScope::Client => protocol::names::validate_user_name(name),
        TopicScope::Internal => protocol::names::validate_any_name(name),
    };
    let bad = |reason: String| StoreError::InvalidTopicName {
        name: name.chars().take(200).collect(),
        reason,
    };
    checked.map_err(|e| bad(e.to_string()))?;
    if name.bytes().all(|b| b == b'.') {
        return Err(bad(
            "a name of only dots is not a valid folder name".to_owned()
        ));
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct TopicsFile {
    version: u32,
    topics: Vec<TopicConfig>,
}

const TOPICS_FILE_VERSION: u32 = 1;

/// The in-memory topic table, written through to disk on every change.
#[derive(Debug)]
pub(crate) struct TopicTable {
    path: PathBuf,
    topics: RwLock<BTreeMap<String, TopicConfig>>,
}

impl TopicTable {
    /// Loads `path`, or starts empty when it does not exist.
    pub(crate) fn load(path: PathBuf) -> StoreResult<Self> {
        let topics = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: TopicsFile =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::CorruptedFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if file.version != TOPICS_FILE_VERSION {
                    return Err(StoreError::CorruptedFile {
                        path,
                        reason: format!("unsupported version {}", file.version),
                    });
                }
                file.topics
                    .into_iter()
                    .map(|t| (t.name.clone(), t))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(StoreError::io("reading", &path, e)),
        };
        Ok(Self {
            path,
            topics: RwLock::new(topics),
        })
    }

    pub(crate) fn get(&self, name: &str) -> Option<TopicConfig> {
        self.read().get(name).cloned()
    }

    /// Runs `f` on the topic without cloning it.
    pub(crate) fn with<R>(&self, name: &str, f: impl FnOnce(Option<&TopicConfig>) -> R) -> R {
        f(self.read().get(name))
    }

    pub(crate) fn all(&self) -> Vec<TopicConfig> {
        self.read().values().cloned().collect()
    }

    /// Creates or updates a topic; an update keeps `created_at_physical`. Returns the stored
    /// config. `created_at_physical` is used only for a new topic.
    pub(crate) fn upsert(
        &self,
        mut topic: TopicConfig,
        created_at_physical: u64,
    ) -> StoreResult<TopicConfig> {
        if topic.queue_count == 0 || topic.queue_count > MAX_QUEUE_COUNT {
            return Err(StoreError::InvalidConfig(format!(
                "queue_count must be in 1..={MAX_QUEUE_COUNT}, got {}",
                topic.queue_count
            )));
        }
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        topic.created_at_physical = topics
            .get(&topic.name)
            .map_or(created_at_physical, |t| t.created_at_physical);
        let previous = topics.insert(topic.name.clone(), topic.clone());
        if let Err(e) = self.persist(&topics) {
            // Keep memory and disk in agreement when the write fails.
            match previous {
                Some(p) => topics.insert(p.name.clone(), p),
                None => topics.remove(&topic.name),
            };
            return Err(e);
        }
        Ok(topic)
    }

    /// Creates the topic unless it exists; returns the stored config either way.
    pub(crate) fn get_or_create(
        &self,
        topic: TopicConfig,
        created_at_physical: u64,
    ) -> StoreResult<TopicConfig> {
        if let Some(t) = self.get(&topic.name) {
            return Ok(t);
        }
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = topics.get(&topic.name) {
            return Ok(t.clone());
        }
        let mut topic = topic;
        topic.created_at_physical = created_at_physical;
        topics.insert(topic.name.clone(), topic.clone());
        if let Err(e) = self.persist(&topics) {
            topics.remove(&topic.name);
            return Err(e);
        }
        Ok(topic)
    }

    /// Removes a topic; returns whether it existed.
    pub(crate) fn remove(&self, name: &str) -> StoreResult<Option<TopicConfig>> {
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        let Some(old) = topics.remove(name) else {
            return Ok(None);
        };
        if let Err(e) = self.persist(&topics) {
            topics.insert(old.name.clone(), old);
            return Err(e);
        }
        Ok(Some(old))
    }

    /// Lowers creation offsets above `log_end`: after the log lost its tail, new records of
    /// such a topic land below the old creation offset and must still be dispatched.
    pub(crate) fn clamp_created_at(&self, log_end: u64) -> StoreResult<()> {
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        let mut changed = false;
        for t in topics
            .values_mut()
            .filter(|t| t.created_at_physical > log_end)
        {
            t.created_at_physical = log_end;
            changed = true;
        }
        if changed {
            self.persist(&topics)?;
        }
        Ok(())
    }

    fn persist(&self, topics: &BTreeMap<String, TopicConfig>) -> StoreResult<()> {
        let file = TopicsFile {
            version: TOPICS_FILE_VERSION,
            topics: topics.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| StoreError::CorruptedFile {
            path: self.path.clone(),
            reason: format!("cannot encode topics: {e}"),
        })?;
        atomic_write(&self.path, &bytes)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, TopicConfig>> {
        self.topics.read().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_topic_name("orders.v2", TopicScope::Client).is_ok());
        assert!(validate_topic_name("%RETRY%g", TopicScope::Client).is_err());
        assert!(validate_topic_name("%RETRY%g", TopicScope::Internal).is_ok());
        assert!(validate_topic_name("..", TopicScope::Internal).is_err());
        assert!(validate_topic_name("a/b", TopicScope::Internal).is_err());
        assert!(validate_topic_name(&"x".repeat(128), TopicScope::Client).is_err());
        assert!(validate_topic_name("", TopicScope::Client).is_err());
    }

    #[test]
    fn persists_and_reloads() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("config").join("topics");
        let t = TopicTable::load(path.clone()).unwrap();
        t.upsert(TopicConfig::new("a", 4), 7).unwrap();
        let mut b = TopicConfig::new("b", 2);
        b.perm.write = false;
        t.upsert(b.clone(), 9).unwrap();
        // An update keeps the creation offset.
        t.upsert(TopicConfig::new("a", 8), 100).unwrap();
        assert!(t.upsert(TopicConfig::new("c", 0), 0).is_err());
        assert_eq!(t.remove("zz").unwrap(), None);
        let t = TopicTable::load(path.clone()).unwrap();
        let a = t.get("a").unwrap();
        assert_eq!((a.queue_count, a.created_at_physical), (8, 7));
        assert!(!t.get("b").unwrap().perm.write);
        assert!(t.remove("a").unwrap().is_some());
        let t = TopicTable::load(path.clone()).unwrap();
        assert_eq!(t.all().len(), 1);
        std::fs::write(&path, b"{nope").unwrap();
        assert!(matches!(
            TopicTable::load(path),
            Err(StoreError::CorruptedFile { .. })
        ));
    }
}
