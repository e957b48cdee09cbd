//! Helpers shared by the message-store integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use broker::store::{
    GetRequest, GetStatus, MessageStore, PutMessage, QueueOffset, StoreConfig, TagFilter,
};
use protocol::properties::{PropertiesBuilder, TAGS};

/// Small segments, blocks and arenas so tests cross commit-log and consume-queue boundaries.
pub fn small_config(data: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(data);
    c.commitlog.segment_size_bytes = 64 << 10;
    // 12 entries per block and 255 blocks per arena: tests cross block and arena limits.
    c.consume_queue.block_size_bytes = 256;
    c.consume_queue.arena_size_bytes = 64 << 10;
    c.flush_interval_ms = 20;
    c
}

pub fn open(data: &Path) -> MessageStore {
    MessageStore::open(small_config(data)).unwrap()
}

pub fn tagged(tag: &str) -> Vec<u8> {
    PropertiesBuilder::new().with(TAGS, tag).build()
}

pub fn msg<'a>(props: &'a [u8], body: &'a [u8]) -> PutMessage<'a> {
    PutMessage {
        properties: props,
        body,
        born_timestamp_ms: 1,
        reconsume_times: 0,
    }
}

/// Every body of a queue from `from` on, waiting (bounded) for dispatch of `expect` bodies.
pub fn read_all(store: &MessageStore, topic: &str, queue: u32, expect: u64) -> Vec<Vec<u8>> {
    if expect > 0 {
        assert!(
            store.wait_for_message(
                topic,
                queue,
                QueueOffset::new(expect - 1),
                std::time::Duration::from_secs(3)
            ),
            "{topic}/{queue} never reached {expect} messages"
        );
    }
    let mut out = Vec::new();
    let mut next = QueueOffset::new(0);
    loop {
        let r = store
            .get_messages(GetRequest {
                topic,
                queue_id: queue,
                from: next,
                max_count: 13,
                max_bytes: usize::MAX,
                filter: &TagFilter::All,
            })
            .unwrap();
        match r.status {
            GetStatus::Found => {
                for (i, m) in r.messages.iter().enumerate() {
                    let v = m.view();
                    assert_eq!(v.topic(), topic);
                    assert_eq!(v.queue_id(), queue);
                    assert_eq!(v.queue_offset(), next.get() + i as u64);
                    out.push(v.body().to_vec());
                }
                next = r.next_offset;
            }
            GetStatus::NoNewMessage => return out,
            other => panic!("unexpected status {other:?} at {next}"),
        }
    }
}

/// The commit-log folder of a data directory.
pub fn commitlog_dir(data: &Path) -> PathBuf {
    data.join("commitlog")
}

/// Segment file holding physical offset `at` and the position inside it.
pub fn segment_holding(data: &Path, at: u64) -> (PathBuf, u64) {
    let mut starts: Vec<u64> = std::fs::read_dir(commitlog_dir(data))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().ok()?;
            (name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()))
                .then(|| name.parse().ok())?
        })
        .collect();
    starts.sort_unstable();
    let start = starts.into_iter().rev().find(|s| *s <= at).unwrap();
    (commitlog_dir(data).join(format!("{start:020}")), at - start)
}

/// Flips the byte at physical offset `at` of the commit log.
pub fn corrupt_byte(data: &Path, at: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let (path, pos) = segment_holding(data, at);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    f.seek(SeekFrom::Start(pos)).unwrap();
    let mut b = [0u8; 1];
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(pos)).unwrap();
    f.write_all(&[b[0] ^ 0xA5]).unwrap();
}

/// Zeroes the commit log from physical offset `at` to the end of its segment (a torn tail).
pub fn zero_tail(data: &Path, at: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let (path, pos) = segment_holding(data, at);
    let len = std::fs::metadata(&path).unwrap().len();
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(pos)).unwrap();
    f.write_all(&vec![0u8; (len - pos) as usize]).unwrap();
}
