//! Remove, pop_first, and the merging of underfull neighbours.

use std::borrow::Borrow;

use crossbeam_epoch::{self as epoch, Guard};

use super::block::Builder;
use super::config::Config;
use super::insert::move_high;
use super::node::{hints, keys, kids, retire_block, retire_node, vals, Head, LockGuard, Node};
use super::BSkipList;

type LeafB<K, V, C> = Builder<K, V, Node<K, V, C>>;
type InnerB<K, V, C> = super::node::InnerBuilder<K, V, C>;

impl<K, V, C> BSkipList<K, V, C>
where
    K: Ord + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    C: Config,
{
    /// Removes `key`; returns its value.
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<String, u32>::new();
    /// m.insert("a".into(), 1);
    /// assert_eq!(m.remove("a"), Some(1));
    /// assert_eq!(m.remove("a"), None);
    /// ```
    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let guard = &epoch::pin();
        loop {
            let (node, _) = self.find_to_write(key, 0, guard);
            let Some((node, g)) = self.lock_covering(node, key, guard) else {
                continue;
            };
            let blk = node.block(guard);
            let ks = keys::<K, V, C>(blk);
            let i = ks.binary_search_by(|k| k.borrow().cmp(key)).ok()?;
            let (_, v) = self.remove_at(node, blk, i, guard);
            let left = ks.len() - 1;
            drop(g);
            if left <= C::B / 8 {
                self.compact(key, 1, guard);
            }
            super::reclaim::after_write(guard);
            return Some(v);
        }
    }

    /// Removes and returns the smallest entry (atomically: it is the smallest
    /// at the moment it is removed).
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<u32, u32>::new();
    /// m.insert(2, 20);
    /// m.insert(1, 10);
    /// assert_eq!(m.pop_first(), Some((1, 10)));
    /// assert_eq!(m.pop_first(), Some((2, 20)));
    /// assert_eq!(m.pop_first(), None);
    /// ```
    pub fn pop_first(&self) -> Option<(K, V)> {
        let guard = &epoch::pin();
        // Lock leaves left to right, keeping every empty one locked, so no
        // smaller key can appear behind us before we remove.
        let mut held: Vec<LockGuard<'_, C>> = Vec::new();
        let mut node = self.head(0);
        loop {
            let g = node.lock();
            // The head never dies; any other node here was locked while its
            // left neighbour was, so it cannot have been merged away.
            debug_assert!(!node.is_dead());
            let blk = node.block(guard);
            let ks = keys::<K, V, C>(blk);
            if !ks.is_empty() {
                let entry = self.remove_at(node, blk, 0, guard);
                let left = ks.len() - 1;
                drop(g);
                drop(held);
                if left <= C::B / 8 {
                    self.compact(&entry.0, 1, guard);
                }
                super::reclaim::after_write(guard);
                return Some(entry);
            }
            if blk.next.is_null() {
                return None;
            }
            held.push(g);
            // SAFETY: the neighbour of a locked node's current block is live.
            node = unsafe { &*blk.next };
        }
    }

    /// Removes every entry (one `pop_first` at a time, so concurrent users
    /// see a shrinking map, never a broken one).
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<u32, u32>::new();
    /// for i in 0..100 { m.insert(i, i); }
    /// m.clear();
    /// assert!(m.is_empty());
    /// ```
    pub fn clear(&self) {
        while self.pop_first().is_some() {}
    }

    /// Rewrites the locked leaf `node` without entry `i`; returns it (copies).
    fn remove_at(
        &self,
        node: &Node<K, V, C>,
        blk: &Head<K, V, C>,
        i: usize,
        guard: &Guard,
    ) -> (K, V) {
        let ks = keys::<K, V, C>(blk);
        let vs = vals::<K, V, C>(blk);
        let out = (ks[i].clone(), vs[i].clone());
        let n = ks.len();
        let mut b = LeafB::<K, V, C>::new(blk.next, None, n - 1, n - 1);
        // SAFETY: every entry but `i` moves into the new block; the old block
        // is retired shallowly, dropping entry `i` once no reader can see it.
        unsafe {
            move_high(&mut b, blk);
            b.move_keys(&ks[..i]);
            b.move_keys(&ks[i + 1..]);
            b.move_items(&vs[..i]);
            b.move_items(&vs[i + 1..]);
            let old = node.publish(b.finish());
            retire_block(guard, old, true, Some(i), Some(i), false);
        }
        self.len.add(-1);
        out
    }

    /// Merges the node covering `key` on level `level - 1` with its
    /// neighbour under the same parent when one of them is empty or both
    /// together hold at most `B / 2` entries. A parent left with one child is
    /// merged one level up, after which the level below is looked at again
    /// (its node now has a neighbour under the same parent).
    pub(crate) fn compact<Q>(&self, key: &Q, mut level: usize, guard: &Guard)
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let mut rounds = 0;
        while level >= 1 && level <= self.top_level() && rounds < 4 * super::config::MAX_LEVELS {
            rounds += 1;
            let (p, _) = self.find_to_write(key, level, guard);
            let Some((p, pg)) = self.lock_covering(p, key, guard) else {
                continue;
            };
            let pblk = p.block(guard);
            let pks = keys::<K, V, C>(pblk);
            let pcs = kids::<K, V, C>(pblk);
            if pcs.len() < 2 {
                // A lone child: the parent itself is the node to merge.
                drop(pg);
                level += 1;
                continue;
            }
            let pos = pks.partition_point(|k| k.borrow() <= key);
            let b = if pos > 0 { pos } else { 1 };
            // SAFETY: children of the locked parent's block are live, and
            // cannot die while the parent stays locked.
            let (l, r) = unsafe { (&*pcs[b - 1], &*pcs[b]) };
            let lg = l.lock();
            let rg = r.lock();
            let lblk = l.block(guard);
            let rblk = r.block(guard);
            let leaf = l.level == 0;
            let size = |h: &Head<K, V, C>| {
                if leaf {
                    keys::<K, V, C>(h).len()
                } else {
                    kids::<K, V, C>(h).len()
                }
            };
            let (nl, nr) = (keys::<K, V, C>(lblk).len(), keys::<K, V, C>(rblk).len());
            let one_empty = (nl == 0 || nr == 0) && nl + nr + usize::from(!leaf) <= C::B;
            if !one_empty && size(lblk) + size(rblk) > C::B / 2 {
                return;
            }
            let (lks, rks) = (keys::<K, V, C>(lblk), keys::<K, V, C>(rblk));
            // SAFETY: entries of L and R move into L's new block, R's fence
            // becomes L's; L's old block drops only its old fence (a copy of R's
            // low key), R's last block drops nothing.
            let merged = unsafe {
                if leaf {
                    let (lvs, rvs) = (vals::<K, V, C>(lblk), vals::<K, V, C>(rblk));
                    let n = lks.len() + rks.len();
                    let mut nb = LeafB::<K, V, C>::new(rblk.next, None, n, n);
                    move_high(&mut nb, rblk);
                    nb.move_keys(lks);
                    nb.move_keys(rks);
                    nb.move_items(lvs);
                    nb.move_items(rvs);
                    nb.finish()
                } else {
                    let (lcs, rcs) = (kids::<K, V, C>(lblk), kids::<K, V, C>(rblk));
                    let n = lks.len() + rks.len() + 1;
                    let mut nb = InnerB::<K, V, C>::new(rblk.next, None, n, n + 1);
                    move_high(&mut nb, rblk);
                    nb.move_keys(lks);
                    nb.push_key(r.low.clone().expect("a right sibling has a low fence"));
                    nb.move_keys(rks);
                    nb.move_kids(lcs, hints::<K, V, C>(lblk));
                    nb.move_kids(rcs, hints::<K, V, C>(rblk));
                    nb.finish()
                }
            };
            // SAFETY: see above; the parent loses key `b - 1` and child `b`.
            unsafe {
                let old = l.publish(merged);
                retire_block(guard, old, leaf, None, None, true);
                let n = pks.len();
                let mut pb = InnerB::<K, V, C>::new(pblk.next, None, n - 1, n);
                move_high(&mut pb, pblk);
                pb.move_keys(&pks[..b - 1]);
                pb.move_keys(&pks[b..]);
                let phs = hints::<K, V, C>(pblk);
                pb.move_kids(&pcs[..b], &phs[..b]);
                pb.move_kids(&pcs[b + 1..], &phs[b + 1..]);
                let old = p.publish(pb.finish());
                retire_block(guard, old, false, Some(b - 1), None, false);
                r.mark_dead();
                retire_node(guard, r as *const Node<K, V, C>);
            }
            let parent_small = pcs.len() - 1 <= C::B / 8;
            drop(rg);
            drop(lg);
            drop(pg);
            if level > 1 {
                // The merged node's children now have new neighbours.
                level -= 1;
            } else if parent_small {
                level += 1;
            } else {
                return;
            }
        }
    }
}
