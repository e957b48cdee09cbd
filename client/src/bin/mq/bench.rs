//! `mq bench WORKLOAD`: produce, consume, sync-latency, e2e, pop, timer and tx, with a live progress line
//! on stderr and, with `--json`, one JSON object of figures on stdout.

mod keys;
mod ordered;
mod pop;
mod timer;
mod tx;
mod workloads;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use crate::CliResult;

/// Latency in microseconds, 3 significant digits, from 1 µs to an hour.
pub(crate) type Histogram = hdrhistogram::Histogram<u64>;

/// Longest latency recorded as itself (an hour, in µs); longer ones count as this.
const MAX_LATENCY_US: u64 = 3_600_000_000;

pub(crate) fn new_histogram() -> Histogram {
    // Fixed bounds: `saturating_record` clamps to the current range and does not grow an
    // auto-resizing histogram, which would clamp every latency to a few µs.
    // The bounds and sigfig are constants that hdrhistogram accepts.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Workload {
    /// P connections send N messages in batches of B with up to K requests in flight.
    Produce,
    /// One consumer group drains N messages already in the topic, acking all.
    Consume,
    /// One message at a time, waiting for each ack, for S seconds (P in parallel).
    SyncLatency,
    /// Produce at RATE while a consumer consumes; produce-to-consume latency.
    E2e,
    /// C receivers of one group drain N messages already in the topic with per-message
    /// acks: receive batches of R, one ack request per batch.
    Pop,
    /// Schedule N timer messages (default 1,000,000) spread over `--spread-s` seconds in
    /// pipelined batches of B, consume them with a group; scheduling throughput, delivery
    /// lateness and (with `--broker-pid`) the broker's memory while they are pending.
    Timer,
    /// P transaction loops for S seconds: begin, send `--tx-messages` messages, commit;
    /// committed messages per second and commit latency.
    Tx,
    /// Look up N random keys (default 10,000) of `--keys K`, as `bench produce --keys K`
    /// sent them, one at a time, each for at most 32 messages: key lookup latency.
    Keys,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct BenchArgs {
    /// What to measure.
    workload: Workload,
    /// Topic to use (created with `--queues` queues if missing).
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Produce: spread the messages over this many topics, `<topic>-0` .. `<topic>-<N-1>`
    /// (created if missing), one request to each (topic, queue) in turn.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    topics: u32,
    /// Queues of each topic the bench creates.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    queues: u32,
    /// Messages to send (produce, e2e) or drain (consume; default: all in the topic).
    #[arg(long)]
    messages: Option<u64>,
    /// Body size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Parallel connections (produce, sync-latency).
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Messages per send request (produce).
    #[arg(long, default_value_t = 100)]
    batch: u32,
    /// Unacknowledged send requests per connection (produce).
    #[arg(long, default_value_t = 1000)]
    inflight: usize,
    /// Run time in seconds (sync-latency, e2e).
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Messages per second (e2e).
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Receivers in the group (pop).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    consumers: u32,
    /// Messages per receive (pop).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    receive_batch: u32,
    /// Receipt handles per ack request (pop): each receiver gathers the handles of its
    /// receives until it has this many, then acks them in one request.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    ack_batch: u32,
    /// Timer: the timers' due times spread evenly over this many seconds from the start.
    #[arg(long, default_value_t = 60)]
    spread_s: u64,
    /// Timer: the broker's process id, to sample its resident memory (/proc/PID/status).
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Print one JSON object with the figures on stdout.
    #[arg(long)]
    json: bool,
    /// Consume: through an ordered push consumer (each queue one message at a time,
    /// under the broker's queue lock) whose handler only counts.
    #[arg(long, conflicts_with = "push")]
    ordered: bool,
    /// Consume: through a parallel push consumer (64 handler tasks) whose handler only
    /// counts: the parallel figure to set beside `--ordered`.
    #[arg(long)]
    push: bool,
    /// Tx: messages in each transaction.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    tx_messages: u32,
    /// Produce: each message carries one of this many keys (`key-0` ..), in turn; keys:
    /// the keys to look up at random.
    #[arg(long)]
    keys: Option<u64>,
}

/// What a workload measured.
pub(crate) struct Figures {
    messages: u64,
    bytes: u64,
    elapsed: Duration,
    latency: Option<Histogram>,
}

/// A counter the progress line reads.
#[derive(Clone, Default)]
pub(crate) struct Progress(Arc<AtomicU64>);

impl Progress {
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub(crate) async fn run(broker: &str, args: BenchArgs) -> CliResult {
    if args.size == 0 && args.workload == Workload::E2e {
        return Err("e2e needs --size of at least 8 bytes (the body carries a timestamp)".into());
    }
    if args.workload == Workload::Timer {
        return run_timer(broker, args).await;
    }
    let progress = Progress::default();
    let ticker = tokio::spawn(show_progress(
        progress.clone(),
        workload_name(args.workload),
    ));
    // The workload runs as a task on the runtime's workers, next to the connection tasks it
    // talks to, rather than on this thread, which every wake-up would have to unpark.
    let work = {
        let (broker, args, progress) = (broker.to_string(), args.clone(), progress.clone());
        tokio::spawn(async move {
            match args.workload {
                Workload::Produce => workloads::produce(&broker, &args, &progress).await,
                Workload::Consume if args.ordered || args.push => {
                    ordered::consume(&broker, &args, &progress).await
                }
                Workload::Consume => workloads::consume(&broker, &args, &progress).await,
                Workload::SyncLatency => workloads::sync_latency(&broker, &args, &progress).await,
                Workload::E2e => workloads::e2e(&broker, &args, &progress).await,
                Workload::Pop => pop::pop(&broker, &args, &progress).await,
                Workload::Timer => Err("the timer workload reports its own figures".into()),
                Workload::Tx => tx::tx(&broker, &args, &progress).await,
                Workload::Keys => keys::keys(&broker, &args, &progress).await,
            }
        })
    };
    let figures = work.await.unwrap_or_else(|e| {
        Err(format!("the {} workload failed: {e}", workload_name(args.workload)).into())
    });
    ticker.abort();
    eprintln!();
    let figures = figures?;
    report(&args, &figures);
    Ok(())
}

/// The timer workload: its figures are of another shape (scheduling and lateness).
async fn run_timer(broker: &str, args: BenchArgs) -> CliResult {
    let progress = Progress::default();
    let ticker = tokio::spawn(show_progress(progress.clone(), "timer (acked)".into()));
    let work = {
        let (broker, args, progress) = (broker.to_string(), args.clone(), progress.clone());
        tokio::spawn(async move { timer::timer(&broker, &args, &progress).await })
    };
    let figures = work
        .await
        .unwrap_or_else(|e| Err(format!("the timer workload failed: {e}").into()));
    ticker.abort();
    eprintln!();
    timer::report(&args, &figures?);
    Ok(())
}

/// The name the command line and the JSON figures use (`sync-latency`).
fn workload_name(w: Workload) -> String {
    w.to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string())
}

async fn show_progress(progress: Progress, workload: String) {
    let start = Instant::now();
    let mut last = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = progress.get();
        eprint!(
            "\r{workload}: {now} msgs in {:.0} s, {} msgs/s      ",
            start.elapsed().as_secs_f64(),
            now - last
        );
        last = now;
    }
}

fn report(args: &BenchArgs, f: &Figures) {
    let secs = f.elapsed.as_secs_f64().max(1e-9);
    let name = workload_name(args.workload);
    let mut v = serde_json::json!({
        "workload": name,
        "messages": f.messages,
        "secs": (secs * 1000.0).round() / 1000.0,
        "msgs_per_s": (f.messages as f64 / secs).round(),
        "mb_per_s": (f.bytes as f64 / secs / 1e6 * 100.0).round() / 100.0,
    });
    if let Some(h) = &f.latency {
        v["p50_us"] = h.value_at_quantile(0.5).into();
        v["p99_us"] = h.value_at_quantile(0.99).into();
        v["p999_us"] = h.value_at_quantile(0.999).into();
    }
    if args.json {
        println!("{v}");
        return;
    }
    println!(
        "{name}: {} messages in {secs:.2} s: {} msgs/s, {} MB/s",
        f.messages, v["msgs_per_s"], v["mb_per_s"]
    );
    if let Some(h) = &f.latency {
        println!(
            "latency us: p50 {} p99 {} p999 {} max {}",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn latencies_are_recorded_as_measured_not_clamped() {
        let mut h = new_histogram();
        for us in [3, 5_000, 250_000, 2_000_000] {
            h.saturating_record(us);
        }
        let within = |got: u64, want: u64| got.abs_diff(want) <= want / 100;
        assert!(within(h.max(), 2_000_000), "{}", h.max());
        assert!(
            within(h.value_at_quantile(0.5), 5_000),
            "{}",
            h.value_at_quantile(0.5)
        );
        assert_eq!(h.min(), 3);
    }
}
