//! The commit-log record decoder on arbitrary bytes: never panics, never reads past the
//! buffer, and whatever it accepts re-encodes to the same bytes.
#![no_main]

use commitlog::format::{
    classify, encode_into, encoded_len, RecordIn, RecordView, Slot, CRC_AT, FLAGS_AT,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Walk the buffer as a segment would be walked by recovery.
    let mut at = 0usize;
    while at < data.len() {
        match classify(&data[at..]) {
            Ok(Slot::Record(v)) => {
                let len = v.total_len() as usize;
                assert!(len > 0 && at + len <= data.len());
                check_round_trip(&v, &data[at..at + len]);
                at += len;
            }
            Ok(Slot::EndOfSegment | Slot::Unwritten) | Err(_) => break,
        }
    }
    if let Ok(v) = RecordView::decode(data) {
        assert!(v.total_len() as usize <= data.len());
    }
});

fn check_round_trip(v: &RecordView<'_>, bytes: &[u8]) {
    let rec = RecordIn {
        topic: v.topic(),
        queue_id: v.queue_id(),
        queue_offset: v.queue_offset(),
        tag_hash: v.tag_hash(),
        born_timestamp_ms: v.born_timestamp_ms(),
        store_timestamp_ms: v.store_timestamp_ms(),
        reconsume_times: v.reconsume_times(),
        properties: v.properties(),
        body: v.body(),
    };
    let len = encoded_len(&rec).expect("a decoded record has an encodable length");
    assert_eq!(len, bytes.len());
    let mut out = vec![0u8; len];
    encode_into(&rec, v.physical_offset(), &mut out).expect("re-encode");
    // The reserved flags byte is not checked by the decoder (a CRC-valid record with
    // flags != 0 is accepted) and the encoder writes 0; the CRC then differs too.
    let (flags, crc) = (FLAGS_AT, CRC_AT..CRC_AT + 4);
    if bytes[flags] != 0 {
        out[flags] = bytes[flags];
        out[crc.clone()].copy_from_slice(&bytes[crc]);
    }
    assert_eq!(out.as_slice(), bytes, "decode/encode not a round trip");
}
