//! Exact acknowledgement: a queue's progress as the smallest unacked offset plus the
//! ranges acked above it, kept in one canonical form.
//!
//! Canonical form: ranges non-empty, sorted, disjoint and not adjacent (touching ranges
//! are merged), every range starting strictly above `offset` (a range reaching down to
//! `offset` is absorbed by advancing `offset` past it).
//! At most [`MAX_ACK_RANGES`] ranges: beyond that the highest ranges are dropped. Dropping
//! an acked range only means those messages are delivered again; it never skips one, so
//! the bound costs duplicates, not loss, and a consumer with a huge ack gap keeps working.

use protocol::messages::OffsetRange;

/// Most ranges kept per queue (see the module doc for what happens beyond).
pub const MAX_ACK_RANGES: usize = 1024;

/// A range whose end lies before its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidRange {
    /// First offset of the range.
    pub start: u64,
    /// End of the range (exclusive), below `start`.
    pub end: u64,
}

/// The canonical form of a queue's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// The committed offset: every message below it is done.
    pub offset: u64,
    /// Acked ranges above `offset`: sorted, disjoint, merged where they meet.
    pub acked_above: Vec<OffsetRange>,
    /// How many ranges were dropped to respect [`MAX_ACK_RANGES`].
    pub dropped_ranges: usize,
}

/// Brings `offset` and `ranges` to canonical form.
///
/// # Errors
/// [`InvalidRange`] for a range with `start > end` (an empty range is simply ignored).
pub fn normalize(offset: u64, ranges: &[OffsetRange]) -> Result<Normalized, InvalidRange> {
    if let Some(bad) = ranges.iter().find(|r| r.start > r.end) {
        return Err(InvalidRange {
            start: bad.start,
            end: bad.end,
        });
    }
    let mut sorted: Vec<OffsetRange> = ranges
        .iter()
        .copied()
        .filter(|r| r.start < r.end && r.end > offset)
        .collect();
    sorted.sort_unstable_by_key(|r| (r.start, r.end));

    let mut offset = offset;
    let mut merged: Vec<OffsetRange> = Vec::with_capacity(sorted.len());
    for r in sorted {
        if r.start <= offset {
            // Reaches down to the first unacked offset: everything up to its end is done.
            offset = offset.max(r.end);
            continue;
        }
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    // Sorted by start, so once a range lies above `offset` no later one can advance it:
    // the ranges absorbed above all came first.

    let dropped_ranges = merged.len().saturating_sub(MAX_ACK_RANGES);
    merged.truncate(MAX_ACK_RANGES);
    Ok(Normalized {
        offset,
        acked_above: merged,
        dropped_ranges,
    })
}

/// Whether `queue_offset` is acked under a canonical `(offset, ranges)` pair.
pub fn is_acked(offset: u64, ranges: &[OffsetRange], queue_offset: u64) -> bool {
    if queue_offset < offset {
        return true;
    }
    // Ranges are sorted and disjoint: find the last one starting at or below.
    let i = ranges.partition_point(|r| r.start <= queue_offset);
    i > 0 && queue_offset < ranges[i - 1].end
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn r(start: u64, end: u64) -> OffsetRange {
        OffsetRange { start, end }
    }

    #[test]
    fn merges_sorts_and_drops_ranges_below() {
        let n = normalize(10, &[r(30, 40), r(2, 5), r(12, 15), r(15, 20), r(35, 50)]).unwrap();
        assert_eq!(n.offset, 10);
        assert_eq!(n.acked_above, vec![r(12, 20), r(30, 50)]);
        assert_eq!(n.dropped_ranges, 0);
    }

    #[test]
    fn advances_over_a_range_that_starts_at_the_offset() {
        let n = normalize(10, &[r(10, 12), r(12, 14), r(20, 21)]).unwrap();
        assert_eq!(n.offset, 14);
        assert_eq!(n.acked_above, vec![r(20, 21)]);
        let n = normalize(10, &[r(5, 12), r(13, 14)]).unwrap();
        assert_eq!((n.offset, n.acked_above), (12, vec![r(13, 14)]));
    }

    #[test]
    fn acked_everything_but_ten() {
        // The scenario: 0..1000 acked except 10.
        let n = normalize(0, &[r(0, 10), r(11, 1000)]).unwrap();
        assert_eq!((n.offset, n.acked_above.clone()), (10, vec![r(11, 1000)]));
        assert!(!is_acked(n.offset, &n.acked_above, 10));
        assert!((0..1000)
            .filter(|o| *o != 10)
            .all(|o| is_acked(n.offset, &n.acked_above, o)));
        assert!(!is_acked(n.offset, &n.acked_above, 1000));
    }

    #[test]
    fn empty_ranges_are_ignored_and_reversed_ones_refused() {
        let n = normalize(3, &[r(7, 7)]).unwrap();
        assert!(n.acked_above.is_empty());
        assert_eq!(
            normalize(3, &[r(9, 8)]),
            Err(InvalidRange { start: 9, end: 8 })
        );
    }

    #[test]
    fn too_many_ranges_drop_the_highest() {
        let ranges: Vec<_> = (0..MAX_ACK_RANGES as u64 + 5)
            .map(|i| r(10 + 2 * i, 11 + 2 * i))
            .collect();
        let n = normalize(0, &ranges).unwrap();
        assert_eq!(n.acked_above.len(), MAX_ACK_RANGES);
        assert_eq!(n.dropped_ranges, 5);
        assert_eq!(n.acked_above[0], r(10, 11));
        // Only acked offsets were forgotten: the dropped ones now read as unacked.
        let last_kept = n.acked_above[MAX_ACK_RANGES - 1];
        assert!(!is_acked(n.offset, &n.acked_above, last_kept.end + 1));
    }

    fn cases() -> u32 {
        std::env::var("FERRO_PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        /// Against a model: the set of acked offsets is exactly preserved (below the cap),
        /// and the result is canonical and a fixed point.
        #[test]
        fn preserves_the_acked_set(
            offset in 0u64..50,
            raw in proptest::collection::vec((0u64..100, 0u64..12), 0..20),
        ) {
            let ranges: Vec<_> = raw.iter().map(|(s, l)| r(*s, s + l)).collect();
            let mut model: BTreeSet<u64> = (0..offset).collect();
            for x in &ranges {
                model.extend(x.start..x.end);
            }
            let n = normalize(offset, &ranges).unwrap();
            for o in 0..120 {
                prop_assert_eq!(is_acked(n.offset, &n.acked_above, o), model.contains(&o), "offset {}", o);
            }
            prop_assert!(!model.contains(&n.offset));
            for w in n.acked_above.windows(2) {
                prop_assert!(w[0].end < w[1].start);
            }
            if let Some(first) = n.acked_above.first() {
                prop_assert!(first.start > n.offset);
            }
            let again = normalize(n.offset, &n.acked_above).unwrap();
            prop_assert_eq!(again, n);
        }
    }
}
