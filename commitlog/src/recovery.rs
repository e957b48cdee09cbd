//! Start-up recovery: find the end of the valid data, cut a torn or corrupt tail, report.
//!
//! Scan bound: a clean-shutdown marker skips the scan; otherwise the scan starts at the
//! checkpoint (everything below it was durable when it was written), or earlier when a
//! segment file turned out shorter than it should be. Records are CRC-checked one by one;
//! the first bad one ends the log. The bytes from there on are zeroed (so a later scan
//! cannot mistake them for data) and later segments are removed.

use std::sync::Arc;

use crate::flush::{CHECKPOINT_FILE, CLEAN_SHUTDOWN_FILE};
use crate::format::{classify, FormatError, Meta, MetaKind, Slot};
use crate::segment::{parse_segment_name, segment_path, Segment};
use crate::shared::Writer;
use crate::sys::MapWriter;
use crate::{epochs, truncate, Config, Error, PhysicalOffset};

/// Why recovery dropped data.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// A record runs into unwritten bytes or past the segment: a write torn by a crash.
    TornRecord(FormatError),
    /// Bytes that do not decode as a valid record.
    Corrupt(FormatError),
    /// Non-zero bytes after the end of the data.
    TrailingGarbage,
    /// A segment file is missing, so the segments after it cannot be part of the log.
    MissingSegment,
    /// An interrupted [`crate::CommitLog::truncate_to`] was finished: the bytes from its
    /// point on were cut on purpose.
    Truncated,
}

/// The byte range recovery removed from the log, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// First byte removed.
    pub from: PhysicalOffset,
    /// End of the removed range (the old end of the data).
    pub to: PhysicalOffset,
    /// Why the range was not valid.
    pub reason: DropReason,
}

/// What [`crate::CommitLog::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The previous run closed cleanly and the scan was skipped.
    pub clean_shutdown: bool,
    /// End of the valid data; appends continue here.
    pub recovered_end: PhysicalOffset,
    /// Where the CRC scan started (equal to `recovered_end` when skipped).
    pub scanned_from: PhysicalOffset,
    /// Records checked by the scan.
    pub records_scanned: u64,
    /// What was cut from the end, if anything.
    pub dropped: Option<Dropped>,
    /// Valid records were found after the dropped point: mid-log corruption, not a torn
    /// tail. They are dropped too, since the log must stay contiguous.
    pub corruption_followed_by_valid_records: bool,
    /// Segment files removed because they lay beyond the recovered end.
    pub removed_segments: Vec<PhysicalOffset>,
}

pub(crate) struct Recovered {
    pub(crate) epochs: Vec<crate::format::EpochEntry>,
    pub(crate) segments: Vec<Arc<Segment>>,
    pub(crate) writer: Writer,
    pub(crate) end: u64,
    pub(crate) report: RecoveryReport,
}

struct Opened {
    seg: Arc<Segment>,
    writer: MapWriter,
    short: bool,
}

/// Where the scan stopped.
struct Stop {
    index: usize,
    pos: usize,
    error: Option<FormatError>,
}

fn read_meta(cfg: &Config, name: &str, kind: MetaKind) -> Option<u64> {
    let bytes = std::fs::read(cfg.dir.join(name)).ok()?;
    let meta = Meta::decode(&bytes).ok()?;
    (meta.kind == kind).then_some(meta.offset)
}

fn list_segments(cfg: &Config) -> Result<Vec<PhysicalOffset>, Error> {
    let rd = std::fs::read_dir(&cfg.dir).map_err(|e| Error::io(&cfg.dir, "list folder", e))?;
    let mut starts = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(&cfg.dir, "list folder", e))?;
        if let Some(start) = entry.file_name().to_str().and_then(parse_segment_name) {
            starts.push(start);
        }
    }
    starts.sort_unstable();
    Ok(starts)
}

pub(crate) fn recover(cfg: &Config) -> Result<Recovered, Error> {
    let cut = truncate::pending(cfg);
    truncate::remove_leftovers(cfg)?;
    let mut rec = recover_segments(cfg, cut)?;
    rec.epochs = epochs::load(cfg, rec.end, cut)?;
    truncate::finish_intent(cfg)?;
    Ok(rec)
}

fn recover_segments(cfg: &Config, cut: Option<u64>) -> Result<Recovered, Error> {
    let storage = cfg.storage.as_ref();
    // A pending truncation makes the clean end untrustworthy: the scan decides.
    let clean =
        read_meta(cfg, CLEAN_SHUTDOWN_FILE, MetaKind::CleanShutdown).filter(|_| cut.is_none());
    if clean.is_some() {
        // Removed first: if we crash from here on, the next start must scan.
        let path = cfg.dir.join(CLEAN_SHUTDOWN_FILE);
        storage
            .remove(&path)
            .map_err(|e| Error::io(&path, "remove clean-shutdown marker", e))?;
        storage
            .sync_dir(&cfg.dir)
            .map_err(|e| Error::io(&cfg.dir, "sync folder", e))?;
    }
    let checkpoint = read_meta(cfg, CHECKPOINT_FILE, MetaKind::Checkpoint);
    let starts = list_segments(cfg)?;
    let size = cfg.segment_size_bytes;
    let mut report = RecoveryReport {
        clean_shutdown: false,
        recovered_end: PhysicalOffset::new(0),
        scanned_from: PhysicalOffset::new(0),
        records_scanned: 0,
        dropped: None,
        corruption_followed_by_valid_records: false,
        removed_segments: Vec::new(),
    };
    let Some(first) = starts.first().copied() else {
        let (seg, map) = Segment::create(storage, &cfg.dir, PhysicalOffset::new(0), size)?;
        let writer = Writer {
            seg: Arc::clone(&seg),
            map,
            pos: 0,
            spares: Default::default(),
        };
        return Ok(Recovered {
            epochs: Vec::new(),
            segments: vec![seg],
            writer,
            end: 0,
            report,
        });
    };
    // Keep the contiguous run; anything after a gap cannot be reached.
    let run = starts
        .windows(2)
        .position(|w| w[1].get() != w[0].get() + size)
        .map_or(starts.len(), |i| i + 1);
    let mut opened = Vec::with_capacity(run);
    for &start in &starts[..run] {
        let (seg, writer, short) =
            Segment::open(storage, segment_path(&cfg.dir, start), start, size)?;
        opened.push(Opened { seg, writer, short });
    }
    let orphans = &starts[run..];
    let last_end = opened.last().map_or(first.get(), |o| o.seg.end());
    let clean_end = clean.filter(|&e| clean_end_plausible(&opened, e));
    let mut stop = match clean_end {
        Some(end) => {
            report.clean_shutdown = true;
            stop_at(&opened, end)
        }
        None => {
            let mut from = scan_start(&opened, checkpoint, first.get(), last_end);
            if let Some(c) = cut {
                from = from.min(c).max(first.get());
            }
            report.scanned_from = PhysicalOffset::new(from);
            scan(&opened, from, &mut report)
        }
    };
    let cut_here = cut.filter(|&c| opened[stop.index].seg.start.get() + stop.pos as u64 > c);
    if let Some(c) = cut_here {
        stop = stop_at(&opened, c);
    }
    let mut rec = finish(cfg, opened, orphans, stop, report)?;
    if cut_here.is_some() {
        if let Some(d) = rec.report.dropped.as_mut() {
            d.reason = DropReason::Truncated;
        }
        rec.report.corruption_followed_by_valid_records = false;
    }
    Ok(rec)
}

/// A clean-shutdown end is trusted only if every file is whole and nothing follows it.
fn clean_end_plausible(opened: &[Opened], end: u64) -> bool {
    if opened.iter().any(|o| o.short) {
        return false;
    }
    let Some(o) = opened
        .iter()
        .find(|o| o.seg.start.get() <= end && end <= o.seg.end())
    else {
        return false;
    };
    let pos = (end - o.seg.start.get()) as usize;
    let len = o.seg.size() as usize;
    matches!(
        o.writer.unpublished(pos, len).map(classify),
        Some(Ok(Slot::Unwritten | Slot::EndOfSegment))
    )
}

fn scan_start(opened: &[Opened], checkpoint: Option<u64>, first: u64, last_end: u64) -> u64 {
    let mut from = checkpoint
        .filter(|&c| c >= first && c <= last_end)
        .unwrap_or(first);
    // A short file lost bytes we thought durable: rescan it from its start.
    if let Some(o) = opened.iter().find(|o| o.short) {
        from = from.min(o.seg.start.get());
    }
    from
}

/// The stop position for a trusted end offset.
fn stop_at(opened: &[Opened], end: u64) -> Stop {
    let index = opened
        .iter()
        .position(|o| end <= o.seg.end())
        .unwrap_or(opened.len().saturating_sub(1));
    let pos = (end.saturating_sub(opened[index].seg.start.get()) as usize)
        .min(opened[index].seg.size() as usize);
    Stop {
        index,
        pos,
        error: None,
    }
}

/// CRC-checks records from `from` until the first slot that is not a valid record.
fn scan(opened: &[Opened], from: u64, report: &mut RecoveryReport) -> Stop {
    let mut index = opened
        .iter()
        .position(|o| from < o.seg.end())
        .unwrap_or(opened.len() - 1);
    let mut pos = (from.saturating_sub(opened[index].seg.start.get()) as usize)
        .min(opened[index].seg.size() as usize);
    loop {
        let o = &opened[index];
        let len = o.seg.size() as usize;
        let buf = o.writer.unpublished(pos, len).unwrap_or(&[]);
        let offset = o.seg.start.get() + pos as u64;
        match classify(buf) {
            Ok(Slot::Record(v)) if v.physical_offset() == offset => {
                report.records_scanned += 1;
                pos += v.total_len() as usize;
            }
            Ok(Slot::Record(v)) => {
                let reason = FormatError::BadLength {
                    total_len: v.total_len(),
                    reason: "record stored at another offset",
                };
                return Stop {
                    index,
                    pos,
                    error: Some(reason),
                };
            }
            Ok(Slot::EndOfSegment) if index + 1 < opened.len() => {
                index += 1;
                pos = 0;
            }
            Ok(Slot::EndOfSegment) => {
                return Stop {
                    index,
                    pos: len,
                    error: None,
                }
            }
            Ok(Slot::Unwritten) => {
                return Stop {
                    index,
                    pos,
                    error: None,
                }
            }
            Err(e) => {
                return Stop {
                    index,
                    pos,
                    error: Some(e),
                }
            }
        }
    }
}

/// Index of the last non-zero byte. Works in 64-byte blocks from the end so the common
/// case (a long zero tail) runs at memory speed.
fn last_nonzero(buf: &[u8]) -> Option<usize> {
    let mut end = buf.len();
    while end > 0 {
        let start = end.saturating_sub(64);
        let block = &buf[start..end];
        if block.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            return block.iter().rposition(|&b| b != 0).map(|i| start + i);
        }
        end = start;
    }
    None
}

/// Whether a valid record (stored at its own offset) starts anywhere in `buf`.
fn valid_record_in(buf: &[u8], base: u64) -> bool {
    let magic = crate::format::RECORD_MAGIC.to_le_bytes();
    let at = crate::format::MAGIC_AT;
    buf.windows(4).enumerate().skip(at).any(|(i, w)| {
        w == magic
            && matches!(classify(&buf[i - at..]),
                Ok(Slot::Record(v)) if v.physical_offset() == base + (i - at) as u64)
    })
}

/// First bytes of a segment file that is not part of the log.
fn file_head(path: &std::path::Path) -> Vec<u8> {
    use std::io::Read;
    let mut head = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(1 << 16).read_to_end(&mut head);
    }
    head
}

/// What lies beyond the stop: (end of non-zero data in the stop segment, end of data in
/// later segments, whether any valid record follows, whether later segments hold data).
struct After {
    garbage_pos: usize,
    later_end: Option<u64>,
    valid_after: bool,
}

fn inspect_after(
    cfg: &Config,
    opened: &[Opened],
    orphans: &[PhysicalOffset],
    stop: &Stop,
    clean: bool,
) -> After {
    let o = &opened[stop.index];
    // After a clean shutdown the tail is known to be empty; skip reading it.
    let len = if clean {
        stop.pos
    } else {
        o.seg.size() as usize
    };
    let rest = o.writer.unpublished(stop.pos, len).unwrap_or(&[]);
    let garbage_pos = last_nonzero(rest).map_or(stop.pos, |i| stop.pos + i + 1);
    let base = o.seg.start.get() + stop.pos as u64;
    let mut valid_after =
        garbage_pos > stop.pos + 1 && valid_record_in(&rest[1..garbage_pos - stop.pos], base + 1);
    let mut later_end = None;
    let later = opened[stop.index + 1..].iter().map(|o| {
        (
            o.seg.start,
            o.seg.end(),
            o.writer.unpublished(0, 64).unwrap_or(&[]).to_vec(),
        )
    });
    let orphan_heads = orphans.iter().map(|&s| {
        (
            s,
            s.get() + cfg.segment_size_bytes,
            file_head(&segment_path(&cfg.dir, s)),
        )
    });
    for (start, end, head) in later.chain(orphan_heads) {
        if head.iter().take(8).any(|&b| b != 0) {
            later_end = Some(end);
            valid_after |= matches!(classify(&head), Ok(Slot::Record(v)) if v.physical_offset() == start.get());
        }
    }
    After {
        garbage_pos,
        later_end,
        valid_after,
    }
}

fn drop_reason(stop: &Stop, after: &After, orphans: &[PhysicalOffset]) -> DropReason {
    match &stop.error {
        Some(e @ FormatError::Truncated { .. }) => DropReason::TornRecord(e.clone()),
        Some(e) => DropReason::Corrupt(e.clone()),
        None if !orphans.is_empty() && after.later_end.is_some() => DropReason::MissingSegment,
        None => DropReason::TrailingGarbage,
    }
}

fn finish(
    cfg: &Config,
    mut opened: Vec<Opened>,
    orphans: &[PhysicalOffset],
    stop: Stop,
    mut report: RecoveryReport,
) -> Result<Recovered, Error> {
    let storage = cfg.storage.as_ref();
    let after = inspect_after(cfg, &opened, orphans, &stop, report.clean_shutdown);
    let stop_start = opened[stop.index].seg.start.get();
    let end = stop_start + stop.pos as u64;
    if stop.error.is_some() || after.garbage_pos > stop.pos || after.later_end.is_some() {
        let to = after
            .later_end
            .unwrap_or(0)
            .max(stop_start + after.garbage_pos as u64)
            .max(end);
        report.dropped = Some(Dropped {
            from: PhysicalOffset::new(end),
            to: PhysicalOffset::new(to),
            reason: drop_reason(&stop, &after, orphans),
        });
        report.corruption_followed_by_valid_records = after.valid_after;
    }
    // Zero the dropped bytes durably so no later scan can take them for data.
    let o = &mut opened[stop.index];
    let map = Arc::clone(o.writer.mapping());
    if let Some(bytes) = o.writer.unpublished_mut(stop.pos, after.garbage_pos) {
        bytes.fill(0);
        storage
            .sync_mapped(&o.seg.path, stop.pos as u64, bytes, &mut || {
                map.sync(stop.pos, after.garbage_pos)
            })
            .map_err(|e| Error::io(&o.seg.path, "zero dropped tail", e))?;
    }
    let removed: Vec<PhysicalOffset> = opened
        .drain(stop.index + 1..)
        .map(|o| o.seg.start)
        .chain(orphans.iter().copied())
        .collect();
    for &start in &removed {
        let path = segment_path(&cfg.dir, start);
        storage
            .remove(&path)
            .map_err(|e| Error::io(&path, "remove segment beyond the end", e))?;
    }
    if !removed.is_empty() {
        storage
            .sync_dir(&cfg.dir)
            .map_err(|e| Error::io(&cfg.dir, "sync folder", e))?;
    }
    report.removed_segments = removed;
    report.recovered_end = PhysicalOffset::new(end);
    if report.clean_shutdown {
        report.scanned_from = report.recovered_end;
    }
    build(cfg, opened, stop.pos, end, report)
}

/// Publishes the recovered data, makes the scanned part durable and resets the checkpoint.
fn build(
    cfg: &Config,
    opened: Vec<Opened>,
    pos: usize,
    end: u64,
    report: RecoveryReport,
) -> Result<Recovered, Error> {
    let storage = cfg.storage.as_ref();
    let count = opened.len();
    let mut segments = Vec::with_capacity(count);
    let mut active = None;
    for (i, mut o) in opened.into_iter().enumerate() {
        let publish_to = if i + 1 == count {
            pos
        } else {
            o.seg.size() as usize
        };
        o.writer.publish(publish_to);
        // The scanned records may so far live only in the page cache of a killed process.
        let from = report
            .scanned_from
            .get()
            .max(o.seg.start.get())
            .min(o.seg.end());
        let sync_from = (from - o.seg.start.get()) as usize;
        if !report.clean_shutdown && sync_from < publish_to {
            let data = o.seg.map.bytes(sync_from, publish_to).unwrap_or(&[]);
            let map = Arc::clone(&o.seg.map);
            storage
                .sync_mapped(&o.seg.path, sync_from as u64, data, &mut || {
                    map.sync(sync_from, publish_to)
                })
                .map_err(|e| Error::io(&o.seg.path, "sync recovered data", e))?;
        }
        segments.push(Arc::clone(&o.seg));
        if i + 1 == count {
            active = Some(o);
        }
    }
    let Some(active) = active else {
        return Err(Error::InvalidConfig {
            reason: "recovery found no segment".to_owned(),
        });
    };
    let meta = Meta {
        kind: MetaKind::Checkpoint,
        offset: end,
    };
    let path = cfg.dir.join(CHECKPOINT_FILE);
    storage
        .write_atomic(&path, &meta.encode())
        .map_err(|e| Error::io(&path, "write checkpoint", e))?;
    let writer = Writer {
        seg: active.seg,
        map: active.writer,
        pos,
        spares: Default::default(),
    };
    Ok(Recovered {
        epochs: Vec::new(),
        segments,
        writer,
        end,
        report,
    })
}
