//! `/metrics`: the Prometheus text exposition, encoded by `prometheus-client`. Traffic and
//! latency come from the [`Recorder`]; offsets, lag, ages, members, dead letters, disk
//! memory, receive leases and pending timers are read from the broker's state at scrape
//! time (a custom collector), so the hot paths pay nothing for them.
//!
//! Label cardinality: group series are per (group, topic, queue) or, when
//! `metrics_per_queue` says so, per (group, topic) with the queue label left out (offsets
//! and lag summed, the oldest age the maximum; leases in flight summed).
//!
//! Retries wait on the timer under the group's `%RETRY%<group>` topic, so the timer's
//! pending count of that topic is the group's scheduled retries.

use std::collections::BTreeMap;
use std::path::Path;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use protocol::names::RETRY_PREFIX;

use super::api::{dlq_depth, group_names, group_queues};
use super::recorder::{HistogramSnapshot, Recorder, REQUEST_KINDS};
use crate::config::MetricsPerQueue;
use crate::server::services::Services;
use crate::store::DiskState;
use protocol::time::now_ms;

/// One group series: labels and the four values.
#[derive(Debug, Default, Clone)]
struct GroupRow {
    committed: u64,
    max_offset: u64,
    lag: u64,
    oldest_age_s: f64,
}

/// Everything one scrape shows, read before encoding.
#[derive(Debug, Default)]
struct Scrape {
    uptime_s: f64,
    connections: u64,
    topics: Vec<(String, [u64; 4])>,
    topic_queues: Vec<(String, u64)>,
    /// `(group, topic, queue or None when aggregated)`.
    groups: BTreeMap<(String, String, Option<u32>), GroupRow>,
    members: Vec<(String, u64)>,
    dlq: Vec<(String, u64)>,
    /// In-flight receive leases of receiving groups, keyed as `groups`.
    leases: BTreeMap<(String, String, Option<u32>), u64>,
    /// Timer messages waiting per topic (retry topics included) and in all.
    timers: Vec<(String, u64)>,
    timers_total: u64,
    /// Retries parked on the timer, per group.
    retries_pending: Vec<(String, u64)>,
    retries_scheduled: u64,
    dead_lettered: u64,
    requests: Vec<(&'static str, HistogramSnapshot)>,
    append: Option<HistogramSnapshot>,
    flush: Option<HistogramSnapshot>,
    dispatch: Option<HistogramSnapshot>,
    commitlog_write_offset: u64,
    commitlog_flushed_offset: u64,
    disk_used_bytes: u64,
    disk_free_bytes: u64,
    disk_full: bool,
    resident_bytes: Option<u64>,
}

/// Renders the exposition text for one scrape. Blocking: reads every group's queues.
///
/// # Errors
/// Only if encoding fails (formatting into a `String`, which does not).
pub(crate) fn render(
    services: &Services,
    recorder: &Recorder,
    per_queue: MetricsPerQueue,
) -> Result<String, std::fmt::Error> {
    let scrape = read(services, recorder, per_queue);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

fn read(services: &Services, recorder: &Recorder, per_queue: MetricsPerQueue) -> Scrape {
    let stats = services.stats.snapshot();
    let topics = services.store.topics();
    let queue_total: u64 = topics.iter().map(|t| u64::from(t.queue_count)).sum();
    let per_queue = per_queue.per_queue(queue_total);
    let mut s = Scrape {
        #[allow(clippy::cast_precision_loss)] // ms as seconds
        uptime_s: stats.uptime_ms as f64 / 1000.0,
        connections: stats.connections,
        ..Scrape::default()
    };
    let known: std::collections::HashSet<&str> = topics.iter().map(|t| t.name.as_str()).collect();
    // Counters of deleted topics are not shown.
    s.topics = recorder
        .topic_counters()
        .into_iter()
        .filter(|(t, _)| known.contains(t.as_str()))
        .collect();
    s.topic_queues = topics
        .iter()
        .map(|t| (t.name.clone(), u64::from(t.queue_count)))
        .collect();
    let now = now_ms();
    for g in group_names(services) {
        for q in group_queues(services, &g, now) {
            let key = (g.clone(), q.topic.clone(), per_queue.then_some(q.queue_id));
            let row = s.groups.entry(key).or_default();
            row.committed += q.committed.unwrap_or(0);
            row.max_offset += q.max_offset;
            row.lag += q.lag;
            row.oldest_age_s = row.oldest_age_s.max(q.oldest_unacked_age_s.unwrap_or(0.0));
        }
        s.members
            .push((g.clone(), services.groups.members(&g).len() as u64));
        s.dlq.push((g.clone(), dlq_depth(services, &g)));
    }
    for g in services.pop.group_names() {
        let report = services.pop.report(&g);
        if !report.receives {
            continue;
        }
        for q in report.queues {
            let key = (g.clone(), q.topic, per_queue.then_some(q.queue_id));
            *s.leases.entry(key).or_default() += u64::from(q.in_flight);
        }
    }
    s.timers = services.timer.pending_by_topic();
    s.timers.sort();
    s.timers_total = services.timer.pending_total();
    s.retries_pending = s
        .timers
        .iter()
        .filter_map(|(t, n)| Some((t.strip_prefix(RETRY_PREFIX)?.to_owned(), *n)))
        .collect();
    (s.retries_scheduled, s.dead_lettered) = recorder.sent_back_totals();
    s.requests = recorder
        .request_histograms()
        .map(|(k, h)| (k, h.snapshot()))
        .collect();
    s.append = Some(recorder.append.snapshot());
    s.flush = Some(recorder.flush.snapshot());
    s.dispatch = Some(recorder.dispatch.snapshot());
    let log = services.store.commit_log();
    s.commitlog_write_offset = log.write_offset().get();
    s.commitlog_flushed_offset = log.flushed_offset().get();
    let disk = services.store.disk().status();
    s.disk_free_bytes = disk.free_bytes;
    s.disk_full = disk.state == DiskState::Full;
    s.disk_used_bytes = disk_usage(&services.config.data_dir);
    s.resident_bytes = resident_bytes();
    debug_assert!(s.requests.len() <= REQUEST_KINDS.len());
    s
}

/// Bytes allocated on disk under `dir` (what `du` counts: sparse and preallocated files by
/// their allocated blocks). The data dir holds few files whatever the number of queues.
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

/// Resident set size of this process, from `/proc/self/status` (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

type Enc<'a> = DescriptorEncoder<'a>;

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    e: &mut Enc<'_>,
    name: &str,
    help: &str,
    v: V,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// One series of a group family, labelled by group and topic, and by queue when the
/// series is per queue (`queue` is `None` for series folded per topic).
fn group_series(
    m: &mut prometheus_client::encoding::MetricEncoder<'_>,
    (group, topic, queue): &(String, String, Option<u32>),
    v: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    match queue {
        Some(q) => {
            let q = q.to_string();
            let labels = [
                ("group", group.as_str()),
                ("topic", topic.as_str()),
                ("queue", q.as_str()),
            ];
            v.encode(m.encode_family(&labels)?)
        }
        None => {
            let labels = [("group", group.as_str()), ("topic", topic.as_str())];
            v.encode(m.encode_family(&labels)?)
        }
    }
}

fn counter(e: &mut Enc<'_>, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn histogram(
    e: &mut Enc<'_>,
    name: &str,
    help: &str,
    h: &HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        h.sum_s, h.count, &h.buckets, None,
    )
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        gauge(
            &mut e,
            "ferromq_uptime_seconds",
            "Seconds since the broker started.",
            self.uptime_s,
        )?;
        gauge(
            &mut e,
            "ferromq_connections",
            "Open client connections.",
            self.connections,
        )?;
        self.encode_topics(&mut e)?;
        self.encode_groups(&mut e)?;
        self.encode_timers(&mut e)?;
        counter(
            &mut e,
            "ferromq_retries_scheduled",
            "Messages sent back by pull consumers and scheduled for a retry since start \
             (ferromq_group_retries_pending counts retries still waiting on the timer).",
            self.retries_scheduled,
        )?;
        counter(
            &mut e,
            "ferromq_dead_lettered",
            "Nacked messages moved to a dead-letter queue since start.",
            self.dead_lettered,
        )?;
        self.encode_latencies(&mut e)?;
        gauge(
            &mut e,
            "ferromq_commitlog_write_offset_bytes",
            "Commit-log end (bytes ever written).",
            self.commitlog_write_offset,
        )?;
        gauge(
            &mut e,
            "ferromq_commitlog_flushed_offset_bytes",
            "Commit-log offset known durable on disk.",
            self.commitlog_flushed_offset,
        )?;
        gauge(
            &mut e,
            "ferromq_disk_used_bytes",
            "Bytes allocated on disk under the data directory.",
            self.disk_used_bytes,
        )?;
        gauge(
            &mut e,
            "ferromq_disk_free_bytes",
            "Free bytes on the data directory's filesystem.",
            self.disk_free_bytes,
        )?;
        gauge(
            &mut e,
            "ferromq_disk_full",
            "1 while sends are refused for lack of disk space.",
            u64::from(self.disk_full),
        )?;
        if let Some(rss) = self.resident_bytes {
            gauge(
                &mut e,
                "ferromq_resident_memory_bytes",
                "Resident set size of the broker process.",
                rss,
            )?;
        }
        Ok(())
    }
}

impl Scrape {
    fn encode_topics(&self, e: &mut Enc<'_>) -> Result<(), std::fmt::Error> {
        let families: [(&str, &str, usize); 4] = [
            (
                "ferromq_topic_messages_in",
                "Messages stored into the topic since start.",
                0,
            ),
            (
                "ferromq_topic_bytes_in",
                "Body bytes stored into the topic since start.",
                1,
            ),
            (
                "ferromq_topic_messages_out",
                "Messages of the topic delivered by pulls since start.",
                2,
            ),
            (
                "ferromq_topic_bytes_out",
                "Record bytes of the topic delivered by pulls since start.",
                3,
            ),
        ];
        for (name, help, i) in families {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (topic, values) in &self.topics {
                let labels = [("topic", topic.as_str())];
                ConstCounter::new(values[i]).encode(m.encode_family(&labels)?)?;
            }
        }
        let mut m = e.encode_descriptor(
            "ferromq_topic_queues",
            "Queues of the topic.",
            None,
            MetricType::Gauge,
        )?;
        for (topic, n) in &self.topic_queues {
            ConstGauge::new(*n).encode(m.encode_family(&[("topic", topic.as_str())])?)?;
        }
        Ok(())
    }

    fn encode_groups(&self, e: &mut Enc<'_>) -> Result<(), std::fmt::Error> {
        type Pick = fn(&GroupRow) -> f64;
        #[allow(clippy::cast_precision_loss)] // offsets far below 2^53 in practice
        let families: [(&str, &str, Pick); 4] = [
            (
                "ferromq_group_committed_offset",
                "Committed offset of the group on the queue (summed over queues when aggregated).",
                |r| r.committed as f64,
            ),
            (
                "ferromq_group_max_offset",
                "End offset of the queue (summed over queues when aggregated).",
                |r| r.max_offset as f64,
            ),
            (
                "ferromq_group_lag_messages",
                "Messages of the queue the group has not acknowledged.",
                |r| r.lag as f64,
            ),
            (
                "ferromq_group_oldest_unacked_age_seconds",
                "Age of the oldest message the group has not acknowledged (0 when caught up).",
                |r| r.oldest_age_s,
            ),
        ];
        for (name, help, pick) in families {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (key, row) in &self.groups {
                group_series(&mut m, key, &ConstGauge::new(pick(row)))?;
            }
        }
        let mut m = e.encode_descriptor(
            "ferromq_group_leases_in_flight",
            "Messages received by the group and not yet acked, rejected or expired.",
            None,
            MetricType::Gauge,
        )?;
        for (key, n) in &self.leases {
            group_series(&mut m, key, &ConstGauge::new(*n))?;
        }
        let mut m = e.encode_descriptor(
            "ferromq_group_members",
            "Live members of the group.",
            None,
            MetricType::Gauge,
        )?;
        for (g, n) in &self.members {
            ConstGauge::new(*n).encode(m.encode_family(&[("group", g.as_str())])?)?;
        }
        let mut m = e.encode_descriptor(
            "ferromq_group_dlq_messages",
            "Messages in the group's dead-letter queue not yet resent.",
            None,
            MetricType::Gauge,
        )?;
        for (g, n) in &self.dlq {
            ConstGauge::new(*n).encode(m.encode_family(&[("group", g.as_str())])?)?;
        }
        Ok(())
    }

    fn encode_timers(&self, e: &mut Enc<'_>) -> Result<(), std::fmt::Error> {
        let mut m = e.encode_descriptor(
            "ferromq_timers_pending",
            "Timer messages waiting for their delivery time, per topic (retry topics included).",
            None,
            MetricType::Gauge,
        )?;
        for (topic, n) in &self.timers {
            ConstGauge::new(*n).encode(m.encode_family(&[("topic", topic.as_str())])?)?;
        }
        gauge(
            e,
            "ferromq_timers_pending_all_topics",
            "Timer messages waiting for their delivery time, all topics.",
            self.timers_total,
        )?;
        let mut m = e.encode_descriptor(
            "ferromq_group_retries_pending",
            "Retries of the group parked on the timer, waiting for their delay.",
            None,
            MetricType::Gauge,
        )?;
        for (g, n) in &self.retries_pending {
            ConstGauge::new(*n).encode(m.encode_family(&[("group", g.as_str())])?)?;
        }
        Ok(())
    }

    fn encode_latencies(&self, e: &mut Enc<'_>) -> Result<(), std::fmt::Error> {
        let mut m = e.encode_descriptor(
            "ferromq_request_duration_seconds",
            "Time from reading a request to answering it, by kind (a held pull counts its wait).",
            None,
            MetricType::Histogram,
        )?;
        for (kind, h) in &self.requests {
            m.encode_family(&[("kind", *kind)])?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    h.sum_s, h.count, &h.buckets, None,
                )?;
        }
        if let Some(h) = &self.append {
            histogram(
                e,
                "ferromq_commitlog_append_duration_seconds",
                "One appender batch: checks, writer lock and commit-log append.",
                h,
            )?;
        }
        if let Some(h) = &self.flush {
            histogram(
                e,
                "ferromq_commitlog_flush_duration_seconds",
                "One commit-log flush (msync pass).",
                h,
            )?;
        }
        if let Some(h) = &self.dispatch {
            histogram(
                e,
                "ferromq_dispatch_duration_seconds",
                "One dispatch round: new records indexed into consume queues.",
                h,
            )?;
        }
        Ok(())
    }
}
