//! The schedule topics: `%SCHEDULE%<level>`, one per delay level, where delayed copies
//! wait until due.

/// Prefix of the schedule topics, `%SCHEDULE%<level>`.
pub const SCHEDULE_TOPIC_PREFIX: &str = "%SCHEDULE%";

/// The schedule topic of a delay level (1-based).
pub fn schedule_topic(level: u32) -> String {
    format!("{SCHEDULE_TOPIC_PREFIX}{level}")
}

/// The delay level of a schedule topic name.
pub(crate) fn level_of(topic: &str) -> Option<u32> {
    topic
        .strip_prefix(SCHEDULE_TOPIC_PREFIX)
        .and_then(|l| l.parse().ok())
        .filter(|l| *l >= 1)
}
