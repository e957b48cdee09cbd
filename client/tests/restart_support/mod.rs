//! A broker that can be stopped and started again on the same data dir and port: in this
//! process (graceful shutdown), or in a child process that the test SIGKILLs.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use broker::config::ByteSize;
use broker::{Broker, Config, RunningBroker};
use tempfile::TempDir;

/// The first retry's delay: long enough that a restart happens while it is pending.
pub const FIRST_RETRY_MS: u64 = 2_000;

const HOST_DIR_ENV: &str = "FERRO_TEST_HOST_DIR";
const HOST_LISTEN_ENV: &str = "FERRO_TEST_HOST_LISTEN";
const ADDR_LINE: &str = "FERRO_TEST_HOST_ADDR=";

/// The settings every restart test uses (fast sessions, offsets written often).
pub fn config(dir: &Path, listen: SocketAddr) -> Config {
    let mut c = Config::ephemeral(dir);
    c.listen = listen;
    // Small segments: test data dirs stay small on a crowded disk.
    c.segment_size = ByteSize(16 << 20);
    c.session_timeout_ms = 1_000;
    c.retry_delays_ms = vec![FIRST_RETRY_MS, 3_000];
    c.offsets_persist_interval_ms = 100;
    c
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// An in-process broker restarted on the same port, so clients reconnect by themselves.
pub struct Restartable {
    pub dir: TempDir,
    pub addr: String,
    broker: Option<RunningBroker>,
}

impl Restartable {
    pub async fn start() -> Self {
        let dir = TempDir::new().unwrap();
        let broker = Broker::start(config(dir.path(), any_port())).await.unwrap();
        Self {
            addr: broker.local_addr().to_string(),
            broker: Some(broker),
            dir,
        }
    }

    /// Graceful shutdown (offsets written, store closed), then a new broker on the same
    /// data dir and address.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Graceful shutdown; clients see the broker unreachable until `start_again`.
    pub async fn stop(&mut self) {
        self.broker.take().unwrap().shutdown().await.unwrap();
    }

    /// A new broker on the same data dir and address.
    pub async fn start_again(&mut self) {
        let listen = self.addr.parse().unwrap();
        self.broker = Some(
            Broker::start(config(self.dir.path(), listen))
                .await
                .unwrap(),
        );
    }

    pub async fn shutdown(mut self) {
        self.broker.take().unwrap().shutdown().await.unwrap();
    }
}

/// A broker in a child process (this test binary re-run as `host_test`), killed with
/// SIGKILL on `kill` or drop.
pub struct Hosted {
    child: Child,
    pub addr: String,
}

impl Hosted {
    /// Runs the test named `host_test` of the current test binary as the broker host.
    pub fn spawn(host_test: &str, dir: &Path, listen: Option<&str>) -> Self {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args([host_test, "--exact", "--ignored", "--nocapture"])
            .env(HOST_DIR_ENV, dir)
            .env(HOST_LISTEN_ENV, listen.unwrap_or("127.0.0.1:0"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines.next().expect("the host printed its address").unwrap();
            if let Some(a) = line.strip_prefix(ADDR_LINE) {
                break a.to_string();
            }
        };
        Self { child, addr }
    }

    /// SIGKILL: no shutdown work at all, as in a crash.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Hosted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of the host test: does nothing unless started by [`Hosted::spawn`]; then
/// serves until killed.
pub fn host_main() {
    host_main_with(|_| {});
}

/// [`host_main`] with settings changed by `tweak` over [`config`].
pub fn host_main_with(tweak: impl FnOnce(&mut Config)) {
    let Ok(dir) = std::env::var(HOST_DIR_ENV) else {
        return;
    };
    let listen: SocketAddr = std::env::var(HOST_LISTEN_ENV).unwrap().parse().unwrap();
    let mut c = config(Path::new(&dir), listen);
    tweak(&mut c);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let broker = Broker::start(c).await.unwrap();
        println!("{ADDR_LINE}{}", broker.local_addr());
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
}
