//! The send-body (batch) decoder with an arbitrary announced count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::batch::{self, BatchWriter};
use protocol::properties::Properties;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let count = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let body = &data[4..];
    let Ok(msgs) = batch::decode(body, count, 1 << 20) else {
        return;
    };
    assert_eq!(msgs.len(), count as usize);
    // What decodes re-encodes to the same bytes.
    let mut w = BatchWriter::new();
    for m in &msgs {
        let _ = Properties::new(m.properties).validate();
        w.push(m).expect("a decoded message re-encodes");
    }
    assert_eq!(w.count(), count);
    assert_eq!(w.as_bytes(), body);
});
