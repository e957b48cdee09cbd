//! Stop and wake signal for background threads: the one mechanism behind every periodic
//! loop of the storage threads (flusher, preallocator, dispatcher, disk watcher, retry
//! scheduler). A loop reads `while signal.wait_timeout(period) { work }`: it sleeps until
//! woken, stopped or the period passes, and ends once stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Wakes or stops one background loop. A wake sent while the loop is busy is kept, so the
/// next wait returns at once (no lost wake-up). `Send + Sync`; share it with `Arc`.
#[derive(Debug, Default)]
pub struct Signal {
    /// Mirrors `state.stopped` for lock-free checks on hot paths.
    stopped: AtomicBool,
    state: Mutex<State>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct State {
    stopped: bool,
    woken: bool,
}

impl Signal {
    /// A signal neither woken nor stopped.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the two flags consistent: a panic elsewhere must
        // not stop the loop from being stopped.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the loop: its current or next wait returns at once.
    pub fn wake(&self) {
        self.lock().woken = true;
        self.cond.notify_all();
    }

    /// Stops the loop: every wait returns `false` from now on.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.lock().stopped = true;
        self.cond.notify_all();
    }

    /// Whether [`Signal::stop`] was called. One atomic load.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Sleeps until woken, stopped or `timeout` passes, and consumes the wake. Returns
    /// `false` once stopped (the loop should end), else `true`.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.lock();
        while !state.stopped && !state.woken {
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => break,
                },
                // Beyond what `Instant` can express: as good as forever, in hour steps.
                None => Duration::from_secs(3600),
            };
            state = self
                .cond
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.woken = false;
        !state.stopped
    }

    /// [`Signal::wait_timeout`] without a timeout.
    pub fn wait(&self) -> bool {
        self.wait_timeout(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::Signal;

    #[test]
    fn a_wake_sent_while_busy_is_not_lost() {
        let s = Signal::new();
        s.wake();
        // Would sleep for an hour if the wake had been dropped.
        assert!(s.wait_timeout(Duration::from_secs(3600)));
        assert!(!s.is_stopped());
    }

    #[test]
    fn stop_ends_a_waiting_loop_and_every_later_wait() {
        let s = Arc::new(Signal::new());
        let looping = Arc::clone(&s);
        let rounds = std::thread::spawn(move || {
            let mut n = 0u32;
            while looping.wait() {
                n += 1;
            }
            n
        });
        s.wake();
        s.stop();
        let n = rounds.join().unwrap();
        assert!(n <= 1, "{n} rounds for one wake");
        assert!(s.is_stopped());
        assert!(!s.wait_timeout(Duration::from_secs(3600)));
    }

    #[test]
    fn a_wait_returns_after_its_timeout() {
        let s = Signal::new();
        assert!(s.wait_timeout(Duration::from_millis(1)));
        assert!(s.wait_timeout(Duration::ZERO));
    }
}
