//! The disk-space state of the data directory and what the broker does about it.
//!
//! [`DiskMonitor`] holds one of two states:
//!
//! | state | entered when |
//! |---|---|
//! | `Ok` | free ≥ 1.5 × reserve (and ≥ 1 MiB), and after a failed write an allocation of the same size succeeds (a probe) |
//! | `Full` | free < reserve (statvfs every second and every segment appended), or any write path reported `ENOSPC`/`EDQUOT` |
//!
//! While `Full` the store refuses new writes (sends, send-backs, due retries) with
//! [`StoreError::DiskFull`] before anything is appended; reads, acks and offset commits in
//! memory go on. The gap between entering (below the reserve) and leaving (1.5 × the
//! reserve) keeps the state from flapping around one threshold. Each transition is logged
//! once. Periodic writers (offsets, checkpoints, schedule progress) use [`WriteRetry`] to
//! back off and log once per failure streak instead of on every tick.
//!
//! Parts: `reserve` (the `--disk-reserve` value), `write_retry` (what counts as "no
//! space", and [`WriteRetry`]).

use std::error::Error as StdError;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use commitlog::storage::Storage;
use commitlog::Signal;

use super::StoreError;

mod reserve;
mod write_retry;

pub(crate) use reserve::Human;
pub use reserve::{DiskReserve, MIN_PERCENT_RESERVE_BYTES};
pub use write_retry::{is_disk_full, is_out_of_space, WriteRetry};

/// Created and removed at once to check that a failed allocation fits again.
pub const PROBE_FILE: &str = "space_probe";
/// How often the watcher thread reads the free space.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Leaving `Full` needs at least this much free space, even with the reserve disabled.
const MIN_FREE_TO_RESUME_BYTES: u64 = 1 << 20;

/// Whether the broker accepts new writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskState {
    /// Writes are accepted.
    Ok,
    /// Writes are refused until space is freed (or the reserve is back).
    Full,
}

/// A copy of the monitor's figures, for stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskStatus {
    /// Whether writes are accepted.
    pub state: DiskState,
    /// Free bytes available to the broker at the last reading.
    pub free_bytes: u64,
    /// The reserve in bytes at the last reading (0: disabled).
    pub reserve_bytes: u64,
    /// Writes (sends, send-backs, due retries) refused while `Full`, since start.
    pub sends_refused: u64,
}

/// Watches the free space of the data directory and decides `Ok` / `Full`.
#[derive(Debug)]
pub struct DiskMonitor {
    dir: PathBuf,
    reserve: DiskReserve,
    /// The store's file-system seam, used to check that a failed allocation fits again.
    storage: Arc<dyn Storage>,
    full: AtomicBool,
    free_bytes: AtomicU64,
    reserve_bytes: AtomicU64,
    /// Size of the last allocation reported as failed; leaving `Full` waits until it fits.
    failed_alloc_bytes: AtomicU64,
    refused: AtomicU64,
    /// Appended bytes between two readings on the write path (0: only the watcher reads),
    /// and the commit-log end at the last such reading. A fast producer can eat the whole
    /// reserve between two ticks of the watcher.
    poll_step_bytes: AtomicU64,
    polled_at_offset: AtomicU64,
    /// Bumped each time the state goes back to `Ok`, so back-offs can retry at once.
    recoveries: AtomicU64,
    /// Serializes transitions so each is decided and logged exactly once.
    transition: Mutex<()>,
}

impl DiskMonitor {
    /// A monitor of the filesystem holding `dir` (the data directory), with its first
    /// reading taken. `storage` is the seam the store writes through.
    pub fn new(dir: impl Into<PathBuf>, reserve: DiskReserve, storage: Arc<dyn Storage>) -> Self {
        let monitor = Self {
            dir: dir.into(),
            reserve,
            storage,
            full: AtomicBool::new(false),
            free_bytes: AtomicU64::new(0),
            reserve_bytes: AtomicU64::new(0),
            failed_alloc_bytes: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            poll_step_bytes: AtomicU64::new(0),
            polled_at_offset: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
            transition: Mutex::new(()),
        };
        monitor.poll();
        monitor
    }

    /// The configured reserve.
    pub fn reserve(&self) -> DiskReserve {
        self.reserve
    }

    /// Current state.
    pub fn state(&self) -> DiskState {
        if self.full.load(Ordering::Acquire) {
            DiskState::Full
        } else {
            DiskState::Ok
        }
    }

    /// Figures for stats.
    pub fn status(&self) -> DiskStatus {
        DiskStatus {
            state: self.state(),
            free_bytes: self.free_bytes.load(Ordering::Relaxed),
            reserve_bytes: self.reserve_bytes.load(Ordering::Relaxed),
            sends_refused: self.refused.load(Ordering::Relaxed),
        }
    }

    /// How many times the state went back to `Ok`.
    pub fn recoveries(&self) -> u64 {
        self.recoveries.load(Ordering::Acquire)
    }

    /// Also takes a reading on the write path each time the commit log grew by `bytes`
    /// (the log allocates whole segments, so a segment's size is the natural step).
    pub fn poll_every_appended(&self, bytes: u64) {
        self.poll_step_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The write-path gate, given the commit log's current end: `Ok(())`, or `DiskFull`
    /// (counting `writes` refused) while full.
    ///
    /// # Errors
    /// [`StoreError::DiskFull`] while the state is `Full`.
    pub fn admit(&self, writes: usize, log_end: u64) -> Result<(), StoreError> {
        let step = self.poll_step_bytes.load(Ordering::Relaxed);
        let last = self.polled_at_offset.load(Ordering::Relaxed);
        if step > 0
            && log_end >= last.saturating_add(step)
            && self
                .polled_at_offset
                .compare_exchange(last, log_end, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.check_reserve();
        }
        if !self.full.load(Ordering::Acquire) {
            return Ok(());
        }
        self.refused.fetch_add(writes as u64, Ordering::Relaxed);
        Err(StoreError::DiskFull {
            free_bytes: self.free_bytes.load(Ordering::Relaxed),
            reserve_bytes: self.reserve_bytes.load(Ordering::Relaxed),
        })
    }

    /// Takes a reading and changes state if it calls for it. Called every second by the
    /// watcher thread; callable directly (tests, after freeing space).
    pub fn poll(&self) {
        let Some((free, total)) = self.read_space() else {
            return;
        };
        let reserve = self.reserve.bytes(total);
        self.reserve_bytes.store(reserve, Ordering::Relaxed);
        let _t = self
            .transition
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.full.load(Ordering::Acquire) {
            let failed = self.failed_alloc_bytes.load(Ordering::Relaxed);
            let needed = (reserve.saturating_add(reserve / 2))
                .max(failed)
                .max(MIN_FREE_TO_RESUME_BYTES);
            if free >= needed && (failed == 0 || self.probe(failed)) {
                self.failed_alloc_bytes.store(0, Ordering::Relaxed);
                self.full.store(false, Ordering::Release);
                self.recoveries.fetch_add(1, Ordering::AcqRel);
                tracing::info!("disk space back: accepting sends");
            }
        } else if free < reserve {
            self.enter_full(free, reserve);
        }
    }

    /// The write path's reading: one `statvfs`, entering `Full` below the reserve. Never
    /// leaves `Full` (that may allocate a probe): the watcher thread does.
    fn check_reserve(&self) {
        let Some((free, total)) = self.read_space() else {
            return;
        };
        let reserve = self.reserve.bytes(total);
        if free >= reserve || self.full.load(Ordering::Acquire) {
            return;
        }
        let _t = self
            .transition
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !self.full.load(Ordering::Acquire) {
            self.enter_full(free, reserve);
        }
    }

    /// A write of about `needed_bytes` failed with `ENOSPC`/`EDQUOT` (`what` names it):
    /// enter `Full` now rather than at the next reading.
    pub fn report_full(&self, needed_bytes: u64, what: &str) {
        let (free, reserve) = match self.read_space() {
            Some((free, total)) => (free, self.reserve.bytes(total)),
            None => (0, self.reserve_bytes.load(Ordering::Relaxed)),
        };
        let _t = self
            .transition
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A size the caller does not know still gets a probe of one page.
        self.failed_alloc_bytes
            .store(needed_bytes.max(4096), Ordering::Relaxed);
        if !self.full.load(Ordering::Acquire) {
            tracing::debug!(what, needed_bytes, "a write found the disk full");
            self.enter_full(free, reserve);
        }
    }

    /// An append of `writes` requests failed with `err`: if it is `ENOSPC`/`EDQUOT`
    /// (a segment of `needed_bytes` could not be allocated), enter `Full` and count them
    /// as refused.
    pub fn append_failed(&self, err: &(dyn StdError + 'static), needed_bytes: u64, writes: usize) {
        if self.report_if_full(err, needed_bytes, "appending to the commit log") {
            self.refused.fetch_add(writes as u64, Ordering::Relaxed);
        }
    }

    /// [`DiskMonitor::report_full`] if `err` (or any error it wraps) is `ENOSPC`/`EDQUOT`;
    /// returns whether it was.
    pub fn report_if_full(
        &self,
        err: &(dyn StdError + 'static),
        needed_bytes: u64,
        what: &str,
    ) -> bool {
        let full = is_disk_full(err);
        if full {
            self.report_full(needed_bytes, what);
        }
        full
    }

    /// Whether an allocation of `bytes` succeeds now: free space alone does not prove it
    /// (quotas, reserved blocks), so after a failed write the same size is allocated for
    /// real in `<data>/space_probe` and released at once.
    fn probe(&self, bytes: u64) -> bool {
        let path = self.dir.join(PROBE_FILE);
        match self.storage.create_segment(&path, bytes) {
            Ok(file) => {
                drop(file);
                if let Err(e) = self.storage.remove(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove the space probe");
                }
                true
            }
            Err(e) => {
                // `create_new` fails on a probe left by a crash: remove it for next time.
                let _ = self.storage.remove(&path);
                tracing::debug!(bytes, error = %e, "space probe failed; staying full");
                false
            }
        }
    }

    fn enter_full(&self, free: u64, reserve: u64) {
        self.free_bytes.store(free, Ordering::Relaxed);
        self.full.store(true, Ordering::Release);
        tracing::warn!(
            "disk full: sends refused until space is freed (free={}, reserve={})",
            Human(free),
            Human(reserve)
        );
    }

    /// `(free bytes available to the broker, filesystem size)`; `None` (with a log line
    /// at debug) when the folder cannot be stat'ed, which keeps the last state.
    fn read_space(&self) -> Option<(u64, u64)> {
        match rustix::fs::statvfs(&self.dir) {
            Ok(st) => {
                let block = st.f_frsize.max(1);
                let free = st.f_bavail.saturating_mul(block);
                self.free_bytes.store(free, Ordering::Relaxed);
                Some((free, st.f_blocks.saturating_mul(block)))
            }
            Err(e) => {
                tracing::debug!(dir = %self.dir.display(), error = %e, "statvfs failed");
                None
            }
        }
    }

    /// Starts the thread that reads the free space every second until the returned
    /// handle is dropped.
    ///
    /// # Errors
    /// The OS refused to start a thread.
    pub fn watch(self: &Arc<Self>) -> std::io::Result<DiskWatcher> {
        let stop = Arc::new(Signal::new());
        let monitor = Arc::clone(self);
        let signal = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("ferromq-disk".into())
            .spawn(move || {
                while signal.wait_timeout(POLL_INTERVAL) {
                    monitor.poll();
                }
            })?;
        Ok(DiskWatcher {
            stop,
            handle: Some(handle),
        })
    }
}

/// The watcher thread; stopped and joined when dropped.
#[derive(Debug)]
pub struct DiskWatcher {
    stop: Arc<Signal>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for DiskWatcher {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(h) = self.handle.take() {
            // A panicked watcher has nothing to clean up.
            let _ = h.join();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn real() -> Arc<dyn Storage> {
        Arc::new(commitlog::storage::RealFs)
    }

    #[test]
    fn a_reserve_above_the_free_space_refuses_writes_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let m = DiskMonitor::new(dir.path(), DiskReserve::Bytes(u64::MAX), real());
        assert_eq!(m.state(), DiskState::Full);
        let err = m.admit(3, 0).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("sends refused until space is freed"),
            "{err}"
        );
        assert_eq!(m.status().sends_refused, 3);
    }

    #[test]
    fn a_reported_enospc_is_full_until_the_failed_allocation_fits() {
        let dir = tempfile::tempdir().unwrap();
        let m = DiskMonitor::new(dir.path(), DiskReserve::Bytes(0), real());
        assert_eq!(m.state(), DiskState::Ok);
        m.admit(1, 0).unwrap();
        let err = StoreError::io(
            "writing",
            dir.path(),
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        );
        // An allocation larger than any disk never fits: the state stays Full.
        assert!(m.report_if_full(&err, u64::MAX, "test write"));
        assert_eq!(m.state(), DiskState::Full);
        m.poll();
        assert_eq!(m.state(), DiskState::Full);
        // A small one fits the free space of the test's folder: Ok at the next reading.
        m.report_full(4096, "test write");
        m.poll();
        assert_eq!(m.state(), DiskState::Ok);
        assert_eq!(m.recoveries(), 1);
        m.admit(1, 0).unwrap();
    }

    #[test]
    fn free_space_alone_does_not_end_full_while_the_allocation_still_fails() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(commitlog::fault::FaultyStorage::new());
        let m = DiskMonitor::new(dir.path(), DiskReserve::Bytes(0), faults.clone());
        faults.disk_full(true);
        m.report_full(4096, "test write");
        m.poll();
        assert_eq!(
            m.state(),
            DiskState::Full,
            "resumed while writes still fail"
        );
        assert!(!dir.path().join(PROBE_FILE).exists());
        faults.disk_full(false);
        m.poll();
        assert_eq!(m.state(), DiskState::Ok);
        assert!(!dir.path().join(PROBE_FILE).exists(), "probe left behind");
    }
}
