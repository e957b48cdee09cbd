//! The one task per connection that writes responses. Request tasks send finished
//! responses through a bounded channel, in whatever order they complete. Small frames
//! are coalesced into one buffer; record bodies go out with vectored writes straight
//! from the mapped segments.

use std::io::{self, IoSlice};

use bytes::BytesMut;
use protocol::{Frame, FrameKind};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::budget::HeldBytes;
use super::response::{Body, Response};
use crate::stats::Stats;

/// A response addressed to the request it answers.
pub(crate) struct Outgoing {
    pub(crate) request_id: u64,
    pub(crate) response: Response,
    /// The response's bytes in its connection's budget, released once written (or
    /// dropped unwritten).
    pub(crate) _held: HeldBytes,
    /// `Some(code)`: not an answer but a request of the broker to the client (a
    /// transaction check-back), framed as a request of that code.
    pub(crate) push: Option<u16>,
}

/// Buffered bytes are written once they exceed this, even if more responses wait.
const FLUSH_THRESHOLD: usize = 256 * 1024;
/// Slices passed to one `writev`, well under every platform's IOV_MAX.
const MAX_SLICES: usize = 64;
/// Record bodies up to this size are copied into the coalescing buffer, so responses
/// that complete together leave in one write; larger ones go out with a vectored write
/// straight from the mapped segments. A receive of 32 small messages is a few KiB: a
/// copy costs less than the `writev` (and the loopback delivery it runs) on its own.
const COPY_BODY_MAX: usize = 16 * 1024;

/// Writes responses until every sender is gone, then shuts the socket's write side.
///
/// # Errors
/// The socket's write error; the caller closes the connection.
pub(crate) async fn run<W: AsyncWrite + Unpin>(
    mut socket: W,
    mut rx: mpsc::Receiver<Outgoing>,
    stats: &Stats,
) -> io::Result<()> {
    let mut out = BytesMut::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            write_one(&mut socket, &mut out, msg, stats).await?;
            if out.len() >= FLUSH_THRESHOLD {
                socket.write_all(&out).await?;
                out.clear();
            }
            next = rx.try_recv().ok();
        }
        if !out.is_empty() {
            socket.write_all(&out).await?;
            out.clear();
        }
        // A TLS stream may hold the last record until flushed (a no-op on plain TCP).
        socket.flush().await?;
    }
    socket.shutdown().await
}

async fn write_one<W: AsyncWrite + Unpin>(
    socket: &mut W,
    out: &mut BytesMut,
    msg: Outgoing,
    stats: &Stats,
) -> io::Result<()> {
    let Outgoing {
        request_id,
        response,
        _held,
        push,
    } = msg;
    let body_len = response.body.len();
    let (kind, code) = match push {
        Some(code) => (FrameKind::Request, code),
        None => (FrameKind::Response, u16::from(response.status)),
    };
    let head = Frame::encode_head(out, kind, code, request_id, &response.header, body_len);
    if let Err(e) = head {
        // Only a body over 4 GiB could get here; the request handlers cap pulls far
        // below that, so this is a bug worth a loud log rather than a dead connection.
        tracing::error!(request_id, error = %e, "response does not fit a frame");
        let fallback = Response::error(protocol::Status::Internal, "response too large");
        Frame::encode_head(
            out,
            FrameKind::Response,
            u16::from(fallback.status),
            request_id,
            &fallback.header,
            0,
        )
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        return Ok(());
    }
    stats.add_bytes_out(body_len as u64);
    match response.body {
        Body::Empty => Ok(()),
        Body::Records(records) if body_len <= COPY_BODY_MAX => {
            for r in &records {
                out.extend_from_slice(r.bytes());
            }
            Ok(())
        }
        Body::Records(records) => {
            let mut slices: Vec<&[u8]> = Vec::with_capacity(records.len() + 1);
            slices.push(&out[..]);
            slices.extend(records.iter().map(commitlog::RecordRef::bytes));
            write_all_slices(socket, &slices).await?;
            out.clear();
            Ok(())
        }
    }
}

/// Writes every byte of `slices` in order with vectored writes, resuming after short
/// writes at the exact byte where the kernel stopped.
async fn write_all_slices<W: AsyncWrite + Unpin>(
    socket: &mut W,
    slices: &[&[u8]],
) -> io::Result<()> {
    let mut index = 0;
    let mut skip = 0;
    while index < slices.len() {
        if slices[index].len() == skip {
            index += 1;
            skip = 0;
            continue;
        }
        let mut iov = Vec::with_capacity(MAX_SLICES.min(slices.len() - index));
        iov.push(IoSlice::new(&slices[index][skip..]));
        iov.extend(
            slices[index + 1..]
                .iter()
                .filter(|s| !s.is_empty())
                .take(MAX_SLICES - 1)
                .map(|s| IoSlice::new(s)),
        );
        let mut written = socket.write_vectored(&iov).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while written > 0 && index < slices.len() {
            let left = slices[index].len() - skip;
            if written >= left {
                written -= left;
                index += 1;
                skip = 0;
            } else {
                skip += written;
                written = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn vectored_writes_resume_exactly_after_short_writes() {
        // A 7-byte pipe forces short writes at every slice boundary and inside slices.
        let (mut tx, mut rx) = tokio::io::duplex(7);
        let parts: Vec<Vec<u8>> = (0..40u8)
            .map(|i| {
                (0..(i % 9))
                    .map(|j| i.wrapping_mul(31).wrapping_add(j))
                    .collect()
            })
            .collect();
        let expected: Vec<u8> = parts.concat();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            rx.read_to_end(&mut got).await.unwrap();
            got
        });
        let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        write_all_slices(&mut tx, &slices).await.unwrap();
        drop(tx);
        assert_eq!(reader.await.unwrap(), expected);
    }
}
