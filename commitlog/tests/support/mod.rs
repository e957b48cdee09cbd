//! Helpers shared by the commit-log integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use commitlog::{CommitLog, Config, FlushPolicy, PhysicalOffset, RecordIn, RecoveryReport};

pub const SMALL_SEGMENT: u64 = 4096;

/// A test config: small segments, no background preallocation unless asked.
pub fn config(dir: &Path) -> Config {
    let mut cfg = Config::new(dir.join("commitlog"));
    cfg.segment_size_bytes = SMALL_SEGMENT;
    cfg.flush = FlushPolicy::Async { interval_ms: 50 };
    cfg
}

pub fn log_dir(dir: &Path) -> PathBuf {
    dir.join("commitlog")
}

/// A record whose content is derived from `i` so reads can be checked.
pub fn body(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

pub fn rec<'a>(i: u64, body: &'a [u8]) -> RecordIn<'a> {
    RecordIn {
        topic: "t",
        queue_id: (i % 4) as u32,
        queue_offset: i,
        tag_hash: i * 7,
        born_timestamp_ms: 1000 + i,
        store_timestamp_ms: 2000 + i,
        reconsume_times: 0,
        properties: b"p",
        body,
    }
}

pub fn open(cfg: Config) -> (CommitLog, RecoveryReport) {
    CommitLog::open(cfg).expect("open")
}

/// (offset, queue_offset, body) of every record from the minimum offset.
pub fn contents(log: &CommitLog) -> Vec<(PhysicalOffset, u64, Vec<u8>)> {
    log.iter_from(log.min_offset())
        .map(|r| {
            let r = r.expect("record");
            let v = r.view();
            (r.offset(), v.queue_offset(), v.body().to_vec())
        })
        .collect()
}

pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().len() == 20)
        .collect();
    v.sort();
    v
}
