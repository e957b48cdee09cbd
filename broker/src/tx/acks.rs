//! Applying a committed transaction's acknowledgements to the committed offsets.

use std::collections::BTreeMap;

use protocol::messages::{OffsetRange, QueueCommit};

use super::records::AckItem;
use crate::groups::ConsumerOffsets;

/// Adds each ack as an exact ack (`[offset, offset + 1)`) to its group's committed
/// progress, keeping what was there: applying the same acks twice changes nothing. A
/// queue the group never committed on starts at offset 0, so nothing unacked is skipped.
/// Does not persist; the caller writes the offsets.
///
/// # Errors
/// The offsets refused the progress (never for ranges built here).
pub(super) fn apply_offset_acks(offsets: &ConsumerOffsets, acks: &[AckItem]) -> Result<(), String> {
    let mut per_queue: BTreeMap<(&str, &str, u32), Vec<u64>> = BTreeMap::new();
    for a in acks {
        per_queue
            .entry((a.group.as_str(), a.topic.as_str(), a.queue_id))
            .or_default()
            .push(a.offset);
    }
    for ((group, topic, queue_id), acked) in per_queue {
        let current = offsets.get(group, topic, queue_id);
        let (offset, mut ranges) = current.map_or((0, Vec::new()), |c| (c.offset, c.acked_above));
        ranges.extend(
            acked
                .into_iter()
                .filter(|o| *o >= offset)
                .map(|o| OffsetRange {
                    start: o,
                    end: o + 1,
                }),
        );
        let commit = QueueCommit {
            topic: topic.to_owned(),
            queue_id,
            offset,
            acked_above: ranges,
        };
        offsets
            .commit(group, std::slice::from_ref(&commit))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
