//! The record layout: round trips, and hostile input decodes to errors, never panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use commitlog::format::{classify, encode_into, encoded_len, Meta, MetaKind, RecordView};
use commitlog::RecordIn;
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("FERRO_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

#[allow(clippy::type_complexity)]
fn arb_record(
) -> impl Strategy<Value = (String, u32, u64, u64, u64, u64, u32, Vec<u8>, Vec<u8>, u64)> {
    (
        "[a-zA-Z0-9%_é-]{0,40}",
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(any::<u8>(), 0..2000),
        any::<u64>(),
    )
}

fn encode(r: &RecordIn<'_>, at: u64) -> Vec<u8> {
    let mut buf = vec![0u8; encoded_len(r).unwrap()];
    encode_into(r, at, &mut buf).unwrap();
    buf
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn round_trip((topic, qid, qo, tag, born, store, rt, props, body, at) in arb_record()) {
        let r = RecordIn { topic: &topic, queue_id: qid, queue_offset: qo, tag_hash: tag,
            born_timestamp_ms: born, store_timestamp_ms: store, reconsume_times: rt,
            properties: &props, body: &body };
        let buf = encode(&r, at);
        let v = RecordView::decode(&buf).unwrap();
        prop_assert_eq!(v.total_len() as usize, buf.len());
        prop_assert_eq!(v.topic(), topic.as_str());
        prop_assert_eq!((v.queue_id(), v.queue_offset(), v.tag_hash()), (qid, qo, tag));
        prop_assert_eq!((v.born_timestamp_ms(), v.store_timestamp_ms()), (born, store));
        prop_assert_eq!((v.reconsume_times(), v.physical_offset()), (rt, at));
        prop_assert_eq!(v.properties(), &props[..]);
        prop_assert_eq!(v.body(), &body[..]);
        // Trailing bytes after the record do not matter.
        let mut longer = buf.clone();
        longer.extend_from_slice(&[0xAB; 17]);
        prop_assert_eq!(RecordView::decode(&longer).unwrap().body(), &body[..]);
    }

    #[test]
    fn truncated_records_are_errors(body in proptest::collection::vec(any::<u8>(), 0..500), cut in any::<usize>()) {
        let r = RecordIn { topic: "t", body: &body, ..Default::default() };
        let buf = encode(&r, 0);
        let cut = cut % buf.len();
        prop_assert!(RecordView::decode(&buf[..cut]).is_err());
    }

    #[test]
    fn any_flipped_byte_is_an_error(body in proptest::collection::vec(any::<u8>(), 0..500), at in any::<usize>(), bit in 0u8..8) {
        let r = RecordIn { topic: "topic", properties: b"k=v", body: &body, ..Default::default() };
        let mut buf = encode(&r, 12345);
        let at = at % buf.len();
        buf[at] ^= 1 << bit;
        prop_assert!(RecordView::decode(&buf).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = RecordView::decode(&bytes);
        let _ = classify(&bytes);
        let _ = Meta::decode(&bytes);
    }

    #[test]
    fn arbitrary_headers_never_panic(len in any::<u32>(), tail in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend_from_slice(&commitlog::format::RECORD_MAGIC.to_le_bytes());
        bytes.extend_from_slice(&tail);
        let _ = RecordView::decode(&bytes);
    }

    #[test]
    fn meta_round_trip_and_flips(offset in any::<u64>(), at in 0usize..20) {
        let m = Meta { kind: MetaKind::Checkpoint, offset };
        let mut b = m.encode();
        prop_assert_eq!(Meta::decode(&b).unwrap(), m);
        b[at] ^= 0x40;
        prop_assert!(Meta::decode(&b).is_err());
    }
}
