//! The frame decoder on arbitrary bytes arriving in arbitrary chunks, then every request
//! header type and the send body on whatever frames come out.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use protocol::messages::{
    CommitOffsetRequest, HeartbeatRequest, PullRequest, SendBackRequest, SendRequest,
};
use protocol::{batch, header, FrameDecoder};

const MAX_FRAME: u32 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    // First byte: chunk size, so partial frames and split prefixes are exercised.
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let decoder = FrameDecoder::new(MAX_FRAME);
    let mut buf = BytesMut::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.header.len() + frame.body.len() <= MAX_FRAME as usize);
                    let _ = header::decode::<PullRequest>(&frame.header);
                    let _ = header::decode::<HeartbeatRequest>(&frame.header);
                    let _ = header::decode::<CommitOffsetRequest>(&frame.header);
                    let _ = header::decode::<SendBackRequest>(&frame.header);
                    if let Ok(send) = header::decode::<SendRequest>(&frame.header) {
                        let _ = batch::decode(&frame.body, send.count, MAX_FRAME);
                    }
                }
                Ok(None) => break,
                // The connection would be closed here.
                Err(_) => return,
            }
        }
        // Reserving ahead is bounded by the checked frame length.
        assert!(buf.capacity() <= 2 * MAX_FRAME as usize + rest.len());
    }
});
