//! Receipt handles: the opaque text a receiver gets with each message and sends back to
//! ack, change or reject it.
//!
//! Text form: `1.<run>.<epoch>.<queue>.<offset>.<topic>`, numbers in lowercase hex.
//! `run` tells this broker run from earlier ones (a handle from before a restart never
//! matches a lease of this run, whose epochs start over); `epoch` names one lease of one
//! message, so a handle is refused once its lease expired, was changed or ended. Clients
//! must not parse it: the form may change. Written and read without `fmt` or allocation
//! beyond the handle itself: a receive writes one per message, an ack reads one.

/// What a receipt handle names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Receipt<'a> {
    pub(crate) run: u64,
    pub(crate) epoch: u64,
    pub(crate) topic: &'a str,
    pub(crate) queue_id: u32,
    pub(crate) offset: u64,
}

const VERSION: &str = "1";
const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(s: &mut String, v: u64) {
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = HEX[(v & 0xF) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    // Only ASCII hex digits were written.
    s.extend(buf[i..].iter().map(|b| char::from(*b)));
}

impl<'a> Receipt<'a> {
    pub(crate) fn encode(&self) -> String {
        let mut s = String::with_capacity(2 + 4 * 17 + self.topic.len());
        s.push_str(VERSION);
        for v in [self.run, self.epoch, u64::from(self.queue_id), self.offset] {
            s.push('.');
            push_hex(&mut s, v);
        }
        s.push('.');
        s.push_str(self.topic);
        s
    }

    /// Parses a handle; `None` when it is not one this broker writes.
    pub(crate) fn decode(text: &'a str) -> Option<Self> {
        let mut parts = text.splitn(6, '.');
        if parts.next()? != VERSION {
            return None;
        }
        let mut num = || -> Option<u64> {
            let p = parts.next()?;
            // from_str_radix alone would take a leading '+'.
            if p.is_empty() || p.len() > 16 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            u64::from_str_radix(p, 16).ok()
        };
        let run = num()?;
        let epoch = num()?;
        let queue_id = u32::try_from(num()?).ok()?;
        let offset = num()?;
        let topic = parts.next()?;
        if topic.is_empty() {
            return None;
        }
        Some(Self {
            run,
            epoch,
            topic,
            queue_id,
            offset,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn handles_round_trip_and_garbage_is_refused() {
        let r = Receipt {
            run: 0x1234,
            epoch: 99,
            topic: "a.b-c",
            queue_id: 7,
            offset: 1 << 40,
        };
        assert_eq!(Receipt::decode(&r.encode()), Some(r));
        for bad in [
            "",
            "1",
            "2.1.1.0.0.t",
            "1.x.1.0.0.t",
            "1.1.1.0.0.",
            "1.1.1.-1.0.t",
            "1.+1.1.0.0.t",
            "1.1.1.100000000.0.t",
        ] {
            assert_eq!(Receipt::decode(bad), None, "{bad:?}");
        }
    }
}
