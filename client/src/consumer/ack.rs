//! Exact acknowledgement bookkeeping for one queue.
//!
//! The tracker knows which delivered offsets are not acked yet (a window ordered by offset)
//! and how far pulling got. Every offset below `pulled_until` that is not an unacked
//! delivery is done: acked, filtered out by tag, or acked by a previous owner. So the commit
//! is the smallest unacked offset plus the gaps between unacked offsets (the ranges acked
//! above it), plus ranges inherited from the previous owner not reached yet.

use std::collections::VecDeque;

use protocol::messages::OffsetRange;

/// Most ranges sent in one commit; offsets in ranges beyond it are simply redelivered.
pub(crate) const MAX_COMMIT_RANGES: usize = 512;

#[derive(Debug)]
pub(crate) struct AckTracker {
    /// Delivered offsets in increasing order with their acked flag. Acked entries at the
    /// front are popped at once, so the front is always the smallest unacked offset.
    window: VecDeque<(u64, bool)>,
    /// Next offset to pull.
    pulled_until: u64,
    /// Ranges acked by a previous owner at or beyond `pulled_until`, sorted.
    inherited: VecDeque<OffsetRange>,
}

impl AckTracker {
    /// Starts at a committed position: `offset` and the ranges acked above it.
    pub(crate) fn new(offset: u64, acked_above: &[OffsetRange]) -> Self {
        let mut ranges: Vec<OffsetRange> = acked_above
            .iter()
            .filter(|r| r.end > r.start && r.end > offset)
            .copied()
            .collect();
        ranges.sort_by_key(|r| r.start);
        let mut t = Self {
            window: VecDeque::new(),
            pulled_until: offset,
            inherited: ranges.into(),
        };
        t.skip_inherited_at_head();
        t
    }

    /// Where the next pull starts.
    pub(crate) fn next_offset(&self) -> u64 {
        self.pulled_until
    }

    /// True for an offset a previous owner already acked: it is not delivered again.
    pub(crate) fn already_acked(&self, offset: u64) -> bool {
        self.inherited
            .iter()
            .take_while(|r| r.start <= offset)
            .any(|r| offset < r.end)
    }

    /// Records a delivered offset (offsets arrive in increasing order).
    pub(crate) fn delivered(&mut self, offset: u64) {
        if self.window.back().is_some_and(|(last, _)| *last >= offset) {
            return;
        }
        self.window.push_back((offset, false));
    }

    /// Everything below `next` was pulled (delivered, filtered or already acked).
    pub(crate) fn pulled_to(&mut self, next: u64) {
        self.pulled_until = self.pulled_until.max(next);
        while self
            .inherited
            .front()
            .is_some_and(|r| r.end <= self.pulled_until)
        {
            self.inherited.pop_front();
        }
        self.skip_inherited_at_head();
    }

    /// Jumps to `offset` (e.g. retention removed what was below): nothing below is pending.
    pub(crate) fn reset_to(&mut self, offset: u64) {
        self.window.retain(|(o, acked)| *o >= offset && !acked);
        self.pulled_until = offset;
        self.inherited.retain(|r| r.end > offset);
        self.skip_inherited_at_head();
    }

    fn skip_inherited_at_head(&mut self) {
        // A range starting where pulling is has nothing to pull: jump over it.
        while let Some(r) = self.inherited.front() {
            if r.start > self.pulled_until {
                break;
            }
            self.pulled_until = self.pulled_until.max(r.end);
            self.inherited.pop_front();
        }
    }

    /// Acks a delivered offset; returns false if it was not pending (unknown or acked).
    pub(crate) fn ack(&mut self, offset: u64) -> bool {
        let Ok(i) = self.window.binary_search_by_key(&offset, |(o, _)| *o) else {
            return false;
        };
        if self.window[i].1 {
            return false;
        }
        self.window[i].1 = true;
        while self.window.front().is_some_and(|(_, acked)| *acked) {
            self.window.pop_front();
        }
        true
    }

    /// Number of delivered offsets not acked yet.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.window.iter().filter(|(_, acked)| !acked).count()
    }

    /// The position to commit: the smallest unacked offset and the ranges done above it.
    pub(crate) fn commit_position(&self) -> (u64, Vec<OffsetRange>) {
        let mut unacked = self.window.iter().filter(|(_, a)| !a).map(|(o, _)| *o);
        let Some(first) = unacked.next() else {
            return (self.pulled_until, self.inherited.iter().copied().collect());
        };
        let mut ranges = Vec::new();
        let mut prev = first;
        for o in unacked.chain(std::iter::once(self.pulled_until)) {
            if o > prev + 1 {
                push_range(&mut ranges, prev + 1, o);
            }
            prev = o;
        }
        for r in &self.inherited {
            push_range(&mut ranges, r.start, r.end);
        }
        ranges.truncate(MAX_COMMIT_RANGES);
        (first, ranges)
    }
}

fn push_range(ranges: &mut Vec<OffsetRange>, start: u64, end: u64) {
    if let Some(last) = ranges.last_mut() {
        if last.end >= start {
            last.end = last.end.max(end);
            return;
        }
    }
    ranges.push(OffsetRange { start, end });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> OffsetRange {
        OffsetRange { start, end }
    }

    fn pull(t: &mut AckTracker, offsets: std::ops::Range<u64>) {
        for o in offsets.clone() {
            if !t.already_acked(o) {
                t.delivered(o);
            }
        }
        t.pulled_to(offsets.end);
    }

    #[test]
    fn in_order_acks_commit_the_next_offset() {
        let mut t = AckTracker::new(0, &[]);
        pull(&mut t, 0..5);
        for o in 0..5 {
            assert!(t.ack(o));
        }
        assert_eq!(t.commit_position(), (5, vec![]));
        assert!(!t.ack(3), "double ack is ignored");
    }

    #[test]
    fn out_of_order_acks_commit_the_smallest_unacked_plus_ranges() {
        let mut t = AckTracker::new(0, &[]);
        pull(&mut t, 0..10);
        for o in [1, 2, 5, 6, 7, 9] {
            t.ack(o);
        }
        // Unacked: 0, 3, 4, 8.
        assert_eq!(t.commit_position(), (0, vec![r(1, 3), r(5, 8), r(9, 10)]));
        assert_eq!(t.pending(), 4);
    }

    #[test]
    fn all_but_one_acked_leaves_one_hole() {
        let mut t = AckTracker::new(0, &[]);
        pull(&mut t, 0..1000);
        for o in (0..1000).filter(|o| *o != 10) {
            t.ack(o);
        }
        assert_eq!(t.commit_position(), (10, vec![r(11, 1000)]));
        // The next owner skips everything but 10.
        let (offset, ranges) = t.commit_position();
        let mut next = AckTracker::new(offset, &ranges);
        let mut delivered = vec![];
        for o in next.next_offset()..1200 {
            if !next.already_acked(o) {
                delivered.push(o);
                next.delivered(o);
            }
        }
        assert_eq!(&delivered[..2], &[10, 1000]);
    }

    #[test]
    fn inherited_ranges_are_skipped_and_kept_until_reached() {
        let mut t = AckTracker::new(10, &[r(10, 12), r(20, 30), r(5, 8)]);
        assert_eq!(t.next_offset(), 12, "a range at the head is jumped over");
        assert_eq!(t.commit_position(), (12, vec![r(20, 30)]));
        pull(&mut t, 12..25);
        assert_eq!(
            t.next_offset(),
            30,
            "the rest of a range being pulled into is jumped over"
        );
        for o in 12..20 {
            t.ack(o);
        }
        assert_eq!(t.commit_position(), (30, vec![]));
    }

    #[test]
    fn filtered_offsets_count_as_done() {
        let mut t = AckTracker::new(0, &[]);
        t.delivered(3);
        t.delivered(7);
        t.pulled_to(10);
        t.ack(7);
        assert_eq!(t.commit_position(), (3, vec![r(4, 10)]));
        t.ack(3);
        assert_eq!(t.commit_position(), (10, vec![]));
    }

    #[test]
    fn ranges_are_bounded() {
        let mut t = AckTracker::new(0, &[]);
        pull(&mut t, 0..10_000);
        for o in (0..10_000).filter(|o| o % 2 == 1) {
            t.ack(o);
        }
        let (offset, ranges) = t.commit_position();
        assert_eq!(offset, 0);
        assert_eq!(ranges.len(), MAX_COMMIT_RANGES);
    }
}
