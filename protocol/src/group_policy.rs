//! A consumer group's own retry policy (RocketMQ 5's per-group retry policy, ActiveMQ's
//! redelivery policy): how long a failed message waits before each further attempt, as a
//! delay table or an exponential backoff, and how many attempts it gets before it goes to
//! `%DLQ%<group>`. The broker persists it; groups without one use the broker's flags.
//!
//! Attempts are counted as the broker counts them: retry `n` (1 for the first retry) is the
//! copy with `reconsume_times = n`, delivery attempt `n + 1`; a message whose next retry
//! would pass `max_reconsume_times` is dead-lettered instead.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::messages::Request;
use crate::RequestCode;

/// Most entries a delay table may have (as the broker's own `--retry-delays-ms`).
pub const MAX_RETRY_DELAYS: usize = 64;

/// How long a group's failed message waits before retry `n`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryDelays {
    /// Retry `n` waits `table[n - 1]` ms; retries past its end wait its last entry.
    Table(Vec<u64>),
    /// Retry `n` waits `initial_ms × multiplierⁿ⁻¹` ms, at most `max_ms`.
    Backoff {
        /// Delay of the first retry.
        initial_ms: u64,
        /// Growth per retry; at least 1.
        multiplier: f64,
        /// Longest delay.
        max_ms: u64,
    },
}

impl RetryDelays {
    /// The delay before retry `n` (1-based; 0 counts as 1).
    pub fn delay_ms(&self, n: u32) -> u64 {
        let n = n.max(1);
        match self {
            Self::Table(t) => {
                let i = usize::try_from(n - 1).unwrap_or(usize::MAX);
                t.get(i).or(t.last()).copied().unwrap_or(0)
            }
            Self::Backoff {
                initial_ms,
                multiplier,
                max_ms,
            } => backoff_ms(*initial_ms, *multiplier, *max_ms, n - 1),
        }
    }

    /// The longest delay any retry can get.
    pub fn longest_ms(&self) -> u64 {
        match self {
            Self::Table(t) => t.iter().copied().max().unwrap_or(0),
            Self::Backoff {
                initial_ms, max_ms, ..
            } => (*initial_ms).max(*max_ms),
        }
    }

    /// Checks the delays against the broker's maximum timer delay.
    ///
    /// # Errors
    /// The [`RetryPolicyError`] naming what is out of range.
    pub fn validate(&self, max_delay_ms: u64) -> Result<(), RetryPolicyError> {
        match self {
            Self::Table(t) if t.is_empty() => return Err(RetryPolicyError::EmptyTable),
            Self::Table(t) if t.len() > MAX_RETRY_DELAYS => {
                return Err(RetryPolicyError::TableTooLong {
                    len: t.len(),
                    max: MAX_RETRY_DELAYS,
                })
            }
            Self::Table(_) => {}
            Self::Backoff {
                initial_ms,
                multiplier,
                max_ms,
            } => {
                if !multiplier.is_finite() || *multiplier < 1.0 {
                    return Err(RetryPolicyError::BadMultiplier(*multiplier));
                }
                if *initial_ms == 0 {
                    return Err(RetryPolicyError::ZeroInitialDelay);
                }
                if *max_ms == 0 {
                    return Err(RetryPolicyError::ZeroMaxDelay);
                }
                if max_ms < initial_ms {
                    return Err(RetryPolicyError::MaxBelowInitial {
                        initial_ms: *initial_ms,
                        max_ms: *max_ms,
                    });
                }
            }
        }
        let longest = self.longest_ms();
        if longest > max_delay_ms {
            return Err(RetryPolicyError::DelayTooLong {
                delay_ms: longest,
                max_delay_ms,
            });
        }
        Ok(())
    }
}

/// `initial_ms × multiplier^exp`, rounded, at most `max_ms`.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
fn backoff_ms(initial_ms: u64, multiplier: f64, max_ms: u64, exp: u32) -> u64 {
    let exp = i32::try_from(exp).unwrap_or(i32::MAX);
    let d = (initial_ms as f64 * multiplier.powi(exp)).round();
    // Compared as floats first: a product past u64's range must not wrap or saturate
    // into a wrong value.
    if !d.is_finite() || d >= max_ms as f64 {
        max_ms
    } else {
        d as u64
    }
}

/// A group's own retry policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries a message gets; the failure after the last one dead-letters it. At least 1.
    pub max_reconsume_times: u32,
    /// The group's delays; `None`: the broker's delay table (`--retry-delays-ms`).
    pub delays: Option<RetryDelays>,
}

impl RetryPolicy {
    /// Checks the policy; `max_delay_ms` is the broker's `--max-timer-delay-ms` (a client
    /// that does not know it passes `u64::MAX`).
    ///
    /// # Errors
    /// The [`RetryPolicyError`] naming what is out of range.
    pub fn validate(&self, max_delay_ms: u64) -> Result<(), RetryPolicyError> {
        if self.max_reconsume_times == 0 {
            return Err(RetryPolicyError::ZeroMaxAttempts);
        }
        match &self.delays {
            Some(d) => d.validate(max_delay_ms),
            None => Ok(()),
        }
    }
}

/// Why a retry policy is refused.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum RetryPolicyError {
    /// `max_reconsume_times` of 0 (a reject dead-letters a message at once).
    #[error(
        "max reconsume times must be at least 1 (to dead-letter a message at once, reject it)"
    )]
    ZeroMaxAttempts,
    /// A delay table without entries.
    #[error("the retry delay table is empty; give at least one delay")]
    EmptyTable,
    /// A delay table with too many entries.
    #[error("the retry delay table has {len} entries; at most {max} are allowed")]
    TableTooLong {
        /// Entries given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A backoff multiplier below 1 or not a number.
    #[error("backoff multiplier {0} must be a number of at least 1")]
    BadMultiplier(f64),
    /// A backoff whose first delay is 0 (it would never grow).
    #[error("backoff initial delay must be at least 1 ms")]
    ZeroInitialDelay,
    /// A backoff whose maximum is 0.
    #[error("backoff maximum delay must be at least 1 ms")]
    ZeroMaxDelay,
    /// A backoff whose maximum is below its first delay.
    #[error("backoff maximum {max_ms} ms is below its initial delay {initial_ms} ms")]
    MaxBelowInitial {
        /// The initial delay.
        initial_ms: u64,
        /// The maximum.
        max_ms: u64,
    },
    /// A delay longer than the broker's timer accepts.
    #[error(
        "retry delay {delay_ms} ms is over the broker's maximum timer delay of {max_delay_ms} ms \
         (--max-timer-delay-ms)"
    )]
    DelayTooLong {
        /// The longest delay of the policy.
        delay_ms: u64,
        /// The broker's maximum.
        max_delay_ms: u64,
    },
}

/// Sets (`Some`) or removes (`None`: back to the broker's defaults) a group's retry policy.
/// Answered once the policy is on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetGroupPolicyRequest {
    /// The consumer group.
    pub group: String,
    /// The new policy, or `None` to reset.
    pub policy: Option<RetryPolicy>,
}

/// Reads a group's retry policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetGroupPolicyRequest {
    /// The consumer group.
    pub group: String,
}

/// A group's retry policy: its own, if set, and the one in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupPolicyResponse {
    /// The consumer group.
    pub group: String,
    /// The group's own policy; `None` when it uses the broker's defaults.
    pub policy: Option<RetryPolicy>,
    /// What applies to the group: its own policy with the broker's delay table filled in
    /// when it has none, or the broker's defaults. `delays` is always set.
    pub effective: RetryPolicy,
}

impl Request for SetGroupPolicyRequest {
    const CODE: RequestCode = RequestCode::SetGroupPolicy;
    type Response = GroupPolicyResponse;
}

impl Request for GetGroupPolicyRequest {
    const CODE: RequestCode = RequestCode::GetGroupPolicy;
    type Response = GroupPolicyResponse;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header;

    fn backoff(initial_ms: u64, multiplier: f64, max_ms: u64) -> RetryDelays {
        RetryDelays::Backoff {
            initial_ms,
            multiplier,
            max_ms,
        }
    }

    #[test]
    fn table_delays_stay_at_the_last_entry() {
        let t = RetryDelays::Table(vec![100, 200, 300]);
        let got: Vec<u64> = (0..6).map(|n| t.delay_ms(n)).collect();
        assert_eq!(got, vec![100, 100, 200, 300, 300, 300]);
    }

    #[test]
    fn backoff_grows_by_the_multiplier_up_to_the_maximum() {
        let b = backoff(100, 2.0, 1_000);
        let got: Vec<u64> = (1..=6).map(|n| b.delay_ms(n)).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(backoff(1_000, 1.5, 10_000).delay_ms(3), 2_250);
        assert_eq!(backoff(7, 1.0, 100).delay_ms(50), 7);
        assert_eq!(backoff(1, 1e300, u64::MAX).delay_ms(u32::MAX), u64::MAX);
    }

    #[test]
    fn bad_policies_are_named() {
        let p = |max, delays| RetryPolicy {
            max_reconsume_times: max,
            delays,
        };
        assert_eq!(
            p(0, None).validate(u64::MAX),
            Err(RetryPolicyError::ZeroMaxAttempts)
        );
        assert_eq!(
            p(3, Some(RetryDelays::Table(vec![]))).validate(u64::MAX),
            Err(RetryPolicyError::EmptyTable)
        );
        assert!(matches!(
            p(3, Some(RetryDelays::Table(vec![1; 65]))).validate(u64::MAX),
            Err(RetryPolicyError::TableTooLong { len: 65, .. })
        ));
        assert_eq!(
            p(3, Some(backoff(10, 0.5, 100))).validate(u64::MAX),
            Err(RetryPolicyError::BadMultiplier(0.5))
        );
        assert!(p(3, Some(backoff(10, f64::NAN, 100)))
            .validate(u64::MAX)
            .is_err());
        assert_eq!(
            p(3, Some(backoff(0, 2.0, 100))).validate(u64::MAX),
            Err(RetryPolicyError::ZeroInitialDelay)
        );
        assert_eq!(
            p(3, Some(backoff(10, 2.0, 0))).validate(u64::MAX),
            Err(RetryPolicyError::ZeroMaxDelay)
        );
        assert_eq!(
            p(3, Some(backoff(10, 2.0, 5))).validate(u64::MAX),
            Err(RetryPolicyError::MaxBelowInitial {
                initial_ms: 10,
                max_ms: 5
            })
        );
        assert_eq!(
            p(3, Some(RetryDelays::Table(vec![10, 5_000]))).validate(1_000),
            Err(RetryPolicyError::DelayTooLong {
                delay_ms: 5_000,
                max_delay_ms: 1_000
            })
        );
        p(3, Some(backoff(10, 2.0, 1_000))).validate(1_000).unwrap();
        p(1, None).validate(0).unwrap();
    }

    #[test]
    fn requests_round_trip() {
        let req = SetGroupPolicyRequest {
            group: "g".into(),
            policy: Some(RetryPolicy {
                max_reconsume_times: 4,
                delays: Some(backoff(100, 1.5, 9_000)),
            }),
        };
        let bytes = header::encode(&req).unwrap();
        assert_eq!(
            header::decode::<SetGroupPolicyRequest>(&bytes).unwrap(),
            req
        );
    }
}
