//! Helpers shared by every broker test binary. Here: a deterministic RNG, numbers from the
//! environment, store set-up and read-back for the damage tests, and the data-dir files.
//! Each theme has its own part: `store` (a small store and file damage), `server` (an
//! in-process broker and a raw frame client), `retry` (a store with a retry service) and
//! `process` (the real `broker` binary as a child process).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod process;
pub mod retry;
pub mod server;
pub mod store;

use std::path::{Path, PathBuf};

use broker::store::{GetRequest, GetStatus, MessageStore, QueueOffset, StoreConfig, TagFilter};

/// xorshift64*: deterministic per seed, so a failing case can be replayed by its seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// A number from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Small segments so damage lands in many files and segment boundaries are crossed.
pub fn small_store_config(data: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(data);
    c.commitlog.segment_size_bytes = 16 << 10;
    // 12 entries per block and 255 blocks per arena: tests cross block and arena limits.
    c.consume_queue.block_size_bytes = 256;
    c.consume_queue.arena_size_bytes = 64 << 10;
    c.flush_interval_ms = 20;
    c
}

/// Every message of a queue from offset 0, as (queue offset, body), checking each one
/// is the record the queue claims (topic, queue, offset) and passes its CRC.
pub fn read_queue(store: &MessageStore, topic: &str, queue: u32) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = QueueOffset::new(0);
    loop {
        let r = store
            .get_messages(GetRequest {
                topic,
                queue_id: queue,
                from: next,
                max_count: 17,
                max_bytes: usize::MAX,
                filter: &TagFilter::All,
            })
            .unwrap_or_else(|e| panic!("{topic}/{queue} at {next}: {e}"));
        match r.status {
            GetStatus::Found => {
                for m in &r.messages {
                    let v = commitlog::format::RecordView::decode(m.bytes())
                        .unwrap_or_else(|e| panic!("served record fails decode/CRC: {e}"));
                    assert_eq!((v.topic(), v.queue_id()), (topic, queue));
                    out.push((v.queue_offset(), v.body().to_vec()));
                }
                next = r.next_offset;
            }
            GetStatus::NoNewMessage => return out,
            other => panic!("{topic}/{queue}: unexpected status {other:?} at {next}"),
        }
    }
}

/// Files directly under `dir` sorted by name.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Commit-log segment files (20-digit names) of a data directory.
pub fn log_segments(data: &Path) -> Vec<PathBuf> {
    files_in(&data.join("commitlog"))
        .into_iter()
        .filter(|p| p.file_name().and_then(|n| n.to_str()).map(str::len) == Some(20))
        .collect()
}

/// Consume-queue segment files of one queue.
/// Files of the consume-queue store: arenas and journal generations.
pub fn queue_store_files(data: &Path) -> Vec<PathBuf> {
    let mut v = files_in(&data.join("queues").join("arena"));
    v.extend(files_in(&data.join("queues").join("journal")));
    v
}
