//! The epoch history: which master wrote which part of the log, kept in `<dir>/epochs`
//! (layout in [`crate::format::epoch`](mod@crate::format)), and the divergence point a
//! replica computes from its own history and its master's.

use std::sync::atomic::Ordering;

use crate::format::{decode_epochs, encode_epochs, EpochEntry};
use crate::shared::{lock, Inner};
use crate::{Config, Error};

/// File name of the epoch history inside the log folder.
pub(crate) const EPOCHS_FILE: &str = "epochs";

/// The offset up to which a replica's log (`local`, ending at `local_end`) agrees with its
/// master's (`master`, ending at `master_end`): the newest epoch both hold with equal
/// epoch, start and master id, cut at the smaller of its two ends (RocketMQ's
/// `findConsistentPoint`, with Kafka's `master_id` match). When they share no epoch but
/// every local epoch is older than the master's first one, the local bytes from the
/// master's first epoch start on were never the master's (KIP-279's "largest epoch below"
/// answer): the point is that start. `None` otherwise (a conflict: refuse). The caller
/// still checks the point against the master's minimum offset.
pub fn consistent_point(
    local: &[EpochEntry],
    local_end: u64,
    master: &[EpochEntry],
    master_end: u64,
) -> Option<u64> {
    let shared = local.iter().enumerate().rev().find_map(|(i, l)| {
        let j = master.iter().position(|m| m == l)?;
        let local_epoch_end = local.get(i + 1).map_or(local_end, |n| n.start_offset);
        let master_epoch_end = master.get(j + 1).map_or(master_end, |n| n.start_offset);
        Some(local_epoch_end.min(master_epoch_end))
    });
    shared.or_else(|| {
        let first = master.first()?;
        local
            .iter()
            .all(|l| l.epoch < first.epoch)
            .then(|| first.start_offset.min(local_end))
    })
}

/// Reads the history at open, dropping entries that start beyond the log's `end` (their
/// bytes were lost) and, after an interrupted truncation to `cut`, those starting at or
/// beyond it. A missing file is an empty history.
pub(crate) fn load(cfg: &Config, end: u64, cut: Option<u64>) -> Result<Vec<EpochEntry>, Error> {
    let path = cfg.dir.join(EPOCHS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&path, "read epoch file", e)),
    };
    let mut entries = decode_epochs(&bytes).map_err(|reason| Error::BadEpochFile {
        path: path.clone(),
        reason,
    })?;
    let before = entries.len();
    entries.retain(|e| e.start_offset <= end && cut.is_none_or(|c| e.start_offset < c));
    if entries.len() != before {
        write(cfg, &entries)?;
    }
    Ok(entries)
}

fn write(cfg: &Config, entries: &[EpochEntry]) -> Result<(), Error> {
    let path = cfg.dir.join(EPOCHS_FILE);
    cfg.storage
        .write_atomic(&path, &encode_epochs(entries))
        .map_err(|e| Error::io(&path, "write epoch file", e))
}

impl Inner {
    /// Makes `(epoch, write offset, master_id)` durable as the newest entry. Entries with
    /// no bytes (starting at the write offset) are replaced: an epoch that wrote nothing
    /// cannot be a divergence point.
    pub(crate) fn begin_epoch(&self, epoch: u64, master_id: u64) -> Result<EpochEntry, Error> {
        let _w = lock(&self.writer);
        self.check_poison()?;
        let start = self.write_offset.load(Ordering::SeqCst);
        let mut entries = lock(&self.epochs);
        if let Some(last) = entries.last() {
            if epoch <= last.epoch {
                return Err(Error::EpochOutOfOrder {
                    epoch,
                    last: last.epoch,
                });
            }
        }
        let mut next: Vec<EpochEntry> = entries
            .iter()
            .copied()
            .filter(|e| e.start_offset < start)
            .collect();
        let entry = EpochEntry {
            epoch,
            start_offset: start,
            master_id,
        };
        next.push(entry);
        write(&self.cfg, &next)?;
        *entries = next;
        Ok(entry)
    }

    /// Drops the entries starting at or beyond `cut` (part of a truncation).
    pub(crate) fn cut_epochs(&self, cut: u64) -> Result<(), Error> {
        let mut entries = lock(&self.epochs);
        if entries.iter().all(|e| e.start_offset < cut) {
            return Ok(());
        }
        let next: Vec<EpochEntry> = entries
            .iter()
            .copied()
            .filter(|e| e.start_offset < cut)
            .collect();
        write(&self.cfg, &next)?;
        *entries = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(epoch: u64, start_offset: u64, master_id: u64) -> EpochEntry {
        EpochEntry {
            epoch,
            start_offset,
            master_id,
        }
    }

    /// (name, local history, local end, master history, master end, expected point)
    type Case = (
        &'static str,
        Vec<EpochEntry>,
        u64,
        Vec<EpochEntry>,
        u64,
        Option<u64>,
    );

    /// The table of divergence cases from the cluster design.
    #[test]
    fn consistent_point_table() {
        let m = [e(1, 0, 1), e(2, 500, 2)];
        let cases: Vec<Case> = vec![
            (
                "same epoch, replica behind",
                vec![e(1, 0, 1)],
                300,
                m[..1].to_vec(),
                400,
                Some(300),
            ),
            (
                "same epoch, replica ahead",
                vec![e(1, 0, 1)],
                450,
                m[..1].to_vec(),
                400,
                Some(400),
            ),
            (
                "old master returns with a longer epoch 3 (design example)",
                vec![e(3, 0, 1)],
                900,
                vec![e(3, 0, 1), e(4, 800, 2)],
                1000,
                Some(800),
            ),
            (
                "replica in an older epoch",
                vec![e(1, 0, 1)],
                700,
                m.to_vec(),
                900,
                Some(500),
            ),
            (
                "double failover (KIP-279): newest shared epoch wins",
                vec![e(1, 0, 1), e(2, 500, 2), e(3, 600, 2)],
                650,
                vec![e(1, 0, 1), e(2, 500, 2), e(4, 550, 3)],
                800,
                Some(550),
            ),
            (
                "same epoch under another master is a conflict",
                vec![e(1, 0, 1), e(2, 500, 9)],
                700,
                m.to_vec(),
                900,
                Some(500),
            ),
            (
                "no common epoch, a newer local one: conflict",
                vec![e(5, 0, 4)],
                100,
                m.to_vec(),
                900,
                None,
            ),
            (
                "no common epoch, only older local ones: cut at the master's first start",
                vec![e(1, 0, 1), e(2, 74, 1)],
                150,
                vec![e(3, 0, 2)],
                40,
                Some(0),
            ),
            ("empty local history", vec![], 0, m.to_vec(), 900, Some(0)),
            (
                "trimmed master history (start moved up by retention)",
                vec![e(1, 0, 1)],
                300,
                vec![e(2, 500, 2)],
                900,
                Some(300),
            ),
        ];
        for (name, local, local_end, master, master_end, want) in cases {
            assert_eq!(
                consistent_point(&local, local_end, &master, master_end),
                want,
                "{name}"
            );
        }
    }
}
