//! The reserve: how much free space sends may not use, as a size or a share of the
//! filesystem.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::ByteSize;

/// A percentage reserve is never smaller than this: room for metadata and index writes.
pub const MIN_PERCENT_RESERVE_BYTES: u64 = 16 << 20;

/// Free space kept back from sends: a size, a percentage of the filesystem (at least
/// [`MIN_PERCENT_RESERVE_BYTES`]), or `0` to refuse sends only after a write hit `ENOSPC`.
/// Written `16M`, `1%`, `0.5%` or `0`. Default `1%`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ReserveRepr", into = "String")]
pub enum DiskReserve {
    /// A fixed number of bytes; 0 disables the reserve.
    Bytes(u64),
    /// Hundredths of a percent of the filesystem's size (`100` is 1%).
    Percent {
        /// The share in hundredths of a percent.
        hundredths: u32,
    },
}

impl Default for DiskReserve {
    fn default() -> Self {
        Self::Percent { hundredths: 100 }
    }
}

impl DiskReserve {
    /// The reserve in bytes on a filesystem of `total_bytes`; 0 when disabled.
    pub fn bytes(self, total_bytes: u64) -> u64 {
        match self {
            Self::Bytes(b) => b,
            Self::Percent { hundredths: 0 } => 0,
            Self::Percent { hundredths } => {
                let share = u128::from(total_bytes) * u128::from(hundredths) / 10_000;
                u64::try_from(share)
                    .unwrap_or(u64::MAX)
                    .max(MIN_PERCENT_RESERVE_BYTES)
            }
        }
    }
}

impl FromStr for DiskReserve {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let Some(pct) = t.strip_suffix('%') else {
            return t.parse::<ByteSize>().map(|b| Self::Bytes(b.get()));
        };
        let bad = || format!("{s:?} is not a percentage between 0% and 50% (e.g. 1% or 0.5%)");
        let (whole, frac) = pct.trim().split_once('.').unwrap_or((pct.trim(), ""));
        if frac.len() > 2 || !frac.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let whole: u32 = whole.parse().map_err(|_| bad())?;
        let frac: u32 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<2}").parse().map_err(|_| bad())?
        };
        let hundredths = whole.checked_mul(100).and_then(|w| w.checked_add(frac));
        match hundredths {
            Some(h) if h <= 5_000 => Ok(Self::Percent { hundredths: h }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for DiskReserve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Bytes(b) => write!(f, "{}", ByteSize(b)),
            Self::Percent { hundredths } if hundredths % 100 == 0 => {
                write!(f, "{}%", hundredths / 100)
            }
            Self::Percent { hundredths } if hundredths % 10 == 0 => {
                write!(f, "{}.{}%", hundredths / 100, hundredths % 100 / 10)
            }
            Self::Percent { hundredths } => {
                write!(f, "{}.{:02}%", hundredths / 100, hundredths % 100)
            }
        }
    }
}

impl From<DiskReserve> for String {
    fn from(r: DiskReserve) -> String {
        r.to_string()
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ReserveRepr {
    Int(u64),
    Text(String),
}

impl TryFrom<ReserveRepr> for DiskReserve {
    type Error = String;

    fn try_from(r: ReserveRepr) -> Result<Self, String> {
        match r {
            ReserveRepr::Int(v) => Ok(Self::Bytes(v)),
            ReserveRepr::Text(s) => s.parse(),
        }
    }
}

/// Bytes for a log line or an error: `0 B`, `4.9 KiB`, `15.9 MiB`.
pub(crate) struct Human(pub(crate) u64);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut unit = 0;
        let mut scaled = self.0;
        while scaled >= 1024 && unit < UNITS.len() - 1 {
            scaled /= 1024;
            unit += 1;
        }
        if unit == 0 {
            return write!(f, "{} B", self.0);
        }
        #[allow(clippy::cast_precision_loss)] // one decimal in a log line
        let v = self.0 as f64 / (1u64 << (10 * unit)) as f64;
        write!(f, "{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn reserves_parse_and_print() {
        assert_eq!("1%".parse(), Ok(DiskReserve::Percent { hundredths: 100 }));
        assert_eq!("0.5%".parse(), Ok(DiskReserve::Percent { hundredths: 50 }));
        assert_eq!(
            "2.25 %".parse(),
            Ok(DiskReserve::Percent { hundredths: 225 })
        );
        assert_eq!("16M".parse(), Ok(DiskReserve::Bytes(16 << 20)));
        assert_eq!("0".parse(), Ok(DiskReserve::Bytes(0)));
        assert!("51%".parse::<DiskReserve>().is_err());
        assert!("1.234%".parse::<DiskReserve>().is_err());
        assert!("-1%".parse::<DiskReserve>().is_err());
        assert!("lots".parse::<DiskReserve>().is_err());
        for s in ["1%", "0.5%", "2.25%", "16M", "0"] {
            assert_eq!(s.parse::<DiskReserve>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn a_percent_reserve_is_at_least_16_mib_and_zero_disables() {
        let one = DiskReserve::default();
        assert_eq!(one.bytes(100 << 20), MIN_PERCENT_RESERVE_BYTES);
        assert_eq!(one.bytes(100 << 30), 1 << 30);
        assert_eq!(DiskReserve::Bytes(0).bytes(100 << 30), 0);
        assert_eq!(DiskReserve::Percent { hundredths: 0 }.bytes(100 << 30), 0);
        assert_eq!(DiskReserve::Bytes(4096).bytes(100 << 30), 4096);
    }

    #[test]
    fn sizes_read_well_in_log_lines() {
        assert_eq!(Human(0).to_string(), "0 B");
        assert_eq!(Human(1000).to_string(), "1000 B");
        assert_eq!(Human(5000).to_string(), "4.9 KiB");
        assert_eq!(Human(16 << 20).to_string(), "16.0 MiB");
    }
}
