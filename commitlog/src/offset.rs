//! The physical offset newtype: a byte position in the whole log.

use std::fmt;

/// Byte position in the log, counted from the first byte ever written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PhysicalOffset(u64);

impl PhysicalOffset {
    /// The offset `v` bytes into the log.
    pub const fn new(v: u64) -> Self {
        PhysicalOffset(v)
    }
    /// The byte position as an integer.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for PhysicalOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
