//! The hashes both sides must compute alike. The tag hash is persisted (in commit-log
//! records and consume-queue entries) and the key hash decides which queue a keyed message
//! goes to, so both are 64-bit FNV-1a: stable across builds, platforms and versions.
//! Changing either breaks stored data or the order of keyed messages.

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME)
    })
}

/// The hash of a tag stored with a message and matched by consumers' filters; never 0,
/// which means "no tag" (the empty tag hashes to 0).
pub fn tag_hash(tag: &str) -> u64 {
    if tag.is_empty() {
        return 0;
    }
    fnv1a(tag.as_bytes()).max(1)
}

/// The hash of a message's keys that picks its queue, so that messages with equal keys
/// keep their order.
pub fn key_hash(keys: &str) -> u64 {
    fnv1a(keys.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_is_the_standard_one() {
        // Reference values of 64-bit FNV-1a: a different hash would misfile stored tags.
        assert_eq!(tag_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(tag_hash("foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(tag_hash(""), 0);
        assert_eq!(key_hash("foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(key_hash(""), FNV_OFFSET_BASIS);
    }
}
