//! Replication between broker processes: a master and a replica in child processes (this
//! test binary re-run as a host), SIGKILLed and promoted.
//!
//! `cargo test -p client --test replication`; `FERRO_CLUSTER_CYCLES=N` runs the kill and
//! promote cycle N times (1 by default).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod restart_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use client::admin::Admin;
use client::protocol::Status;
use client::{Message, Producer, ProducerOptions};
use tempfile::TempDir;
use tokio::time::Instant;

const SECRET: &str = "replication-test-secret-0123";
const PATIENCE: Duration = Duration::from_secs(20);
const ENV_DIR: &str = "FERRO_REPL_HOST_DIR";
const ENV_ARGS: &str = "FERRO_REPL_HOST_ARGS";
const ADDR_LINE: &str = "FERRO_REPL_HOST_ADDR=";

/// A free loopback port (bound and released: the broker binds it right after).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Where one broker of the group lives; kept across restarts of its process.
struct Node {
    dir: TempDir,
    listen: SocketAddr,
    ha: SocketAddr,
}

impl Node {
    fn new() -> Node {
        Node {
            dir: TempDir::new().unwrap(),
            listen: free_port(),
            ha: free_port(),
        }
    }
    fn addr(&self) -> String {
        self.listen.to_string()
    }
    fn master(&self) -> Host {
        Host::spawn(
            self,
            &format!("master|{}|{}|-|{SECRET}", self.listen, self.ha),
        )
    }
    fn replica_of(&self, master: &Node, secret: &str) -> Host {
        Host::spawn(
            self,
            &format!("replica|{}|{}|{}|{secret}", self.listen, self.ha, master.ha),
        )
    }
}

/// A broker process, SIGKILLed on `kill` or drop.
struct Host {
    child: Child,
}

impl Host {
    fn spawn(node: &Node, args: &str) -> Host {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args(["repl_host", "--exact", "--ignored", "--nocapture"])
            .env(ENV_DIR, node.dir.path())
            .env(ENV_ARGS, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let line = lines.next().expect("the host printed its address").unwrap();
            if line.starts_with(ADDR_LINE) {
                break;
            }
        }
        Host { child }
    }
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of a broker process: serves until killed. Does nothing in a normal run.
#[test]
#[ignore = "the broker host of the replication tests"]
fn repl_host() {
    let (Ok(dir), Ok(args)) = (std::env::var(ENV_DIR), std::env::var(ENV_ARGS)) else {
        return;
    };
    let f: Vec<&str> = args.split('|').collect();
    let mut c = restart_support::config(Path::new(&dir), f[1].parse().unwrap());
    c.role = Some(f[0].parse().unwrap());
    c.ha_listen = Some(f[2].parse().unwrap());
    c.master = (f[3] != "-").then(|| f[3].to_owned());
    c.cluster_secret = Some(f[4].to_owned());
    c.max_replica_lag_ms = 3_000;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let broker = broker::Broker::start(c).await.unwrap();
        println!("{ADDR_LINE}{}", broker.local_addr());
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
}

async fn status(addr: &str) -> Option<client::protocol::cluster::ClusterStatusResponse> {
    let admin = Admin::connect(addr).await.ok()?;
    admin.cluster_status().await.ok()
}

/// Polls until the broker at `addr` is a master whose sync set has two members.
async fn wait_in_sync(addr: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s = status(addr).await;
        if let Some(s) = &s {
            if s.role == "master" && s.sync_set_size >= 2 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{addr} never had a replica in sync: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn mq(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mq"))
        .args(args)
        .output()
        .unwrap()
}

fn cycles() -> usize {
    std::env::var("FERRO_CLUSTER_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Every acknowledged message is on the new master after a SIGKILL of the old one in the
/// middle of sends and a promotion, at its acknowledged (queue, offset), with its body;
/// the old master rejoins as a replica (cutting what it never had confirmed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_sends_survive_a_master_sigkill_and_promotion() {
    let nodes = [Node::new(), Node::new()];
    let mut master_ix = 0;
    let mut hosts = [
        Some(nodes[0].master()),
        Some(nodes[1].replica_of(&nodes[0], SECRET)),
    ];
    let mut acked: BTreeMap<String, (u32, u64, String)> = BTreeMap::new();
    let mut next = 0u64;
    for cycle in 0..cycles() {
        let m_addr = nodes[master_ix].addr();
        wait_in_sync(&m_addr).await;
        let start = status(&m_addr).await.unwrap().confirm_offset;
        let producer = Producer::connect(&m_addr, ProducerOptions::default())
            .await
            .unwrap();
        // Sends in flight while the master dies: acks before the kill must survive.
        let sender = tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let body = format!("c{cycle}-m{next}");
                next += 1;
                match producer.send("orders", &Message::new(body.clone())).await {
                    Ok(r) => got.push((r.msg_id, r.queue_id, r.queue_offset, body)),
                    Err(_) => return (got, next),
                }
            }
        });
        // Let some sends be acknowledged, then crash the master mid-stream.
        let deadline = Instant::now() + PATIENCE;
        loop {
            let s = status(&m_addr).await.unwrap();
            if s.confirm_offset > start + 20_000 {
                break;
            }
            assert!(Instant::now() < deadline, "sends never got confirmed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        hosts[master_ix].take().unwrap().kill();
        let (got, n) = sender.await.unwrap();
        next = n;
        assert!(!got.is_empty());
        for (id, q, o, body) in got {
            acked.insert(id, (q, o, body));
        }
        // Promote the replica with the command line, then the old master rejoins it.
        let new_ix = 1 - master_ix;
        let out = mq(&["cluster", "promote", &nodes[new_ix].addr()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let old = master_ix;
        master_ix = new_ix;
        hosts[old] = Some(nodes[old].replica_of(&nodes[master_ix], SECRET));
        wait_in_sync(&nodes[master_ix].addr()).await;
        let admin = Admin::connect(&nodes[master_ix].addr()).await.unwrap();
        for (id, (q, o, body)) in &acked {
            let m = admin
                .get_message(id)
                .await
                .unwrap_or_else(|e| panic!("acked {id} lost: {e}"));
            assert_eq!((m.queue_id(), m.queue_offset()), (*q, *o), "{id}");
            assert_eq!(m.body(), body.as_bytes(), "{id}");
        }
    }
    drop(hosts);
}

/// A replica refuses writes and names its master; once the master is gone with no
/// replica in sync, a promoted broker refuses sends clearly: too few brokers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_refuses_writes_and_below_the_minimum_sends_fail_clearly() {
    let (m, r) = (Node::new(), Node::new());
    let master = m.master();
    // Alone, the master refuses sends before storing anything.
    let p = Producer::connect(&m.addr(), ProducerOptions::default())
        .await
        .unwrap();
    let e = p.send("orders", &Message::new("alone")).await.unwrap_err();
    assert_eq!(e.status(), Some(Status::NotEnoughReplicas), "{e}");
    assert_eq!(
        status(&m.addr()).await.unwrap().write_offset,
        0,
        "nothing stored"
    );
    let replica = r.replica_of(&m, SECRET);
    wait_in_sync(&m.addr()).await;
    p.send("orders", &Message::new("stored twice"))
        .await
        .unwrap();
    let rp = Producer::connect(&r.addr(), ProducerOptions::default())
        .await
        .unwrap();
    let e = rp
        .send("orders", &Message::new("to a replica"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(Status::NotMaster), "{e}");
    assert!(e.to_string().contains(&m.addr()), "names the master: {e}");
    // The status command shows both roles.
    let out = mq(&["cluster", "status", &m.addr(), &r.addr()]);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["role"], "master");
    assert_eq!(lines[1]["role"], "replica");
    assert_eq!(lines[1]["master"], m.addr());
    master.kill();
    let out = mq(&["cluster", "promote", &r.addr()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rp = Producer::connect(&r.addr(), ProducerOptions::default())
        .await
        .unwrap();
    let e = rp
        .send("orders", &Message::new("no copy"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(Status::NotEnoughReplicas), "{e}");
    drop(replica);
}

fn frame(kind: u8, body_len: usize) -> Vec<u8> {
    let mut f = vec![0u8; 8 + body_len];
    let len = u32::try_from(f.len() - 4).unwrap();
    f[0..4].copy_from_slice(&len.to_le_bytes());
    f[4..6].copy_from_slice(&0x4846u16.to_le_bytes());
    f[6] = 1;
    f[7] = kind;
    f
}

fn read_raw(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut rest = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut rest)?;
    Ok([&len[..], &rest].concat())
}

/// A fake replica that does not know the secret gets "bad credentials" and no data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fake_replica_with_bad_credentials_cannot_connect() {
    let m = Node::new();
    let _master = m.master();
    let mut s = TcpStream::connect(m.ha).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut hello = frame(1, 80);
    hello[12..16].copy_from_slice(&(16u32 << 20).to_le_bytes());
    hello[16..24].copy_from_slice(&77u64.to_le_bytes());
    s.write_all(&hello).unwrap();
    let challenge = read_raw(&mut s).unwrap();
    assert_eq!(challenge[7], 2, "a Challenge");
    let mut proof = frame(3, 40);
    proof[16..48].copy_from_slice(&[0xA5; 32]);
    s.write_all(&proof).unwrap();
    let verdict = read_raw(&mut s).unwrap();
    assert_eq!(
        (verdict[7], u16::from_le_bytes([verdict[8], verdict[9]])),
        (4, 1),
        "Verdict: bad credentials"
    );
    // Then the master hangs up: no data frame ever follows.
    assert!(read_raw(&mut s).is_err());
    assert!(status(&m.addr()).await.unwrap().replicas.is_empty());
}
