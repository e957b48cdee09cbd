//! Receipt handles: the opaque text a receiver gets with each message and sends back to
//! ack, change or reject it.
//!
//! Text form: `1.<run>.<epoch>.<queue>.<offset>.<topic>`, numbers in lowercase hex but
//! the queue id and offset in decimal. `run` tells this broker run from earlier ones (a
//! handle from before a restart never matches a lease of this run, whose epochs start
//! over); `epoch` names one lease of one message, so a handle is refused once its lease
//! expired, was changed or ended. Clients must not parse it: the form may change.

use std::fmt::Write;

/// What a receipt handle names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Receipt {
    pub(crate) run: u64,
    pub(crate) epoch: u64,
    pub(crate) topic: String,
    pub(crate) queue_id: u32,
    pub(crate) offset: u64,
}

const VERSION: &str = "1";

impl Receipt {
    pub(crate) fn encode(&self) -> String {
        let mut s = String::with_capacity(48 + self.topic.len());
        // Writing to a String cannot fail.
        let _ = write!(
            s,
            "{VERSION}.{:x}.{:x}.{}.{}.{}",
            self.run, self.epoch, self.queue_id, self.offset, self.topic
        );
        s
    }

    /// Parses a handle; `None` when it is not one this broker writes.
    pub(crate) fn decode(text: &str) -> Option<Self> {
        let mut parts = text.splitn(6, '.');
        if parts.next()? != VERSION {
            return None;
        }
        let run = u64::from_str_radix(parts.next()?, 16).ok()?;
        let epoch = u64::from_str_radix(parts.next()?, 16).ok()?;
        let queue_id = parts.next()?.parse().ok()?;
        let offset = parts.next()?.parse().ok()?;
        let topic = parts.next()?;
        if topic.is_empty() {
            return None;
        }
        Some(Self {
            run,
            epoch,
            topic: topic.to_owned(),
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
            topic: "a.b-c".into(),
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
        ] {
            assert_eq!(Receipt::decode(bad), None, "{bad:?}");
        }
    }
}
