//! Retry settings: the delay table and how many attempts a message gets.

use serde::{Deserialize, Serialize};

use super::error::RetryError;

/// Most delay levels a table may have; each level is one schedule topic.
pub const MAX_DELAY_LEVELS: usize = 64;

/// RocketMQ's delay table: 1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h.
pub const DEFAULT_DELAY_LEVELS_MS: [u64; 18] = [
    1_000, 5_000, 10_000, 30_000, 60_000, 120_000, 180_000, 240_000, 300_000, 360_000, 420_000,
    480_000, 540_000, 600_000, 1_200_000, 1_800_000, 3_600_000, 7_200_000,
];

/// Default attempts before a message is dead-lettered.
pub const DEFAULT_MAX_RECONSUME_TIMES: u32 = 16;

/// Retry settings of a broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Delay before retry attempt `n` (1-based) is `delay_levels_ms[n - 1]`; attempts past
    /// the end of the table use its last entry. 1 to 64 entries. Default
    /// [`DEFAULT_DELAY_LEVELS_MS`].
    pub delay_levels_ms: Vec<u64>,
    /// Attempts a message gets before it goes to the dead-letter topic, for groups without
    /// their own setting (`RetryService::set_group_max_reconsume_times`) and nacks without
    /// an override. Default 16.
    pub max_reconsume_times: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            delay_levels_ms: DEFAULT_DELAY_LEVELS_MS.to_vec(),
            max_reconsume_times: DEFAULT_MAX_RECONSUME_TIMES,
        }
    }
}

impl RetryConfig {
    /// Checks the settings once, at start.
    ///
    /// # Errors
    /// [`RetryError::InvalidConfig`] for an empty or oversized delay table.
    pub fn validate(&self) -> Result<(), RetryError> {
        let n = self.delay_levels_ms.len();
        if n == 0 || n > MAX_DELAY_LEVELS {
            return Err(RetryError::InvalidConfig(format!(
                "delay_levels_ms must have 1 to {MAX_DELAY_LEVELS} entries, got {n}"
            )));
        }
        Ok(())
    }

    /// Delay level (1-based, an index into the table plus one) of retry attempt
    /// `reconsume_times` (1 for the first retry).
    pub fn level_of_attempt(&self, reconsume_times: u32) -> u32 {
        let last = u32::try_from(self.delay_levels_ms.len()).unwrap_or(u32::MAX);
        reconsume_times.clamp(1, last.max(1))
    }

    /// Delay of a level; levels past the table (left over from a longer table before a
    /// restart) use the last entry.
    pub fn delay_of_level_ms(&self, level: u32) -> u64 {
        let i = usize::try_from(level.saturating_sub(1)).unwrap_or(usize::MAX);
        self.delay_levels_ms
            .get(i)
            .or(self.delay_levels_ms.last())
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn attempts_map_to_levels_and_delays() {
        let c = RetryConfig {
            delay_levels_ms: vec![50, 100, 200],
            ..RetryConfig::default()
        };
        let delays: Vec<u64> = (1..=5)
            .map(|n| c.delay_of_level_ms(c.level_of_attempt(n)))
            .collect();
        assert_eq!(delays, vec![50, 100, 200, 200, 200]);
        assert_eq!(c.level_of_attempt(0), 1);
        assert_eq!(c.delay_of_level_ms(9), 200);
    }

    #[test]
    fn default_table_and_validation() {
        let c = RetryConfig::default();
        c.validate().unwrap();
        assert_eq!(c.delay_of_level_ms(1), 1_000);
        assert_eq!(c.delay_of_level_ms(18), 7_200_000);
        assert_eq!(c.max_reconsume_times, 16);
        let empty = RetryConfig {
            delay_levels_ms: vec![],
            ..RetryConfig::default()
        };
        assert!(matches!(
            empty.validate(),
            Err(RetryError::InvalidConfig(_))
        ));
        let parsed: RetryConfig =
            serde_json::from_str(r#"{"delay_levels_ms":[10,20],"max_reconsume_times":3}"#).unwrap();
        assert_eq!(parsed.delay_levels_ms, vec![10, 20]);
        let partial: RetryConfig = serde_json::from_str(r#"{"max_reconsume_times":3}"#).unwrap();
        assert_eq!(partial.delay_levels_ms.len(), 18);
    }
}
