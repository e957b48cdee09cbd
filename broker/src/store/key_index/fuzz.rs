//! The key index's decoders as one fuzz entry point (`fuzz/fuzz_targets/key_index_decoder.rs`).

use std::ops::ControlFlow;
use std::sync::Arc;

use commitlog::storage::RealFs;

use super::format::{self, Checkpoint, Entry, Header, ENTRY_LEN, HEADER_LEN};
use super::{KeyIndex, KeyIndexConfig, Lookup};

/// Decodes `data` as a header, a checkpoint and entries (what decodes re-encodes to the
/// same value), then opens an index folder built from it, a file with a well-formed header
/// over arbitrary slots and entries and a checkpoint, and looks keys up. Bytes decide the
/// geometry: `[slots, max entries, checkpointed count, flags, next (8 bytes)]`, then the
/// file's body. Damage must be refused or rebuilt, never served; any panic is a bug.
///
/// # Panics
/// When the index serves an offset outside what the checkpoint says is indexed.
pub fn fuzz_decode_and_open(data: &[u8]) {
    if let Ok(h) = Header::decode(data) {
        assert_eq!(Header::decode(&h.encode()), Ok(h));
    }
    if let Ok(c) = Checkpoint::decode(data) {
        assert_eq!(Checkpoint::decode(&c.encode()), Ok(c));
    }
    for chunk in data.chunks_exact(ENTRY_LEN) {
        let raw: &[u8; ENTRY_LEN] = chunk.try_into().unwrap_or(&[0; ENTRY_LEN]);
        assert_eq!(&Entry::decode(raw).encode(), raw);
    }
    let Some((control, body)) = data.split_first_chunk::<12>() else {
        return;
    };
    let slots = u32::from(control[0] % 8) + 1;
    let max = u32::from(control[1] % 64) + 1;
    // One past the maximum: a checkpoint counting more entries than fit.
    let count = u32::from(control[2]) % (max + 2);
    let flags = control[3];
    let mut next = [0u8; 8];
    next.copy_from_slice(&control[4..12]);
    let next = u64::from_le_bytes(next);
    let Ok(dir) = tempfile::TempDir::new() else {
        return;
    };
    let index_dir = dir.path().join("index");
    let mut header = Header::empty(slots, max, 0);
    header.entry_count = count.min(max);
    let mut file = header.encode().to_vec();
    let len = usize::try_from(format::file_len(slots, max)).unwrap_or(HEADER_LEN);
    file.extend_from_slice(&body[..body.len().min(len - HEADER_LEN)]);
    // Bit 0: the file cut short (a truncated file); otherwise zero-filled to its length.
    if flags & 1 == 0 {
        file.resize(len, 0);
    }
    let ckpt = Checkpoint {
        next,
        file_start: if flags & 2 == 0 { 0 } else { format::NO_FILE },
        entry_count: count,
    };
    let written = std::fs::create_dir_all(&index_dir)
        .and_then(|()| std::fs::write(format::file_path(&index_dir, 0), &file))
        .and_then(|()| std::fs::write(index_dir.join(format::CHECKPOINT_NAME), ckpt.encode()));
    if written.is_err() {
        return;
    }
    let config = KeyIndexConfig {
        enabled: true,
        slot_count: slots,
        max_entries_per_file: max,
        hash_bits: 3,
    };
    let Some(index) = KeyIndex::open(config, dir.path(), Arc::new(RealFs), 0, u64::MAX) else {
        return;
    };
    for key in ["a", "b", "c", "d", "e", "f", "g", "h"] {
        let q = Lookup {
            topic: "t",
            key,
            from_ms: 0,
            to_ms: u64::MAX,
        };
        let _ = index.lookup(&q, 0, |phys| {
            assert!(
                phys < next,
                "served offset {phys} beyond the indexed end {next}"
            );
            ControlFlow::Continue(())
        });
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The fuzz entry point's own smoke run inside the test suite.
        #[test]
        fn arbitrary_index_bytes_are_refused_or_served_within_the_indexed_end(
            data in prop::collection::vec(any::<u8>(), 0..2048),
        ) {
            super::fuzz_decode_and_open(&data);
        }
    }
}
