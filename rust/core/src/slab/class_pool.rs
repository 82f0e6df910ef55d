//! The central pool of one size class: slabs with objects free to hand out,
//! guarded by one lock per class (sharded locking; the thread caches take and
//! return objects in batches so this lock is rarely touched).

use std::sync::atomic::Ordering;

use super::region::Region;
use super::size_class::class_size;
use super::slab_meta::{object_index, CAPACITY, NIL};
use super::slab_pool::SlabPool;

/// Mutable state of a class's central pool (lives inside the class lock).
pub struct ClassPool {
    class: usize,
    /// Head of the list of slabs with available objects.
    partial: u32,
    /// Slabs of this class whose every object is available.
    empty: u32,
    /// Empty slabs kept before one is returned to the slab pool.
    retain_empty: u32,
}

impl ClassPool {
    /// The pool of `class`, keeping up to `retain_empty` empty slabs.
    pub const fn new(class: usize, retain_empty: u32) -> ClassPool {
        ClassPool {
            class,
            partial: NIL,
            empty: 0,
            retain_empty,
        }
    }

    fn link(&mut self, region: &Region, s: usize) {
        let meta = region.meta(s);
        // SAFETY: the slab belongs to this class and we hold the class lock (`&mut self`).
        let links = unsafe { meta.links() };
        links.prev = NIL;
        links.next = self.partial;
        links.in_partial = true;
        if self.partial != NIL {
            // SAFETY: as above, for the old head, a slab of this class.
            unsafe { region.meta(self.partial as usize).links() }.prev = s as u32;
        }
        self.partial = s as u32;
    }

    fn unlink(&mut self, region: &Region, s: usize) {
        // SAFETY: the slab belongs to this class and we hold the class lock.
        let links = unsafe { region.meta(s).links() };
        let (prev, next) = (links.prev, links.next);
        links.in_partial = false;
        if prev != NIL {
            // SAFETY: a neighbour in this class's list.
            unsafe { region.meta(prev as usize).links() }.next = next;
        } else {
            self.partial = next;
        }
        if next != NIL {
            // SAFETY: a neighbour in this class's list.
            unsafe { region.meta(next as usize).links() }.prev = prev;
        }
    }

    /// Moves up to `out.len()` available objects into `out` (addresses),
    /// carving a new slab when none is available. Returns how many were
    /// taken; 0 means the region is full.
    pub fn take(&mut self, region: &Region, slabs: &SlabPool, out: &mut [usize]) -> usize {
        let class = self.class;
        let size = class_size(class);
        let cap = CAPACITY[class];
        let words = (cap as usize).div_ceil(64);
        let mut got = 0;
        while got < out.len() {
            if self.partial == NIL {
                let Some(s) = slabs.take(region, class) else {
                    break;
                };
                let meta = region.meta(s);
                // SAFETY: the slab was just given to this class, under our lock.
                let avail = unsafe { meta.avail() };
                for (w, word) in avail.iter_mut().enumerate().take(words) {
                    let bits = (cap as usize - w * 64).min(64);
                    *word = if bits == 64 {
                        u64::MAX
                    } else {
                        (1u64 << bits) - 1
                    };
                }
                meta.avail_count.store(cap, Ordering::Relaxed);
                self.empty += 1;
                self.link(region, s);
            }
            let s = self.partial as usize;
            let meta = region.meta(s);
            let base = region.slab_addr(s);
            let count = meta.avail_count.load(Ordering::Relaxed);
            if count == cap {
                self.empty -= 1;
            }
            // SAFETY: a slab of this class, under our lock; `avail` and
            // `links` are distinct cells.
            let (avail, links) = unsafe { (meta.avail(), meta.links()) };
            let mut taken = 0u32;
            let mut w = links.scan_hint as usize;
            while got < out.len() && taken < count {
                let word = &mut avail[w];
                while *word != 0 && got < out.len() {
                    let bit = word.trailing_zeros() as usize;
                    *word &= *word - 1;
                    out[got] = base + (w * 64 + bit) * size;
                    got += 1;
                    taken += 1;
                }
                if *word == 0 {
                    w += 1;
                    if w == words {
                        w = 0;
                    }
                }
            }
            links.scan_hint = w as u32;
            let left = count - taken;
            meta.avail_count.store(left, Ordering::Relaxed);
            if left == 0 {
                self.unlink(region, s);
            } else if left == cap {
                self.empty += 1;
            }
        }
        got
    }

    /// Returns objects (addresses inside slabs of this class, not allocated
    /// and in no cache) to the pool; releases empty slabs beyond the retained count.
    pub fn give(&mut self, region: &Region, slabs: &SlabPool, ptrs: &[usize]) {
        let class = self.class;
        let cap = CAPACITY[class];
        for &p in ptrs {
            let s = region.slab_of(p).expect("a committed slab");
            let meta = region.meta(s);
            let idx = object_index(class, p - region.slab_addr(s))
                .expect("the cache holds object boundaries only");
            // SAFETY: a slab of this class, under our lock.
            let avail = unsafe { meta.avail() };
            debug_assert_eq!(avail[idx / 64] & (1 << (idx % 64)), 0);
            avail[idx / 64] |= 1 << (idx % 64);
            let count = meta.avail_count.load(Ordering::Relaxed) + 1;
            meta.avail_count.store(count, Ordering::Relaxed);
            if count == 1 {
                self.link(region, s);
            }
            if count == cap {
                if self.empty >= self.retain_empty {
                    self.unlink(region, s);
                    avail[..(cap as usize).div_ceil(64)].fill(0);
                    meta.avail_count.store(0, Ordering::Relaxed);
                    slabs.give(region, s);
                } else {
                    self.empty += 1;
                }
            }
        }
    }
}
