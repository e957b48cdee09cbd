//! On-disk format of the consume-queue store (format version 2). Pure: no I/O.
//!
//! ```text
//! <data>/queues/arena/0000000000.cqa    arenas: mapped, cut into blocks, allocated in steps
//! <data>/queues/journal/<gen:020>.cqj   append-only journal of queue ends and block lists
//! <data>/queues/snapshot                full state at the start of a journal generation
//! ```
//! All integers are little endian.
//!
//! **Arena header** (block 0 of every arena, one block long; the rest is zero):
//!
//! | off | size | field                                             |
//! |----:|-----:|---------------------------------------------------|
//! | 0   | 4    | magic `FMQA`                                      |
//! | 4   | 2    | version = 2                                       |
//! | 6   | 2    | reserved, 0                                       |
//! | 8   | 4    | `block_size_bytes` (power of two, 256 B – 64 KiB) |
//! | 12  | 4    | `arena_no`                                        |
//! | 16  | 4    | `blocks` per arena, header block included         |
//! | 20  | 4    | CRC32 of bytes 0..20                              |
//!
//! **Data block** (`block_size_bytes` long, `k = (block_size - 16) / 20` entries):
//!
//! | off | size | field                                                     |
//! |----:|-----:|-----------------------------------------------------------|
//! | 0   | 4    | `queue`: queue handle (dense u32 from 1, assigned by the store) |
//! | 4   | 4    | `epoch`: the queue's incarnation, bumped by reset         |
//! | 8   | 8    | `first_offset`: logical offset of slot 0, a multiple of k |
//! | 16  | 20·k | entries (layout below)                                    |
//!
//! A block address is a u32: `arena_no × blocks + index`. The header proves that a block
//! belongs to the queue and incarnation that reads it, so a reused block is never served
//! as an old one. Entry `n` of a queue is slot `n % k` of its block `n / k`.
//!
//! **Entry** (20 bytes, unchanged since version 1):
//!
//! | off | size | field             | meaning                                    |
//! |----:|-----:|-------------------|--------------------------------------------|
//! | 0   | 8    | `physical_offset` | commit-log offset of the record            |
//! | 8   | 4    | `size`            | encoded record size in bytes, always > 0   |
//! | 12  | 8    | `tag_hash`        | 64-bit hash of the record's tag, 0 = none  |
//!
//! **Journal frame**:
//!
//! | off | size  | field                                   |
//! |----:|------:|-----------------------------------------|
//! | 0   | 4     | `len`: bytes of kind + payload          |
//! | 4   | 4     | CRC32 of bytes `8 .. 8 + len`           |
//! | 8   | 1     | `kind` (see [`Record`])                 |
//! | 9   | len-1 | payload                                 |
//!
//! | kind | record        | payload                                                      |
//! |-----:|---------------|--------------------------------------------------------------|
//! | 1    | QueueCreate   | handle u32, epoch u32, queue_id u32, topic_len u8, topic     |
//! | 2    | BlockAlloc    | handle u32, block_index u64, addr u32                        |
//! | 3    | QueueTrim     | handle u32, min u64, first_kept_block_index u64              |
//! | 4    | QueueTruncate | handle u32, max u64, last_phys_end u64                       |
//! | 5    | QueueReset    | handle u32, epoch u32, offset u64                            |
//! | 6    | QueueDrop     | handle u32                                                   |
//! | 7    | ArenaAdded    | arena_no u32                                                 |
//! | 8    | Marks         | n u32, n × (handle u32, max u64, last_phys_end u64)          |
//! | 9    | Commit        | seq u64, dispatched u64                                      |
//!
//! Batches end with a Commit; nothing after the last valid Commit applies. A bad frame
//! followed only by zeros is a torn tail and ends the journal; a bad frame followed by a
//! valid Commit is corruption.
//!
//! **Snapshot**: header (magic `FMQS`, version u16, reserved u16, first journal generation
//! to replay u64, seq u64, dispatched u64, block_size u32, arena_count u32, queue_count u32,
//! CRC32 of the body u32), then per queue: handle u32, epoch u32, queue_id u32, topic_len
//! u8, topic, min u64, max u64, last_phys_end u64, first_block_index u64, n u32, n × addr u32.
//! Free blocks are not stored: they are the blocks no queue references.

/// Bytes per entry.
pub const ENTRY_SIZE: usize = 20;
/// Offset of the physical-offset field in an entry.
pub const PHYSICAL_OFFSET_AT: usize = 0;
/// Offset of the size field in an entry.
pub const SIZE_AT: usize = 8;
/// Offset of the tag-hash field in an entry.
pub const TAG_HASH_AT: usize = 12;
/// Format version of arenas, journal and snapshot.
pub const VERSION: u16 = 2;

/// Arena magic.
pub const ARENA_MAGIC: [u8; 4] = *b"FMQA";
/// Arena header field offsets.
pub const ARENA_VERSION_AT: usize = 4;
/// Offset of the block size in the arena header.
pub const ARENA_BLOCK_SIZE_AT: usize = 8;
/// Offset of the arena number in the arena header.
pub const ARENA_NO_AT: usize = 12;
/// Offset of the block count in the arena header.
pub const ARENA_BLOCKS_AT: usize = 16;
/// Offset of the header CRC.
pub const ARENA_CRC_AT: usize = 20;
/// Bytes of the arena header that carry data.
pub const ARENA_HEADER_LEN: usize = 24;

/// Block header field offsets.
pub const BLOCK_QUEUE_AT: usize = 0;
/// Offset of the epoch in a block header.
pub const BLOCK_EPOCH_AT: usize = 4;
/// Offset of the first logical offset in a block header.
pub const BLOCK_FIRST_OFFSET_AT: usize = 8;
/// Bytes of a block header; entries follow.
pub const BLOCK_HEADER_LEN: usize = 16;

/// Smallest and largest block size accepted.
pub const MIN_BLOCK_SIZE: u32 = 256;
/// Largest block size accepted.
pub const MAX_BLOCK_SIZE: u32 = 64 << 10;

/// Journal frame header length (len + crc).
pub const FRAME_HEADER_LEN: usize = 8;
/// Snapshot magic.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"FMQS";
/// Snapshot header length.
pub const SNAPSHOT_HEADER_LEN: usize = 48;
/// Suffix of journal files.
pub const JOURNAL_SUFFIX: &str = ".cqj";
/// Suffix of arena files.
pub const ARENA_SUFFIX: &str = ".cqa";

const _: () = assert!(TAG_HASH_AT + 8 == ENTRY_SIZE);
const _: () = assert!(SIZE_AT + 4 == TAG_HASH_AT);
const _: () = assert!(PHYSICAL_OFFSET_AT + 8 == SIZE_AT);
const _: () = assert!(ARENA_CRC_AT + 4 == ARENA_HEADER_LEN);
const _: () = assert!(BLOCK_FIRST_OFFSET_AT + 8 == BLOCK_HEADER_LEN);
const _: () = assert!((MIN_BLOCK_SIZE as usize) >= ARENA_HEADER_LEN);
const _: () = assert!((MIN_BLOCK_SIZE as usize - BLOCK_HEADER_LEN) / ENTRY_SIZE >= 8);

/// Entries per block of `block_size` bytes (204 at 4 KiB).
pub const fn entries_per_block(block_size: u32) -> u64 {
    (block_size as u64 - BLOCK_HEADER_LEN as u64) / ENTRY_SIZE as u64
}

/// One consume-queue entry: where a record lives in the commit log and its tag hash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Entry {
    /// Commit-log offset of the record.
    pub physical_offset: u64,
    /// Encoded record size in bytes.
    pub size: u32,
    /// Hash of the record's tag; 0 when it has none.
    pub tag_hash: u64,
}

impl Entry {
    /// Encodes to the on-disk layout.
    pub fn encode(&self) -> [u8; ENTRY_SIZE] {
        let mut out = [0u8; ENTRY_SIZE];
        out[PHYSICAL_OFFSET_AT..SIZE_AT].copy_from_slice(&self.physical_offset.to_le_bytes());
        out[SIZE_AT..TAG_HASH_AT].copy_from_slice(&self.size.to_le_bytes());
        out[TAG_HASH_AT..ENTRY_SIZE].copy_from_slice(&self.tag_hash.to_le_bytes());
        out
    }

    /// Decodes the on-disk layout; every bit pattern is an entry (records check them).
    pub fn decode(bytes: &[u8; ENTRY_SIZE]) -> Self {
        let mut r = Reader::new(bytes);
        Self {
            physical_offset: r.u64().unwrap_or(0),
            size: r.u32().unwrap_or(0),
            tag_hash: r.u64().unwrap_or(0),
        }
    }

    /// End of the record in the commit log (exclusive).
    pub fn physical_end(&self) -> u64 {
        self.physical_offset.saturating_add(u64::from(self.size))
    }
}

/// The header of an arena file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArenaHeader {
    /// Bytes per block.
    pub block_size: u32,
    /// Number of this arena (its file name).
    pub arena_no: u32,
    /// Blocks in the arena, the header block included.
    pub blocks: u32,
}

impl ArenaHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; ARENA_HEADER_LEN] {
        let mut out = [0u8; ARENA_HEADER_LEN];
        out[..4].copy_from_slice(&ARENA_MAGIC);
        out[ARENA_VERSION_AT..ARENA_VERSION_AT + 2].copy_from_slice(&VERSION.to_le_bytes());
        out[ARENA_BLOCK_SIZE_AT..ARENA_NO_AT].copy_from_slice(&self.block_size.to_le_bytes());
        out[ARENA_NO_AT..ARENA_BLOCKS_AT].copy_from_slice(&self.arena_no.to_le_bytes());
        out[ARENA_BLOCKS_AT..ARENA_CRC_AT].copy_from_slice(&self.blocks.to_le_bytes());
        let crc = crc32fast::hash(&out[..ARENA_CRC_AT]);
        out[ARENA_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks a header.
    ///
    /// # Errors
    /// A reason when the magic, version or CRC is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let b = bytes.get(..ARENA_HEADER_LEN).ok_or("short header")?;
        if b[..4] != ARENA_MAGIC {
            return Err("bad magic");
        }
        let mut r = Reader::new(&b[ARENA_CRC_AT..]);
        if r.u32() != Some(crc32fast::hash(&b[..ARENA_CRC_AT])) {
            return Err("header checksum mismatch");
        }
        let mut r = Reader::new(&b[ARENA_VERSION_AT..]);
        if r.u16() != Some(VERSION) {
            return Err("unsupported version");
        }
        let mut r = Reader::new(&b[ARENA_BLOCK_SIZE_AT..]);
        Ok(Self {
            block_size: r.u32().ok_or("short header")?,
            arena_no: r.u32().ok_or("short header")?,
            blocks: r.u32().ok_or("short header")?,
        })
    }
}

/// The header of a data block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    /// Queue handle owning the block.
    pub queue: u32,
    /// Incarnation of the queue.
    pub epoch: u32,
    /// Logical offset of slot 0.
    pub first_offset: u64,
}

impl BlockHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; BLOCK_HEADER_LEN] {
        let mut out = [0u8; BLOCK_HEADER_LEN];
        out[BLOCK_QUEUE_AT..BLOCK_EPOCH_AT].copy_from_slice(&self.queue.to_le_bytes());
        out[BLOCK_EPOCH_AT..BLOCK_FIRST_OFFSET_AT].copy_from_slice(&self.epoch.to_le_bytes());
        out[BLOCK_FIRST_OFFSET_AT..].copy_from_slice(&self.first_offset.to_le_bytes());
        out
    }

    /// Decodes a header (any bit pattern).
    pub fn decode(bytes: &[u8; BLOCK_HEADER_LEN]) -> Self {
        let mut r = Reader::new(bytes);
        Self {
            queue: r.u32().unwrap_or(0),
            epoch: r.u32().unwrap_or(0),
            first_offset: r.u64().unwrap_or(0),
        }
    }
}

/// One journal record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A queue came into being.
    QueueCreate {
        /// The store-wide handle given to the queue.
        handle: u32,
        /// Its epoch (bumped by every reset).
        epoch: u32,
        /// The queue id within the topic.
        queue_id: u32,
        /// The topic.
        topic: String,
    },
    /// Block `block_index` of a queue lives at `addr`.
    BlockAlloc {
        /// The queue.
        handle: u32,
        /// Index of the block within the queue.
        block_index: u64,
        /// Its address: arena number and block within the arena.
        addr: u32,
    },
    /// Retention: entries below `min` are gone, blocks below `first_kept_block_index` freed.
    QueueTrim {
        /// The queue.
        handle: u32,
        /// Its new minimum offset.
        min: u64,
        /// First block index still held.
        first_kept_block_index: u64,
    },
    /// Entries at and after `max` are gone.
    QueueTruncate {
        /// The queue.
        handle: u32,
        /// Its new maximum offset.
        max: u64,
        /// Commit-log end of the record of entry `max - 1` (0 when empty).
        last_phys_end: u64,
    },
    /// The queue restarts empty at `offset` with a new epoch.
    QueueReset {
        /// The queue.
        handle: u32,
        /// Its new epoch.
        epoch: u32,
        /// Where it restarts (minimum and maximum).
        offset: u64,
    },
    /// The queue is deleted.
    QueueDrop {
        /// The queue.
        handle: u32,
    },
    /// A new arena file exists.
    ArenaAdded {
        /// The new arena's number (its file name).
        arena_no: u32,
    },
    /// Queue ends: every entry below `max` was durable when this was written.
    Marks(Vec<Mark>),
    /// End of a batch; the store dispatched every record below `dispatched`.
    Commit {
        /// Sequence number of the batch.
        seq: u64,
        /// The store's dispatched commit-log offset.
        dispatched: u64,
    },
}

/// A queue end in a [`Record::Marks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    /// Queue handle.
    pub handle: u32,
    /// One past the last durable entry.
    pub max: u64,
    /// Commit-log end of the record of entry `max - 1` (0 when empty).
    pub last_phys_end: u64,
}

/// Tag of a record kind, decoded with `TryFrom`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// [`Record::QueueCreate`].
    QueueCreate = 1,
    /// [`Record::BlockAlloc`].
    BlockAlloc = 2,
    /// [`Record::QueueTrim`].
    QueueTrim = 3,
    /// [`Record::QueueTruncate`].
    QueueTruncate = 4,
    /// [`Record::QueueReset`].
    QueueReset = 5,
    /// [`Record::QueueDrop`].
    QueueDrop = 6,
    /// [`Record::ArenaAdded`].
    ArenaAdded = 7,
    /// [`Record::Marks`].
    Marks = 8,
    /// [`Record::Commit`].
    Commit = 9,
}

impl TryFrom<u8> for Kind {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        Ok(match v {
            1 => Self::QueueCreate,
            2 => Self::BlockAlloc,
            3 => Self::QueueTrim,
            4 => Self::QueueTruncate,
            5 => Self::QueueReset,
            6 => Self::QueueDrop,
            7 => Self::ArenaAdded,
            8 => Self::Marks,
            9 => Self::Commit,
            other => return Err(other),
        })
    }
}

/// Longest topic name a record can carry.
pub const MAX_TOPIC_LEN: usize = u8::MAX as usize;

impl Record {
    /// Appends this record as one frame to `out`.
    pub fn encode_frame(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
        match self {
            Self::QueueCreate {
                handle,
                epoch,
                queue_id,
                topic,
            } => {
                out.push(Kind::QueueCreate as u8);
                put32(out, *handle);
                put32(out, *epoch);
                put32(out, *queue_id);
                put_topic(out, topic);
            }
            Self::BlockAlloc {
                handle,
                block_index,
                addr,
            } => {
                out.push(Kind::BlockAlloc as u8);
                put32(out, *handle);
                put64(out, *block_index);
                put32(out, *addr);
            }
            Self::QueueTrim {
                handle,
                min,
                first_kept_block_index,
            } => {
                out.push(Kind::QueueTrim as u8);
                put32(out, *handle);
                put64(out, *min);
                put64(out, *first_kept_block_index);
            }
            Self::QueueTruncate {
                handle,
                max,
                last_phys_end,
            } => {
                out.push(Kind::QueueTruncate as u8);
                put32(out, *handle);
                put64(out, *max);
                put64(out, *last_phys_end);
            }
            Self::QueueReset {
                handle,
                epoch,
                offset,
            } => {
                out.push(Kind::QueueReset as u8);
                put32(out, *handle);
                put32(out, *epoch);
                put64(out, *offset);
            }
            Self::QueueDrop { handle } => {
                out.push(Kind::QueueDrop as u8);
                put32(out, *handle);
            }
            Self::ArenaAdded { arena_no } => {
                out.push(Kind::ArenaAdded as u8);
                put32(out, *arena_no);
            }
            Self::Marks(marks) => {
                out.push(Kind::Marks as u8);
                put32(out, u32::try_from(marks.len()).unwrap_or(u32::MAX));
                for m in marks {
                    put32(out, m.handle);
                    put64(out, m.max);
                    put64(out, m.last_phys_end);
                }
            }
            Self::Commit { seq, dispatched } => {
                out.push(Kind::Commit as u8);
                put64(out, *seq);
                put64(out, *dispatched);
            }
        }
        let body = start + FRAME_HEADER_LEN;
        let len = u32::try_from(out.len() - body).unwrap_or(u32::MAX);
        let crc = crc32fast::hash(&out[body..]);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..body].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes the body (kind + payload) of a frame whose CRC matched.
    pub fn decode_body(body: &[u8]) -> Option<Self> {
        let (&kind, payload) = body.split_first()?;
        let mut r = Reader::new(payload);
        let rec = match Kind::try_from(kind).ok()? {
            Kind::QueueCreate => Self::QueueCreate {
                handle: r.u32()?,
                epoch: r.u32()?,
                queue_id: r.u32()?,
                topic: r.topic()?,
            },
            Kind::BlockAlloc => Self::BlockAlloc {
                handle: r.u32()?,
                block_index: r.u64()?,
                addr: r.u32()?,
            },
            Kind::QueueTrim => Self::QueueTrim {
                handle: r.u32()?,
                min: r.u64()?,
                first_kept_block_index: r.u64()?,
            },
            Kind::QueueTruncate => Self::QueueTruncate {
                handle: r.u32()?,
                max: r.u64()?,
                last_phys_end: r.u64()?,
            },
            Kind::QueueReset => Self::QueueReset {
                handle: r.u32()?,
                epoch: r.u32()?,
                offset: r.u64()?,
            },
            Kind::QueueDrop => Self::QueueDrop { handle: r.u32()? },
            Kind::ArenaAdded => Self::ArenaAdded { arena_no: r.u32()? },
            Kind::Marks => {
                let n = r.u32()?;
                let mut marks = Vec::with_capacity((n as usize).min(payload.len() / 20));
                for _ in 0..n {
                    marks.push(Mark {
                        handle: r.u32()?,
                        max: r.u64()?,
                        last_phys_end: r.u64()?,
                    });
                }
                Self::Marks(marks)
            }
            Kind::Commit => Self::Commit {
                seq: r.u64()?,
                dispatched: r.u64()?,
            },
        };
        r.is_empty().then_some(rec)
    }
}

/// What is found at a position of a journal.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A valid record and the position after it.
    Record(Record, usize),
    /// Zeros or the end of the bytes: the journal ends here.
    End,
    /// Not a valid frame.
    Bad,
}

/// Reads the frame at `pos` of `bytes`.
pub fn read_frame(bytes: &[u8], pos: usize) -> Frame {
    let Some(head) = bytes.get(pos..pos + FRAME_HEADER_LEN) else {
        return if bytes
            .get(pos..)
            .is_none_or(|rest| rest.iter().all(|b| *b == 0))
        {
            Frame::End
        } else {
            Frame::Bad
        };
    };
    if head.iter().all(|b| *b == 0) {
        return Frame::End;
    }
    let mut r = Reader::new(head);
    let (Some(len), Some(crc)) = (r.u32(), r.u32()) else {
        return Frame::Bad;
    };
    let body_at = pos + FRAME_HEADER_LEN;
    let Some(body) = usize::try_from(len)
        .ok()
        .and_then(|len| bytes.get(body_at..body_at.checked_add(len)?))
    else {
        return Frame::Bad;
    };
    if crc32fast::hash(body) != crc {
        return Frame::Bad;
    }
    match Record::decode_body(body) {
        Some(rec) => Frame::Record(rec, body_at + body.len()),
        None => Frame::Bad,
    }
}

/// Whether a valid Commit frame starts anywhere at or after `from`: a bad frame before it
/// is corruption, not a torn tail.
pub fn commit_follows(bytes: &[u8], from: usize) -> bool {
    (from..bytes.len()).any(|p| {
        bytes.get(p + FRAME_HEADER_LEN) == Some(&(Kind::Commit as u8))
            && matches!(
                read_frame(bytes, p),
                Frame::Record(Record::Commit { .. }, _)
            )
    })
}

/// Name of journal generation `generation`.
pub fn journal_file_name(generation: u64) -> String {
    format!("{generation:020}{JOURNAL_SUFFIX}")
}

/// Generation of a journal file name.
pub fn parse_journal_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(JOURNAL_SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())?
}

/// Name of arena `no`.
pub fn arena_file_name(no: u32) -> String {
    format!("{no:010}{ARENA_SUFFIX}")
}

/// Number of an arena file name.
pub fn parse_arena_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(ARENA_SUFFIX)?;
    (digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())?
}

/// One queue in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapQueue {
    /// Store-wide handle.
    pub handle: u32,
    /// Epoch (bumped by every reset).
    pub epoch: u32,
    /// Queue id within the topic.
    pub queue_id: u32,
    /// The topic.
    pub topic: String,
    /// Minimum offset.
    pub min: u64,
    /// Maximum offset (exclusive).
    pub max: u64,
    /// Commit-log end of the record of entry `max - 1` (0 when empty).
    pub last_phys_end: u64,
    /// Queue index of `blocks[0]`.
    pub first_block_index: u64,
    /// Addresses of the queue's blocks, in order.
    pub blocks: Vec<u32>,
}

/// A whole snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// First journal generation to replay on top of it.
    pub first_generation: u64,
    /// Sequence number of the last journal batch it includes.
    pub seq: u64,
    /// The store's dispatched commit-log offset at that batch.
    pub dispatched: u64,
    /// Block size of the arenas.
    pub block_size: u32,
    /// Number of arena files.
    pub arena_count: u32,
    /// Every queue.
    pub queues: Vec<SnapQueue>,
}

impl Snapshot {
    /// Encodes the snapshot.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for q in &self.queues {
            put32(&mut body, q.handle);
            put32(&mut body, q.epoch);
            put32(&mut body, q.queue_id);
            put_topic(&mut body, &q.topic);
            put64(&mut body, q.min);
            put64(&mut body, q.max);
            put64(&mut body, q.last_phys_end);
            put64(&mut body, q.first_block_index);
            put32(&mut body, u32::try_from(q.blocks.len()).unwrap_or(u32::MAX));
            for a in &q.blocks {
                put32(&mut body, *a);
            }
        }
        let mut out = Vec::with_capacity(SNAPSHOT_HEADER_LEN + body.len());
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        put64(&mut out, self.first_generation);
        put64(&mut out, self.seq);
        put64(&mut out, self.dispatched);
        put32(&mut out, self.block_size);
        put32(&mut out, self.arena_count);
        put32(
            &mut out,
            u32::try_from(self.queues.len()).unwrap_or(u32::MAX),
        );
        put32(&mut out, crc32fast::hash(&body));
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a snapshot.
    ///
    /// # Errors
    /// A reason when the bytes are not a whole, intact snapshot of this version.
    pub fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        if bytes.len() < SNAPSHOT_HEADER_LEN || bytes[..4] != SNAPSHOT_MAGIC {
            return Err("bad magic");
        }
        let mut r = Reader::new(&bytes[4..SNAPSHOT_HEADER_LEN]);
        if r.u16() != Some(VERSION) {
            return Err("unsupported version");
        }
        let _reserved = r.u16();
        let short = "short header";
        let mut s = Self {
            first_generation: r.u64().ok_or(short)?,
            seq: r.u64().ok_or(short)?,
            dispatched: r.u64().ok_or(short)?,
            block_size: r.u32().ok_or(short)?,
            arena_count: r.u32().ok_or(short)?,
            queues: Vec::new(),
        };
        let count = r.u32().ok_or(short)?;
        let crc = r.u32().ok_or(short)?;
        let body = &bytes[SNAPSHOT_HEADER_LEN..];
        if crc32fast::hash(body) != crc {
            return Err("body checksum mismatch");
        }
        let mut r = Reader::new(body);
        let bad = "truncated queue";
        for _ in 0..count {
            let mut q = SnapQueue {
                handle: r.u32().ok_or(bad)?,
                epoch: r.u32().ok_or(bad)?,
                queue_id: r.u32().ok_or(bad)?,
                topic: r.topic().ok_or(bad)?,
                min: r.u64().ok_or(bad)?,
                max: r.u64().ok_or(bad)?,
                last_phys_end: r.u64().ok_or(bad)?,
                first_block_index: r.u64().ok_or(bad)?,
                blocks: Vec::new(),
            };
            let n = r.u32().ok_or(bad)?;
            for _ in 0..n {
                q.blocks.push(r.u32().ok_or(bad)?);
            }
            s.queues.push(q);
        }
        if !r.is_empty() {
            return Err("trailing bytes");
        }
        Ok(s)
    }
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_topic(out: &mut Vec<u8>, topic: &str) {
    // Callers refuse longer names; a longer one is cut, not mis-framed.
    let b = &topic.as_bytes()[..topic.len().min(MAX_TOPIC_LEN)];
    out.push(u8::try_from(b.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(b);
}

/// Little-endian cursor over a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self(b)
    }
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    fn topic(&mut self) -> Option<String> {
        let [len] = self.take::<1>()?;
        let (name, rest) = self.0.split_at_checked(usize::from(len))?;
        self.0 = rest;
        String::from_utf8(name.to_vec()).ok()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = Record> {
        prop_oneof![
            (any::<u32>(), any::<u32>(), any::<u32>(), "[a-z%]{0,40}").prop_map(
                |(handle, epoch, queue_id, topic)| Record::QueueCreate {
                    handle,
                    epoch,
                    queue_id,
                    topic
                }
            ),
            (any::<u32>(), any::<u64>(), any::<u32>()).prop_map(|(handle, block_index, addr)| {
                Record::BlockAlloc {
                    handle,
                    block_index,
                    addr,
                }
            }),
            (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(handle, min, f)| {
                Record::QueueTrim {
                    handle,
                    min,
                    first_kept_block_index: f,
                }
            }),
            (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(handle, max, e)| {
                Record::QueueTruncate {
                    handle,
                    max,
                    last_phys_end: e,
                }
            }),
            (any::<u32>(), any::<u32>(), any::<u64>()).prop_map(|(handle, epoch, offset)| {
                Record::QueueReset {
                    handle,
                    epoch,
                    offset,
                }
            }),
            any::<u32>().prop_map(|handle| Record::QueueDrop { handle }),
            any::<u32>().prop_map(|arena_no| Record::ArenaAdded { arena_no }),
            prop::collection::vec((any::<u32>(), any::<u64>(), any::<u64>()), 0..5).prop_map(|v| {
                Record::Marks(
                    v.into_iter()
                        .map(|(handle, max, last_phys_end)| Mark {
                            handle,
                            max,
                            last_phys_end,
                        })
                        .collect(),
                )
            }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(seq, dispatched)| Record::Commit { seq, dispatched }),
        ]
    }

    proptest! {
        #[test]
        fn entry_round_trips(p in any::<u64>(), s in any::<u32>(), t in any::<u64>()) {
            let e = Entry { physical_offset: p, size: s, tag_hash: t };
            prop_assert_eq!(Entry::decode(&e.encode()), e);
        }

        #[test]
        fn records_round_trip_as_frames(recs in prop::collection::vec(record(), 1..8)) {
            let mut buf = Vec::new();
            for r in &recs {
                r.encode_frame(&mut buf);
            }
            buf.extend_from_slice(&[0u8; 64]);
            let mut pos = 0;
            for r in &recs {
                match read_frame(&buf, pos) {
                    Frame::Record(got, next) => {
                        prop_assert_eq!(&got, r);
                        pos = next;
                    }
                    other => prop_assert!(false, "{other:?}"),
                }
            }
            prop_assert_eq!(read_frame(&buf, pos), Frame::End);
        }

        #[test]
        fn headers_round_trip(bs in any::<u32>(), no in any::<u32>(), n in any::<u32>(),
                              q in any::<u32>(), ep in any::<u32>(), f in any::<u64>()) {
            let h = ArenaHeader { block_size: bs, arena_no: no, blocks: n };
            prop_assert_eq!(ArenaHeader::decode(&h.encode()), Ok(h));
            let b = BlockHeader { queue: q, epoch: ep, first_offset: f };
            prop_assert_eq!(BlockHeader::decode(&b.encode()), b);
        }

        #[test]
        fn snapshots_round_trip(qs in prop::collection::vec(
            (any::<u32>(), "[a-z]{1,10}", any::<u64>(), prop::collection::vec(any::<u32>(), 0..4)), 0..6)) {
            let s = Snapshot {
                first_generation: 3,
                seq: 9,
                dispatched: 77,
                block_size: 4096,
                arena_count: 2,
                queues: qs.into_iter().map(|(h, topic, max, blocks)| SnapQueue {
                    handle: h, epoch: 1, queue_id: 2, topic, min: 0, max,
                    last_phys_end: 5, first_block_index: 0, blocks,
                }).collect(),
            };
            prop_assert_eq!(Snapshot::decode(&s.encode()), Ok(s));
        }
    }

    #[test]
    fn a_flipped_byte_is_a_bad_frame_and_a_later_commit_marks_corruption() {
        let mut buf = Vec::new();
        Record::QueueDrop { handle: 7 }.encode_frame(&mut buf);
        Record::Commit {
            seq: 1,
            dispatched: 2,
        }
        .encode_frame(&mut buf);
        let clean = buf.clone();
        buf[9] ^= 1;
        assert_eq!(read_frame(&buf, 0), Frame::Bad);
        assert!(commit_follows(&buf, 1));
        // A torn tail: the second frame cut short, zeros after it.
        let mut torn = clean;
        let second = 13;
        for b in &mut torn[second + 10..] {
            *b = 0;
        }
        assert_eq!(read_frame(&torn, second), Frame::Bad);
        assert!(!commit_follows(&torn, second + 1));
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_journal_name(&journal_file_name(42)), Some(42));
        assert_eq!(parse_arena_name(&arena_file_name(3)), Some(3));
        assert_eq!(parse_arena_name("x.cqa"), None);
        assert_eq!(entries_per_block(4096), 204);
    }
}
