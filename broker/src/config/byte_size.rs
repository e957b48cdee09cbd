//! Sizes in flags and in the config file: plain bytes or a `K`/`M`/`G` suffix.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A size in bytes, written as plain bytes or with a K/M/G suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "SizeRepr", into = "u64")]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<ByteSize> for u64 {
    fn from(v: ByteSize) -> u64 {
        v.0
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Int(u64),
    Text(String),
}

impl TryFrom<SizeRepr> for ByteSize {
    type Error = String;

    fn try_from(r: SizeRepr) -> Result<Self, String> {
        match r {
            SizeRepr::Int(v) => Ok(Self(v)),
            SizeRepr::Text(s) => s.parse(),
        }
    }
}

impl FromStr for ByteSize {
    type Err = String;

    /// Plain bytes or a `K`/`M`/`G`/`T` suffix, with or without `B`/`iB`; every multiple is
    /// a power of 1024 (the documented meaning, kept for `1G` as for `1GiB`).
    fn from_str(s: &str) -> Result<Self, String> {
        parse_size::Config::new()
            .with_binary()
            .parse_size(s.trim())
            .map(Self)
            .map_err(|e| format!("{s:?} is not a size ({e}; use e.g. 4096, 64K, 256M, 1G)"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        for (shift, suffix) in [(30, "G"), (20, "M"), (10, "K")] {
            if v != 0 && v.trailing_zeros() >= shift {
                return write!(f, "{}{suffix}", v >> shift);
            }
        }
        write!(f, "{v}")
    }
}
