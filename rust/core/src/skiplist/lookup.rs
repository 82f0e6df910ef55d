//! Point and boundary reads: get, contains, first/last, lower/upper bound.
//! All lock-free snapshots.

use std::borrow::Borrow;
use std::ops::Bound;

use crossbeam_epoch::{self as epoch, Guard};

use super::config::Config;
use super::node::{keys, prefetch, vals, Head};
use super::{BSkipList, DefaultConfig};

/// Point reads under one epoch pin; see [`BSkipList::reader`]. Not `Send`
/// (the pin belongs to its thread); drop it to let the collector free what
/// writers replaced meanwhile.
///
/// ```
/// let m = slabcache_core::skiplist::BSkipList::<u64, u64>::new();
/// for k in 0..100 { m.insert(k, k * 2); }
/// let sum: u64 = {
///     let r = m.reader();
///     (0..100).filter_map(|k| r.get(&k)).sum()
/// };
/// assert_eq!(sum, 9900);
/// ```
pub struct Reader<'a, K, V, C: Config = DefaultConfig> {
    list: &'a BSkipList<K, V, C>,
    guard: Guard,
}

impl<K, V, C> Reader<'_, K, V, C>
where
    K: Ord + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    C: Config,
{
    /// [`BSkipList::get`] without a pin of its own.
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<u64, u64>::new();
    /// m.insert(1, 10);
    /// assert_eq!(m.reader().get(&1), Some(10));
    /// ```
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.list.get_with_in(key, V::clone, &self.guard)
    }

    /// [`BSkipList::get_with`] without a pin of its own.
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<u64, String>::new();
    /// m.insert(1, "one".into());
    /// assert_eq!(m.reader().get_with(&1, |s| s.len()), Some(3));
    /// ```
    #[inline]
    pub fn get_with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.list.get_with_in(key, f, &self.guard)
    }

    /// [`BSkipList::contains_key`] without a pin of its own.
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<u64, u64>::new();
    /// m.insert(1, 10);
    /// assert!(m.reader().contains_key(&1));
    /// ```
    #[inline]
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.list.contains_key_in(key, &self.guard)
    }
}

impl<K, V, C> BSkipList<K, V, C>
where
    K: Ord + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    C: Config,
{
    /// A copy of the value of `key`.
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<Vec<u8>, u32>::new();
    /// m.insert(b"k".to_vec(), 1);
    /// assert_eq!(m.get(&b"k"[..]), Some(1));
    /// assert_eq!(m.get(&b"x"[..]), None);
    /// ```
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.get_with(key, V::clone)
    }

    /// Calls `f` on the value of `key` without copying it.
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<u32, String>::new();
    /// m.insert(1, "hello".into());
    /// assert_eq!(m.get_with(&1, |s| s.len()), Some(5));
    /// ```
    #[inline]
    pub fn get_with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.get_with_in(key, f, &epoch::pin())
    }

    /// `get_with` under a pin the caller holds.
    #[inline]
    pub(crate) fn get_with_in<Q, R>(
        &self,
        key: &Q,
        f: impl FnOnce(&V) -> R,
        guard: &Guard,
    ) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let (_, blk) = self.find(key, 0, guard);
        let vs = vals::<K, V, C>(blk);
        // The value's line is fetched while the keys are searched (else it
        // is one more dependent miss after the search).
        prefetch(vs);
        let ks = keys::<K, V, C>(blk);
        let i = ks.binary_search_by(|k| k.borrow().cmp(key)).ok()?;
        Some(f(&vs[i]))
    }

    /// `contains_key` under a pin the caller holds.
    #[inline]
    pub(crate) fn contains_key_in<Q>(&self, key: &Q, guard: &Guard) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let (_, blk) = self.find(key, 0, guard);
        keys::<K, V, C>(blk)
            .binary_search_by(|k| k.borrow().cmp(key))
            .is_ok()
    }

    /// A handle for many point reads under one epoch pin: a pin costs a
    /// full memory fence, and the fence keeps consecutive lookups from
    /// overlapping in the CPU. Hold it for a batch, not for long: while it
    /// lives, blocks that writers replace are not freed (by any thread).
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<u64, u64>::new();
    /// m.insert(1, 10);
    /// let r = m.reader();
    /// assert_eq!(r.get(&1), Some(10));
    /// assert!(!r.contains_key(&2));
    /// ```
    #[inline]
    pub fn reader(&self) -> Reader<'_, K, V, C> {
        Reader {
            list: self,
            guard: epoch::pin(),
        }
    }

    /// Copies of the values of many keys, in order (`None` where absent).
    /// Large batches are looked up on several threads (rayon).
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<u64, u64>::new();
    /// m.insert(1, 10);
    /// assert_eq!(m.get_many(&[1, 2]), vec![Some(10), None]);
    /// ```
    pub fn get_many<Q>(&self, keys: &[Q]) -> Vec<Option<V>>
    where
        K: Borrow<Q>,
        Q: Ord + Sync,
    {
        use rayon::prelude::*;
        // Below this size, or on fewer than 4 threads, splitting the batch
        // costs more than it saves (measured on a 2-core VM: the parallel
        // path was slower than one core doing it all).
        const PAR_MIN: usize = 32 * 1024;
        if keys.len() >= PAR_MIN && rayon::current_num_threads() >= 4 {
            keys.par_chunks(4096)
                .flat_map_iter(|chunk| chunk.iter().map(|k| self.get(k)))
                .collect()
        } else {
            keys.iter().map(|k| self.get(k)).collect()
        }
    }

    /// [`get_many`](Self::get_many) for big batches: looks the keys up in
    /// key order, so consecutive keys that fall in the same leaf cost one
    /// binary search in it instead of a descent from the top (a descent is
    /// two dependent cache misses per level). Worth it once the batch holds
    /// several keys per leaf (`keys.len()` of at least `len() / 64`, say);
    /// the sort costs more than it saves on sparse batches. One epoch pin
    /// for the whole batch; as with `get_many`, each key is read atomically,
    /// the batch as a whole is not one snapshot.
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<u64, u64>::new();
    /// for k in 0..1000 { m.insert(k * 2, k); }
    /// assert_eq!(m.get_many_sorted(&[10, 3, 1998, 0]), vec![Some(5), None, Some(999), Some(0)]);
    /// ```
    pub fn get_many_sorted<Q>(&self, batch: &[Q]) -> Vec<Option<V>>
    where
        K: Borrow<Q>,
        Q: Ord + Clone + Send + Sync,
    {
        use rayon::slice::ParallelSliceMut;
        let mut order: Vec<(Q, u32)> = batch
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i as u32))
            .collect();
        if order.len() > 64 * 1024 && rayon::current_num_threads() >= 4 {
            order.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
        } else {
            order.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        let mut out: Vec<Option<V>> = vec![None; batch.len()];
        let guard = &epoch::pin();
        let mut leaf: Option<&Head<K, V, C>> = None;
        for (q, i) in &order {
            // Keys ascend, so `q` is at or above the current leaf's low
            // fence; it is in that leaf while below its high fence, else
            // usually in one of the next few (a step right costs one miss,
            // a descent from the top several).
            let mut near = leaf;
            for _ in 0..4 {
                match near {
                    Some(b) if b.high.as_ref().is_some_and(|h| h.borrow() <= q) => {
                        // SAFETY: `high` is set, so `next` is a live node
                        // while `guard` pins the epoch (as in `find`).
                        let b = unsafe { &*b.next }.block(guard);
                        prefetch(vals::<K, V, C>(b));
                        near = Some(b);
                    }
                    _ => break,
                }
            }
            let blk = match near {
                Some(b) if b.high.as_ref().is_none_or(|h| q < h.borrow()) => b,
                _ => self.find(q, 0, guard).1,
            };
            leaf = Some(blk);
            let ks = keys::<K, V, C>(blk);
            if let Ok(j) = ks.binary_search_by(|k| k.borrow().cmp(q)) {
                out[*i as usize] = Some(vals::<K, V, C>(blk)[j].clone());
            }
        }
        out
    }

    /// Whether `key` is present.
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<u32, u32>::new();
    /// m.insert(1, 1);
    /// assert!(m.contains_key(&1) && !m.contains_key(&2));
    /// ```
    #[inline]
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        // No value is read: skip `get_with`'s prefetch of the value lines.
        self.contains_key_in(key, &epoch::pin())
    }

    /// The smallest entry.
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<u32, u32>::new();
    /// assert_eq!(m.first(), None);
    /// m.insert(5, 50);
    /// m.insert(3, 30);
    /// assert_eq!(m.first(), Some((3, 30)));
    /// ```
    pub fn first(&self) -> Option<(K, V)> {
        self.lower_bound::<K>(Bound::Unbounded)
    }

    /// The largest entry.
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<u32, u32>::new();
    /// m.insert(5, 50);
    /// m.insert(3, 30);
    /// assert_eq!(m.last(), Some((5, 50)));
    /// ```
    pub fn last(&self) -> Option<(K, V)> {
        self.upper_bound::<K>(Bound::Unbounded)
    }

    pub(crate) fn first_key(&self) -> Option<K> {
        let guard = &epoch::pin();
        let mut out = None;
        self.scan_forward::<K, _>(Bound::Unbounded, guard, |k, _| {
            out = Some(k.clone());
            false
        });
        out
    }

    /// The first entry at or after `bound`: `Included(q)` gives the smallest
    /// key `>= q`, `Excluded(q)` the smallest `> q`, `Unbounded` the first.
    ///
    /// ```
    /// use std::ops::Bound::*;
    /// let m = slabcache_core::skiplist::BSkipList::<u32, u32>::new();
    /// for k in [10, 20, 30] { m.insert(k, k); }
    /// assert_eq!(m.lower_bound(Included(&20)), Some((20, 20)));
    /// assert_eq!(m.lower_bound(Excluded(&20)), Some((30, 30)));
    /// assert_eq!(m.lower_bound(Excluded(&30)), None);
    /// ```
    pub fn lower_bound<Q>(&self, bound: Bound<&Q>) -> Option<(K, V)>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let guard = &epoch::pin();
        let mut out = None;
        self.scan_forward(bound, guard, |k, v| {
            out = Some((k.clone(), v.clone()));
            false
        });
        out
    }

    /// The last entry at or before `bound`: `Included(q)` gives the largest
    /// key `<= q`, `Excluded(q)` the largest `< q`, `Unbounded` the last.
    ///
    /// ```
    /// use std::ops::Bound::*;
    /// let m = slabcache_core::skiplist::BSkipList::<u32, u32>::new();
    /// for k in [10, 20, 30] { m.insert(k, k); }
    /// assert_eq!(m.upper_bound(Included(&25)), Some((20, 20)));
    /// assert_eq!(m.upper_bound(Excluded(&20)), Some((10, 10)));
    /// assert_eq!(m.upper_bound(Excluded(&10)), None);
    /// ```
    pub fn upper_bound<Q>(&self, bound: Bound<&Q>) -> Option<(K, V)>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let guard = &epoch::pin();
        let mut out = None;
        self.scan_backward(bound, guard, |k, v| {
            out = Some((k.clone(), v.clone()));
            false
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BSkipList, Fanout16};

    #[test]
    fn sorted_batch_lookup_matches_one_by_one() {
        let m = BSkipList::<u64, u64, Fanout16>::default();
        for k in 0..20_000u64 {
            m.insert(k * 3, k);
        }
        // Present and absent keys, repeats, out of order, beyond both ends.
        let batch: Vec<u64> = (0..30_000u64)
            .map(|i| (i * 7919) % 61_000)
            .chain([0, 0, u64::MAX, 59_997])
            .collect();
        let want: Vec<Option<u64>> = batch.iter().map(|k| m.get(k)).collect();
        assert_eq!(m.get_many_sorted(&batch), want);
        assert_eq!(m.get_many(&batch), want);
        assert!(m.get_many_sorted::<u64>(&[]).is_empty());
    }
}
