//! The ordered in-memory key index: key → [`BlobLocation`].
//!
//! A concurrent B-skiplist ([`BSkipList`]): readers (`get`, `contains`,
//! `keys`) never take a lock, so the arena's many reader threads never queue
//! behind its writer or behind each other. Writers lock single skiplist nodes.
//!
//! ## Swapping the whole index
//!
//! `replace_all` (recovery, and compaction relocating every blob) builds a
//! fresh list with the skiplist's bulk loader and swaps it in with one atomic
//! pointer store. The pointer is a `crossbeam_epoch::Atomic`, the collector
//! the skiplist already uses: a reader pins an epoch (a thread-local counter,
//! no shared write), loads the pointer and uses the list; the replaced list is
//! destroyed only once every thread that could have loaded it has unpinned.
//! Why not `RwLock<Arc<BSkipList>>`: every read would take the lock and bump
//! the `Arc`'s shared counter, a cache line written by every reader thread,
//! which is the contention the skiplist exists to avoid.
//!
//! ## Atomicity across calls
//!
//! Each method is atomic on its own; nothing makes several calls atomic
//! together. `for_each`, `snapshot`, `live_bytes` and `len` see a consistent
//! whole only while no write is in flight: the arena makes every write
//! (put, delete, compaction, checkpoint, recovery) under its writer mutex,
//! and calls those under it as well.

use std::ops::Bound;
use std::sync::atomic::Ordering;

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned};

use super::wal_record::BlobLocation;
use crate::skiplist::BSkipList;

type List = BSkipList<Vec<u8>, BlobLocation>;

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
pub struct KeyIndex {
    /// The current list; never null. Replaced whole by `replace_all`.
    list: Atomic<List>,
}

impl Default for KeyIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for KeyIndex {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no thread can be using the list any more (a
        // reader's borrow of it cannot outlive its borrow of `self`), so it
        // is freed at once; the pointer is valid (never null, owned by us).
        unsafe {
            let guard = epoch::unprotected();
            drop(self.list.load(Ordering::Relaxed, guard).into_owned());
        }
    }
}

impl KeyIndex {
    /// An empty index.
    pub fn new() -> Self {
        KeyIndex {
            list: Atomic::new(List::new()),
        }
    }

    /// The current list, valid while `guard` is pinned.
    #[inline]
    fn list<'g>(&self, guard: &'g Guard) -> &'g List {
        // SAFETY: the pointer is never null, and a list that `replace_all`
        // unlinks is destroyed through `guard.defer_destroy`, i.e. only after
        // every guard pinned before the unlink (such as this one) is gone.
        unsafe { self.list.load(Ordering::Acquire, guard).deref() }
    }

    /// Where `key`'s value lives.
    pub fn get(&self, key: &[u8]) -> Option<BlobLocation> {
        let guard = &epoch::pin();
        self.list(guard).get(key)
    }
    /// True if `key` is present.
    pub fn contains(&self, key: &[u8]) -> bool {
        let guard = &epoch::pin();
        self.list(guard).contains_key(key)
    }
    /// Inserts or replaces; returns the previous location.
    pub fn insert(&self, key: Vec<u8>, loc: BlobLocation) -> Option<BlobLocation> {
        let guard = &epoch::pin();
        self.list(guard).insert(key, loc)
    }
    /// Inserts a batch (the skiplist's batched insert: sorted, merged into
    /// leaves); returns the bytes of the values replaced, counting an earlier
    /// copy of a key given twice in the batch as replaced too.
    pub fn insert_many(&self, items: impl IntoIterator<Item = (Vec<u8>, BlobLocation)>) -> u64 {
        let items: Vec<_> = items.into_iter().collect();
        let guard = &epoch::pin();
        let mut replaced = 0u64;
        self.list(guard)
            .insert_many_with(items, |_, old| replaced += old.len);
        replaced
    }
    /// Removes `key`; returns its location if it was present.
    pub fn remove(&self, key: &[u8]) -> Option<BlobLocation> {
        let guard = &epoch::pin();
        self.list(guard).remove(key)
    }
    /// Number of keys (exact when no write is in flight).
    pub fn len(&self) -> usize {
        let guard = &epoch::pin();
        self.list(guard).len()
    }
    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        let guard = &epoch::pin();
        self.list(guard).is_empty()
    }
    /// Up to `limit` keys in `[start, end)` in order (`None` = unbounded).
    pub fn keys(&self, start: Option<&[u8]>, end: Option<&[u8]>, limit: usize) -> Vec<Vec<u8>> {
        if let (Some(s), Some(e)) = (start, end) {
            if s >= e {
                return Vec::new();
            }
        }
        let mut out = Vec::new();
        if limit == 0 {
            return out;
        }
        let lo = start.map_or(Bound::Unbounded, Bound::Included);
        let guard = &epoch::pin();
        self.list(guard).for_each_while(lo, |k, _| {
            if end.is_some_and(|e| k.as_slice() >= e) {
                return false;
            }
            out.push(k.clone());
            out.len() < limit
        });
        out
    }
    /// Calls `f` on every entry in key order. Lock-free: an entry written
    /// during the call may or may not be seen (the arena calls this under its
    /// writer mutex, where there is none).
    pub fn for_each(&self, mut f: impl FnMut(&[u8], &BlobLocation)) {
        let guard = &epoch::pin();
        self.list(guard)
            .for_each_in::<[u8]>(Bound::Unbounded, Bound::Unbounded, |k, v| f(k, v));
    }
    /// A copy of every entry, in key order.
    pub fn snapshot(&self) -> Vec<(Vec<u8>, BlobLocation)> {
        let mut out = Vec::with_capacity(self.len());
        self.for_each(|k, v| out.push((k.to_vec(), *v)));
        out
    }
    /// Replaces the whole content with `entries`, sorted by key and unique
    /// (recovery, and compaction relocating every blob). The new list is
    /// built in bulk, then swapped in atomically: a reader sees either the
    /// old content or the new one, never a mix. The caller must make no
    /// other write concurrently (a write into the old list would be lost):
    /// the arena calls this under its writer mutex.
    pub fn replace_all(&self, entries: Vec<(Vec<u8>, BlobLocation)>) {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        let fresh = List::new();
        // Sorted and unique, into an empty list: the skiplist's bulk loader.
        fresh.insert_many(entries);
        let guard = &epoch::pin();
        let old = self.list.swap(Owned::new(fresh), Ordering::AcqRel, guard);
        // SAFETY: `old` is unlinked by the swap above, so no reader that pins
        // from now on can reach it; readers pinned earlier may still use it,
        // and `defer_destroy` frees it only after all of them have unpinned.
        // It is never null (the list always holds one).
        unsafe { guard.defer_destroy(old) };
        guard.flush();
    }
    /// Sum of the lengths of every value.
    pub fn live_bytes(&self) -> u64 {
        let mut sum = 0;
        self.for_each(|_, l| sum += l.len);
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(len: u64) -> BlobLocation {
        BlobLocation {
            generation: 1,
            offset: 0,
            len,
            crc: 0,
        }
    }

    #[test]
    fn insert_many_reports_replaced_bytes_including_in_batch_duplicates() {
        let idx = KeyIndex::new();
        assert_eq!(idx.insert_many(vec![(b"a".to_vec(), loc(5))]), 0);
        // "a" replaced (5), "b" given twice: the first copy (7) is dead too.
        let items = vec![
            (b"b".to_vec(), loc(7)),
            (b"a".to_vec(), loc(1)),
            (b"b".to_vec(), loc(2)),
        ];
        assert_eq!(idx.insert_many(items), 12);
        assert_eq!(idx.get(b"a"), Some(loc(1)));
        assert_eq!(idx.get(b"b"), Some(loc(2)));
        assert_eq!(idx.live_bytes(), 3);
        // Large batches take the skiplist's leaf-merge and split paths.
        let big: Vec<_> = (0..5000u32)
            .map(|i| (i.to_be_bytes().to_vec(), loc(1)))
            .collect();
        assert_eq!(idx.insert_many(big.clone()), 0);
        assert_eq!(idx.insert_many(big), 5000);
        assert_eq!(idx.len(), 5002);
    }

    #[test]
    fn keys_range_limit_and_replace_all() {
        let idx = KeyIndex::new();
        for k in [b"a", b"b", b"c", b"d"] {
            idx.insert(k.to_vec(), loc(1));
        }
        assert_eq!(idx.keys(Some(b"b"), Some(b"d"), 10), [b"b", b"c"]);
        assert_eq!(idx.keys(Some(b"b"), None, 1), [b"b"]);
        assert!(idx.keys(Some(b"c"), Some(b"c"), 10).is_empty());
        assert!(idx.keys(None, None, 0).is_empty());
        idx.replace_all(vec![(b"x".to_vec(), loc(4)), (b"y".to_vec(), loc(6))]);
        assert_eq!(idx.snapshot().len(), 2);
        assert!(!idx.contains(b"a"));
        assert_eq!(idx.live_bytes(), 10);
        idx.replace_all(Vec::new());
        assert!(idx.is_empty());
    }

    #[test]
    fn readers_see_old_or_new_content_across_replace_all() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let idx = Arc::new(KeyIndex::new());
        let n = 2000u32;
        let gen = |g: u64| -> Vec<(Vec<u8>, BlobLocation)> {
            (0..n)
                .map(|i| {
                    let mut l = loc(1);
                    l.generation = g;
                    (i.to_be_bytes().to_vec(), l)
                })
                .collect()
        };
        idx.replace_all(gen(1));
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (idx, stop) = (Arc::clone(&idx), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut i = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        let l = idx.get(&(i % n).to_be_bytes()).expect("every key stays");
                        assert!(l.generation >= 1);
                        i = i.wrapping_add(7);
                    }
                })
            })
            .collect();
        for g in 2..30 {
            idx.replace_all(gen(g));
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(idx.len(), n as usize);
        assert_eq!(idx.get(&0u32.to_be_bytes()).unwrap().generation, 29);
    }
}
