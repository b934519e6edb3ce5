//! The byte-capped cache of a lazy replica: decoded pages and raw chunks of
//! snapshot page indexes, evicted least recently used first (in batches:
//! when full, the oldest eighth goes at once, so eviction costs a sort of
//! the ages now and then rather than an ordered index kept on every use;
//! a smaller .wasm, too).
//!
//! Entries are keyed by the object they came from (a source's `uid`) and
//! never change: objects are immutable, so a page stays valid in every
//! version of the replica that still reads it from that object, and a
//! version that reads it from a newer object simply asks for another key.

use std::collections::HashMap;
use std::sync::Arc;

/// What an entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// A decoded page image.
    Page(u32),
    /// A chunk of a snapshot's page index (raw entries).
    IndexChunk(u32),
}

/// An entry's key: the source object's uid and what of it.
pub type CacheKey = (u64, Slot);

/// Bytes charged per entry beyond its data (map nodes, the `Arc`).
const ENTRY_OVERHEAD: usize = 64;

/// A least-recently-used cache that holds at most `capacity` bytes.
pub struct PageCache {
    capacity: usize,
    used: usize,
    tick: u64,
    entries: HashMap<CacheKey, (Arc<[u8]>, u64)>,
}

impl PageCache {
    /// An empty cache of `capacity` bytes.
    pub fn new(capacity: usize) -> PageCache {
        PageCache { capacity, used: 0, tick: 0, entries: HashMap::new() }
    }

    /// The entry, marked as just used.
    pub fn get(&mut self, key: &CacheKey) -> Option<Arc<[u8]>> {
        self.tick += 1;
        let tick = self.tick;
        let (bytes, age) = self.entries.get_mut(key)?;
        *age = tick;
        Some(bytes.clone())
    }

    /// Whether the entry is present (without marking it used).
    pub fn contains(&self, key: &CacheKey) -> bool {
        self.entries.contains_key(key)
    }

    /// Adds (or replaces) an entry; if the cache is then over its capacity,
    /// evicts the oldest entries (at least an eighth of them) until it fits.
    pub fn insert(&mut self, key: CacheKey, bytes: Arc<[u8]>) {
        if let Some((old, _)) = self.entries.remove(&key) {
            self.used -= old.len() + ENTRY_OVERHEAD;
        }
        self.tick += 1;
        self.used += bytes.len() + ENTRY_OVERHEAD;
        self.entries.insert(key, (bytes, self.tick));
        if self.used > self.capacity {
            self.evict();
        }
    }

    fn evict(&mut self) {
        let ages: Vec<(u64, CacheKey)> = self.entries.iter().map(|(key, (_, age))| (*age, *key)).collect();
        let ages = crate::order::sorted_by_key(ages, |(age, _)| u128::from(*age));
        let at_least = ages.len().div_ceil(8);
        for (i, (_, key)) in ages.into_iter().enumerate() {
            if i >= at_least && self.used <= self.capacity {
                break;
            }
            if let Some((bytes, _)) = self.entries.remove(&key) {
                self.used -= bytes.len() + ENTRY_OVERHEAD;
            }
        }
    }

    /// Keeps only the entries `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&CacheKey) -> bool) {
        let used = &mut self.used;
        self.entries.retain(|key, (bytes, _)| {
            let kept = keep(key);
            if !kept {
                *used -= bytes.len() + ENTRY_OVERHEAD;
            }
            kept
        });
    }

    /// Bytes held, overhead included.
    pub fn used(&self) -> usize {
        self.used
    }

    /// The capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(byte: u8, len: usize) -> Arc<[u8]> {
        vec![byte; len].into()
    }

    #[test]
    fn the_least_recently_used_entry_goes_first() {
        let mut cache = PageCache::new(3 * (100 + ENTRY_OVERHEAD));
        cache.insert((1, Slot::Page(1)), page(1, 100));
        cache.insert((1, Slot::Page(2)), page(2, 100));
        cache.insert((1, Slot::Page(3)), page(3, 100));
        assert!(cache.get(&(1, Slot::Page(1))).is_some());
        cache.insert((1, Slot::Page(4)), page(4, 100));
        assert!(cache.contains(&(1, Slot::Page(1))), "used recently");
        assert!(!cache.contains(&(1, Slot::Page(2))), "the oldest");
        assert!(cache.contains(&(1, Slot::Page(3))) && cache.contains(&(1, Slot::Page(4))));
        assert!(cache.used() <= cache.capacity());
    }

    #[test]
    fn replacing_an_entry_does_not_count_it_twice() {
        let mut cache = PageCache::new(10_000);
        cache.insert((7, Slot::IndexChunk(0)), page(0, 100));
        cache.insert((7, Slot::IndexChunk(0)), page(1, 100));
        assert_eq!(cache.used(), 100 + ENTRY_OVERHEAD);
    }
}
