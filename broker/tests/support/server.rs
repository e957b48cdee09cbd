//! Shared helpers of the server tests: an in-process broker on an ephemeral port and a
//! raw frame-level client that can also send bytes no real client would.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use broker::{Broker, Config, RunningBroker};
use bytes::BytesMut;
use protocol::batch::{BatchMessage, BatchWriter};
use protocol::messages::{ErrorResponse, SendRequest, SendResponse};
use protocol::properties::{PropertiesBuilder, TAGS};
use protocol::{header, Frame, FrameDecoder, FrameKind, Request, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous bound on any single wait in these tests; never a performance assertion.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Starts a broker on 127.0.0.1:0 with its data under `dir`, after `tweak` edits the config.
pub async fn start(dir: &Path, tweak: impl FnOnce(&mut Config)) -> RunningBroker {
    let mut config = Config::ephemeral(dir);
    tweak(&mut config);
    Broker::start(config).await.expect("broker starts")
}

/// A frame-level client.
pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
    decoder: FrameDecoder,
    next_id: u64,
}

/// A response frame, header still encoded.
#[derive(Debug)]
pub struct Reply {
    pub request_id: u64,
    pub status: Status,
    pub header: bytes::Bytes,
    pub body: bytes::Bytes,
}

impl Reply {
    pub fn error_message(&self) -> String {
        header::decode::<ErrorResponse>(&self.header)
            .unwrap()
            .message
    }
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            decoder: FrameDecoder::new(256 << 20),
            next_id: 1,
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Sends a request frame with any code and header bytes; returns its request id.
    pub async fn send_frame(&mut self, code: u16, header: &[u8], body: &[u8]) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut b = BytesMut::new();
        Frame::encode(&mut b, FrameKind::Request, code, id, header, body).unwrap();
        self.send_raw(&b).await;
        id
    }

    pub async fn send_request<R: Request>(&mut self, req: &R, body: &[u8]) -> u64 {
        let h = header::encode(req).unwrap();
        self.send_frame(u16::from(R::CODE), &h, body).await
    }

    /// The next response frame; `None` when the broker closed the connection.
    pub async fn read_reply(&mut self) -> Option<Reply> {
        tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(f) = self.decoder.decode(&mut self.buf).unwrap() {
                    assert_eq!(f.kind, FrameKind::Response);
                    return Some(Reply {
                        request_id: f.request_id,
                        status: Status::try_from(f.code).unwrap(),
                        header: f.header,
                        body: f.body,
                    });
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("a reply or a close within the patience")
    }

    /// Whether the broker closed the connection (reads EOF or a reset).
    pub async fn is_closed(&mut self) -> bool {
        self.read_reply().await.is_none()
    }

    /// Sends a request and waits for its response, which must be the next frame.
    pub async fn call_raw<R: Request>(&mut self, req: &R, body: &[u8]) -> Reply {
        let id = self.send_request(req, body).await;
        let reply = self.read_reply().await.expect("a reply");
        assert_eq!(reply.request_id, id);
        reply
    }

    /// A successful call's decoded response header and body.
    pub async fn call<R: Request>(&mut self, req: &R, body: &[u8]) -> (R::Response, bytes::Bytes) {
        let reply = self.call_raw(req, body).await;
        assert_eq!(reply.status, Status::Ok, "{}", reply.error_message());
        (header::decode(&reply.header).unwrap(), reply.body)
    }

    /// Sends `bodies` as one batch to (topic, queue), each tagged `tag` if given.
    pub async fn send_batch(
        &mut self,
        topic: &str,
        queue_id: u32,
        bodies: &[&[u8]],
        tag: Option<&str>,
    ) -> SendResponse {
        let (req, body) = batch(topic, queue_id, bodies, tag);
        self.call(&req, &body).await.0
    }
}

impl RawClient {
    /// Waits until (topic, queue) has dispatched `count` messages: sends are acknowledged
    /// once stored, and indexing for pulls follows a moment later.
    pub async fn wait_dispatched(&mut self, topic: &str, queue_id: u32, count: u64) {
        let pull = protocol::messages::PullRequest {
            topic: topic.into(),
            queue_id,
            group: "wait".into(),
            offset: count - 1,
            max_messages: 1,
            max_bytes: 0,
            tag_expr: "*".into(),
            max_wait_ms: PATIENCE.as_millis() as u64,
        };
        let (resp, _) = self.call(&pull, &[]).await;
        assert!(resp.max_offset >= count, "{resp:?}");
    }
}

/// A send request and its body.
pub fn batch(
    topic: &str,
    queue_id: u32,
    bodies: &[&[u8]],
    tag: Option<&str>,
) -> (SendRequest, Vec<u8>) {
    let props = match tag {
        Some(t) => PropertiesBuilder::new().with(TAGS, t).build(),
        None => Vec::new(),
    };
    let mut w = BatchWriter::new();
    for b in bodies {
        w.push(&BatchMessage {
            properties: &props,
            body: b,
            born_timestamp_ms: 1,
        })
        .unwrap();
    }
    let req = SendRequest {
        topic: topic.into(),
        queue_id,
        count: w.count(),
    };
    (req, w.into_bytes())
}

/// (queue offset, body) of every record in a pull or get-message body.
pub fn records(mut body: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let view = commitlog::format::RecordView::decode(body).unwrap();
        out.push((view.queue_offset(), view.body().to_vec()));
        body = &body[view.total_len() as usize..];
    }
    out
}
