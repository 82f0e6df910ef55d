//! Range scans and iterators, forward and backward.
//!
//! Scans walk leaf snapshots under one epoch pin. Iterators copy a batch out
//! of a scan and re-seek past the last key they returned, so they hold no
//! pin between items and stay valid under concurrent writes.

use std::borrow::Borrow;
use std::collections::VecDeque;
use std::ops::{Bound, RangeBounds};

use crossbeam_epoch::{self as epoch, Guard};

use super::config::Config;
use super::node::{keys, vals};
use super::BSkipList;

/// The upper end of a backward scan step.
enum Upper<'a, K, Q: ?Sized> {
    All,
    Le(&'a Q),
    Lt(&'a Q),
    /// Below the low fence of the leaf just scanned.
    BelowFence(K),
}

fn above<K: Borrow<Q>, Q: Ord + ?Sized>(k: &K, lo: &Bound<&Q>) -> bool {
    match lo {
        Bound::Unbounded => true,
        Bound::Included(q) => k.borrow() >= *q,
        Bound::Excluded(q) => k.borrow() > *q,
    }
}

fn below<K: Borrow<Q>, Q: Ord + ?Sized>(k: &K, hi: &Bound<&Q>) -> bool {
    match hi {
        Bound::Unbounded => true,
        Bound::Included(q) => k.borrow() <= *q,
        Bound::Excluded(q) => k.borrow() < *q,
    }
}

impl<K, V, C> BSkipList<K, V, C>
where
    K: Ord + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    C: Config,
{
    /// Calls `f` with the entries of each leaf at or above `lo` (keys and
    /// values, sliced alike), leaf by leaf upwards, until it returns `false`
    /// or the map ends.
    fn leaves_forward<'g, Q, F>(&'g self, lo: Bound<&Q>, guard: &'g Guard, mut f: F)
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
        F: FnMut(&'g [K], &'g [V]) -> bool,
    {
        let mut blk = match lo {
            Bound::Unbounded => self.head(0).block(guard),
            Bound::Included(q) | Bound::Excluded(q) => self.find(q, 0, guard).1,
        };
        loop {
            let ks = keys::<K, V, C>(blk);
            let start = match lo {
                Bound::Unbounded => 0,
                Bound::Included(q) => ks.partition_point(|k| k.borrow() < q),
                Bound::Excluded(q) => ks.partition_point(|k| k.borrow() <= q),
            };
            if !f(&ks[start..], &vals::<K, V, C>(blk)[start..]) || blk.next.is_null() {
                return;
            }
            // SAFETY: the neighbour stays allocated while `guard` pins the epoch.
            blk = unsafe { &*blk.next }.block(guard);
        }
    }

    /// Calls `f` with the entries of each leaf at or below `hi`, leaf by
    /// leaf downwards (each slice still ascending), until it returns `false`
    /// or the map begins.
    fn leaves_backward<'g, Q, F>(&'g self, hi: Bound<&Q>, guard: &'g Guard, mut f: F)
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
        F: FnMut(&'g [K], &'g [V]) -> bool,
    {
        let mut upper: Upper<'_, K, Q> = match hi {
            Bound::Unbounded => Upper::All,
            Bound::Included(q) => Upper::Le(q),
            Bound::Excluded(q) => Upper::Lt(q),
        };
        loop {
            let (node, blk) = match &upper {
                Upper::All => self.find_last_leaf(guard),
                Upper::Le(q) => self.find(*q, 0, guard),
                Upper::Lt(q) => self.find_leaf_before(*q, guard),
                Upper::BelowFence(k) => self.find_leaf_before::<K>(k, guard),
            };
            let ks = keys::<K, V, C>(blk);
            let end = match &upper {
                Upper::All => ks.len(),
                Upper::Le(q) => ks.partition_point(|k| k.borrow() <= *q),
                Upper::Lt(q) => ks.partition_point(|k| k.borrow() < *q),
                Upper::BelowFence(b) => ks.partition_point(|k| k < b),
            };
            if !f(&ks[..end], &vals::<K, V, C>(blk)[..end]) {
                return;
            }
            match &node.low {
                None => return,
                Some(low) => upper = Upper::BelowFence(low.clone()),
            }
        }
    }

    /// Calls `f` on entries from `lo` upwards, in increasing key order, until
    /// it returns `false` or the map ends.
    pub(crate) fn scan_forward<'g, Q, F>(&'g self, lo: Bound<&Q>, guard: &'g Guard, mut f: F)
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
        F: FnMut(&'g K, &'g V) -> bool,
    {
        self.leaves_forward(lo, guard, |ks, vs| ks.iter().zip(vs).all(|(k, v)| f(k, v)));
    }

    /// Calls `f` on entries from `hi` downwards, in decreasing key order,
    /// until it returns `false` or the map begins.
    pub(crate) fn scan_backward<Q, F>(&self, hi: Bound<&Q>, guard: &Guard, mut f: F)
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
        F: FnMut(&K, &V) -> bool,
    {
        self.leaves_backward(hi, guard, |ks, vs| {
            ks.iter().zip(vs).rev().all(|(k, v)| f(k, v))
        });
    }

    /// Calls `f` on every entry with `lo <= key <= hi` (per the bounds), in
    /// increasing order, under one epoch pin: the fastest bulk read. Each key
    /// is seen at most once; a key present throughout the call is seen.
    ///
    /// ```
    /// use std::ops::Bound::*;
    /// let m = slabcache_core::skiplist::BSkipList::<u32, u32>::new();
    /// for k in 0..100 { m.insert(k, k * 2); }
    /// let mut sum = 0;
    /// m.for_each_in(Included(&10), Excluded(&20), |_, v| sum += v);
    /// assert_eq!(sum, (10..20).map(|k| k * 2).sum());
    /// ```
    pub fn for_each_in<Q>(&self, lo: Bound<&Q>, hi: Bound<&Q>, mut f: impl FnMut(&K, &V))
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let guard = &epoch::pin();
        self.scan_forward(lo, guard, |k, v| {
            if !below(k, &hi) {
                return false;
            }
            f(k, v);
            true
        });
    }

    /// Calls `f` on entries from `lo` upwards, in increasing order, while it
    /// returns `true` (under one epoch pin; each key at most once).
    ///
    /// ```
    /// use std::ops::Bound::*;
    /// let m = slabcache_core::skiplist::BSkipList::<u32, u32>::new();
    /// for k in 0..100 { m.insert(k, k); }
    /// let mut first_three = Vec::new();
    /// m.for_each_while(Included(&50), |k, _| { first_three.push(*k); first_three.len() < 3 });
    /// assert_eq!(first_three, [50, 51, 52]);
    /// ```
    pub fn for_each_while<Q>(&self, lo: Bound<&Q>, f: impl FnMut(&K, &V) -> bool)
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let guard = &epoch::pin();
        self.scan_forward(lo, guard, f);
    }

    /// Copies up to `max` entries inside `lo..hi` into `out`, ascending from
    /// `lo` (or descending from `hi` if `reverse`).
    pub fn collect_range<Q>(
        &self,
        lo: Bound<&Q>,
        hi: Bound<&Q>,
        reverse: bool,
        max: usize,
        out: &mut Vec<(K, V)>,
    ) where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        if max == 0 {
            return;
        }
        let guard = &epoch::pin();
        let start = out.len();
        if reverse {
            self.scan_backward(hi, guard, |k, v| {
                if !above(k, &lo) {
                    return false;
                }
                out.push((k.clone(), v.clone()));
                out.len() - start < max
            });
        } else {
            self.scan_forward(lo, guard, |k, v| {
                if !below(k, &hi) {
                    return false;
                }
                out.push((k.clone(), v.clone()));
                out.len() - start < max
            });
        }
    }

    /// Copies the entries inside `lo..hi` of one leaf into `out`: the first
    /// leaf, going up from `lo` (or down from `hi` if `reverse`), that has
    /// any. Empty only when the range has no entries left. A leaf is one
    /// immutable snapshot, so every key copied was present together (on a
    /// map with in-place values, a value replaced in place meanwhile may
    /// come out old or new).
    pub fn collect_leaf<Q>(
        &self,
        lo: Bound<&Q>,
        hi: Bound<&Q>,
        reverse: bool,
        out: &mut Vec<(K, V)>,
    ) where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let guard = &epoch::pin();
        // Each walk stops at the first leaf that gave anything (or at the
        // end of the range).
        if reverse {
            self.leaves_backward(hi, guard, |ks, vs| {
                for (k, v) in ks.iter().zip(vs).rev() {
                    if !above(k, &lo) {
                        return false;
                    }
                    out.push((k.clone(), v.clone()));
                }
                out.is_empty()
            });
        } else {
            self.leaves_forward(lo, guard, |ks, vs| {
                for (k, v) in ks.iter().zip(vs) {
                    if !below(k, &hi) {
                        return false;
                    }
                    out.push((k.clone(), v.clone()));
                }
                out.is_empty()
            });
        }
    }

    /// An iterator over the entries in `range`, ascending (or descending
    /// with `.rev()`); copies of keys and values.
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<u32, u32>::new();
    /// for k in 0..10 { m.insert(k, k); }
    /// let keys: Vec<u32> = m.range(3..6).map(|(k, _)| k).collect();
    /// assert_eq!(keys, [3, 4, 5]);
    /// let back: Vec<u32> = m.range(..=2).rev().map(|(k, _)| k).collect();
    /// assert_eq!(back, [2, 1, 0]);
    /// ```
    pub fn range<R: RangeBounds<K>>(&self, range: R) -> Range<'_, K, V, C> {
        Range {
            list: self,
            cursor: RangeCursor::new(range.start_bound().cloned(), range.end_bound().cloned()),
        }
    }

    /// An iterator over all entries in key order.
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<u32, u32>::new();
    /// m.insert(2, 0);
    /// m.insert(1, 0);
    /// assert_eq!(m.iter().map(|(k, _)| k).collect::<Vec<_>>(), [1, 2]);
    /// ```
    pub fn iter(&self) -> Range<'_, K, V, C> {
        self.range(..)
    }
}

/// The state of a range iteration, without a borrow of the list: it can live
/// in a Python object next to an `Arc` of the list. [`Range`] wraps one.
///
/// ```
/// use std::ops::Bound::*;
/// use slabcache_core::skiplist::{BSkipList, RangeCursor};
/// let m = BSkipList::<u32, u32>::new();
/// for k in 0..5 { m.insert(k, k); }
/// let mut c = RangeCursor::new(Included(1), Excluded(4));
/// assert_eq!(c.next(&m), Some((1, 1)));
/// assert_eq!(c.next_back(&m), Some((3, 3)));
/// assert_eq!(c.next(&m), Some((2, 2)));
/// assert_eq!(c.next(&m), None);
/// ```
pub struct RangeCursor<K, V> {
    lo: Bound<K>,
    hi: Bound<K>,
    /// Ascending entries not yet returned from the front.
    front: VecDeque<(K, V)>,
    /// Descending entries not yet returned from the back.
    back: VecDeque<(K, V)>,
    batch: usize,
}

const FIRST_BATCH: usize = 8;
const MAX_BATCH: usize = 256;

impl<K, V> RangeCursor<K, V>
where
    K: Ord + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cursor over `lo..hi`.
    pub fn new(lo: Bound<K>, hi: Bound<K>) -> Self {
        RangeCursor {
            lo,
            hi,
            front: VecDeque::new(),
            back: VecDeque::new(),
            batch: FIRST_BATCH,
        }
    }

    fn grow(&mut self) -> usize {
        let b = self.batch;
        self.batch = (b * 2).min(MAX_BATCH);
        b
    }

    /// Forgets the entries read ahead but not yet returned, so the next call
    /// reads them from the map again (a key removed meanwhile is then not
    /// returned). Nothing already returned comes back.
    ///
    /// ```
    /// use std::ops::Bound::*;
    /// use slabcache_core::skiplist::{BSkipList, RangeCursor};
    /// let m = BSkipList::<u32, u32>::new();
    /// for k in 0..5 { m.insert(k, k); }
    /// let mut c = RangeCursor::new(Unbounded, Unbounded);
    /// assert_eq!(c.next(&m), Some((0, 0)));
    /// m.clear();
    /// c.discard_read_ahead();
    /// assert_eq!(c.next(&m), None);
    /// ```
    pub fn discard_read_ahead(&mut self) {
        if let Some((k, _)) = self.front.front() {
            self.lo = Bound::Included(k.clone());
        }
        if let Some((k, _)) = self.back.front() {
            self.hi = Bound::Included(k.clone());
        }
        self.front.clear();
        self.back.clear();
        self.batch = FIRST_BATCH;
    }

    /// The next leaf's worth of entries, ascending (descending if
    /// `reverse`); empty at the end. Use one direction per cursor, and not
    /// together with [`next`](Self::next) / [`next_back`](Self::next_back).
    /// A key removed before the cursor reaches its leaf is never returned.
    ///
    /// ```
    /// use std::ops::Bound::*;
    /// use slabcache_core::skiplist::{BSkipList, RangeCursor};
    /// let m = BSkipList::<u32, u32>::new();
    /// for k in 0..5 { m.insert(k, k); }
    /// let mut c = RangeCursor::new(Excluded(0), Unbounded);
    /// // Leaf boundaries follow the keys' random heights, so gather leaves until an empty one.
    /// let mut all = Vec::new();
    /// loop {
    ///     let leaf = c.next_leaf(&m, false);
    ///     if leaf.is_empty() {
    ///         break;
    ///     }
    ///     all.extend(leaf);
    /// }
    /// assert_eq!(all, [(1, 1), (2, 2), (3, 3), (4, 4)]);
    /// ```
    pub fn next_leaf<C: Config>(
        &mut self,
        list: &BSkipList<K, V, C>,
        reverse: bool,
    ) -> Vec<(K, V)> {
        let mut buf = Vec::new();
        list.collect_leaf::<K>(self.lo.as_ref(), self.hi.as_ref(), reverse, &mut buf);
        if let Some((k, _)) = buf.last() {
            if reverse {
                self.hi = Bound::Excluded(k.clone());
            } else {
                self.lo = Bound::Excluded(k.clone());
            }
        }
        buf
    }

    /// The next entry from the front (ascending).
    pub fn next<C: Config>(&mut self, list: &BSkipList<K, V, C>) -> Option<(K, V)> {
        if let Some(e) = self.front.pop_front() {
            return Some(e);
        }
        let mut buf = Vec::new();
        let max = self.grow();
        list.collect_range::<K>(self.lo.as_ref(), self.hi.as_ref(), false, max, &mut buf);
        match buf.last() {
            Some((k, _)) => {
                self.lo = Bound::Excluded(k.clone());
                self.front.extend(buf);
                self.front.pop_front()
            }
            // Nothing left between the two ends: drain what the back read.
            None => self.back.pop_back(),
        }
    }

    /// The next entry from the back (descending).
    pub fn next_back<C: Config>(&mut self, list: &BSkipList<K, V, C>) -> Option<(K, V)> {
        if let Some(e) = self.back.pop_front() {
            return Some(e);
        }
        let mut buf = Vec::new();
        let max = self.grow();
        list.collect_range::<K>(self.lo.as_ref(), self.hi.as_ref(), true, max, &mut buf);
        match buf.last() {
            Some((k, _)) => {
                self.hi = Bound::Excluded(k.clone());
                self.back.extend(buf);
                self.back.pop_front()
            }
            None => self.front.pop_back(),
        }
    }
}

/// An iterator over a range of a [`BSkipList`]; see [`BSkipList::range`].
pub struct Range<'a, K, V, C: Config> {
    list: &'a BSkipList<K, V, C>,
    cursor: RangeCursor<K, V>,
}

impl<K, V, C> Iterator for Range<'_, K, V, C>
where
    K: Ord + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    C: Config,
{
    type Item = (K, V);

    fn next(&mut self) -> Option<(K, V)> {
        self.cursor.next(self.list)
    }
}

impl<K, V, C> DoubleEndedIterator for Range<'_, K, V, C>
where
    K: Ord + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    C: Config,
{
    fn next_back(&mut self) -> Option<(K, V)> {
        self.cursor.next_back(self.list)
    }
}
