//! One allocator instance: the region, the class pools, the large table, and
//! the alloc/free paths that tie them to the thread caches.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_utils::CachePadded;

use super::class_pool::ClassPool;
use super::config::SlabConfig;
use super::free_error::FreeError;
use super::hardened::{self, ZeroArea, CANARY};
use super::large::{LargeTable, Lookup};
use super::medium::{Medium, MEDIUM_MAX};
use super::region::Region;
use super::size_class::{aligned_class_of, class_of};
use super::size_class::{class_size, NUM_CLASSES};
use super::slab_meta::{object_index, object_index_unchecked, state_class, state_is_medium};
use super::slab_pool::SlabPool;
use super::sync::{lock, Locked};
use super::thread_cache::{self, Slot, SlotList, CACHE_CAP};

/// Every lock of a heap, held; released when dropped.
pub(crate) struct HeapLocks<'a> {
    _classes: Vec<Locked<'a, ClassPool>>,
    _medium: Vec<Locked<'a, super::medium::ArenaState>>,
    _slabs: Locked<'a, super::slab_pool::PoolState>,
    _large: Locked<'a, LargeTable>,
    _threads: Locked<'a, SlotList>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The shared state of one allocator.
pub struct Heap {
    pub(crate) id: u64,
    pub(crate) region: Region,
    pub(crate) pools: Box<[CachePadded<Mutex<ClassPool>>]>,
    pub(crate) slabs: SlabPool,
    pub(crate) large: Mutex<LargeTable>,
    pub(crate) medium: Medium,
    /// Canary secret (hardened profile).
    secret: u64,
    /// Inaccessible slots for zero-size allocations (hardened profile).
    zero: Option<ZeroArea>,
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
            slabs: SlabPool::new(if config.hardened {
                0
            } else {
                config.release_threshold
            }),
            large: Mutex::new(LargeTable::new(if config.hardened {
                0
            } else {
                config.large_cache_bytes
            })),
            medium: Medium::new(config.hardened),
            secret: hardened::secret(),
            zero: if config.hardened {
                ZeroArea::new()
            } else {
                None
            },
            config,
            threads: Mutex::new(SlotList::new()),
            requested: AtomicI64::new(0),
        })
    }

    /// Marks object `addr` of `class` as handed to the user.
    #[inline]
    fn mark_allocated(&self, class: usize, addr: usize) {
        let s = self.region.slab_of(addr).expect("a committed slab");
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

    /// Allocates above the size classes: page runs in a medium chunk up to
    /// [`MEDIUM_MAX`] (any alignment up to a page), else a mapping of its
    /// own. Returns the address and whether it reads as zero. `None`: out of memory.
    pub(crate) fn alloc_large(&self, size: usize, align: usize) -> Option<(usize, bool)> {
        if size <= MEDIUM_MAX && align <= 4096 {
            if let Some(b) = self.medium.alloc(&self.region, &self.slabs, size) {
                self.requested.fetch_add(size as i64, Ordering::Relaxed);
                return Some((b.addr, b.fresh));
            }
        }
        // mmap outside the table's lock (it is one lock for all threads).
        let cached = lock(&self.large).take_cached(size, align);
        let (c, fresh) = match cached {
            Some(c) => (c, false),
            None => (LargeTable::map_fresh(size, align)?, true),
        };
        if !lock(&self.large).insert_live(c, size) {
            // SAFETY: the mapping is no one's (not recorded anywhere).
            unsafe { super::os::unmap(c.map_base as *mut u8, c.map_len) };
            return None;
        }
        self.requested.fetch_add(size as i64, Ordering::Relaxed);
        Some((c.addr, fresh))
    }

    /// Resizes block `addr` (medium or huge, already validated) without
    /// copying when it can: in place inside its chunk, or by `mremap`.
    /// Returns the (possibly moved) address, `None` when it must be copied.
    pub(crate) fn resize_in_place(
        &self,
        addr: usize,
        old_usable: usize,
        size: usize,
    ) -> Option<usize> {
        if let Some(s) = self.region.slab_of(addr) {
            let u = self.medium.grow_in_place(&self.region, s, addr, size)?;
            if u < size.saturating_mul(2) || u <= 4096 {
                self.requested
                    .fetch_add(u as i64 - old_usable as i64, Ordering::Relaxed);
                return Some(addr);
            }
            return None;
        }
        if size <= MEDIUM_MAX / 2 {
            return None;
        }
        let p = lock(&self.large).remap(addr, size)?;
        self.requested
            .fetch_add(size as i64 - old_usable as i64, Ordering::Relaxed);
        Some(p)
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
        if self.config.hardened {
            return self.free_hardened(addr, size);
        }
        let Some(s) = self.region.slab_of(addr) else {
            return self.free_outside_slabs(addr, size);
        };
        let class = match self.claim_in_slab(s, addr, size) {
            Ok(c) => c,
            Err(e) => return self.free_not_small(s, addr, size, e),
        };
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
        let s = self.region.slab_of(addr).expect("a committed slab");
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
    /// first (a duplicate finds its byte already taken), medium and huge ones
    /// checked (and duplicates looked for); on any refusal every claim is undone.
    pub(crate) fn free_many(
        self: &Arc<Self>,
        items: &[(usize, usize)],
    ) -> Result<(), (FreeError, usize)> {
        if self.config.hardened {
            return self.free_many_hardened(items);
        }
        let mut claimed: Vec<(usize, usize, usize)> = Vec::with_capacity(items.len());
        let mut big: Vec<(usize, usize)> = Vec::new();
        let mut failed = None;
        for &(addr, size) in items {
            let small = self.region.slab_of(addr).is_some_and(|s| {
                !state_is_medium(self.region.meta(s).state.load(Ordering::Acquire))
            });
            if small {
                match self.claim_small(addr, Some(size)) {
                    Ok(class) => claimed.push((class, addr, size)),
                    Err(e) => {
                        failed = Some((e, addr));
                        break;
                    }
                }
                continue;
            }
            let check = match self.usable_size(addr) {
                Ok(usable) if size > usable => {
                    Err(FreeError::Invalid("size larger than the allocation"))
                }
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = check {
                failed = Some((e, addr));
                break;
            }
            big.push((addr, size));
        }
        if failed.is_none() && big.len() > 1 {
            let mut addrs: Vec<usize> = big.iter().map(|&(a, _)| a).collect();
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
        for &(addr, size) in &big {
            let _ = self.free(addr, Some(size));
        }
        Ok(())
    }

    /// [`Heap::free_many`] in the hardened profile: everything (including
    /// canaries and duplicates) is checked before anything is freed.
    fn free_many_hardened(
        self: &Arc<Self>,
        items: &[(usize, usize)],
    ) -> Result<(), (FreeError, usize)> {
        for &(addr, size) in items {
            let usable = self.usable_size(addr).map_err(|e| (e, addr))?;
            if size > usable {
                return Err((FreeError::Invalid("size larger than the allocation"), addr));
            }
            let small = self.region.slab_of(addr).is_some_and(|s| {
                state_class(self.region.meta(s).state.load(Ordering::Acquire)).is_some()
            });
            // SAFETY: a live slot of ours, `usable + CANARY` bytes.
            if small && !unsafe { hardened::canary_ok(self.secret, addr, usable + CANARY) } {
                return Err((
                    FreeError::Invalid(
                        "heap overflow: the canary after the object was overwritten",
                    ),
                    addr,
                ));
            }
        }
        let mut addrs: Vec<usize> = items.iter().map(|&(a, _)| a).collect();
        addrs.sort_unstable();
        if let Some(w) = addrs.windows(2).find(|w| w[0] == w[1]) {
            return Err((FreeError::Double, w[0]));
        }
        for &(addr, size) in items {
            self.free_hardened(addr, Some(size))
                .map_err(|e| (e, addr))?;
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    pub(crate) fn free_small_slow(self: &Arc<Self>, class: usize, addr: usize, counted: usize) {
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

    /// A free in slab `s` that is not a small object: a medium block, or `e`.
    #[cold]
    #[inline(never)]
    fn free_not_small(
        &self,
        s: usize,
        addr: usize,
        size: Option<usize>,
        e: FreeError,
    ) -> Result<usize, FreeError> {
        if !state_is_medium(self.region.meta(s).state.load(Ordering::Acquire)) {
            return Err(e);
        }
        let usable = self.medium.free(&self.region, s, addr, size)?;
        self.requested
            .fetch_sub(size.unwrap_or(usable) as i64, Ordering::Relaxed);
        Ok(usable)
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
                let unmap = large.free(addr).and_then(|(_, u)| u);
                drop(large);
                if let Some((base, len)) = unmap {
                    // SAFETY: the mapping was freed from the table above and
                    // is reachable by no one (munmap outside the lock).
                    unsafe { super::os::unmap(base as *mut u8, len) };
                }
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
        if let Some(z) = self.zero.as_ref().filter(|z| z.contains(addr)) {
            return match z.is_live(addr) {
                Ok(true) => Ok(0),
                Ok(false) => Err(FreeError::Double),
                Err(_) => Err(FreeError::Invalid("not the start of a zero-size slot")),
            };
        }
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
        let state = meta.state.load(Ordering::Acquire);
        if state_is_medium(state) {
            return self.medium.usable_size(&self.region, s, addr);
        }
        let class =
            state_class(state).ok_or(FreeError::Invalid("in a slab that holds no objects"))?;
        let idx = object_index(class, addr - self.region.slab_addr(s))
            .ok_or(FreeError::Invalid("not the start of an object"))?;
        if meta.allocated[idx].load(Ordering::Acquire) == 0 {
            return Err(FreeError::Double);
        }
        Ok(class_size(class) - if self.config.hardened { CANARY } else { 0 })
    }

    /// The request size whose size class serves `size` bytes (the canary
    /// is added in the hardened profile).
    #[inline]
    pub(crate) fn class_request(&self, size: usize) -> usize {
        if self.config.hardened {
            size.saturating_add(CANARY)
        } else {
            size
        }
    }

    /// Whether `addr` is outside the slab region and the zero-size area
    /// (i.e. a huge mapping, if anything).
    pub(crate) fn is_huge(&self, addr: usize) -> bool {
        !self.region.in_reservation(addr) && !self.zero.as_ref().is_some_and(|z| z.contains(addr))
    }

    /// Hardened allocation: zero-size slots from the inaccessible area,
    /// small slots checked for writes after free and given a canary.
    pub(crate) fn alloc_hardened(self: &Arc<Self>, size: usize, align: usize) -> Option<usize> {
        if size == 0 && align <= 16 {
            if let Some(a) = self.zero.as_ref().and_then(|z| z.alloc()) {
                return Some(a);
            }
        }
        let req = size.checked_add(CANARY)?;
        let class = if align <= 16 {
            class_of(req)
        } else if align <= 4096 {
            aligned_class_of(req, align)
        } else {
            None
        };
        let Some(c) = class else {
            return self.alloc_large(size, align).map(|(a, _)| a);
        };
        let p = self.alloc_small(c, size)?;
        let slot = class_size(c);
        // SAFETY: `p` is a live slot of ours, `slot` bytes long.
        unsafe {
            if !hardened::is_zero(p, slot.min(hardened::CHECKED_BYTES))
                || !hardened::is_zero(p + slot - CANARY, CANARY)
            {
                hardened::fatal("write after free detected (a freed object was modified)", p);
            }
            hardened::put_canary(self.secret, p, slot);
        }
        Some(p)
    }

    /// Hardened free: zero-size slots; small objects checked (live, size,
    /// canary) before they are claimed, then zeroed and quarantined.
    fn free_hardened(
        self: &Arc<Self>,
        addr: usize,
        size: Option<usize>,
    ) -> Result<usize, FreeError> {
        if let Some(z) = self.zero.as_ref().filter(|z| z.contains(addr)) {
            return z.free(addr).map(|_| 0).map_err(|double| {
                if double {
                    FreeError::Double
                } else {
                    FreeError::Invalid("not the start of a zero-size slot")
                }
            });
        }
        let Some(s) = self.region.slab_of(addr) else {
            return self.free_outside_slabs(addr, size);
        };
        let state = self.region.meta(s).state.load(Ordering::Acquire);
        if state_class(state).is_none() {
            return self.free_not_small(
                s,
                addr,
                size,
                FreeError::Invalid("in a slab that holds no objects"),
            );
        }
        let usable = self.usable_size(addr)?;
        if size.is_some_and(|n| n > usable) {
            return Err(FreeError::Invalid("size larger than the allocation"));
        }
        let slot = usable + CANARY;
        // SAFETY: a live slot of ours (checked just above).
        if !unsafe { hardened::canary_ok(self.secret, addr, slot) } {
            return Err(FreeError::Invalid(
                "heap overflow: the canary after the object was overwritten",
            ));
        }
        let class = self.claim_in_slab(s, addr, None)?;
        // SAFETY: claimed: the slot is ours and no longer the user's. The
        // checked head and the canary are wiped (the whole slot with
        // `zero_on_free`); empty slabs are always released in this profile,
        // so a recycled slab reads as zero.
        unsafe {
            if self.config.zero_on_free {
                std::ptr::write_bytes(addr as *mut u8, 0, slot);
            } else {
                std::ptr::write_bytes(addr as *mut u8, 0, slot.min(hardened::CHECKED_BYTES));
                std::ptr::write_bytes((addr + slot - CANARY) as *mut u8, 0, CANARY);
            }
        }
        self.quarantine(class, addr, size.unwrap_or(usable));
        Ok(usable)
    }

    /// Holds a freed (claimed, zeroed) object back from reuse; the oldest
    /// quarantined object goes to the cache instead.
    fn quarantine(self: &Arc<Self>, class: usize, addr: usize, counted: usize) {
        let out = thread_cache::with_cache(self, |cache, req| {
            req.store(
                req.load(Ordering::Relaxed) - counted as i64,
                Ordering::Relaxed,
            );
            cache.quarantine.push(addr, class)
        });
        match out {
            Some(Some((a, c))) => {
                if !thread_cache::fast_push(self, c, a, 0) {
                    self.free_small_slow(c, a, 0);
                }
            }
            Some(None) => {}
            None => {
                self.give_back(class, &[addr]);
                self.requested.fetch_sub(counted as i64, Ordering::Relaxed);
            }
        }
    }

    /// Lists `slot` among this heap's thread slots (read by [`Heap::requested_bytes`]).
    pub(crate) fn link_slot(&self, slot: &Slot) {
        lock(&self.threads).link(slot);
    }

    /// Takes `slot` off the list, folding its `requested` tally into the heap's.
    pub(crate) fn unlink_slot(&self, slot: &Slot, requested: i64) {
        let mut list = lock(&self.threads);
        self.requested.fetch_add(requested, Ordering::Relaxed);
        list.unlink(slot);
    }

    /// Takes every lock of the heap, in the one order the code ever nests
    /// them (class locks or medium arenas, then the slab pool; large table
    /// and slot list alone).
    pub(crate) fn lock_all(&self) -> HeapLocks<'_> {
        let classes = self.pools.iter().map(|p| lock(p)).collect();
        let medium = self.medium.lock_all();
        let slabs = self.slabs.lock_guard();
        HeapLocks {
            _classes: classes,
            _medium: medium,
            _slabs: slabs,
            _large: lock(&self.large),
            _threads: lock(&self.threads),
        }
    }

    /// Live requested bytes: the global counter plus every thread's share.
    pub(crate) fn requested_bytes(&self) -> i64 {
        let list = lock(&self.threads);
        self.requested.load(Ordering::Relaxed) + list.requested()
    }
}
