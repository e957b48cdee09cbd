//! The client's one retry schedule: exponential delays from a minimum, doubling up to a
//! maximum, without end (callers stop on success, cancellation or a permanent error).

use std::time::Duration;

use backon::BackoffBuilder;

/// Delays `min, 2·min, 4·min, ...` capped at `max`, forever.
pub(crate) fn delays(min: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::new()
        .with_min_delay(min)
        .with_max_delay(max)
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_never_ends() {
        let got: Vec<Duration> = delays(Duration::from_millis(10), Duration::from_millis(50))
            .take(6)
            .collect();
        // The factor is an f32: allow a rounding error well under a millisecond.
        for (d, want_ms) in got.iter().zip([10u64, 20, 40, 50, 50, 50]) {
            let want = Duration::from_millis(want_ms);
            assert!(d.abs_diff(want) < Duration::from_micros(100), "{got:?}");
        }
    }
}
