//! What the hot paths record for `/metrics`: per-topic traffic counters, request latency
//! per request kind, and append / flush / dispatch latency. Each record is a few relaxed
//! atomic adds; the only lock is a read lock on the topic map taken once per request (a
//! batch), never once per message. Everything else `/metrics` shows is read from the
//! broker's state at scrape time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use protocol::RequestCode;

/// Upper bounds of the latency buckets, in seconds: 10 µs to 10 s, about three per decade.
pub const LATENCY_BUCKETS_S: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram of atomic buckets (non-cumulative; the last one counts values
/// above every bound). Recording is one bucket search and three relaxed adds.
#[derive(Debug, Default)]
pub struct AtomicHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

/// A copy of a histogram: `(upper bound, observations in this bucket)` pairs ending with
/// `+Inf`, not cumulative (the encoder sums them into Prometheus' cumulative buckets).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Sum of all observations, in seconds.
    pub sum_s: f64,
    /// Number of observations.
    pub count: u64,
    /// The buckets, as above.
    pub buckets: Vec<(f64, u64)>,
}

impl AtomicHistogram {
    /// Adds one observation.
    pub fn record(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS_S.partition_point(|&b| b < s);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the buckets, sum and count.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            total += n;
            // `f64::MAX` is how prometheus-client spells the `+Inf` bucket.
            let bound = LATENCY_BUCKETS_S.get(i).copied().unwrap_or(f64::MAX);
            buckets.push((bound, n));
        }
        HistogramSnapshot {
            #[allow(clippy::cast_precision_loss)] // nanoseconds as seconds for display
            sum_s: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            // The bucket total, so that count and buckets agree even mid-update.
            count: total,
            buckets,
        }
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Traffic of one topic since the broker started.
#[derive(Debug, Default)]
pub struct TopicCounters {
    /// Messages stored by sends.
    pub messages_in: AtomicU64,
    /// Body bytes stored by sends.
    pub bytes_in: AtomicU64,
    /// Messages delivered to consumers.
    pub messages_out: AtomicU64,
    /// Body bytes delivered to consumers.
    pub bytes_out: AtomicU64,
}

/// The request kinds with their own latency histogram, by metric label.
pub const REQUEST_KINDS: [(RequestCode, &str); 19] = [
    (RequestCode::Hello, "hello"),
    (RequestCode::CreateTopic, "create_topic"),
    (RequestCode::UpdateTopic, "update_topic"),
    (RequestCode::DeleteTopic, "delete_topic"),
    (RequestCode::GetTopic, "get_topic"),
    (RequestCode::ListTopics, "list_topics"),
    (RequestCode::Send, "send"),
    (RequestCode::Pull, "pull"),
    (RequestCode::CommitOffset, "commit_offset"),
    (RequestCode::QueryOffset, "query_offset"),
    (RequestCode::Heartbeat, "heartbeat"),
    (RequestCode::LeaveGroup, "leave_group"),
    (RequestCode::GroupInfo, "group_info"),
    (RequestCode::ResetOffset, "reset_offset"),
    (RequestCode::SendBack, "send_back"),
    (RequestCode::DeleteGroup, "delete_group"),
    (RequestCode::SearchOffset, "search_offset"),
    (RequestCode::GetMessage, "get_message"),
    (RequestCode::BrokerStats, "broker_stats"),
];

/// Everything the hot paths record. Shared by `Arc`; all methods take `&self`.
#[derive(Debug, Default)]
pub struct Recorder {
    topics: RwLock<HashMap<Box<str>, Arc<TopicCounters>>>,
    requests: [AtomicHistogram; REQUEST_KINDS.len()],
    /// Store time of one appender batch (validation, writer lock, commit-log append).
    pub append: AtomicHistogram,
    /// One commit-log msync pass.
    pub flush: AtomicHistogram,
    /// One dispatch round (new records indexed into consume queues).
    pub dispatch: AtomicHistogram,
    retries_scheduled: AtomicU64,
    dead_lettered: AtomicU64,
}

impl Recorder {
    /// Every counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters of `topic`, created on its first message.
    fn topic(&self, topic: &str) -> Arc<TopicCounters> {
        if let Some(c) = self
            .topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
        {
            return Arc::clone(c);
        }
        let mut map = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(topic.into()).or_default())
    }

    /// Messages stored by one send request.
    pub fn messages_in(&self, topic: &str, count: u64, bytes: u64) {
        let c = self.topic(topic);
        c.messages_in.fetch_add(count, Ordering::Relaxed);
        c.bytes_in.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Messages delivered by one pull.
    pub fn messages_out(&self, topic: &str, count: u64, bytes: u64) {
        if count == 0 {
            return;
        }
        let c = self.topic(topic);
        c.messages_out.fetch_add(count, Ordering::Relaxed);
        c.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A copy of every topic's counters, for a scrape.
    pub fn topic_counters(&self) -> Vec<(String, [u64; 4])> {
        let map = self.topics.read().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .map(|(name, c)| {
                let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
                (
                    name.to_string(),
                    [
                        load(&c.messages_in),
                        load(&c.bytes_in),
                        load(&c.messages_out),
                        load(&c.bytes_out),
                    ],
                )
            })
            .collect()
    }

    /// The latency of one answered request.
    pub fn request(&self, code: RequestCode, took: Duration) {
        // A code added to the protocol later has no slot until it is listed here.
        if let Some(i) = REQUEST_KINDS.iter().position(|(c, _)| *c == code) {
            self.requests[i].record(took);
        }
    }

    /// Request latency histograms with their kind label; kinds never seen are left out.
    pub fn request_histograms(&self) -> impl Iterator<Item = (&'static str, &AtomicHistogram)> {
        REQUEST_KINDS
            .iter()
            .zip(&self.requests)
            .filter(|(_, h)| h.count() > 0)
            .map(|((_, name), h)| (*name, h))
    }

    /// One nacked message: `dead_lettered` when it went to the dead-letter queue, else a
    /// retry was scheduled.
    pub fn sent_back(&self, dead_lettered: bool) {
        let c = if dead_lettered {
            &self.dead_lettered
        } else {
            &self.retries_scheduled
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// `(retries scheduled, messages dead-lettered)` since start.
    pub fn sent_back_totals(&self) -> (u64, u64) {
        (
            self.retries_scheduled.load(Ordering::Relaxed),
            self.dead_lettered.load(Ordering::Relaxed),
        )
    }

    /// A hook that records into `histogram` of this recorder, for the storage layers.
    pub fn observer(
        self: &Arc<Self>,
        pick: fn(&Recorder) -> &AtomicHistogram,
    ) -> commitlog::DurationObserver {
        let me = Arc::clone(self);
        commitlog::DurationObserver(Arc::new(move |d| pick(&me).record(d)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_count_each_observation_once() {
        let h = AtomicHistogram::default();
        h.record(Duration::from_micros(5));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets.first(), Some(&(0.000_01, 1)));
        let at_5ms = s.buckets.iter().find(|(b, _)| *b == 0.005).unwrap();
        assert_eq!(at_5ms.1, 1);
        assert_eq!(s.buckets.last(), Some(&(f64::MAX, 1)));
        assert_eq!(s.buckets.iter().map(|(_, n)| n).sum::<u64>(), 3);
        assert!((s.sum_s - 60.003_005).abs() < 1e-6);
    }

    #[test]
    fn topic_counters_add_up_per_topic() {
        let r = Recorder::new();
        r.messages_in("a", 3, 30);
        r.messages_in("a", 1, 10);
        r.messages_out("a", 2, 20);
        r.messages_in("b", 1, 1);
        let mut c = r.topic_counters();
        c.sort();
        assert_eq!(
            c,
            vec![("a".into(), [4, 40, 2, 20]), ("b".into(), [1, 1, 0, 0])]
        );
    }

    #[test]
    fn only_request_kinds_seen_have_series() {
        let r = Recorder::new();
        r.request(RequestCode::Pull, Duration::from_millis(1));
        r.request(RequestCode::Hello, Duration::from_millis(1));
        let kinds: Vec<_> = r.request_histograms().map(|(k, _)| k).collect();
        assert_eq!(kinds, ["hello", "pull"]);
    }
}
