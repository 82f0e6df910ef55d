//! Positions: how many keys lie below a key, and the entry at a position.
//!
//! Nodes keep no subtree counts (a count on every inner node would be one
//! more contended write per insert at every level), so both walks visit the
//! leaf level from the head, summing block lengths: `O(n / B)` leaf hops,
//! never a per-key step. A [`PositionIndex`] records that walk once (the
//! leaves' low fences as range bounds, keys per range in a Fenwick tree) and
//! is kept exact by the caller reporting each key added or removed, so a
//! position costs `O(log n)` also between writes. Under concurrent writes
//! the answer is the position in some state the walk passed through, not
//! one atomic snapshot.

use std::borrow::Borrow;
use std::ops::Bound;

use crossbeam_epoch as epoch;

use super::config::Config;
use super::node::{keys, vals, Head};
use super::BSkipList;

impl<K, V, C> BSkipList<K, V, C>
where
    K: Ord + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    C: Config,
{
    /// The number of keys below `bound`: `Included(q)` counts keys `< q`
    /// (the position `q` has or would take), `Excluded(q)` keys `<= q`,
    /// `Unbounded` every key.
    ///
    /// ```
    /// use std::ops::Bound::*;
    /// let m = slabcache_core::skiplist::BSkipList::<u32, u32>::new();
    /// for k in [10, 20, 30] { m.insert(k, k); }
    /// assert_eq!(m.count_below(Included(&20)), 1);
    /// assert_eq!(m.count_below(Excluded(&20)), 2);
    /// assert_eq!(m.count_below(Included(&5)), 0);
    /// ```
    pub fn count_below<Q>(&self, bound: Bound<&Q>) -> usize
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let guard = &epoch::pin();
        let mut blk = self.head(0).block(guard);
        let mut n = 0;
        loop {
            let ks = keys::<K, V, C>(blk);
            let next_low = if blk.next.is_null() {
                None
            } else {
                // SAFETY: the neighbour stays allocated while `guard` pins the epoch.
                Some(unsafe { &*blk.next })
            };
            // The whole leaf is below the bound when the next leaf's low
            // fence is (every key here is smaller than that fence).
            let whole = match (next_low.and_then(|nx| nx.low.as_ref()), bound) {
                (_, Bound::Unbounded) => true,
                (Some(f), Bound::Included(q) | Bound::Excluded(q)) => f.borrow() <= q,
                (None, _) => false,
            };
            if !whole {
                // Keys from the next leaf on are >= its fence > q.
                return n + match bound {
                    Bound::Unbounded => ks.len(),
                    Bound::Included(q) => ks.partition_point(|k| k.borrow() < q),
                    Bound::Excluded(q) => ks.partition_point(|k| k.borrow() <= q),
                };
            }
            n += ks.len();
            match next_low {
                None => return n,
                Some(nx) => blk = nx.block(guard),
            }
        }
    }

    /// The entry at position `index` (0 = the smallest), or `None` past the end.
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<u32, u32>::new();
    /// for k in [10, 20, 30] { m.insert(k, k * 2); }
    /// assert_eq!(m.nth(1), Some((20, 40)));
    /// assert_eq!(m.nth(3), None);
    /// ```
    pub fn nth(&self, index: usize) -> Option<(K, V)> {
        let guard = &epoch::pin();
        let mut blk = self.head(0).block(guard);
        let mut skip = index;
        loop {
            let ks = keys::<K, V, C>(blk);
            if skip < ks.len() {
                let vs = vals::<K, V, C>(blk);
                return Some((ks[skip].clone(), vs[skip].clone()));
            }
            skip -= ks.len();
            if blk.next.is_null() {
                return None;
            }
            // SAFETY: the neighbour stays allocated while `guard` pins the epoch.
            blk = unsafe { &*blk.next }.block(guard);
        }
    }
}

/// Position bookkeeping for a map: the key space cut into ranges at the low
/// fences the leaves had when it was built, and how many keys each range
/// holds, summed by a Fenwick tree. A position costs one search, two
/// `O(log leaves)` steps and a short walk inside one range.
///
/// It stays exact under writes as long as the caller reports each key added
/// or removed ([`added`](Self::added) / [`removed`](Self::removed), with the
/// range from [`range_of`](Self::range_of)): a range is a span of key
/// values, not a leaf, so splits and merges of leaves never invalidate it.
/// Value replacements need no report. Ranges that grow make the walk inside
/// them longer; once one holds more than four full leaves,
/// [`is_worn`](Self::is_worn) says to build a fresh index. A caller that
/// misses a write (a batch) must build a fresh one too (the Python binding
/// counts its writes for that).
///
/// ```
/// use std::ops::Bound::*;
/// let m = slabcache_core::skiplist::BSkipList::<u32, u32>::new();
/// for k in 0..1000 { m.insert(k * 2, k); }
/// let mut idx = m.position_index();
/// assert_eq!(m.count_below_indexed(&idx, Included(&11)), 6);
/// // A write, reported: the index stays exact.
/// let r = idx.range_of(&3);
/// assert!(m.insert(3, 0).is_none());
/// idx.added(r);
/// assert_eq!(m.count_below_indexed(&idx, Included(&11)), 7);
/// assert_eq!(m.nth_indexed(&idx, 2), Some((3, 0)));
/// assert_eq!(idx.len(), 1001);
/// ```
pub struct PositionIndex<K> {
    /// Low fences of ranges `1..`; range 0 starts at minus infinity.
    fences: Vec<K>,
    /// Keys per range.
    counts: Vec<usize>,
    /// Fenwick tree over `counts` (1-based: `tree[i]` covers ranges
    /// `i - lowbit(i) .. i`).
    tree: Vec<usize>,
    total: usize,
    /// A range holding more keys than this makes the index worn.
    limit: usize,
    worn: bool,
}

impl<K: Ord> PositionIndex<K> {
    fn from_counts(fences: Vec<K>, counts: Vec<usize>, limit: usize) -> Self {
        let mut tree = vec![0; counts.len() + 1];
        for (i, &c) in counts.iter().enumerate() {
            tree[i + 1] += c;
            let parent = (i + 1) + ((i + 1) & (i + 1).wrapping_neg());
            if parent < tree.len() {
                tree[parent] += tree[i + 1];
            }
        }
        let total = counts.iter().sum();
        PositionIndex {
            fences,
            counts,
            tree,
            total,
            limit,
            worn: false,
        }
    }

    /// The range holding `key`.
    pub fn range_of<Q>(&self, key: &Q) -> usize
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.fences.partition_point(|f| f.borrow() <= key)
    }

    /// Reports a key added to `range` (a fresh key, not a replaced value).
    pub fn added(&mut self, range: usize) {
        self.counts[range] += 1;
        self.total += 1;
        self.worn |= self.counts[range] > self.limit;
        let mut i = range + 1;
        while i < self.tree.len() {
            self.tree[i] += 1;
            i += i & i.wrapping_neg();
        }
    }

    /// Reports a key removed from `range`.
    pub fn removed(&mut self, range: usize) {
        // A miscount would be a caller bug; stay in range rather than wrap.
        if self.counts[range] == 0 {
            self.worn = true;
            return;
        }
        self.counts[range] -= 1;
        self.total -= 1;
        let mut i = range + 1;
        while i < self.tree.len() {
            self.tree[i] -= 1;
            i += i & i.wrapping_neg();
        }
    }

    /// Whether a range grew so large that a fresh index would be faster.
    pub fn is_worn(&self) -> bool {
        self.worn
    }

    /// Keys counted.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether no key is counted.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Keys in ranges `0..range`.
    fn before(&self, range: usize) -> usize {
        let (mut i, mut n) = (range, 0);
        while i > 0 {
            n += self.tree[i];
            i &= i - 1;
        }
        n
    }

    /// The range holding position `index` and the keys before that range
    /// (`index < len()`).
    fn range_at(&self, index: usize) -> (usize, usize) {
        let (mut at, mut before) = (0, 0);
        let mut step = (self.tree.len() - 1).next_power_of_two();
        while step > 0 {
            let next = at + step;
            if next < self.tree.len() && before + self.tree[next] <= index {
                at = next;
                before += self.tree[next];
            }
            step >>= 1;
        }
        (at, before)
    }
}

impl<K, V, C> BSkipList<K, V, C>
where
    K: Ord + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    C: Config,
{
    /// Walks the leaf level once and records its layout.
    ///
    /// ```
    /// use std::ops::Bound::*;
    /// let m = slabcache_core::skiplist::BSkipList::<u32, u32>::new();
    /// for k in 0..1000 { m.insert(k * 2, k); }
    /// let idx = m.position_index();
    /// assert_eq!(m.count_below_indexed(&idx, Included(&11)), 6);
    /// assert_eq!(m.nth_indexed(&idx, 500), Some((1000, 500)));
    /// ```
    pub fn position_index(&self) -> PositionIndex<K> {
        let guard = &epoch::pin();
        let mut blk = self.head(0).block(guard);
        let (mut fences, mut counts) = (Vec::new(), Vec::new());
        loop {
            counts.push(keys::<K, V, C>(blk).len());
            if blk.next.is_null() {
                return PositionIndex::from_counts(fences, counts, 4 * C::B);
            }
            // SAFETY: the neighbour stays allocated while `guard` pins the epoch.
            let next = unsafe { &*blk.next };
            match &next.low {
                Some(f) => fences.push(f.clone()),
                None => unreachable!("only the head leaf has no low fence"),
            }
            blk = next.block(guard);
        }
    }

    /// The leaf holding the low end of `range` and the first position in
    /// it that belongs to the range.
    fn range_start<'g>(
        &'g self,
        idx: &PositionIndex<K>,
        range: usize,
        guard: &'g epoch::Guard,
    ) -> (&'g Head<K, V, C>, usize) {
        if range == 0 {
            return (self.head(0).block(guard), 0);
        }
        let low = &idx.fences[range - 1];
        let (_, blk) = self.find(low, 0, guard);
        (blk, keys::<K, V, C>(blk).partition_point(|k| k < low))
    }

    /// [`count_below`](Self::count_below) through `idx`: `O(log n)` plus a
    /// walk over the few leaves of one range.
    pub fn count_below_indexed<Q>(&self, idx: &PositionIndex<K>, bound: Bound<&Q>) -> usize
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let q = match bound {
            Bound::Unbounded => return idx.total,
            Bound::Included(q) | Bound::Excluded(q) => q,
        };
        let range = idx.range_of(q);
        let guard = &epoch::pin();
        let (mut blk, start) = self.range_start(idx, range, guard);
        // Keys of the range below the bound, leaf by leaf from its start.
        let mut n = idx.before(range);
        let mut from = start;
        loop {
            let ks = &keys::<K, V, C>(blk)[from..];
            let whole = match &blk.high {
                Some(h) => h.borrow() <= q,
                None => false,
            };
            if !whole {
                return n + match bound {
                    Bound::Included(q) => ks.partition_point(|k| k.borrow() < q),
                    _ => ks.partition_point(|k| k.borrow() <= q),
                };
            }
            n += ks.len();
            from = 0;
            // SAFETY: `high` is set, so `next` is a live neighbour while pinned.
            blk = unsafe { &*blk.next }.block(guard);
        }
    }

    /// [`nth`](Self::nth) through `idx`: `O(log n)` plus a walk over the
    /// few leaves of one range.
    pub fn nth_indexed(&self, idx: &PositionIndex<K>, index: usize) -> Option<(K, V)> {
        if index >= idx.total {
            return None;
        }
        let (range, before) = idx.range_at(index);
        let guard = &epoch::pin();
        let (mut blk, mut from) = self.range_start(idx, range, guard);
        let mut skip = index - before;
        loop {
            let ks = keys::<K, V, C>(blk);
            if skip < ks.len() - from {
                let at = from + skip;
                return Some((ks[at].clone(), vals::<K, V, C>(blk)[at].clone()));
            }
            skip -= ks.len() - from;
            from = 0;
            if blk.next.is_null() {
                return None;
            }
            // SAFETY: the neighbour stays allocated while `guard` pins the epoch.
            blk = unsafe { &*blk.next }.block(guard);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Bound::*;

    use super::super::{BSkipList, Fanout16};

    #[test]
    fn positions_match_a_sorted_vec_across_many_leaves() {
        let m = BSkipList::<u32, u32, Fanout16>::default();
        let keys: Vec<u32> = (0..3000).map(|i| i * 3).collect();
        for &k in keys.iter().rev() {
            m.insert(k, k + 1);
        }
        for k in (0..9005).step_by(7) {
            let lt = keys.partition_point(|&x| x < k);
            let le = keys.partition_point(|&x| x <= k);
            assert_eq!(m.count_below(Included(&k)), lt, "< {k}");
            assert_eq!(m.count_below(Excluded(&k)), le, "<= {k}");
        }
        assert_eq!(m.count_below::<u32>(Unbounded), keys.len());
        for (i, &k) in keys.iter().enumerate().step_by(13) {
            assert_eq!(m.nth(i), Some((k, k + 1)));
        }
        assert_eq!(m.nth(keys.len()), None);
        for k in (0..9000).step_by(2) {
            m.remove(&k);
        }
        let left: Vec<u32> = keys.iter().copied().filter(|k| k % 2 == 1).collect();
        for k in (0..9005).step_by(5) {
            assert_eq!(
                m.count_below(Included(&k)),
                left.partition_point(|&x| x < k)
            );
            assert_eq!(
                m.count_below(Excluded(&k)),
                left.partition_point(|&x| x <= k)
            );
        }
        for (i, &k) in left.iter().enumerate() {
            assert_eq!(m.nth(i).map(|e| e.0), Some(k));
        }
        let idx = m.position_index();
        for k in (0..9005).step_by(3) {
            assert_eq!(
                m.count_below_indexed(&idx, Included(&k)),
                left.partition_point(|&x| x < k)
            );
            assert_eq!(
                m.count_below_indexed(&idx, Excluded(&k)),
                left.partition_point(|&x| x <= k)
            );
        }
        for (i, &k) in left.iter().enumerate() {
            assert_eq!(m.nth_indexed(&idx, i).map(|e| e.0), Some(k));
        }
        assert_eq!(m.nth_indexed(&idx, left.len()), None);
    }

    #[test]
    fn reported_writes_keep_the_index_exact_through_splits_and_merges() {
        let m = BSkipList::<u32, u32, Fanout16>::default();
        let mut model = std::collections::BTreeSet::new();
        for k in (0..2000u32).map(|i| i * 10) {
            m.insert(k, k);
            model.insert(k);
        }
        let mut idx = m.position_index();
        let mut x = 12345u32;
        for step in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // Inserts cluster in a few hot spots (so leaves split and one
            // range grows); removes are spread out (so leaves merge).
            let k = if step % 3 == 0 {
                (x % 20_000) / 10 * 10 + 5
            } else {
                (x % 4) * 5000 + (x >> 8) % 300
            };
            let r = idx.range_of(&k);
            if step % 3 == 0 {
                if m.remove(&k).is_some() {
                    idx.removed(r);
                    model.remove(&k);
                }
            } else if m.insert(k, k).is_none() {
                idx.added(r);
                model.insert(k);
            }
            if step % 97 == 0 {
                let sorted: Vec<u32> = model.iter().copied().collect();
                assert_eq!(idx.len(), sorted.len());
                for q in (0..21_000).step_by(331) {
                    assert_eq!(
                        m.count_below_indexed(&idx, Included(&q)),
                        sorted.partition_point(|&s| s < q)
                    );
                    assert_eq!(
                        m.count_below_indexed(&idx, Excluded(&q)),
                        sorted.partition_point(|&s| s <= q)
                    );
                }
                for i in (0..sorted.len()).step_by(89) {
                    assert_eq!(m.nth_indexed(&idx, i), Some((sorted[i], sorted[i])));
                }
                assert_eq!(m.nth_indexed(&idx, sorted.len()), None);
            }
            if idx.is_worn() {
                idx = m.position_index();
            }
        }
        m.check_invariants().unwrap();
    }
}
