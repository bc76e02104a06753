//! Slots: how a source pipeline's readers are spread over the daemons that run it. Each
//! reader (collection, database, regex or deployment stream) hashes onto one of the
//! pipeline's `slots`; slot `s` is partition `s` of the checkpoint topic, so the reader's
//! checkpoints go to that partition, and whoever owns the partition owns the reader.
//!
//! The hash is FNV-1a (64 bits) of `pipeline`, a zero byte and the reader's namespace,
//! written out here rather than taken from `std`, whose hasher may change between Rust
//! releases: a reader must land in the same slot on every daemon, whatever it was built
//! with. Pure: no I/O.

use std::collections::BTreeMap;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(bytes: impl IntoIterator<Item = u8>, mut hash: u64) -> u64 {
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// FNV-1a (64 bits) of `bytes`: a hash that never changes between builds.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    fnv1a(bytes.iter().copied(), FNV_OFFSET)
}

/// The slot (and checkpoint partition) of the reader `namespace` of `pipeline` among
/// `slots` (at least 1; validation sees to it, and 0 is taken as 1).
pub fn slot_of(pipeline: &str, namespace: &str, slots: u32) -> i32 {
    let hash = fnv1a(
        pipeline
            .bytes()
            .chain(std::iter::once(0))
            .chain(namespace.bytes()),
        FNV_OFFSET,
    );
    let slot = hash % u64::from(slots.max(1));
    // Below `slots`, itself at most `u32::MAX`: it fits; validation keeps it far smaller.
    i32::try_from(slot).unwrap_or(i32::MAX)
}

/// The readers (by namespace) of each slot that has any.
pub fn by_slot<'a>(
    pipeline: &str,
    namespaces: impl IntoIterator<Item = &'a str>,
    slots: u32,
) -> BTreeMap<i32, Vec<String>> {
    let mut map: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for namespace in namespaces {
        map.entry(slot_of(pipeline, namespace, slots))
            .or_default()
            .push(namespace.to_owned());
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slots must never change for a given input: a daemon built later has to find the
    /// same readers in the same partitions.
    #[test]
    fn the_hash_is_stable() {
        assert_eq!(fnv1a(*b"", FNV_OFFSET), FNV_OFFSET);
        // FNV-1a's published test vectors.
        assert_eq!(fnv1a(*b"a", FNV_OFFSET), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(*b"foobar", FNV_OFFSET), 0x8594_4171_f739_67e8);
        let pinned: Vec<i32> = ["db.c0", "db.c1", "db.c2", "db.c3", "db", "*"]
            .iter()
            .map(|ns| slot_of("orders", ns, 16))
            .collect();
        assert_eq!(pinned, PINNED, "the slots of these readers moved");
    }

    const PINNED: [i32; 6] = [3, 0, 9, 6, 6, 10];

    #[test]
    fn every_reader_lands_in_a_slot_below_the_count() {
        for slots in [1, 2, 3, 16, 1024] {
            for i in 0..200 {
                let slot = slot_of("p", &format!("db.c{i}"), slots);
                assert!((0..i32::try_from(slots).unwrap_or(i32::MAX)).contains(&slot));
            }
        }
        assert_eq!(slot_of("p", "db.c", 0), 0, "0 slots is taken as 1");
        assert_eq!(slot_of("p", "db.c", 1), 0);
    }

    #[test]
    fn the_pipeline_name_is_part_of_the_hash() {
        let a: Vec<i32> = (0..32)
            .map(|i| slot_of("a", &format!("db.c{i}"), 16))
            .collect();
        let b: Vec<i32> = (0..32)
            .map(|i| slot_of("b", &format!("db.c{i}"), 16))
            .collect();
        assert_ne!(a, b);
        // "ab" + "c" and "a" + "bc" are different readers.
        assert_ne!(
            fnv1a(b"ab\0c".iter().copied(), FNV_OFFSET),
            fnv1a(b"a\0bc".iter().copied(), FNV_OFFSET)
        );
    }

    #[test]
    fn many_readers_spread_over_every_slot() {
        let map = by_slot(
            "p",
            (0..400)
                .map(|i| format!("db.c{i}"))
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str),
            16,
        );
        assert_eq!(map.len(), 16, "every slot has readers");
        let sizes: Vec<usize> = map.values().map(Vec::len).collect();
        assert!(
            sizes.iter().all(|n| (10..=45).contains(n)),
            "400 readers over 16 slots: {sizes:?}"
        );
        assert_eq!(sizes.iter().sum::<usize>(), 400);
    }
}
