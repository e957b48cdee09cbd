//! The real `broker` binary as a child process: free port, temp data dir, SIGKILL.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running broker process; killed (SIGKILL) when dropped.
pub struct BrokerProcess {
    child: Child,
    pub addr: String,
    pub log_path: PathBuf,
}

/// A port that was free a moment ago (bind to 0, read it, release it).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// No disk reserve unless the test sets one: tests must not depend on the host's free
/// space.
fn default_reserve(args: &[&str]) -> &'static [&'static str] {
    if args.contains(&"--disk-reserve") {
        &[]
    } else {
        &["--disk-reserve", "0"]
    }
}

/// `--grpc-listen 127.0.0.1:0` unless `args` set it: parallel tests never contend for the
/// gRPC endpoint's default port 8081.
fn default_grpc(args: &[&str]) -> &'static [&'static str] {
    if args.contains(&"--grpc-listen") {
        &[]
    } else {
        &["--grpc-listen", "127.0.0.1:0"]
    }
}

impl BrokerProcess {
    /// Starts `broker --data-dir <data> --listen 127.0.0.1:<free port> <args>` (with
    /// `--disk-reserve 0` unless `args` set one) and waits until it accepts connections. Its output goes to `<log_dir>/broker-<n>.log`.
    pub fn start(data: &Path, log_dir: &Path, args: &[&str]) -> Self {
        Self::start_with(data, log_dir, args, |_| {})
    }

    /// As [`BrokerProcess::start`], with the open-file limit of the broker process set to
    /// `soft` and `hard` before it runs (as `ulimit -Sn soft -Hn hard` would).
    pub fn start_with_fd_limit(
        data: &Path,
        log_dir: &Path,
        args: &[&str],
        soft: u64,
        hard: u64,
    ) -> Self {
        Self::start_with(data, log_dir, args, |cmd| {
            use std::os::unix::process::CommandExt;
            // SAFETY: only `setrlimit`, async-signal-safe, runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        })
    }

    fn start_with(
        data: &Path,
        log_dir: &Path,
        args: &[&str],
        tweak: impl Fn(&mut Command),
    ) -> Self {
        std::fs::create_dir_all(log_dir).unwrap();
        // A port taken between our probe and the broker's bind: try another one.
        for attempt in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let n = std::fs::read_dir(log_dir).map(Iterator::count).unwrap_or(0);
            let log_path = log_dir.join(format!("broker-{n}.log"));
            let log = File::create(&log_path).unwrap();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_broker"));
            cmd.arg("--listen")
                .arg(&addr)
                .arg("--data-dir")
                .arg(data)
                .args(args)
                .args(default_reserve(args))
                .args(default_grpc(args))
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            tweak(&mut cmd);
            let child = cmd.spawn().unwrap();
            let mut b = BrokerProcess {
                child,
                addr,
                log_path,
            };
            if b.wait_ready(Duration::from_secs(30)) {
                return b;
            }
            b.kill();
            let log = b.log();
            // Only a port taken between our probe and the broker's bind is worth a retry.
            assert!(log.contains("in use"), "broker did not come up:\n{log}");
            eprintln!("broker did not come up (attempt {attempt}): {log}");
        }
        panic!("broker never came up");
    }

    fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            // The port may be bound before start-up finished; the banner comes after it.
            if self.log().contains("listening on") && TcpStream::connect(&self.addr).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// SIGKILL, as a crash or the OOM killer would; reaps the process.
    pub fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: plain syscall on the PID of our own, not yet reaped, child.
            unsafe {
                libc::kill(self.pid(), libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }

    /// SIGTERM (graceful shutdown), then waits up to `within` before SIGKILL.
    pub fn terminate(&mut self, within: Duration) {
        // SAFETY: as in `kill`.
        unsafe {
            libc::kill(self.pid(), libc::SIGTERM);
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// SIGTERM, then waits up to `within` for the broker to exit by itself: its exit
    /// status, or `None` if it was still running (it is then killed).
    pub fn terminate_and_wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: as in `kill`.
        unsafe {
            libc::kill(self.pid(), libc::SIGTERM);
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// CPU time (user + system) the process has used so far, from /proc.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after `)`.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf only reads a configuration value.
        let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap();
        Duration::from_millis(ticks * 1000 / hz)
    }

    /// Soft and hard "Max open files" of the process, from /proc.
    pub fn fd_limits(&self) -> (u64, u64) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid())).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        let nums: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        (nums[0], nums[1])
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The signal that ended the process (e.g. `libc::SIGBUS`), if one did.
    pub fn exit_signal(&mut self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        self.child
            .try_wait()
            .ok()
            .flatten()
            .and_then(|s| s.signal())
    }

    /// Resident memory (VmRSS) in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// Everything the broker printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
