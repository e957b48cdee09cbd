//! The metadata of one topic and the rules for its name: the types that the topic table,
//! its on-disk format and its journal all share.

use serde::{Deserialize, Serialize};

use super::{StoreError, StoreResult};

/// Largest queue count a topic may have; bounds the per-topic vectors and folder count.
pub const MAX_QUEUE_COUNT: u32 = 1024;

/// Who is naming a topic: clients may not use the reserved `%` prefix, the broker may
/// (`%RETRY%group`, `%DLQ%group`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicScope {
    /// Names a client may use.
    Client,
    /// Also the broker's own `%RETRY%`/`%DLQ%`/schedule topics.
    Internal,
}

/// Read/write permissions of a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    /// Consumers may pull.
    pub read: bool,
    /// Producers may send.
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
    /// The topic's name.
    pub name: String,
    /// Number of queues, `1..=MAX_QUEUE_COUNT`.
    pub queue_count: u32,
    #[serde(default)]
    /// Who may read and write.
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

#[cfg(test)]
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
}
