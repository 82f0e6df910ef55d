//! Insert and upsert: the leaf fast path and the top-down promoted insert.

use std::ptr;

use crossbeam_epoch::{self as epoch, Guard};

use super::block::Builder;
use super::config::{Config, MAX_LEVELS};
use super::height::random_height;
use super::node::{
    hints, keys, kids, prefetch, retire_block, retire_leaf_values, vals, Head, LockedBlock, Node,
    NodePtr,
};
use super::BSkipList;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Replace an existing value.
    Upsert,
    /// Keep an existing value.
    IfAbsent,
}

/// What a put did.
enum Put<V> {
    Inserted,
    Replaced(V),
    Existing(V),
    /// Replaced in place (`set` on a map with in-place values); the old
    /// value was retired.
    Swapped,
}

/// How a replacing put may swap a present key's value in its slot
/// (`SwapValue::swap`), if the map allows it.
type Swap<V> = Option<fn(&V, V) -> V>;

/// The outcome of one attempt.
enum Step<K, V> {
    Done(Put<V>),
    /// A node died or validation failed: try again from the top.
    Retry(K, V),
    /// Retry with this height (a full node must be split).
    Height(usize, K, V),
    /// The key is already a node boundary at the levels below: the structure
    /// is done, the value still goes into the leaf.
    LeafOnly(K, V),
}

type LeafB<K, V, C> = Builder<K, V, Node<K, V, C>>;
type InnerB<K, V, C> = super::node::InnerBuilder<K, V, C>;

impl<K, V, C> BSkipList<K, V, C>
where
    K: Ord + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    C: Config,
{
    /// Inserts or replaces; returns the previous value.
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<u32, String>::new();
    /// assert_eq!(m.insert(7, "a".into()), None);
    /// assert_eq!(m.insert(7, "b".into()), Some("a".into()));
    /// assert_eq!(m.get(&7).as_deref(), Some("b"));
    /// ```
    pub fn insert(&self, key: K, value: V) -> Option<V> {
        match self.put(key, value, Mode::Upsert, None) {
            Put::Inserted => None,
            Put::Replaced(old) | Put::Existing(old) => Some(old),
            Put::Swapped => unreachable!("no swap without `set`"),
        }
    }

    /// Inserts or replaces, like [`insert`](Self::insert), without returning
    /// the previous value (no copy of it is made): `true` if `key` was
    /// present. On a map made by
    /// [`with_in_place_values`](Self::with_in_place_values) a present key's
    /// value is swapped in its leaf slot under the leaf's lock (one atomic
    /// word store for a one-word value) instead of rewriting the leaf; the
    /// old value is dropped once no reader can still be reading it.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering::*};
    /// use slabcache_core::skiplist::{BSkipList, SwapValue};
    /// struct W(AtomicU64); // one atomic word
    /// impl Clone for W {
    ///     fn clone(&self) -> Self { W(AtomicU64::new(self.0.load(Acquire))) }
    /// }
    /// impl SwapValue for W {
    ///     fn swap(&self, new: Self) -> Self { W(AtomicU64::new(self.0.swap(new.0.into_inner(), AcqRel))) }
    /// }
    /// let m = BSkipList::<u32, W>::with_in_place_values();
    /// assert!(!m.set(7, W(AtomicU64::new(1))));
    /// assert!(m.set(7, W(AtomicU64::new(2)))); // swapped in its slot
    /// assert_eq!(m.get(&7).map(|w| w.0.into_inner()), Some(2));
    /// ```
    pub fn set(&self, key: K, value: V) -> bool
    where
        V: super::SwapValue,
    {
        let swap: Swap<V> = if self.in_place {
            Some(<V as super::SwapValue>::swap)
        } else {
            None
        };
        !matches!(self.put(key, value, Mode::Upsert, swap), Put::Inserted)
    }

    /// Inserts `value` unless `key` is present; returns the value now stored
    /// (atomic, like Python's `dict.setdefault`).
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<u32, u32>::new();
    /// assert_eq!(m.get_or_insert(1, 10), 10);
    /// assert_eq!(m.get_or_insert(1, 20), 10);
    /// ```
    pub fn get_or_insert(&self, key: K, value: V) -> V {
        let keep = value.clone();
        match self.put(key, value, Mode::IfAbsent, None) {
            Put::Inserted => keep,
            Put::Replaced(v) | Put::Existing(v) => v,
            Put::Swapped => unreachable!("no swap without `set`"),
        }
    }

    /// Inserts `value` unless `key` is present, atomically; `Err` holds a
    /// copy of the value already there (`get_or_insert` that says which).
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<u32, u32>::new();
    /// assert_eq!(m.try_insert(1, 10), Ok(()));
    /// assert_eq!(m.try_insert(1, 20), Err(10));
    /// ```
    pub fn try_insert(&self, key: K, value: V) -> Result<(), V> {
        match self.put(key, value, Mode::IfAbsent, None) {
            Put::Inserted => Ok(()),
            Put::Replaced(v) | Put::Existing(v) => Err(v),
            Put::Swapped => unreachable!("no swap without `set`"),
        }
    }

    fn put(&self, key: K, value: V, mode: Mode, swap: Swap<V>) -> Put<V> {
        let guard = &epoch::pin();
        let h = random_height(C::B);
        let (key, value) = match swap {
            // A promoted height would split the leaf at a present key
            // (copy-on-write); a replace swaps its value in place instead.
            Some(swap) if h > 0 => match self.try_swap(key, value, swap, guard) {
                Ok(()) => {
                    super::reclaim::after_write(guard);
                    return Put::Swapped;
                }
                Err(back) => back,
            },
            _ => (key, value),
        };
        let put = self.put_height(key, value, mode, h, swap, guard);
        super::reclaim::after_write(guard);
        put
    }

    /// Inserts or replaces every `(key, value)` of `items` (a later duplicate
    /// wins). Faster than one `insert` per item: the batch is sorted (in
    /// parallel), and consecutive keys that land in the same leaf are merged
    /// into it with one rewrite. Each key is still inserted atomically;
    /// concurrent readers see a prefix-free mix of old and new keys.
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<u64, u64>::new();
    /// m.insert_many(vec![(3, 30), (1, 10), (3, 31), (2, 20)]);
    /// assert_eq!(m.iter().collect::<Vec<_>>(), [(1, 10), (2, 20), (3, 31)]);
    /// ```
    pub fn insert_many(&self, items: Vec<(K, V)>) {
        self.insert_many_with(items, |_, _| {});
    }

    /// [`insert_many`](Self::insert_many) that also reports every value the
    /// batch displaced: `replaced(key, old)` is called for each key that was
    /// already in the map (with the value it held) and for each earlier copy
    /// of a key the batch gives more than once (with that copy's value), so
    /// the caller can account for everything that is no longer stored.
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<u64, u64>::new();
    /// m.insert(1, 100);
    /// let mut gone = Vec::new();
    /// m.insert_many_with(vec![(1, 10), (2, 20), (2, 21)], |k, v| gone.push((*k, *v)));
    /// gone.sort();
    /// assert_eq!(gone, [(1, 100), (2, 20)]);
    /// assert_eq!(m.iter().collect::<Vec<_>>(), [(1, 10), (2, 21)]);
    /// ```
    pub fn insert_many_with(&self, items: Vec<(K, V)>, replaced: impl FnMut(&K, &V)) {
        self.insert_batch(items, false, replaced);
    }

    /// [`insert_many`](Self::insert_many) for a batch whose keys are all
    /// different (the keys of a hash map, say): it skips the work that
    /// keeps the last of repeated keys, so it sorts faster. Were a key
    /// repeated anyway, the map still holds it once, with one of its values.
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<u64, u64>::new();
    /// m.insert_many_distinct(vec![(3, 30), (1, 10), (2, 20)]);
    /// assert_eq!(m.iter().collect::<Vec<_>>(), [(1, 10), (2, 20), (3, 30)]);
    /// ```
    pub fn insert_many_distinct(&self, items: Vec<(K, V)>) {
        self.insert_batch(items, true, |_, _| {});
    }

    /// [`insert_many_distinct`](Self::insert_many_distinct) that checks:
    /// if some key appears twice in `items`, nothing is inserted and it
    /// returns `false` (the caller then takes [`insert_many`](Self::insert_many),
    /// which keeps the last copy). For batches that are usually distinct but
    /// not known to be (a list of pairs): the check costs one pass after the
    /// fast unstable sort, where `insert_many` always pays a stable one.
    ///
    /// ```
    /// let m = slabcache_core::skiplist::BSkipList::<u64, u64>::new();
    /// assert!(!m.insert_many_if_distinct(vec![(1, 10), (2, 20), (1, 11)]));
    /// assert!(m.is_empty());
    /// assert!(m.insert_many_if_distinct(vec![(3, 30), (1, 10)]));
    /// assert_eq!(m.iter().collect::<Vec<_>>(), [(1, 10), (3, 30)]);
    /// ```
    pub fn insert_many_if_distinct(&self, mut items: Vec<(K, V)>) -> bool {
        sort_batch(&mut items, true);
        if items.windows(2).any(|w| w[0].0 == w[1].0) {
            return false;
        }
        self.insert_sorted(items, |_, _| {});
        true
    }

    fn insert_batch(&self, mut items: Vec<(K, V)>, distinct: bool, replaced: impl FnMut(&K, &V)) {
        sort_batch(&mut items, distinct);
        self.insert_sorted(items, replaced);
    }

    /// Inserts a batch sorted by key (equal keys in the order given).
    fn insert_sorted(&self, mut items: Vec<(K, V)>, mut replaced: impl FnMut(&K, &V)) {
        // Among equal keys the last one given is last; keep it.
        items.dedup_by(|later, kept| {
            if later.0 == kept.0 {
                std::mem::swap(&mut later.1, &mut kept.1);
                // `later` now holds the earlier copy's value, dropped here.
                replaced(&later.0, &later.1);
                true
            } else {
                false
            }
        });
        let heights: Vec<u8> = (0..items.len())
            .map(|_| random_height(C::B) as u8)
            .collect();
        let mut guard = epoch::pin();
        let head = self.head(0).block(&guard);
        if head.next.is_null() && keys::<K, V, C>(head).is_empty() {
            // An empty list: build it level by level instead.
            match self.bulk_load(items, heights.clone(), &guard) {
                Ok(()) => return,
                Err(back) => items = back,
            }
        }
        let mut idx = 0;
        let mut it = items.into_iter().peekable();
        while let Some((key, value)) = it.next() {
            let h = heights[idx] as usize;
            idx += 1;
            if idx % 1024 == 0 {
                // Let the collector free what long batches retire.
                guard.repin();
            }
            if h > 0 {
                let kept = key.clone();
                if let Put::Replaced(old) =
                    self.put_height(key, value, Mode::Upsert, h, None, &guard)
                {
                    replaced(&kept, &old);
                }
                continue;
            }
            let (node, _) = self.find_to_write(&key, 0, &guard);
            let Some((node, g)) = self.lock_covering(node, &key, &guard) else {
                let kept = key.clone();
                if let Put::Replaced(old) =
                    self.put_height(key, value, Mode::Upsert, 0, None, &guard)
                {
                    replaced(&kept, &old);
                }
                continue;
            };
            let blk = node.block(&guard);
            let ks = keys::<K, V, C>(blk);
            let vs = vals::<K, V, C>(blk);
            let room = C::B.saturating_sub(ks.len());
            let first_new = usize::from(ks.binary_search(&key).is_err());
            if first_new > room {
                // Full leaf: the single-key path promotes and splits it.
                drop(g);
                let kept = key.clone();
                if let Put::Replaced(old) =
                    self.put_height(key, value, Mode::Upsert, 0, None, &guard)
                {
                    replaced(&kept, &old);
                }
                continue;
            }
            let mut new_keys = first_new;
            let mut batch = vec![(key, value)];
            while let Some((next_key, _)) = it.peek() {
                if heights[idx] != 0 || blk.high.as_ref().is_some_and(|h| next_key >= h) {
                    break;
                }
                let fresh = ks.binary_search(next_key).is_err();
                if fresh && new_keys == room {
                    break;
                }
                new_keys += usize::from(fresh);
                batch.extend(it.next());
                idx += 1;
            }
            let n = ks.len() + new_keys;
            let mut b = LeafB::<K, V, C>::new(blk.next, None, n, n);
            let mut dropped = Vec::new();
            // SAFETY: a merge: every old key moves into the new block, every
            // old value too except the replaced ones, which the retired block
            // drops; new keys equal to old ones are dropped right here
            // (they were never shared).
            unsafe {
                move_high(&mut b, blk);
                let mut i = 0;
                let mut new_vals: Vec<Option<V>> = Vec::with_capacity(batch.len());
                let mut order: Vec<(bool, usize)> = Vec::with_capacity(n);
                for (j, (k, v)) in batch.into_iter().enumerate() {
                    while i < ks.len() && ks[i] < k {
                        b.move_keys(&ks[i..i + 1]);
                        order.push((false, i));
                        i += 1;
                    }
                    if i < ks.len() && ks[i] == k {
                        // The old block stays readable while `guard` is pinned.
                        replaced(&ks[i], &vs[i]);
                        b.move_keys(&ks[i..i + 1]);
                        order.push((true, j));
                        dropped.push(i);
                        i += 1;
                    } else {
                        b.push_key(k);
                        order.push((true, j));
                    }
                    new_vals.push(Some(v));
                }
                b.move_keys(&ks[i..]);
                for (new, at) in order {
                    if new {
                        b.push_item(new_vals[at].take().expect("each new value once"));
                    } else {
                        b.move_items(&vs[at..at + 1]);
                    }
                }
                b.move_items(&vs[i..]);
                let old = node.publish(b.finish());
                retire_leaf_values(&guard, old, dropped);
            }
            drop(g);
            self.len.add(new_keys as isize);
        }
    }

    fn put_height(
        &self,
        mut key: K,
        mut value: V,
        mode: Mode,
        mut h: usize,
        swap: Swap<V>,
        guard: &Guard,
    ) -> Put<V> {
        let mut may_promote = true;
        loop {
            let step = if h == 0 {
                self.put_leaf(key, value, mode, may_promote, swap, guard)
            } else {
                self.put_promoted(key, value, h, mode, guard)
            };
            match step {
                Step::Done(p) => {
                    if let Put::Inserted = p {
                        self.len.add(1);
                    }
                    return p;
                }
                Step::Retry(k, v) => (key, value) = (k, v),
                Step::Height(nh, k, v) => (h, key, value) = (nh, k, v),
                Step::LeafOnly(k, v) => {
                    (h, key, value) = (0, k, v);
                    may_promote = false;
                }
            }
        }
    }

    /// Swaps the value of `key` in place if it is present; `Err` gives the
    /// key and value back if it is not.
    /// (A reader's descent: a swap publishes no block, so the hints it
    /// follows stay right.)
    fn try_swap(
        &self,
        key: K,
        value: V,
        swap: fn(&V, V) -> V,
        guard: &Guard,
    ) -> Result<(), (K, V)> {
        let (node, snap) = self.find(&key, 0, guard);
        if keys::<K, V, C>(snap).binary_search(&key).is_err() {
            return Err((key, value));
        }
        let Some((node, g)) = self.lock_covering(node, &key, guard) else {
            return Err((key, value));
        };
        let blk = node.block(guard);
        let Ok(i) = keys::<K, V, C>(blk).binary_search(&key) else {
            return Err((key, value));
        };
        let old = swap(&vals::<K, V, C>(blk)[i], value);
        drop(g);
        super::reclaim::retire_value(guard, old);
        Ok(())
    }

    /// Height 0: rewrite one leaf. The new block is built first from the
    /// lock-free snapshot and published if the leaf still has that block
    /// when locked (the lock is held only to check and swap one pointer);
    /// otherwise, or when the leaf must be split, under the lock as before.
    ///
    /// On a map with in-place values every leaf write takes this locked
    /// path: a value swapped in place leaves the leaf's block pointer as it
    /// was, so the fast path's check (same block as the snapshot) could not
    /// tell that the snapshot's values changed, and its copy of them would
    /// race the swap. A replace given `swap` swaps the slot under the lock.
    #[allow(clippy::too_many_arguments)]
    fn put_leaf(
        &self,
        key: K,
        value: V,
        mode: Mode,
        may_promote: bool,
        swap: Swap<V>,
        guard: &Guard,
    ) -> Step<K, V> {
        let (node, snap) = self.find_to_write(&key, 0, guard);
        let (key, value) = if self.in_place {
            // A replace will swap a value slot of this leaf: its lines load
            // while the lock is taken and the keys are searched.
            prefetch(vals::<K, V, C>(snap));
            (key, value)
        } else {
            match self.put_leaf_optimistic(node, snap, key, value, mode, may_promote, guard) {
                Ok(step) => return step,
                Err(back) => back,
            }
        };
        let Some((node, g)) = self.lock_covering(node, &key, guard) else {
            return Step::Retry(key, value);
        };
        let blk = node.block(guard);
        let ks = keys::<K, V, C>(blk);
        let vs = vals::<K, V, C>(blk);
        let n = ks.len();
        match ks.binary_search(&key) {
            Ok(i) => {
                if let (Mode::Upsert, Some(swap)) = (mode, swap) {
                    // In place: readers copying the slot see the old value or
                    // the new one (`SwapValue`'s contract); the old one is
                    // dropped after the epoch, once none can still hold it.
                    let old = swap(&vs[i], value);
                    drop(g);
                    super::reclaim::retire_value(guard, old);
                    // The leaf keeps its equal key: ours is not stored.
                    drop(key);
                    return Step::Done(Put::Swapped);
                }
                let old = vs[i].clone();
                if mode == Mode::IfAbsent {
                    return Step::Done(Put::Existing(old));
                }
                // SAFETY: every entry but value `i` moves into the new block;
                // the old one is retired shallowly, dropping value `i` only.
                unsafe {
                    let old_blk = node.publish(leaf_replacing(blk, i, value));
                    retire_block(guard, old_blk, true, None, Some(i), false);
                }
                drop(g);
                Step::Done(Put::Replaced(old))
            }
            Err(i) => {
                if may_promote && n >= C::B && node.low.as_ref() != Some(&key) {
                    // Full: promote the key so that the leaf is split at it.
                    drop(g);
                    return Step::Height(1, key, value);
                }
                // SAFETY: all old entries move into the new block; the old
                // one is retired shallowly.
                unsafe {
                    let old_blk = node.publish(leaf_inserting(blk, i, key, value));
                    retire_block(guard, old_blk, true, None, None, false);
                }
                drop(g);
                Step::Done(Put::Inserted)
            }
        }
    }

    /// The fast path of [`put_leaf`](Self::put_leaf): builds the new block
    /// from `snap` (the block `find` read in `node`) outside the lock, then
    /// locks, checks that `node` is alive and still publishes `snap` (so the
    /// snapshot's fences cover `key` and no write came in between) and swaps.
    /// `Err` gives the key and value back when the slow path must run: the
    /// leaf changed, a split is due, or `IfAbsent` finds the key.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn put_leaf_optimistic(
        &self,
        node: &Node<K, V, C>,
        snap: &Head<K, V, C>,
        key: K,
        value: V,
        mode: Mode,
        may_promote: bool,
        guard: &Guard,
    ) -> Result<Step<K, V>, (K, V)> {
        let ks = keys::<K, V, C>(snap);
        let vs = vals::<K, V, C>(snap);
        let n = ks.len();
        let mut key = Some(key);
        let k = key.as_ref().expect("key");
        let (built, at, put, drop_item) = match ks.binary_search(k) {
            Ok(i) => {
                if mode == Mode::IfAbsent {
                    return Err((key.expect("key"), value));
                }
                // SAFETY: the new block holds bitwise copies of the
                // snapshot's entries and fence; it is either published in the
                // snapshot's place (which is then retired shallowly, dropping
                // only value `i`) or taken apart again without dropping them.
                let built = unsafe { leaf_replacing(snap, i, value) };
                (built, i, Put::Replaced(vs[i].clone()), Some(i))
            }
            Err(i) => {
                if may_promote && n >= C::B && node.low.as_ref() != Some(k) {
                    return Err((key.expect("key"), value));
                }
                // SAFETY: as above, with the new key and value at `i`.
                let built = unsafe { leaf_inserting(snap, i, key.take().expect("key"), value) };
                (built, i, Put::Inserted, None)
            }
        };
        let g = node.lock();
        let snap_ptr = snap as *const Head<K, V, C> as *mut Head<K, V, C>;
        if !node.is_dead() && node.block_ptr() == snap_ptr {
            let old = node.publish(built);
            debug_assert_eq!(old, snap_ptr);
            drop(g);
            // SAFETY: `old` (the snapshot) was just replaced; its entries live
            // on in `built` except the replaced value, which it drops.
            unsafe { retire_block(guard, old, true, None, drop_item, false) };
            // A replacing put's own key is not stored (the leaf keeps its
            // equal key): dropped here.
            drop(key);
            return Ok(Step::Done(put));
        }
        drop(g);
        // The leaf changed under us (the snapshot may even be retired by now,
        // but stays allocated while `guard` pins the epoch): take our value
        // back out of the unpublished block and free it without dropping the
        // copies. Nothing else saw `built`.
        // SAFETY: `built` is the block built above, never published; it owns
        // exactly the value at `at` and, for an insert (`key` moved in), the
        // key at `at`.
        let (moved_key, value) = unsafe {
            super::block::Block::<K, V, Node<K, V, C>>::discard(built, at, key.is_none())
        };
        drop(put);
        let key = key.or(moved_key).expect("the key is in exactly one place");
        Err((key, value))
    }

    /// Height `h > 0`: lock the level-`h` node covering `key`, then the node
    /// covering it on each level below (each under its locked parent), split
    /// them at `key` bottom-up, and add `key` to the level-`h` node.
    fn put_promoted(&self, key: K, value: V, h: usize, mode: Mode, guard: &Guard) -> Step<K, V> {
        self.raise_top(h);
        let (top, _) = self.find_to_write(&key, h, guard);
        let Some((top, top_g)) = self.lock_covering(top, &key, guard) else {
            return Step::Retry(key, value);
        };
        let tblk = top.block(guard);
        let tks = keys::<K, V, C>(tblk);
        let pos = match tks.binary_search(&key) {
            Ok(_) => return Step::LeafOnly(key, value),
            Err(p) => p,
        };
        if top.low.as_ref() == Some(&key) {
            return Step::LeafOnly(key, value);
        }
        if tks.len() >= C::B && h < MAX_LEVELS - 1 {
            drop(top_g);
            return Step::Height(h + 1, key, value);
        }

        // Lock one node per level on the way down. Each child is locked while
        // its parent is, so it cannot split, merge or die meanwhile, and it
        // covers `key` exactly (no moving right).
        let mut path: Vec<LockedBlock<'_, K, V, C>> = Vec::with_capacity(h);
        let mut parent_blk = tblk;
        let mut child_idx = pos;
        let mut boundary_below = false;
        loop {
            // SAFETY: children of the locked parent's current block are live.
            let child = unsafe { &*kids::<K, V, C>(parent_blk)[child_idx] };
            let cg = child.lock();
            debug_assert!(!child.is_dead());
            let cblk = child.block(guard);
            path.push((child, cg, cblk));
            if child.level == 0 {
                break;
            }
            match keys::<K, V, C>(cblk).binary_search(&key) {
                Ok(_) => {
                    boundary_below = true;
                    break;
                }
                Err(p) => {
                    parent_blk = cblk;
                    child_idx = p;
                }
            }
        }

        // Build and publish bottom-up: each published state is a valid
        // B-link list (a search that lands left of `key` moves right).
        let mut below: NodePtr<K, V, C> = ptr::null();
        let mut result = None;
        let mut value = Some(value);
        for (x, _, xblk) in path.iter().rev() {
            let ks = keys::<K, V, C>(xblk);
            let n = ks.len();
            if x.level == 0 {
                let vs = vals::<K, V, C>(xblk);
                let i = ks.partition_point(|k| k < &key);
                let found = i < n && ks[i] == key;
                let tail = if found { i + 1 } else { i };
                let v_new = value.take().expect("value used once");
                let (item, put, drop_item) = match (found, mode) {
                    (true, Mode::Upsert) => (v_new, Put::Replaced(vs[i].clone()), Some(i)),
                    (true, Mode::IfAbsent) => {
                        // SAFETY: the old value moves into the new block (the
                        // old block is retired without dropping it).
                        let kept = unsafe { ptr::read(&vs[i]) };
                        let shown = kept.clone();
                        (kept, Put::Existing(shown), None)
                    }
                    (false, _) => (v_new, Put::Inserted, None),
                };
                let mut mb = LeafB::<K, V, C>::new(xblk.next, None, 1 + n - tail, 1 + n - tail);
                // SAFETY: the tail entries and the fence move into the new
                // right node, the head entries into the new left block; the
                // old block is retired shallowly, dropping only the replaced
                // key (our own `key` takes its place) and value.
                unsafe {
                    move_high(&mut mb, xblk);
                    mb.push_key(key.clone());
                    mb.move_keys(&ks[tail..]);
                    mb.push_item(item);
                    mb.move_items(&vs[tail..]);
                }
                let m = Node::<K, V, C>::new(Some(key.clone()), 0, mb.finish());
                let mut xb = LeafB::<K, V, C>::new(m, Some(key.clone()), i, i);
                // SAFETY: as above.
                unsafe {
                    xb.move_keys(&ks[..i]);
                    xb.move_items(&vs[..i]);
                    let old = x.publish(xb.finish());
                    retire_block(guard, old, true, found.then_some(i), drop_item, false);
                }
                below = m;
                result = Some(put);
            } else {
                let cs = kids::<K, V, C>(xblk);
                let hs = hints::<K, V, C>(xblk);
                // The bottom of a path that stopped early holds `key` itself:
                // its child starting at `key` becomes the new node's first child.
                let (i, first_child, rest, drop_key) = if below.is_null() {
                    debug_assert!(boundary_below);
                    let j = ks.binary_search(&key).expect("boundary key present");
                    (j, cs[j + 1], j + 1, Some(j))
                } else {
                    let i = ks.partition_point(|k| k < &key);
                    (i, below, i, None)
                };
                let mut mb = InnerB::<K, V, C>::new(xblk.next, None, n - rest, n - rest + 1);
                // SAFETY: as for the leaf; entries move left or right, the
                // old block drops only the index key that became a fence.
                unsafe {
                    move_high(&mut mb, xblk);
                    mb.move_keys(&ks[rest..]);
                    mb.push_item(first_child);
                    mb.move_kids(&cs[rest + 1..], &hs[rest + 1..]);
                }
                let m = Node::<K, V, C>::new(Some(key.clone()), x.level as usize, mb.finish());
                let mut xb = InnerB::<K, V, C>::new(m, Some(key.clone()), i, i + 1);
                // SAFETY: as above.
                unsafe {
                    xb.move_keys(&ks[..i]);
                    xb.move_kids(&cs[..=i], &hs[..=i]);
                    let old = x.publish(xb.finish());
                    retire_block(guard, old, false, drop_key, None, false);
                }
                below = m;
            }
        }

        // Finally the index key on level h.
        let tcs = kids::<K, V, C>(tblk);
        let ths = hints::<K, V, C>(tblk);
        let n = tks.len();
        let mut tb = InnerB::<K, V, C>::new(tblk.next, None, n + 1, n + 2);
        // SAFETY: every entry moves into the new block.
        unsafe {
            move_high(&mut tb, tblk);
            tb.move_keys(&tks[..pos]);
            tb.push_key(key.clone());
            tb.move_keys(&tks[pos..]);
            tb.move_kids(&tcs[..=pos], &ths[..=pos]);
            tb.push_item(below);
            tb.move_kids(&tcs[pos + 1..], &ths[pos + 1..]);
            let old = top.publish(tb.finish());
            retire_block(guard, old, false, None, None, false);
        }
        drop(path);
        drop(top_g);
        match result {
            Some(put) => Step::Done(put),
            None => Step::LeafOnly(key, value.expect("value unused")),
        }
    }
}

/// A new leaf block: `blk`'s entries (bitwise copies) with value `i`
/// replaced by `value`.
///
/// # Safety
/// The result must be published in `blk`'s place (and `blk` then retired
/// dropping value `i` only) or taken apart with `Block::discard`.
unsafe fn leaf_replacing<K, V, C: Config>(
    blk: &Head<K, V, C>,
    i: usize,
    value: V,
) -> *mut Head<K, V, C> {
    let (ks, vs) = (keys::<K, V, C>(blk), vals::<K, V, C>(blk));
    let mut b = LeafB::<K, V, C>::new(blk.next, None, ks.len(), ks.len());
    // SAFETY: bitwise copies, owned as the caller promises.
    unsafe {
        move_high(&mut b, blk);
        b.move_keys(ks);
        b.move_items(&vs[..i]);
        b.push_item(value);
        b.move_items(&vs[i + 1..]);
    }
    b.finish()
}

/// A new leaf block: `blk`'s entries (bitwise copies) with `key` and
/// `value` inserted at `i`.
///
/// # Safety
/// The result must be published in `blk`'s place (and `blk` then retired
/// dropping nothing) or taken apart with `Block::discard`.
unsafe fn leaf_inserting<K, V, C: Config>(
    blk: &Head<K, V, C>,
    i: usize,
    key: K,
    value: V,
) -> *mut Head<K, V, C> {
    let (ks, vs) = (keys::<K, V, C>(blk), vals::<K, V, C>(blk));
    let n = ks.len() + 1;
    let mut b = LeafB::<K, V, C>::new(blk.next, None, n, n);
    // SAFETY: bitwise copies, owned as the caller promises.
    unsafe {
        move_high(&mut b, blk);
        b.move_keys(&ks[..i]);
        b.push_key(key);
        b.move_keys(&ks[i..]);
        b.move_items(&vs[..i]);
        b.push_item(value);
        b.move_items(&vs[i..]);
    }
    b.finish()
}

/// Moves the `high` fence of `src` into the block being built.
///
/// # Safety
/// `src` must then be retired without dropping its fence.
#[inline]
pub(crate) unsafe fn move_high<K, T, N, const H: bool>(
    b: &mut Builder<K, T, N, H>,
    src: &super::block::Header<K, N>,
) {
    // SAFETY: the fence is read bitwise once; the caller retires `src` without
    // dropping it, so it ends up owned by `b` alone.
    b.set_high(unsafe { ptr::read(&src.high) });
}

/// Batches above this size are radix sorted when their key type allows
/// (below it the histograms and the scratch buffer cost more than the
/// comparison sort saves). Measured with `time_radix` (`RADIX_N=300`,
/// `1000`, `4096`; 22-bit keys, one thread, per batch): 300 items 9.7 us
/// radix against 8.6 us `sort_unstable`, 1,000 items 24 against 39 us,
/// 4,096 items 87 against 178 us.
const RADIX_MIN: usize = 1024;
/// The most radix passes (11 bits each) worth taking over a comparison sort.
/// Measured on the dev VM, 1M `(i64, u64)` in random order, one thread
/// (`cargo test --release -p slabcache-core --lib time_radix -- --ignored
/// --nocapture`): keys over 22 bits 39-45 ms (2 passes) against 58-61 ms
/// for `sort_unstable`, 40 bits 52-68 ms (4 passes) against 58-60 ms, 63
/// bits 86-95 ms (6 passes) against 58-66 ms. Each pass is a scattered
/// write of the whole batch, memory-bound.
const RADIX_PASSES: u32 = 3;
/// With this many rayon threads or more the parallel comparison sort is
/// used instead: on 2 threads it already matched the radix sort on 22-bit
/// keys (41-48 ms against 42-45 ms), and it scales with cores where the
/// radix sort does not.
const RADIX_BELOW_THREADS: usize = 4;

/// Sorts a batch by key: in place and unstable if its keys are `distinct`,
/// else stable (a later copy of a key after an earlier one).
fn sort_batch<K: Ord + Send + 'static, V: Send>(items: &mut Vec<(K, V)>, distinct: bool) {
    use rayon::slice::ParallelSliceMut;
    if items.windows(2).all(|w| w[0].0 < w[1].0) {
        // Already sorted, no duplicates.
    } else if items.len() > RADIX_MIN
        && rayon::current_num_threads() < RADIX_BELOW_THREADS
        && super::radix::sort_by_image(items, |t| &t.0, RADIX_PASSES)
    {
        // Integer and float keys spread over at most 33 bits, on few
        // cores: sorted by a stable radix sort (serves both cases).
    } else if distinct {
        // No order among equal keys to keep: a plain unstable sort.
        if items.len() > 4096 {
            items.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
        } else {
            items.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
    } else if items.len() > 4096 && items.len() < u32::MAX as usize {
        // Parallel unstable sort, made stable by the original position
        // (faster than a stable merge sort, and no scratch buffer).
        let mut tagged: Vec<(K, u32, V)> = std::mem::take(items)
            .into_iter()
            .enumerate()
            .map(|(i, (k, v))| (k, i as u32, v))
            .collect();
        tagged.par_sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        *items = tagged.into_iter().map(|(k, _, v)| (k, v)).collect();
    } else {
        items.sort_by(|a, b| a.0.cmp(&b.0));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::super::{BSkipList, Fanout16, SwapValue};

    /// A one-word value (an `Arc` behind an atomic pointer), counting its
    /// live copies through the `Arc`'s strong count.
    struct Word(std::sync::atomic::AtomicPtr<(u64, Arc<()>)>);

    impl Word {
        fn new(v: u64, token: &Arc<()>) -> Self {
            Word(std::sync::atomic::AtomicPtr::new(Box::into_raw(Box::new(
                (v, Arc::clone(token)),
            ))))
        }
        fn get(&self) -> u64 {
            // SAFETY: the box lives as long as the value.
            unsafe { (*self.0.load(Ordering::Acquire)).0 }
        }
    }
    impl Clone for Word {
        fn clone(&self) -> Self {
            // SAFETY: as in `get`.
            let (v, t) = unsafe { &*self.0.load(Ordering::Acquire) };
            Word::new(*v, t)
        }
    }
    impl SwapValue for Word {
        fn swap(&self, new: Self) -> Self {
            let new = std::mem::ManuallyDrop::new(new);
            let p = new.0.load(Ordering::Relaxed);
            Word(std::sync::atomic::AtomicPtr::new(
                self.0.swap(p, Ordering::AcqRel),
            ))
        }
    }
    impl Drop for Word {
        fn drop(&mut self) {
            // SAFETY: each value owns its box, freed once here.
            drop(unsafe { Box::from_raw(*self.0.get_mut()) });
        }
    }

    fn settle(token: &Arc<()>, want: usize) {
        for _ in 0..1000 {
            if Arc::strong_count(token) == want {
                return;
            }
            super::super::reclaim_garbage();
            std::thread::yield_now();
        }
        assert_eq!(Arc::strong_count(token), want);
    }

    #[test]
    fn set_swaps_in_place_and_drops_the_old_value_once() {
        let token = Arc::new(());
        let m = BSkipList::<u64, Word>::with_in_place_values();
        for k in 0..1000 {
            assert!(!m.set(k, Word::new(k, &token)));
        }
        let blocks_before = m.nodes_per_level();
        let guard = crossbeam_epoch::pin();
        // The leaf's block stays the same: the value changed in its slot.
        let (_, snap) = m.find(&500, 0, &guard);
        let snap = snap as *const _;
        assert!(m.set(500, Word::new(7, &token)));
        let (_, again) = m.find(&500, 0, &guard);
        assert_eq!(snap, again as *const _, "a replace rewrote the leaf");
        drop(guard);
        assert_eq!(m.get(&500).map(|w| w.get()), Some(7));
        assert_eq!(m.len(), 1000);
        assert_eq!(m.nodes_per_level(), blocks_before);
        // 1000 stored values + the token itself; the replaced one is gone.
        settle(&token, 1001);
        // `insert`, `get_or_insert`, `remove` still work beside `set`.
        assert_eq!(
            m.insert(500, Word::new(8, &token)).map(|w| w.get()),
            Some(7)
        );
        assert_eq!(m.get_or_insert(500, Word::new(9, &token)).get(), 8);
        assert_eq!(m.remove(&500).map(|w| w.get()), Some(8));
        assert!(!m.set(500, Word::new(10, &token)));
        m.check_invariants().unwrap();
        drop(m);
        settle(&token, 1);
    }

    #[test]
    fn set_without_in_place_rewrites_the_leaf() {
        let token = Arc::new(());
        let m = BSkipList::<u64, Word>::new();
        assert!(!m.set(1, Word::new(1, &token)));
        let guard = crossbeam_epoch::pin();
        let snap = m.find(&1, 0, &guard).1 as *const _;
        assert!(m.set(1, Word::new(2, &token)));
        assert_ne!(snap, m.find(&1, 0, &guard).1 as *const _);
        drop(guard);
        assert_eq!(m.get(&1).map(|w| w.get()), Some(2));
        drop(m);
        settle(&token, 1);
    }

    #[test]
    fn set_matches_a_model_through_splits_and_merges() {
        let token = Arc::new(());
        let m = BSkipList::<u64, Word, Fanout16>::with_in_place_values();
        let mut model = BTreeMap::new();
        let mut x = 0x1234_5678_9abc_def1u64;
        for i in 0..40_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = x % 700;
            match x % 5 {
                0 => assert_eq!(m.remove(&k).map(|w| w.get()), model.remove(&k)),
                1 => assert_eq!(
                    m.insert(k, Word::new(i, &token)).map(|w| w.get()),
                    model.insert(k, i)
                ),
                _ => assert_eq!(m.set(k, Word::new(i, &token)), model.insert(k, i).is_some()),
            }
        }
        m.check_invariants().unwrap();
        let got: Vec<(u64, u64)> = m.iter().map(|(k, w)| (k, w.get())).collect();
        let want: Vec<(u64, u64)> = model.into_iter().collect();
        assert_eq!(got, want);
        drop(m);
        settle(&token, 1);
    }

    #[test]
    fn set_of_plain_values_counts_like_insert() {
        // A counter type swapped in place: `len` only counts new keys.
        #[derive(Debug)]
        struct C(AtomicU64);
        impl Clone for C {
            fn clone(&self) -> Self {
                C(AtomicU64::new(self.0.load(Ordering::Acquire)))
            }
        }
        impl SwapValue for C {
            fn swap(&self, new: Self) -> Self {
                C(AtomicU64::new(
                    self.0.swap(new.0.into_inner(), Ordering::AcqRel),
                ))
            }
        }
        let m = BSkipList::<i32, C>::with_in_place_values();
        for round in 0..3u64 {
            for k in 0..100 {
                assert_eq!(m.set(k, C(AtomicU64::new(round))), round > 0);
            }
        }
        assert_eq!(m.len(), 100);
        assert!(m.iter().all(|(_, c)| c.0.load(Ordering::Relaxed) == 2));
    }
}
