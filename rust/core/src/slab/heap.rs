//! One allocator instance: the region, the class pools, the large table, and
//! the alloc/free paths that tie them to the thread caches.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_utils::CachePadded;

use super::class_pool::ClassPool;
use super::config::SlabConfig;
use super::large::{LargeTable, Lookup};
use super::region::Region;
use super::size_class::{class_size, NUM_CLASSES};
use super::slab_meta::{object_index, object_index_unchecked, state_class, SLAB_SHIFT};
use super::slab_pool::SlabPool;
use super::thread_cache::{self, Slot, CACHE_CAP};

/// Why a free was refused. Carries no heap data, so the C ABI can report it
/// from inside `free` without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeError {
    /// The pointer is not (the start of) anything this allocator handed out,
    /// or the size given with it does not fit the allocation.
    Invalid(&'static str),
    /// The pointer was handed out once and is not allocated now.
    Double,
}

/// Locks a mutex, ignoring poisoning (no code panics while holding these locks).
#[inline]
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every lock of a heap, held; released when dropped.
pub(crate) struct HeapLocks<'a> {
    _classes: Vec<MutexGuard<'a, ClassPool>>,
    _slabs: MutexGuard<'a, super::slab_pool::PoolState>,
    _large: MutexGuard<'a, LargeTable>,
    _threads: MutexGuard<'a, SlotList>,
}

pub(crate) struct SlotList(*const Slot);
// SAFETY: the pointers name thread-local slots that unlink themselves (under
// this list's lock) before their thread's storage goes away.
unsafe impl Send for SlotList {}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The shared state of one allocator.
pub struct Heap {
    pub(crate) id: u64,
    pub(crate) region: Region,
    pub(crate) pools: Box<[CachePadded<Mutex<ClassPool>>]>,
    pub(crate) slabs: SlabPool,
    pub(crate) large: Mutex<LargeTable>,
    pub(crate) config: SlabConfig,
    threads: Mutex<SlotList>,
    /// Requested bytes counted outside thread caches (slow path, exited threads).
    requested: AtomicI64,
}

impl Heap {
    pub(crate) fn new(config: SlabConfig) -> crate::Result<Heap> {
        let region = Region::reserve(config.arena_size)?;
        let retain = config.retain_empty_per_class as u32;
        let pools = (0..NUM_CLASSES)
            .map(|c| CachePadded::new(Mutex::new(ClassPool::new(c, retain))))
            .collect();
        Ok(Heap {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            region,
            pools,
            slabs: SlabPool::new(config.release_threshold),
            large: Mutex::new(LargeTable::new(config.large_cache_bytes)),
            config,
            threads: Mutex::new(SlotList(std::ptr::null())),
            requested: AtomicI64::new(0),
        })
    }

    /// Marks object `addr` of `class` as handed to the user.
    #[inline]
    fn mark_allocated(&self, class: usize, addr: usize) {
        let s = (addr - self.region.base()) >> SLAB_SHIFT;
        let off = addr - self.region.slab_addr(s);
        let idx = object_index_unchecked(class, off);
        let byte = &self.region.meta(s).allocated[idx];
        debug_assert_eq!(byte.load(Ordering::Relaxed), 0, "object handed out twice");
        // Only the cache (or pool) that owns a free object ever sets its byte,
        // so a plain store suffices; frees race on it with `swap`.
        byte.store(1, Ordering::Release);
    }

    /// Allocates one object of `class`, counting `requested` bytes. `None`: region full.
    #[inline]
    pub(crate) fn alloc_small(self: &Arc<Self>, class: usize, requested: usize) -> Option<usize> {
        let p = match thread_cache::fast_pop(self, class, requested) {
            Some(p) => p,
            None => self.alloc_small_slow(class, requested)?,
        };
        self.mark_allocated(class, p);
        Some(p)
    }

    #[cold]
    #[inline(never)]
    fn alloc_small_slow(self: &Arc<Self>, class: usize, requested: usize) -> Option<usize> {
        let cached = thread_cache::with_cache(self, |cache, req| {
            let p = match cache.pop(class) {
                Some(p) => p,
                None => {
                    let want = (CACHE_CAP[class] as usize).div_ceil(2);
                    let n = cache.len(class);
                    let spare = cache.spare(class, want);
                    let got = lock(&self.pools[class]).take(&self.region, &self.slabs, spare);
                    cache.set_len(class, n + got);
                    cache.pop(class)?
                }
            };
            req.store(
                req.load(Ordering::Relaxed) + requested as i64,
                Ordering::Relaxed,
            );
            Some(p)
        });
        match cached {
            Some(p) => p,
            None => {
                let mut one = [0usize; 1];
                if lock(&self.pools[class]).take(&self.region, &self.slabs, &mut one) == 0 {
                    return None;
                }
                self.requested
                    .fetch_add(requested as i64, Ordering::Relaxed);
                Some(one[0])
            }
        }
    }

    /// Maps a large allocation. `None`: the OS refused.
    pub(crate) fn alloc_large(&self, size: usize, align: usize) -> Option<(usize, bool)> {
        let b = lock(&self.large).alloc(size, align)?;
        self.requested.fetch_add(size as i64, Ordering::Relaxed);
        Some((b.addr, b.fresh))
    }

    /// Returns cached objects of `class` to its central pool.
    pub(crate) fn give_back(&self, class: usize, objs: &[usize]) {
        lock(&self.pools[class]).give(&self.region, &self.slabs, objs);
    }

    /// Validates and frees `addr`. `size`: the caller's size (checked to fit,
    /// and counted off the requested bytes); `None` counts the slot size.
    /// Returns the usable size freed. On error nothing changed.
    #[inline]
    pub(crate) fn free(
        self: &Arc<Self>,
        addr: usize,
        size: Option<usize>,
    ) -> Result<usize, FreeError> {
        let Some(s) = self.region.slab_of(addr) else {
            return self.free_outside_slabs(addr, size);
        };
        let class = self.claim_in_slab(s, addr, size)?;
        let usable = class_size(class);
        self.release_small(class, addr, size.unwrap_or(usable));
        Ok(usable)
    }

    /// First half of a small free: checks `addr` (inside a committed slab)
    /// and atomically takes it from the user (its live byte 1 -> 0). On error
    /// nothing changed. Returns the class.
    #[inline]
    pub(crate) fn claim_small(&self, addr: usize, size: Option<usize>) -> Result<usize, FreeError> {
        let s = self
            .region
            .slab_of(addr)
            .ok_or(FreeError::Invalid("not in a slab"))?;
        self.claim_in_slab(s, addr, size)
    }

    /// [`Heap::claim_small`] for `addr` known to lie in committed slab `s`.
    #[inline]
    fn claim_in_slab(
        &self,
        s: usize,
        addr: usize,
        size: Option<usize>,
    ) -> Result<usize, FreeError> {
        let meta = self.region.meta(s);
        let state = meta.state.load(Ordering::Acquire);
        let class =
            state_class(state).ok_or(FreeError::Invalid("in a slab that holds no objects"))?;
        let idx = object_index(class, addr - self.region.slab_addr(s))
            .ok_or(FreeError::Invalid("not the start of an object"))?;
        if size.is_some_and(|n| n > class_size(class)) {
            return Err(FreeError::Invalid("size larger than the allocation"));
        }
        let byte = &meta.allocated[idx];
        if byte.swap(0, Ordering::AcqRel) == 0 {
            return Err(FreeError::Double);
        }
        if meta.state.load(Ordering::Acquire) != state {
            // The slab was recycled between our checks: the pointer was stale.
            byte.store(1, Ordering::Release);
            return Err(FreeError::Invalid("in a slab that was recycled"));
        }
        Ok(class)
    }

    /// Undoes [`Heap::claim_small`] (the object goes back to its user).
    pub(crate) fn unclaim_small(&self, class: usize, addr: usize) {
        let s = (addr - self.region.base()) >> SLAB_SHIFT;
        let idx = object_index_unchecked(class, addr - self.region.slab_addr(s));
        self.region.meta(s).allocated[idx].store(1, Ordering::Release);
    }

    /// Second half of a small free: the claimed object goes to this thread's
    /// cache (or the central pool), `counted` bytes off the requested total.
    #[inline]
    pub(crate) fn release_small(self: &Arc<Self>, class: usize, addr: usize, counted: usize) {
        if self.config.zero_on_free {
            // SAFETY: the object is ours (claimed), a whole slot long, and no longer the user's.
            unsafe { std::ptr::write_bytes(addr as *mut u8, 0, class_size(class)) };
        }
        if !thread_cache::fast_push(self, class, addr, counted) {
            self.free_small_slow(class, addr, counted);
        }
    }

    /// Frees every `(addr, size)`, all or nothing: small objects are claimed
    /// first (a duplicate finds its byte already taken) and large ones
    /// checked; on any refusal every claim is undone.
    pub(crate) fn free_many(
        self: &Arc<Self>,
        items: &[(usize, usize)],
    ) -> Result<(), (FreeError, usize)> {
        let mut claimed: Vec<(usize, usize, usize)> = Vec::with_capacity(items.len());
        let mut large: Vec<(usize, usize)> = Vec::new();
        let mut failed = None;
        for &(addr, size) in items {
            if self.region.slab_of(addr).is_some() {
                match self.claim_small(addr, Some(size)) {
                    Ok(class) => claimed.push((class, addr, size)),
                    Err(e) => {
                        failed = Some((e, addr));
                        break;
                    }
                }
            } else if self.region.in_reservation(addr) {
                failed = Some((
                    FreeError::Invalid("inside the slab region but in no slab"),
                    addr,
                ));
                break;
            } else {
                let check = match lock(&self.large).lookup(addr) {
                    Lookup::Live { usable, .. } if size > usable => {
                        Err(FreeError::Invalid("size larger than the allocation"))
                    }
                    Lookup::Live { .. } => Ok(()),
                    Lookup::Freed => Err(FreeError::Double),
                    Lookup::Unknown => Err(FreeError::Invalid("not allocated by this allocator")),
                };
                if let Err(e) = check {
                    failed = Some((e, addr));
                    break;
                }
                large.push((addr, size));
            }
        }
        if failed.is_none() && large.len() > 1 {
            let mut addrs: Vec<usize> = large.iter().map(|&(a, _)| a).collect();
            addrs.sort_unstable();
            if let Some(w) = addrs.windows(2).find(|w| w[0] == w[1]) {
                failed = Some((FreeError::Double, w[0]));
            }
        }
        if let Some(f) = failed {
            for &(class, addr, _) in &claimed {
                self.unclaim_small(class, addr);
            }
            return Err(f);
        }
        for &(class, addr, size) in &claimed {
            self.release_small(class, addr, size);
        }
        for &(addr, size) in &large {
            let _ = self.free_large(addr, Some(size));
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn free_small_slow(self: &Arc<Self>, class: usize, addr: usize, counted: usize) {
        let counted = counted as i64;
        let cached = thread_cache::with_cache(self, |cache, req| {
            if !cache.push(class, addr) {
                let half = (CACHE_CAP[class] as usize).div_ceil(2);
                cache.drain_bottom(class, half, |objs| self.give_back(class, objs));
                cache.push(class, addr);
            }
            req.store(req.load(Ordering::Relaxed) - counted, Ordering::Relaxed);
        });
        if cached.is_none() {
            self.give_back(class, &[addr]);
            self.requested.fetch_sub(counted, Ordering::Relaxed);
        }
    }

    #[cold]
    #[inline(never)]
    fn free_outside_slabs(&self, addr: usize, size: Option<usize>) -> Result<usize, FreeError> {
        if self.region.in_reservation(addr) {
            return Err(FreeError::Invalid("inside the slab region but in no slab"));
        }
        self.free_large(addr, size)
    }

    fn free_large(&self, addr: usize, size: Option<usize>) -> Result<usize, FreeError> {
        let mut large = lock(&self.large);
        match large.lookup(addr) {
            Lookup::Live { usable, requested } => {
                if size.is_some_and(|n| n > usable) {
                    return Err(FreeError::Invalid("size larger than the allocation"));
                }
                if self.config.zero_on_free {
                    // SAFETY: the mapping is ours, `usable` bytes, and no longer the user's.
                    unsafe { std::ptr::write_bytes(addr as *mut u8, 0, usable) };
                }
                large.free(addr);
                self.requested
                    .fetch_sub(requested as i64, Ordering::Relaxed);
                Ok(usable)
            }
            Lookup::Freed => Err(FreeError::Double),
            Lookup::Unknown => Err(FreeError::Invalid("not allocated by this allocator")),
        }
    }

    /// Usable size of live allocation `addr`.
    pub(crate) fn usable_size(&self, addr: usize) -> Result<usize, FreeError> {
        let Some(s) = self.region.slab_of(addr) else {
            if self.region.in_reservation(addr) {
                return Err(FreeError::Invalid("inside the slab region but in no slab"));
            }
            return match lock(&self.large).lookup(addr) {
                Lookup::Live { usable, .. } => Ok(usable),
                Lookup::Freed => Err(FreeError::Double),
                Lookup::Unknown => Err(FreeError::Invalid("not allocated by this allocator")),
            };
        };
        let meta = self.region.meta(s);
        let class = state_class(meta.state.load(Ordering::Acquire))
            .ok_or(FreeError::Invalid("in a slab that holds no objects"))?;
        let idx = object_index(class, addr - self.region.slab_addr(s))
            .ok_or(FreeError::Invalid("not the start of an object"))?;
        if meta.allocated[idx].load(Ordering::Acquire) == 0 {
            return Err(FreeError::Double);
        }
        Ok(class_size(class))
    }

    pub(crate) fn link_slot(&self, slot: &Slot) {
        let mut head = lock(&self.threads);
        let me = slot as *const Slot as *mut Slot;
        slot.prev.store(std::ptr::null_mut(), Ordering::Relaxed);
        slot.next.store(head.0 as *mut Slot, Ordering::Relaxed);
        if !head.0.is_null() {
            // SAFETY: listed slots are alive (they unlink before their thread ends).
            unsafe { &*head.0 }.prev.store(me, Ordering::Relaxed);
        }
        head.0 = me;
    }

    pub(crate) fn unlink_slot(&self, slot: &Slot, requested: i64) {
        let mut head = lock(&self.threads);
        self.requested.fetch_add(requested, Ordering::Relaxed);
        let prev = slot.prev.load(Ordering::Relaxed);
        let next = slot.next.load(Ordering::Relaxed);
        if prev.is_null() {
            head.0 = next;
        } else {
            // SAFETY: listed slots are alive.
            unsafe { &*prev }.next.store(next, Ordering::Relaxed);
        }
        if !next.is_null() {
            // SAFETY: listed slots are alive.
            unsafe { &*next }.prev.store(prev, Ordering::Relaxed);
        }
    }

    /// Takes every lock of the heap, in the one order the code ever nests
    /// them (class locks, then the slab pool; large table and slot list alone).
    pub(crate) fn lock_all(&self) -> HeapLocks<'_> {
        let classes = self.pools.iter().map(|p| lock(p)).collect();
        let slabs = self.slabs.lock_guard();
        HeapLocks {
            _classes: classes,
            _slabs: slabs,
            _large: lock(&self.large),
            _threads: lock(&self.threads),
        }
    }

    /// Live requested bytes: the global counter plus every thread's share.
    pub(crate) fn requested_bytes(&self) -> i64 {
        let head = lock(&self.threads);
        let mut total = self.requested.load(Ordering::Relaxed);
        let mut p = head.0;
        while !p.is_null() {
            // SAFETY: listed slots are alive while we hold the list lock.
            let s = unsafe { &*p };
            total += s.requested.load(Ordering::Relaxed);
            p = s.next.load(Ordering::Relaxed);
        }
        total
    }
}
