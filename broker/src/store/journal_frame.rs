//! The CRC frame shared by the metadata journals (topics, consumer offsets):
//!
//! | off | size | field |
//! |---:|---:|---|
//! | 0 | 4 | `len`: bytes of the body (kind + payload), little endian |
//! | 4 | 4 | CRC32 of the body |
//! | 8 | len | body: a kind byte, then the payload |
//!
//! A torn tail (a frame running to or past the end, or only zeros after the last good
//! frame) ends a journal; a bad frame with other data after it is corruption.

/// Bytes before a frame's body.
pub(crate) const FRAME_HEADER_BYTES: usize = 8;

/// Appends `body` framed to `out`.
pub(crate) fn encode_frame(out: &mut Vec<u8>, body: &[u8]) {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
}

/// The bodies of the whole, valid frames at the start of `bytes`, and their length in
/// bytes (anything after is a torn tail).
///
/// # Errors
/// A sentence naming the offset of a bad frame that has data after it (corruption).
pub(crate) fn split_frames(bytes: &[u8]) -> Result<(Vec<&[u8]>, usize), String> {
    let mut bodies = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match frame_at(bytes, at) {
            Ok((body, next)) => {
                bodies.push(body);
                at = next;
            }
            Err(reason) => {
                let rest = &bytes[at..];
                let runs_past_end = rest.len() < FRAME_HEADER_BYTES
                    || FRAME_HEADER_BYTES + read_u32(rest, 0) as usize >= rest.len();
                if runs_past_end || rest.iter().all(|b| *b == 0) {
                    break;
                }
                return Err(format!("bad frame at byte {at}: {reason}"));
            }
        }
    }
    Ok((bodies, at))
}

fn frame_at(bytes: &[u8], at: usize) -> Result<(&[u8], usize), String> {
    let rest = &bytes[at..];
    if rest.len() < FRAME_HEADER_BYTES {
        return Err("truncated frame header".into());
    }
    let len = read_u32(rest, 0) as usize;
    let end = FRAME_HEADER_BYTES + len;
    if len == 0 || rest.len() < end {
        return Err(format!("frame of {len} bytes does not fit"));
    }
    let body = &rest[FRAME_HEADER_BYTES..end];
    let (expected, actual) = (read_u32(rest, 4), crc32fast::hash(body));
    if expected != actual {
        return Err(format!(
            "checksum mismatch: expected {expected:#010x}, got {actual:#010x}"
        ));
    }
    Ok((body, at + end))
}

pub(crate) fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
