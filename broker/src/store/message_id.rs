//! Message ids: where a message lives, printable.

use std::fmt;
use std::str::FromStr;

use commitlog::PhysicalOffset;

use super::StoreError;

/// A message's id: its commit-log offset and encoded size. Unique because two records never
/// share an offset, and decodable so `get_by_id` needs no index.
///
/// Text form: 24 uppercase hex digits, 16 for the offset then 8 for the size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    offset: PhysicalOffset,
    size: u32,
}

impl MessageId {
    /// Length of the text form.
    pub const TEXT_LEN: usize = 24;

    /// The id of the record of `size` bytes at `offset`.
    pub const fn new(offset: PhysicalOffset, size: u32) -> Self {
        Self { offset, size }
    }

    /// Commit-log offset of the record.
    pub const fn offset(self) -> PhysicalOffset {
        self.offset
    }

    /// Encoded record size in bytes.
    pub const fn size(self) -> u32 {
        self.size
    }
}

impl MessageId {
    /// The text form, built without the formatting machinery: a send answers one id per
    /// message, and `write!` with padding showed up as a tenth of the broker's time.
    pub fn to_text(self) -> String {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut out = [0u8; Self::TEXT_LEN];
        let offset = self.offset.get();
        for (i, b) in out[..16].iter_mut().enumerate() {
            *b = HEX[((offset >> (60 - 4 * i)) & 0xF) as usize];
        }
        for (i, b) in out[16..].iter_mut().enumerate() {
            *b = HEX[((self.size >> (28 - 4 * i)) & 0xF) as usize];
        }
        out.iter().map(|&b| char::from(b)).collect()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl FromStr for MessageId {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| StoreError::BadMessageId {
            id: s.chars().take(64).collect(),
            reason,
        };
        if s.len() != Self::TEXT_LEN {
            return Err(bad("expected 24 hex digits"));
        }
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("not hexadecimal"));
        }
        let (offset, size) = s.split_at(16);
        let offset = u64::from_str_radix(offset, 16).map_err(|_| bad("bad offset digits"))?;
        let size = u32::from_str_radix(size, 16).map_err(|_| bad("bad size digits"))?;
        Ok(Self::new(PhysicalOffset::new(offset), size))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn text_form() {
        let id = MessageId::new(PhysicalOffset::new(0x1234), 0xAB);
        assert_eq!(id.to_string(), "0000000000001234000000AB");
        assert_eq!("0000000000001234000000ab".parse::<MessageId>().unwrap(), id);
        assert!("00".parse::<MessageId>().is_err());
        assert!("+000000000001234000000AB".parse::<MessageId>().is_err());
        assert!("é00000000001234000000AB".parse::<MessageId>().is_err());
    }

    proptest! {
        #[test]
        fn round_trips(o in any::<u64>(), s in any::<u32>()) {
            let id = MessageId::new(PhysicalOffset::new(o), s);
            prop_assert_eq!(id.to_string().parse::<MessageId>().unwrap(), id);
        }
    }
}
