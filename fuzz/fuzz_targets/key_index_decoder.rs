//! The key index's decoders: headers, checkpoints and entries from arbitrary bytes, and an
//! index folder built from them opened and searched. Damage must be refused or rebuilt,
//! never served, and never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    broker::store::fuzz_key_index(data);
});
