//! The settings a client gets back on Telemetry: its own, with the server's choices over
//! them (as the proxy does). A producer gets the body limit and a retry policy; a consumer
//! gets the batch size, the long-polling time and its group's retry policy, shaped for the
//! client's language: the Python and Java push consumers honour only a customized backoff,
//! the Node one only an exponential one.

use protocol::group_policy::{RetryDelays, RetryPolicy as GroupPolicy};

use super::convert::ms_duration;
use super::pb::{
    retry_policy::Strategy, settings::PubSub, CustomizedBackoff, ExponentialBackoff, Language,
    Metric, RetryPolicy, Settings,
};
use super::receive::{DEFAULT_BATCH, DEFAULT_LONG_POLL_MS};
use crate::server::services::Services;

/// Most retry delays listed in a customized backoff (later attempts reuse the last).
const MAX_LISTED_DELAYS: u32 = 64;

/// The reply to a client's settings.
pub(super) fn reply(s: &Services, mut settings: Settings) -> Settings {
    // With metrics on, the Python client starts an OTLP exporter to nowhere.
    settings.metric = Some(Metric {
        on: false,
        endpoints: None,
    });
    let language = settings
        .user_agent
        .as_ref()
        .map_or(Language::Unspecified as i32, |ua| ua.language);
    match &mut settings.pub_sub {
        Some(PubSub::Publishing(p)) => {
            p.max_body_size = i32::try_from(s.config.max_message_size.0).unwrap_or(i32::MAX);
            p.validate_message_type = true;
            // The proxy's producer policy: 3 attempts, 10 ms doubling up to 1 s.
            settings.backoff_policy = Some(RetryPolicy {
                max_attempts: 3,
                strategy: Some(Strategy::ExponentialBackoff(ExponentialBackoff {
                    initial: Some(ms_duration(10)),
                    max: Some(ms_duration(1_000)),
                    multiplier: 2.0,
                })),
            });
        }
        Some(PubSub::Subscription(sub)) => {
            // Ordering is the broker's: a message group's next message is handed out only
            // once the previous one is acked, whatever mode the client consumes in.
            sub.fifo = Some(false);
            sub.receive_batch_size = Some(i32::try_from(DEFAULT_BATCH).unwrap_or(32));
            // Whole seconds: the Python client reads only the seconds.
            sub.long_polling_timeout = Some(ms_duration(DEFAULT_LONG_POLL_MS));
            let group = sub
                .group
                .as_ref()
                .map(|g| g.name.clone())
                .unwrap_or_default();
            let policy = s.retry.effective_policy(&group);
            settings.backoff_policy = Some(consumer_policy(&policy, language));
        }
        None => {}
    }
    settings
}

/// A group's retry policy as RocketMQ's: attempts = max reconsume times + 1.
fn consumer_policy(p: &GroupPolicy, language: i32) -> RetryPolicy {
    let delays = p
        .delays
        .clone()
        .unwrap_or_else(|| RetryDelays::Table(crate::retry::DEFAULT_DELAY_LEVELS_MS.to_vec()));
    let max_attempts = i32::try_from(p.max_reconsume_times.saturating_add(1)).unwrap_or(i32::MAX);
    let strategy = if language == Language::NodeJs as i32 {
        let (initial, max, multiplier) = match &delays {
            RetryDelays::Backoff {
                initial_ms,
                multiplier,
                max_ms,
            } => (*initial_ms, *max_ms, *multiplier),
            RetryDelays::Table(t) => {
                let first = t.first().copied().unwrap_or(1_000).max(1);
                let second = t.get(1).copied().unwrap_or(first);
                let max = t.iter().copied().max().unwrap_or(first);
                (first, max, (second as f64 / first as f64).max(1.0))
            }
        };
        #[allow(clippy::cast_possible_truncation)]
        Strategy::ExponentialBackoff(ExponentialBackoff {
            initial: Some(ms_duration(initial)),
            max: Some(ms_duration(max)),
            multiplier: multiplier as f32,
        })
    } else {
        let n = p.max_reconsume_times.clamp(1, MAX_LISTED_DELAYS);
        Strategy::CustomizedBackoff(CustomizedBackoff {
            next: (1..=n).map(|i| ms_duration(delays.delay_ms(i))).collect(),
        })
    };
    RetryPolicy {
        max_attempts,
        strategy: Some(strategy),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_groups_table_becomes_a_customized_backoff_for_python_and_exponential_for_node() {
        let p = GroupPolicy {
            max_reconsume_times: 3,
            delays: Some(RetryDelays::Table(vec![1_000, 2_000, 4_000])),
        };
        let py = consumer_policy(&p, Language::Python as i32);
        assert_eq!(py.max_attempts, 4);
        let Some(Strategy::CustomizedBackoff(c)) = py.strategy else {
            panic!("python gets a customized backoff")
        };
        let secs: Vec<i64> = c.next.iter().map(|d| d.seconds).collect();
        assert_eq!(secs, vec![1, 2, 4]);
        let node = consumer_policy(&p, Language::NodeJs as i32);
        let Some(Strategy::ExponentialBackoff(e)) = node.strategy else {
            panic!("node gets an exponential backoff")
        };
        assert_eq!(e.initial.unwrap().seconds, 1);
        assert_eq!(e.max.unwrap().seconds, 4);
        assert!((e.multiplier - 2.0).abs() < f32::EPSILON);
    }
}
