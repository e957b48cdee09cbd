//! `mq bench keys`: lookups by key, one at a time, of keys `bench produce --keys N` sent.

use std::time::Instant;

use client::admin::Admin;

use super::{new_histogram, BenchArgs, Figures, Progress};
use crate::CliResult;

/// The key `bench produce --keys N` gives its `i`-th key.
pub(crate) fn key_name(i: u64) -> String {
    format!("key-{i}")
}

/// Looks up `--messages` random keys of `--keys N` (default 10,000 lookups) in `--topic`,
/// each for at most 32 messages, and records each lookup's latency.
pub(crate) async fn keys(
    broker: &str,
    args: &BenchArgs,
    progress: &Progress,
) -> CliResult<Figures> {
    let Some(n) = args.keys.filter(|&n| n > 0) else {
        return Err("the keys workload needs --keys N, as bench produce --keys N sent them".into());
    };
    let admin = Admin::connect(broker).await?;
    let lookups = args.messages.unwrap_or(10_000);
    let mut latency = new_histogram();
    let mut found = 0u64;
    let mut bytes = 0u64;
    // splitmix64: keys spread over the whole range without a dependency.
    let mut seed = client::protocol::time::now_ms();
    let start = Instant::now();
    for _ in 0..lookups {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let key = key_name((z ^ (z >> 31)) % n);
        let asked = Instant::now();
        let m = admin
            .query_by_key(&args.topic, &key, 0, u64::MAX, 32)
            .await?;
        latency.saturating_record(u64::try_from(asked.elapsed().as_micros()).unwrap_or(u64::MAX));
        found += m.messages.len() as u64;
        bytes += m
            .messages
            .iter()
            .map(|m| m.body().len() as u64)
            .sum::<u64>();
        progress.add(1);
    }
    let elapsed = start.elapsed();
    eprintln!(
        "\n{lookups} lookups found {found} messages ({:.1} per key)",
        found as f64 / lookups.max(1) as f64
    );
    Ok(Figures {
        messages: lookups,
        bytes,
        elapsed,
        latency: Some(latency),
    })
}
