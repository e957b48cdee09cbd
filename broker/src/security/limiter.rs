//! Failed authentications per source address: past a limit within a window, the address
//! is refused until the window has passed, so a secret cannot be guessed at line rate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses tracked before expired entries are swept: memory follows the addresses that
/// failed recently, not every address ever seen.
const SWEEP_AT: usize = 4096;

/// Counts failures per address.
#[derive(Debug)]
pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    /// Per address: failures in the current window and when the window started.
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailureLimiter {
    /// Refuses an address after `max_failures` failures within `window`.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures: max_failures.max(1),
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(wait)` while `ip` is refused, with how long until it may try again.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let map = self.lock();
        match map.get(&ip) {
            Some(&(n, since)) if n >= self.max_failures => {
                let until = since + self.window;
                if now < until {
                    Err(until - now)
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Records a failure of `ip`; returns its failures in the current window.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> u32 {
        let mut map = self.lock();
        if map.len() >= SWEEP_AT {
            let window = self.window;
            map.retain(|_, (_, since)| now.duration_since(*since) < window);
        }
        let entry = map.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= self.window {
            *entry = (0, now);
        }
        entry.0 += 1;
        entry.0
    }

    /// Forgets the failures of `ip` after it authenticated.
    pub fn succeeded(&self, ip: IpAddr) {
        self.lock().remove(&ip);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (u32, Instant)>> {
        // The map holds counters only; a panic elsewhere leaves it consistent.
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_the_limit_until_the_window_passes() {
        let l = FailureLimiter::new(3, Duration::from_secs(60));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check(ip, t0).is_ok());
            l.failed(ip, t0);
        }
        assert!(l.check(ip, t0 + Duration::from_secs(1)).is_err());
        assert!(l.check(other, t0).is_ok());
        assert!(l.check(ip, t0 + Duration::from_secs(61)).is_ok());
        l.succeeded(ip);
        assert!(l.check(ip, t0).is_ok());
    }
}
