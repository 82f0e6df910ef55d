//! Positions: how many keys lie below a key, and the entry at a position.
//!
//! Nodes keep no subtree counts (a count on every inner node would be one
//! more contended write per insert at every level), so both walks visit the
//! leaf level from the head, summing block lengths: `O(n / B)` leaf hops,
//! never a per-key step. A [`PositionIndex`] records that walk (each leaf's
//! low fence and the keys before it) so that, while no key is added or
//! removed, a position costs one search plus two binary searches. Under
//! concurrent writes the answer is the position in some state the walk
//! passed through, not one atomic snapshot.

use std::borrow::Borrow;
use std::ops::Bound;

use crossbeam_epoch as epoch;

use super::config::Config;
use super::node::{keys, vals};
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

/// The leaf layout of a map at one moment: the low fence of every leaf but
/// the first, and how many keys lie before each leaf. Valid until a key is
/// added or removed (value replacements keep it valid); the caller tracks
/// that (the Python binding counts its writes). A stale index is detected
/// where it can be (a fence no longer a leaf) and answered by a fresh walk.
pub struct PositionIndex<K> {
    fences: Vec<K>,
    before: Vec<usize>,
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
        let (mut fences, mut before, mut n) = (Vec::new(), vec![0], 0);
        loop {
            n += keys::<K, V, C>(blk).len();
            if blk.next.is_null() {
                return PositionIndex { fences, before };
            }
            // SAFETY: the neighbour stays allocated while `guard` pins the epoch.
            let next = unsafe { &*blk.next };
            match &next.low {
                Some(f) => fences.push(f.clone()),
                None => unreachable!("only the head leaf has no low fence"),
            }
            before.push(n);
            blk = next.block(guard);
        }
    }

    /// [`count_below`](Self::count_below) through `idx`: `O(log n)`.
    pub fn count_below_indexed<Q>(&self, idx: &PositionIndex<K>, bound: Bound<&Q>) -> usize
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let q = match bound {
            Bound::Unbounded => return self.count_below(bound),
            Bound::Included(q) | Bound::Excluded(q) => q,
        };
        let guard = &epoch::pin();
        let (node, blk) = self.find(q, 0, guard);
        let leaf = match &node.low {
            None => Some(0),
            Some(f) => idx.fences.binary_search(f).ok().map(|i| i + 1),
        };
        let Some(leaf) = leaf else {
            return self.count_below(bound);
        };
        let ks = keys::<K, V, C>(blk);
        idx.before[leaf]
            + match bound {
                Bound::Included(q) => ks.partition_point(|k| k.borrow() < q),
                _ => ks.partition_point(|k| k.borrow() <= q),
            }
    }

    /// [`nth`](Self::nth) through `idx`: `O(log n)`.
    pub fn nth_indexed(&self, idx: &PositionIndex<K>, index: usize) -> Option<(K, V)> {
        let leaf = idx.before.partition_point(|&b| b <= index) - 1;
        let guard = &epoch::pin();
        let (node, blk) = match leaf {
            0 => {
                let head = self.head(0);
                (head, head.block(guard))
            }
            i => self.find(&idx.fences[i - 1], 0, guard),
        };
        let at = index - idx.before[leaf];
        let ks = keys::<K, V, C>(blk);
        let same_leaf = match (leaf, &node.low) {
            (0, None) => true,
            (i, Some(f)) => *f == idx.fences[i - 1],
            _ => false,
        };
        if !same_leaf || at >= ks.len() {
            return self.nth(index);
        }
        Some((ks[at].clone(), vals::<K, V, C>(blk)[at].clone()))
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
}
