//! The master's side of the HA stream: the listener, the handshake, and per replica a
//! sender thread (raw chunks straight from the mapped segments) and a receiver thread
//! (cumulative acks, which move confirm and answer waiting sends).

use std::io::{self, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use commitlog::PhysicalOffset;

use super::auth;
use super::frame::{self, read_frame, write_data, Frame, Kind, FLAG_SEAL};
use super::sync_set::Link;
use super::{lock, AckMode, Replication};

/// Most record bytes in one Data frame (one larger record still goes alone).
const MAX_CHUNK: usize = 1 << 20;
/// Unacknowledged bytes in flight per replica.
const WINDOW: u64 = 8 << 20;

/// Verdict codes.
pub(crate) const VERDICT_OK: u16 = 0;
pub(crate) const VERDICT_BAD_CREDENTIALS: u16 = 1;
pub(crate) const VERDICT_TOO_FAR_BEHIND: u16 = 4;
pub(crate) const VERDICT_INCOMPATIBLE: u16 = 5;

/// Binds the HA address and starts the accept loop and the lag checker.
pub(crate) fn spawn(r: Arc<Replication>, addr: SocketAddr) -> io::Result<Vec<JoinHandle<()>>> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    tracing::info!(addr = %listener.local_addr()?, "HA listener up");
    let accept = {
        let r = Arc::clone(&r);
        std::thread::Builder::new()
            .name("ferromq-ha-accept".into())
            .spawn(move || accept_loop(&r, &listener))?
    };
    let ticker = {
        let r = Arc::clone(&r);
        std::thread::Builder::new()
            .name("ferromq-ha-lag".into())
            .spawn(move || {
                while !r.stop.load(Ordering::Acquire) {
                    std::thread::sleep(r.settings.heartbeat());
                    r.sync.tick(r.settings.max_lag);
                }
            })?
    };
    Ok(vec![accept, ticker])
}

fn accept_loop(r: &Arc<Replication>, listener: &TcpListener) {
    while !r.stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let r2 = Arc::clone(r);
                let spawned = std::thread::Builder::new()
                    .name("ferromq-ha-link".into())
                    .spawn(move || {
                        if let Err(e) = serve(&r2, stream, peer) {
                            tracing::warn!(%peer, error = %e, "replica link ended");
                        }
                    });
                match spawned {
                    Ok(t) => lock(&r.threads).push(t),
                    Err(e) => tracing::error!(error = %e, "cannot start a replica link thread"),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                tracing::warn!(error = %e, "HA accept failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn verdict(
    stream: &mut TcpStream,
    code: u16,
    epoch: u64,
    from: u64,
    reason: &str,
) -> io::Result<()> {
    let mut v = Frame::new(Kind::Verdict, 20);
    v.put_u16(8, code);
    v.put_u64(12, epoch);
    v.put_u64(20, from);
    v.extend(reason.as_bytes());
    v.write_to(stream)
}

/// Handshake, then streams to the replica until the link breaks or the broker stops.
fn serve(r: &Arc<Replication>, mut stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let hello = read_frame(&mut stream)?;
    if hello.kind != Kind::Hello {
        return Err(frame::bad("expected Hello"));
    }
    let log = r.store.commit_log();
    let epochs = log.epochs();
    let epoch = epochs.last().map_or(0, |e| e.epoch);
    let segment_size = u32::try_from(log.segment_size_bytes()).unwrap_or(u32::MAX);
    let ack_mode = hello.slice(8, 1)?[0];
    let replica_id = hello.u64_at(16)?;
    let mut ch = Frame::new(Kind::Challenge, 80 + 24 * epochs.len());
    ch.put_u64(8, r.broker_id);
    ch.bytes[16..48].copy_from_slice(&auth::nonce()?);
    ch.put_u64(48, epoch);
    ch.put_u64(56, log.write_offset().get());
    ch.put_u64(64, log.min_offset().get());
    ch.put_u64(72, log.confirm_offset().get());
    ch.put_u32(80, segment_size);
    ch.put_u32(84, u32::try_from(epochs.len()).unwrap_or(u32::MAX));
    for (i, e) in epochs.iter().enumerate() {
        let at = 88 + 24 * i;
        ch.put_u64(at, e.epoch);
        ch.put_u64(at + 8, e.start_offset);
        ch.put_u64(at + 16, e.master_id);
    }
    let addr = r.settings.client_addr.as_bytes();
    ch.extend(&u16::try_from(addr.len()).unwrap_or(0).to_le_bytes());
    ch.extend(&addr[..addr.len().min(u16::MAX as usize)]);
    // The MAC covers the frame as sent, its length field included.
    ch.extend(&[0u8; auth::NONCE_LEN]);
    let n = ch.bytes.len() - auth::NONCE_LEN;
    let mac_s = auth::mac_master(&r.settings.secret, &hello.bytes, &ch.bytes[..n]);
    ch.bytes[n..].copy_from_slice(&mac_s);
    ch.write_to(&mut stream)?;
    let proof = read_frame(&mut stream)?;
    if proof.kind != Kind::Proof {
        return Err(frame::bad("expected Proof"));
    }
    let proof_head = proof.slice(0, 16)?;
    if !auth::verify(
        &r.settings.secret,
        &[&hello.bytes, &ch.bytes, proof_head],
        false,
        proof.slice(16, 32)?,
    ) {
        tracing::warn!(%peer, "replica refused: bad credentials");
        verdict(
            &mut stream,
            VERDICT_BAD_CREDENTIALS,
            epoch,
            0,
            "bad credentials",
        )?;
        return Ok(());
    }
    if hello.u32_at(12)? != segment_size {
        verdict(
            &mut stream,
            VERDICT_INCOMPATIBLE,
            epoch,
            0,
            "segment sizes differ",
        )?;
        return Ok(());
    }
    let from = proof.u64_at(8)?;
    if from == u64::MAX {
        tracing::warn!(%peer, "replica refused this master (its epoch is newer or conflicts)");
        return Ok(());
    }
    if from > log.write_offset().get() || from < log.min_offset().get() {
        verdict(
            &mut stream,
            VERDICT_TOO_FAR_BEHIND,
            epoch,
            0,
            "its log cannot continue from this master's",
        )?;
        return Ok(());
    }
    verdict(&mut stream, VERDICT_OK, epoch, from, "")?;
    let link = Arc::new(Link::new(
        replica_id,
        peer.to_string(),
        from,
        stream.try_clone()?,
    ));
    r.sync.add(Arc::clone(&link));
    tracing::info!(%peer, replica = replica_id, from, "replica connected");
    let durable = ack_mode == 1;
    let receiver = {
        let (r, link) = (Arc::clone(r), Arc::clone(&link));
        let reader = stream.try_clone()?;
        std::thread::Builder::new()
            .name("ferromq-ha-acks".into())
            .spawn(move || receive_acks(&r, &link, reader, durable))?
    };
    let result = send_loop(r, &link, stream, from);
    r.sync.remove(&link);
    let _ = receiver.join();
    result
}

fn receive_acks(r: &Arc<Replication>, link: &Arc<Link>, stream: TcpStream, durable: bool) {
    let silence = (r.settings.heartbeat() * 3).max(Duration::from_secs(2));
    if stream.set_read_timeout(Some(silence)).is_err() {
        r.sync.remove(link);
        return;
    }
    let mut reader = BufReader::new(stream);
    let counted = if durable {
        AckMode::Durable
    } else {
        r.settings.ack
    };
    loop {
        match read_frame(&mut reader) {
            Ok(f) if f.kind == Kind::Ack => {
                let at = if counted == AckMode::Durable { 16 } else { 8 };
                match f.u64_at(at) {
                    Ok(acked) => r.sync.on_ack(link, acked, &r.store, r.settings.max_lag),
                    Err(_) => break,
                }
            }
            Ok(_) | Err(_) => break,
        }
        if link.closed.load(Ordering::Acquire) {
            break;
        }
    }
    r.sync.remove(link);
}

fn send_loop(
    r: &Arc<Replication>,
    link: &Link,
    mut stream: TcpStream,
    from: u64,
) -> io::Result<()> {
    let log = r.store.commit_log();
    let seg = log.segment_size_bytes();
    let beat = r.settings.heartbeat();
    let mut sent = from;
    let mut last_confirm = u64::MAX;
    let mut last_frame = std::time::Instant::now();
    while !r.stop.load(Ordering::Acquire) && !link.closed.load(Ordering::Acquire) && r.is_master() {
        let write = log.write_offset().get();
        if sent < write && sent.saturating_sub(link.acked.load(Ordering::Acquire)) < WINDOW {
            let epochs = log.epochs();
            let Some(i) = epochs.iter().rposition(|e| e.start_offset <= sent) else {
                return Err(frame::bad("no epoch covers the stream position"));
            };
            let e = epochs[i];
            let until = epochs.get(i + 1).map_or(u64::MAX, |n| n.start_offset);
            let chunk = log
                .raw_chunk(
                    PhysicalOffset::new(sent),
                    PhysicalOffset::new(until),
                    MAX_CHUNK,
                )
                .map_err(io::Error::other)?;
            if chunk.bytes().is_empty() && !chunk.seal() {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let confirm = log.confirm_offset().get();
            let flags = if chunk.seal() { FLAG_SEAL } else { 0 };
            write_data(
                &mut stream,
                [sent, e.epoch, e.start_offset, confirm],
                flags,
                chunk.bytes(),
            )?;
            link.sent(write);
            last_confirm = confirm;
            last_frame = std::time::Instant::now();
            sent = chunk.end(seg).get();
            continue;
        }
        if sent < write {
            // Window full: wait for acks.
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        log.wait_visible(
            PhysicalOffset::new(sent),
            beat.min(Duration::from_millis(20)),
        );
        let confirm = log.confirm_offset().get();
        // Idle: a heartbeat (the replica acks it), or at once when confirm moved, so the
        // replica indexes what is confirmed without waiting for more data.
        if log.write_offset().get() <= sent
            && (confirm != last_confirm || last_frame.elapsed() >= beat)
        {
            state(&mut stream, r, confirm)?;
            link.sent(sent);
            last_confirm = confirm;
            last_frame = std::time::Instant::now();
        }
    }
    Ok(())
}

/// The heartbeat: the master's epoch, write offset and confirm.
fn state(stream: &mut TcpStream, r: &Replication, confirm: u64) -> io::Result<()> {
    let log = r.store.commit_log();
    let mut f = Frame::new(Kind::State, 24);
    f.put_u64(8, log.epochs().last().map_or(0, |e| e.epoch));
    f.put_u64(16, log.write_offset().get());
    f.put_u64(24, confirm);
    f.write_to(stream)
}
