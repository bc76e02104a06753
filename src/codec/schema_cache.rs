//! The one cache of every schema the codecs keep: the registry client's ids and fetched
//! schemas, the schemas a reader parsed, the schemas a writer inferred and compiled.
//!
//! Rules kept here:
//! - A cache holds at most [`MAX_BYTES`] of schemas, counted by the text each entry comes
//!   from: its key and its schema text, and a parsed or compiled schema [`PARSED`] times
//!   its text (its tree is larger than the text; an estimate, not a measure). Ever new
//!   schemas (change events naming ever new fields, a topic whose records name ever new
//!   schema ids) therefore never grow the memory without end.
//! - Past the bound the entries used least go first (moka's TinyLFU): an entry dropped costs
//!   one inference, parse or registry request when it is met again, never a wrong answer.
//! - An entry larger than the whole bound is not kept at all (it is made again each time).
//! - Looking up and inserting never wait on I/O; the clones of a cache share its entries.

use std::borrow::Borrow;
use std::hash::Hash;

/// The most bytes of schemas one cache holds (see the module's rules).
pub const MAX_BYTES: u64 = 2 * 1024 * 1024;

/// How many times its text a parsed or compiled schema is counted.
pub const PARSED: usize = 4;

/// An entry and what it is counted for.
#[derive(Clone)]
struct Weighed<V> {
    value: V,
    bytes: u32,
}

/// A schema cache bounded in bytes (see the module's rules).
#[derive(Clone)]
pub struct SchemaCache<K, V> {
    entries: moka::sync::Cache<K, Weighed<V>>,
    max_bytes: u64,
}

impl<K, V> std::fmt::Debug for SchemaCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaCache").finish_non_exhaustive()
    }
}

impl<K, V> Default for SchemaCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::bounded(MAX_BYTES)
    }
}

impl<K, V> SchemaCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache holding at most `max_bytes`.
    pub fn bounded(max_bytes: u64) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_: &K, entry: &Weighed<V>| entry.bytes)
                .build(),
            max_bytes,
        }
    }

    /// The entry under `key`, if kept.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get(key).map(|entry| entry.value)
    }

    /// Keeps `value` under `key`, counted as `bytes` (its key's included), unless that is
    /// more than the whole bound.
    pub fn insert(&self, key: K, value: V, bytes: usize) {
        let Ok(bytes) = u32::try_from(bytes) else {
            return;
        };
        if u64::from(bytes) <= self.max_bytes {
            self.entries.insert(key, Weighed { value, bytes });
        }
    }

    /// The bytes the entries kept are counted for, once the evictions due are done.
    pub fn bytes(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_past_the_bound_go_and_the_bound_holds() {
        let cache: SchemaCache<u32, String> = SchemaCache::bounded(10_000);
        for id in 0..100 {
            cache.insert(id, format!("schema {id}"), 1_000);
        }
        let bytes = cache.bytes();
        assert!(bytes <= 10_000, "{bytes} bytes kept");
        assert!(bytes >= 1_000, "nothing kept");
        let kept = (0..100).filter(|id| cache.get(id).is_some()).count();
        assert!((1..=10).contains(&kept), "{kept} entries kept");
    }

    #[test]
    fn an_entry_larger_than_the_bound_is_not_kept() {
        let cache: SchemaCache<String, u32> = SchemaCache::bounded(100);
        cache.insert("small".to_owned(), 1, 10);
        cache.insert("huge".to_owned(), 2, 1_000);
        assert_eq!(cache.get("small"), Some(1));
        assert_eq!(cache.get("huge"), None);
        assert!(cache.bytes() <= 100);
    }

    #[test]
    fn clones_share_their_entries() {
        let cache: SchemaCache<u32, u32> = SchemaCache::default();
        let clone = cache.clone();
        clone.insert(7, 70, 8);
        assert_eq!(cache.get(&7), Some(70));
    }
}
