//! Telling "no space" apart from other write errors, and retrying periodic writes with
//! back-off.

use std::error::Error as StdError;
use std::time::{Duration, Instant};

use super::DiskMonitor;
use crate::store::StoreError;

/// Longest pause between two attempts of a failing periodic write.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(16);

/// Whether `err` or any error in its source chain is `ENOSPC` or `EDQUOT`.
pub fn is_disk_full(err: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if commitlog::storage::is_disk_full(io) {
                return true;
            }
        }
        next = e.source();
    }
    false
}

/// Whether `err` means "no space": `ENOSPC`/`EDQUOT`, or a write the monitor refused
/// ([`StoreError::DiskFull`]) anywhere in its source chain. Callers that already log the
/// disk state use it to keep quiet about each refused attempt.
pub fn is_out_of_space(err: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        let store = e
            .downcast_ref::<StoreError>()
            .or_else(|| e.downcast_ref::<Box<StoreError>>().map(AsRef::as_ref));
        if matches!(store, Some(StoreError::DiskFull { .. })) {
            return true;
        }
        next = e.source();
    }
    is_disk_full(err)
}

/// Back-off and once-per-streak logging for a periodic writer (offsets, checkpoint,
/// schedule progress). A failing write is tried again after 1 s, 2 s, 4 s ... 16 s, and
/// at once when the disk state goes back to `Ok`. The first failure of a streak is logged
/// as a warning, the end of the streak once; failures in between only at debug.
#[derive(Debug)]
pub struct WriteRetry {
    what: &'static str,
    failures: u32,
    next_try: Option<Instant>,
    recoveries_seen: u64,
}

impl WriteRetry {
    /// `what` names the write in log lines, e.g. "writing consumer offsets".
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            failures: 0,
            next_try: None,
            recoveries_seen: 0,
        }
    }

    /// Whether the write should be tried now.
    pub fn due(&self, disk: &DiskMonitor) -> bool {
        match self.next_try {
            None => true,
            Some(at) => Instant::now() >= at || disk.recoveries() != self.recoveries_seen,
        }
    }

    /// Failures in the current streak.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The write succeeded: ends a streak.
    pub fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                failed_attempts = self.failures,
                "{} succeeded again",
                self.what
            );
        }
        self.failures = 0;
        self.next_try = None;
    }

    /// The write of about `bytes` failed with `err`: reports a full disk to `disk`, logs
    /// if this starts a streak, and schedules the next attempt.
    pub fn failed(&mut self, err: &(dyn StdError + 'static), bytes: u64, disk: &DiskMonitor) {
        let full = disk.report_if_full(err, bytes, self.what);
        if self.failures == 0 {
            tracing::warn!(
                error = %err,
                disk_full = full,
                "{} failed; retrying with back-off (logged again only once it succeeds)",
                self.what
            );
        } else {
            tracing::debug!(error = %err, attempt = self.failures + 1, "{} failed again", self.what);
        }
        let backoff = Duration::from_secs(1 << self.failures.min(4)).min(MAX_RETRY_BACKOFF);
        self.failures = self.failures.saturating_add(1);
        self.next_try = Some(Instant::now() + backoff);
        self.recoveries_seen = disk.recoveries();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::{DiskReserve, DiskState};

    #[test]
    fn only_enospc_and_edquot_count_as_a_full_disk() {
        let wrap = |code| StoreError::io("x", "/x", std::io::Error::from_raw_os_error(code));
        assert!(is_disk_full(&wrap(libc::ENOSPC)));
        assert!(is_disk_full(&wrap(libc::EDQUOT)));
        assert!(!is_disk_full(&wrap(libc::EIO)));
        let boxed = crate::groups::OffsetsError::Save {
            path: "/x".into(),
            source: Box::new(wrap(libc::ENOSPC)),
        };
        assert!(is_disk_full(&boxed));
        let refused = crate::retry::RetryError::Store {
            op: "putting",
            target: "t".into(),
            source: Box::new(StoreError::DiskFull {
                free_bytes: 0,
                reserve_bytes: 0,
            }),
        };
        assert!(is_out_of_space(&refused));
        assert!(!is_disk_full(&refused));
        assert!(!is_out_of_space(&wrap(libc::EIO)));
    }

    #[test]
    fn a_failing_write_backs_off_and_retries_at_once_after_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let m = DiskMonitor::new(
            dir.path(),
            DiskReserve::Bytes(0),
            Arc::new(commitlog::storage::RealFs),
        );
        let mut w = WriteRetry::new("test write");
        assert!(w.due(&m));
        let err = std::io::Error::from_raw_os_error(libc::ENOSPC);
        w.failed(&err, 4096, &m);
        assert_eq!(w.failures(), 1);
        assert_eq!(m.state(), DiskState::Full);
        assert!(!w.due(&m), "retried before its back-off");
        m.poll();
        assert_eq!(m.state(), DiskState::Ok);
        assert!(w.due(&m), "not retried when space came back");
        w.succeeded();
        assert_eq!(w.failures(), 0);
        assert!(w.due(&m));
    }
}
