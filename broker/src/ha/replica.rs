//! The replica's side of the HA stream: one thread that connects to the master,
//! authenticates, cuts its log at the divergence point, then appends the master's raw
//! records at their own offsets and acks them cumulatively. Reconnects with back-off.

use std::io::{self, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use commitlog::{consistent_point, EpochEntry, PhysicalOffset};

use super::auth;
use super::frame::{self, read_frame, Frame, Kind, DATA_HEADER_LEN, FLAG_SEAL};
use super::{lock, AckMode, Replication};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub(crate) fn spawn(r: Arc<Replication>) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ferromq-replica".into())
        .spawn(move || follow(&r))
}

fn stopped(r: &Replication) -> bool {
    r.replica_stop.load(Ordering::Acquire) || r.stop.load(Ordering::Acquire)
}

fn follow(r: &Arc<Replication>) {
    let mut backoff = BACKOFF_MIN;
    let Some(master) = r.settings.master.clone() else {
        return;
    };
    while !stopped(r) {
        match session(r, &master) {
            Ok(()) => backoff = BACKOFF_MIN,
            Err(e) => {
                if !stopped(r) {
                    tracing::warn!(%master, error = %e, "replication from the master interrupted; reconnecting");
                }
            }
        }
        r.streaming.store(false, Ordering::Release);
        // Jitter from the clock's low bits keeps reconnecting replicas apart.
        let jitter = Duration::from_millis(u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_millis())
                % 50,
        ));
        let mut slept = Duration::ZERO;
        while slept < backoff + jitter && !stopped(r) {
            std::thread::sleep(Duration::from_millis(20));
            slept += Duration::from_millis(20);
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn connect(master: &str) -> io::Result<TcpStream> {
    let addr = master.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "master address resolves to nothing",
        )
    })?;
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// The master's answer to our Hello, authenticated.
struct Challenge {
    master_id: u64,
    write_offset: u64,
    min_offset: u64,
    entries: Vec<EpochEntry>,
    client_addr: String,
}

fn parse_challenge(f: &Frame) -> io::Result<Challenge> {
    let k = f.u32_at(84)? as usize;
    if k > (frame::MAX_LEN / 24) {
        return Err(frame::bad("too many epoch entries"));
    }
    let mut entries = Vec::with_capacity(k);
    for i in 0..k {
        let at = 88 + 24 * i;
        entries.push(EpochEntry {
            epoch: f.u64_at(at)?,
            start_offset: f.u64_at(at + 8)?,
            master_id: f.u64_at(at + 16)?,
        });
    }
    let at = 88 + 24 * k;
    let n = usize::from(f.u16_at(at)?);
    let client_addr = String::from_utf8_lossy(f.slice(at + 2, n)?).into_owned();
    Ok(Challenge {
        master_id: f.u64_at(8)?,
        write_offset: f.u64_at(56)?,
        min_offset: f.u64_at(64)?,
        entries,
        client_addr,
    })
}

fn session(r: &Arc<Replication>, master: &str) -> io::Result<()> {
    let mut stream = connect(master)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let log = r.store.commit_log();
    let own = log.epochs();
    let last = own.last().copied();
    let mut hello = Frame::new(Kind::Hello, 80);
    hello.bytes[8] = u8::from(r.settings.ack == AckMode::Durable);
    hello.put_u32(
        12,
        u32::try_from(log.segment_size_bytes()).unwrap_or(u32::MAX),
    );
    hello.put_u64(16, r.broker_id);
    hello.bytes[24..56].copy_from_slice(&auth::nonce()?);
    hello.put_u64(56, last.map_or(0, |e| e.epoch));
    hello.put_u64(64, last.map_or(0, |e| e.master_id));
    hello.put_u64(72, log.write_offset().get());
    hello.put_u64(80, log.min_offset().get());
    hello.write_to(&mut stream)?;
    let ch = read_frame(&mut stream)?;
    if ch.kind != Kind::Challenge || ch.bytes.len() < 32 {
        return Err(frame::bad("expected Challenge"));
    }
    let (head, mac_s) = ch.bytes.split_at(ch.bytes.len() - 32);
    // Nothing is truncated before the master proved it knows the secret.
    if !auth::verify(&r.settings.secret, &[&hello.bytes, head], true, mac_s) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the master failed authentication (wrong --cluster-secret?)",
        ));
    }
    let c = parse_challenge(&ch)?;
    {
        let mut f = lock(&r.following);
        f.master_client = Some(c.client_addr.clone());
        f.master_epoch = c.entries.last().map_or(0, |e| e.epoch);
    }
    let end = log.write_offset().get();
    let point = consistent_point(&own, end, &c.entries, c.write_offset);
    let start = match point {
        Some(t) if t >= c.min_offset || (t == end && end == c.min_offset) => t,
        Some(t) => {
            proof(&mut stream, r, &hello, &ch, u64::MAX)?;
            return Err(io::Error::other(format!("divergence point {t} lies below the master's oldest data {}; this replica needs a fresh data directory", c.min_offset)));
        }
        None => {
            proof(&mut stream, r, &hello, &ch, u64::MAX)?;
            return Err(io::Error::other(
                "no epoch in common with the master (conflicting histories); refusing it",
            ));
        }
    };
    if start < end {
        tracing::warn!(from = start, to = end, "cutting the log's divergent tail");
        r.store
            .truncate_to(PhysicalOffset::new(start))
            .map_err(io::Error::other)?;
    }
    proof(&mut stream, r, &hello, &ch, start)?;
    let v = read_frame(&mut stream)?;
    if v.kind != Kind::Verdict {
        return Err(frame::bad("expected Verdict"));
    }
    let code = v.u16_at(8)?;
    if code != super::master::VERDICT_OK {
        let reason =
            String::from_utf8_lossy(v.slice(28, v.bytes.len().saturating_sub(28))?).into_owned();
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("the master refused: code {code}: {reason}"),
        ));
    }
    tracing::info!(%master, from = start, "replicating from the master");
    r.streaming.store(true, Ordering::Release);
    stream_records(r, stream, &c)
}

fn proof(
    stream: &mut TcpStream,
    r: &Replication,
    hello: &Frame,
    ch: &Frame,
    start: u64,
) -> io::Result<()> {
    let mut p = Frame::new(Kind::Proof, 40);
    p.put_u64(8, start);
    let mac = auth::mac_replica(&r.settings.secret, &hello.bytes, &ch.bytes, &p.bytes[..16]);
    p.bytes[16..48].copy_from_slice(&mac);
    p.write_to(stream)
}

fn stream_records(r: &Arc<Replication>, stream: TcpStream, c: &Challenge) -> io::Result<()> {
    let silence = (r.settings.heartbeat() * 3).max(Duration::from_secs(2));
    stream.set_read_timeout(Some(silence))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    let log = r.store.commit_log();
    let durable = r.settings.ack == AckMode::Durable;
    while !stopped(r) {
        let f = read_frame(&mut reader)?;
        let (epoch, confirm) = match f.kind {
            Kind::Data => {
                let at = PhysicalOffset::new(f.u64_at(8)?);
                let epoch = f.u64_at(16)?;
                let epoch_start = f.u64_at(24)?;
                let flags = f.u16_at(40)?;
                if at != log.write_offset() {
                    return Err(frame::bad(format!(
                        "data at {at}, but this log ends at {}",
                        log.write_offset()
                    )));
                }
                let known = log
                    .epochs()
                    .last()
                    .is_some_and(|e| e.epoch == epoch && e.start_offset == epoch_start);
                if !known {
                    if epoch_start != at.get() {
                        return Err(frame::bad(
                            "an epoch's first data does not start at its start",
                        ));
                    }
                    let master_id = c
                        .entries
                        .iter()
                        .find(|e| e.epoch == epoch)
                        .map_or(c.master_id, |e| e.master_id);
                    // Durable before the first byte of the epoch.
                    r.store
                        .begin_epoch(epoch, master_id)
                        .map_err(io::Error::other)?;
                }
                let body = &f.bytes[DATA_HEADER_LEN..];
                let mut end = at;
                if !body.is_empty() {
                    end = r.store.replicate(at, body).map_err(io::Error::other)?;
                }
                if flags & FLAG_SEAL != 0 {
                    r.store.seal_segment(end).map_err(io::Error::other)?;
                }
                (epoch, f.u64_at(32)?)
            }
            Kind::State => (f.u64_at(8)?, f.u64_at(24)?),
            other => return Err(frame::bad(format!("unexpected {other:?} frame"))),
        };
        if durable {
            log.flush().map_err(io::Error::other)?;
        }
        let write = log.write_offset();
        r.store
            .advance_confirm(PhysicalOffset::new(confirm.min(write.get())));
        let mut ack = Frame::new(Kind::Ack, 24);
        ack.put_u64(8, write.get());
        ack.put_u64(16, log.flushed_offset().get());
        ack.put_u64(24, epoch);
        writer.write_all(&ack.bytes)?;
    }
    Ok(())
}
