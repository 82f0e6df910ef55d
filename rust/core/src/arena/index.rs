//! The ordered in-memory key index: key → [`BlobLocation`].
//!
//! A `BTreeMap` behind a `RwLock` for now; every use goes through
//! [`KeyIndex`]'s methods, so swapping in the concurrent B-skiplist only
//! touches this file.

use std::collections::BTreeMap;
use std::ops::Bound;

use parking_lot::RwLock;

use super::wal_record::BlobLocation;

/// Ordered map from key bytes to where the value lives.
///
/// ```
/// use slabcache_core::arena::{BlobLocation, KeyIndex};
/// let idx = KeyIndex::new();
/// let loc = BlobLocation { generation: 1, offset: 16, len: 3, crc: 0 };
/// assert_eq!(idx.insert(b"b".to_vec(), loc), None);
/// idx.insert(b"a".to_vec(), loc);
/// assert_eq!(idx.keys(None, None, usize::MAX), vec![b"a".to_vec(), b"b".to_vec()]);
/// assert_eq!(idx.remove(b"a"), Some(loc));
/// ```
#[derive(Default)]
pub struct KeyIndex {
    map: RwLock<BTreeMap<Vec<u8>, BlobLocation>>,
}

impl KeyIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }
    /// Where `key`'s value lives.
    pub fn get(&self, key: &[u8]) -> Option<BlobLocation> {
        self.map.read().get(key).copied()
    }
    /// True if `key` is present.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.map.read().contains_key(key)
    }
    /// Inserts or replaces; returns the previous location.
    pub fn insert(&self, key: Vec<u8>, loc: BlobLocation) -> Option<BlobLocation> {
        self.map.write().insert(key, loc)
    }
    /// Inserts a batch under one lock; returns the bytes of the values replaced.
    pub fn insert_many(&self, items: impl IntoIterator<Item = (Vec<u8>, BlobLocation)>) -> u64 {
        let mut map = self.map.write();
        items
            .into_iter()
            .filter_map(|(k, loc)| map.insert(k, loc))
            .map(|old| old.len)
            .sum()
    }
    /// Removes `key`; returns its location if it was present.
    pub fn remove(&self, key: &[u8]) -> Option<BlobLocation> {
        self.map.write().remove(key)
    }
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.read().len()
    }
    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.map.read().is_empty()
    }
    /// Up to `limit` keys in `[start, end)` in order (`None` = unbounded).
    pub fn keys(&self, start: Option<&[u8]>, end: Option<&[u8]>, limit: usize) -> Vec<Vec<u8>> {
        let lo = start.map_or(Bound::Unbounded, Bound::Included);
        let hi = end.map_or(Bound::Unbounded, Bound::Excluded);
        if let (Some(s), Some(e)) = (start, end) {
            if s >= e {
                return Vec::new();
            }
        }
        self.map
            .read()
            .range::<[u8], _>((lo, hi))
            .take(limit)
            .map(|(k, _)| k.clone())
            .collect()
    }
    /// Calls `f` on every entry in key order, under the read lock.
    pub fn for_each(&self, mut f: impl FnMut(&[u8], &BlobLocation)) {
        for (k, v) in self.map.read().iter() {
            f(k, v);
        }
    }
    /// A copy of every entry, in key order.
    pub fn snapshot(&self) -> Vec<(Vec<u8>, BlobLocation)> {
        self.map
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
    /// Replaces the whole content with `entries`, sorted by key and unique
    /// (recovery, and compaction relocating every blob). Built in bulk.
    pub fn replace_all(&self, entries: Vec<(Vec<u8>, BlobLocation)>) {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        let fresh: BTreeMap<_, _> = entries.into_iter().collect();
        let old = std::mem::replace(&mut *self.map.write(), fresh);
        drop(old); // freed outside the lock
    }
    /// Sum of the lengths of every value.
    pub fn live_bytes(&self) -> u64 {
        self.map.read().values().map(|l| l.len).sum()
    }
}
