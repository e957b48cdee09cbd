//! The newtype for logical positions, so a queue offset is never mixed up with a
//! commit-log (physical) offset.

use std::fmt;

/// Logical offset inside one consume queue: the index of an entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueOffset(u64);

impl QueueOffset {
    /// Wraps a raw logical offset.
    pub const fn new(v: u64) -> Self {
        Self(v)
    }

    /// The raw logical offset.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for QueueOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
