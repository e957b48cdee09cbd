//! The property-blob decoder: iteration, lookup, validation and key removal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::properties::{Properties, PropertiesBuilder, KEYS, TAGS};

fuzz_target!(|data: &[u8]| {
    let props = Properties::new(data);
    let valid = props.validate().is_ok();
    let pairs: Vec<(&str, &str)> = props.iter().map_while(Result::ok).collect();
    let _ = props.get(TAGS);
    let _ = props.get(KEYS);
    if valid {
        // A valid blob rebuilds to itself, and removing a key keeps the rest valid.
        let mut b = PropertiesBuilder::new();
        for (k, v) in &pairs {
            b.push(k, v);
        }
        assert_eq!(b.build(), data);
        let without = PropertiesBuilder::without(data, &[TAGS]).expect("valid blob");
        let blob = without.build();
        assert!(Properties::new(&blob).validate().is_ok());
        assert_eq!(Properties::new(&blob).get(TAGS), None);
    }
});
