//! File descriptors and memory mappings as a budget: the process limits, what is in use,
//! how many connections fit, and a cheap periodic check that warns before either runs
//! out. Running out of fds stalls file operations for everyone (indexing, topic creation,
//! offsets), so connections may only use what the files leave over.

use std::io;

/// Descriptors kept out of reach of connections for the store's files, the listener,
/// logs and the blocking pool.
pub const SPARE_FDS: u64 = 128;
/// Share of a budget in use at which the broker warns, in percent.
pub const WARN_PERCENT: u64 = 80;
/// Share below which a warned budget is reported as back to normal, in percent; the gap
/// keeps a value hovering at the threshold from logging on every check.
pub const CLEAR_PERCENT: u64 = 70;

/// The soft and hard `RLIMIT_NOFILE` of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// What the process may open now.
    pub soft: u64,
    /// What the soft limit may be raised to without privileges.
    pub hard: u64,
}

/// Reads `RLIMIT_NOFILE`.
///
/// # Errors
/// The `getrlimit` error.
pub fn fd_limit() -> io::Result<FdLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes one `rlimit` through a valid, exclusive pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(FdLimit {
        soft: clamp_infinity(lim.rlim_cur),
        hard: clamp_infinity(lim.rlim_max),
    })
}

/// An "unlimited" rlimit is reported as `u64::MAX`; nothing here needs more than that.
fn clamp_infinity(v: libc::rlim_t) -> u64 {
    if v == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        v
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (as far as the kernel allows) and
/// returns the limits in force afterwards. The soft default of many systems (1024) is far
/// below what a broker with many queues and clients needs, and raising it needs no
/// privilege.
///
/// # Errors
/// `getrlimit` failing; a refused raise is not an error, the old limit stays.
pub fn raise_fd_limit() -> io::Result<FdLimit> {
    let before = fd_limit()?;
    if before.soft >= before.hard {
        return Ok(before);
    }
    // Linux refuses soft limits above `fs.nr_open` even when the hard limit is infinite.
    let target = match nr_open() {
        Some(max) => before.hard.min(max),
        None => before.hard,
    };
    let lim = libc::rlimit {
        rlim_cur: if target == u64::MAX {
            libc::RLIM_INFINITY
        } else {
            target
        },
        rlim_max: if before.hard == u64::MAX {
            libc::RLIM_INFINITY
        } else {
            before.hard
        },
    };
    // SAFETY: `setrlimit` reads one initialised `rlimit` through a valid pointer.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    if rc != 0 {
        tracing::warn!(
            error = %io::Error::last_os_error(),
            soft = before.soft,
            hard = before.hard,
            "cannot raise the open-file limit; keeping the soft limit"
        );
    }
    fd_limit()
}

fn nr_open() -> Option<u64> {
    read_number("/proc/sys/fs/nr_open")
}

/// `vm.max_map_count`: the most memory mappings one process may hold (Linux only).
pub fn max_map_count() -> Option<u64> {
    read_number("/proc/sys/vm/max_map_count")
}

fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Descriptors this process has open now, from `/proc/self/fd` (Linux only).
pub fn open_fds() -> Option<u64> {
    // The directory handle itself is one of the entries.
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(n.saturating_sub(1))
}

/// Memory mappings this process holds now, from `/proc/self/maps` (Linux only).
pub fn mappings() -> Option<u64> {
    let maps = std::fs::read("/proc/self/maps").ok()?;
    Some(maps.iter().filter(|&&b| b == b'\n').count() as u64)
}

/// The most connections served at once so that connections cannot take the descriptors
/// the files need: the fd limit less [`SPARE_FDS`] (less half the limit when it is tiny).
pub fn connection_budget(fd_soft_limit: u64) -> u64 {
    let spare = SPARE_FDS.min(fd_soft_limit / 2);
    fd_soft_limit.saturating_sub(spare).max(1)
}

/// Whether a budget's use is above the warning share; `warned` is the previous answer, so
/// that the state only flips back once use falls clearly below.
pub fn over_threshold(used: u64, limit: u64, warned: bool) -> bool {
    if limit == 0 || limit == u64::MAX {
        return false;
    }
    let percent = used.saturating_mul(100) / limit;
    if warned {
        percent >= CLEAR_PERCENT
    } else {
        percent >= WARN_PERCENT
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn connections_leave_spare_descriptors_for_files() {
        assert_eq!(connection_budget(1024), 896);
        assert_eq!(connection_budget(65_536), 65_408);
        // A tiny limit still leaves half for files and at least one connection.
        assert_eq!(connection_budget(100), 50);
        assert_eq!(connection_budget(1), 1);
    }

    #[test]
    fn warning_flips_at_eighty_percent_and_clears_below_seventy() {
        assert!(!over_threshold(79, 100, false));
        assert!(over_threshold(80, 100, false));
        assert!(over_threshold(75, 100, true));
        assert!(!over_threshold(69, 100, true));
        assert!(!over_threshold(5, u64::MAX, false));
    }

    #[test]
    fn the_process_counts_are_readable_on_linux() {
        let limit = fd_limit().unwrap();
        assert!(limit.soft <= limit.hard);
        if cfg!(target_os = "linux") {
            assert!(
                open_fds().unwrap() >= 3,
                "stdin, stdout and stderr at least"
            );
            assert!(mappings().unwrap() > 0);
        }
    }
}
