//! Size-class slab allocator with out-of-band metadata (after SJMalloc).
//!
//! Every byte of allocator metadata lives away from user data: a slab's
//! class, its bitmap of live objects and its pool links sit in a separate
//! table found by address arithmetic (`(addr - base) >> SLAB_SHIFT`), never in
//! a header before the object. So an overflowing buffer cannot corrupt the
//! allocator, and every free is checked: the pointer must lie in one of this
//! allocator's slabs (or be one of its large mappings), sit on an object
//! boundary, and be allocated right now. A refused free returns an error and
//! changes nothing.
//!
//! | file             | what it holds                                                 |
//! |------------------|---------------------------------------------------------------|
//! | `sync`           | `lock()`: poison-free, counted locks (for the `fork` handler) |
//! | `free_error`     | why a free was refused                                        |
//! | `os`             | `mmap`/`madvise`/`munmap` wrappers                            |
//! | [`size_class`]   | the 72 slot sizes, 16 B .. 32 KiB                             |
//! | `slab_meta`      | per-slab metadata: class, live bitmap, central-pool bitmap    |
//! | `region`         | the reserved slab area and the metadata table beside it       |
//! | `slab_pool`      | carving, recycling and `madvise`-releasing whole slabs        |
//! | `class_pool`     | the central per-class pools (one lock per class)              |
//! | `medium`         | page runs in 4 MiB chunks of the region, 32 KiB .. 2 MiB      |
//! | `large`          | own mappings above 2 MiB, in a checked table, `mremap` resize |
//! | `hardened`       | the hardened profile's canaries, quarantine, zero-size area   |
//! | `thread_cache`   | per-thread stacks of free objects (the lock-free fast path), |
//! |                  | and `SlotList`, the heap's list of those threads' slots       |
//! | `heap`           | one allocator: ties the pools to the thread caches            |
//! | `stats`          | figures computed from the metadata                            |
//! | `trace`          | benchmark traces and the system-`malloc` peer (public API only; |
//! |                  | only with the `bench` feature)                                |
//!
//! Layering: each file uses only files above it in this table, with one
//! exception (as mimalloc states one for its heap): `thread_cache` uses
//! `heap`, because a thread's slot holds a `Weak<Heap>` and flushes into it
//! when the thread exits or the slot is evicted, while `heap` calls the
//! cache on every alloc and free. Cutting that edge would take a callback
//! or trait object for the flush, for no gain in what either file knows.
//!
//! ```
//! use slabcache_core::slab::SlabAllocator;
//! use slabcache_core::ErrorKind;
//!
//! let a = SlabAllocator::new().unwrap();
//! let p = a.alloc(64).unwrap();
//! assert_eq!(p.as_ptr() as usize % 16, 0);
//! a.free(p).unwrap();
//! assert_eq!(a.free(p).unwrap_err().kind(), ErrorKind::DoubleFree);
//! ```

mod class_pool;
mod config;
mod free_error;
pub(crate) mod hardened;
mod heap;
mod large;
mod medium;
pub mod os;
mod region;
pub mod size_class;
pub(crate) mod slab_meta;
mod slab_pool;
pub(crate) mod stats;
mod sync;
mod thread_cache;
#[cfg(feature = "bench")]
pub mod trace;

use std::ptr::NonNull;
use std::sync::Arc;

pub use config::SlabConfig;
pub use free_error::FreeError;
pub use stats::{ClassStats, SlabStats};
pub use sync::thread_holds_allocator_lock;

use crate::{Error, ErrorKind, Result};
use heap::Heap;
use size_class::{aligned_class_of, class_of, class_size, MIN_ALIGN};

/// Every lock of an allocator, held (see [`SlabAllocator::lock_all`]).
pub struct AllLocks<'a> {
    _held: heap::HeapLocks<'a>,
}

/// Largest alignment served from slabs; larger ones get a mapping of their own.
pub const MAX_SLAB_ALIGN: usize = 4096;

/// A thread-safe slab allocator. Cloning shares the same allocator (an `Arc`);
/// the memory is unmapped when the last clone goes.
///
/// ```
/// use slabcache_core::slab::{SlabAllocator, SlabConfig};
/// let a = SlabAllocator::with_config(SlabConfig { arena_size: 1 << 30, ..Default::default() }).unwrap();
/// let ptrs = a.alloc_many(&[16, 1000, 100_000]).unwrap();
/// a.free_many(&ptrs).unwrap();
/// assert_eq!(a.stats().live_allocations, 0);
/// ```
#[derive(Clone)]
pub struct SlabAllocator {
    heap: Arc<Heap>,
}

impl std::fmt::Debug for SlabAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlabAllocator")
            .field("id", &self.heap.id)
            .field("config", &self.heap.config)
            .finish()
    }
}

fn free_error(e: FreeError, addr: usize) -> Error {
    match e {
        FreeError::Double => Error::new(
            ErrorKind::DoubleFree,
            format!("double free: {addr:#x} is not allocated right now"),
        ),
        FreeError::Invalid(why) => Error::new(
            ErrorKind::InvalidFree,
            format!("invalid free of {addr:#x}: {why}"),
        ),
    }
}

fn oom(size: usize) -> Error {
    Error::out_of_memory(format!("cannot allocate {size} bytes"))
}

impl SlabAllocator {
    /// An allocator with the default [`SlabConfig`]: up to 64 GiB of address
    /// space, reserved as it is needed (a sixteenth of `RLIMIT_AS` at first
    /// under `ulimit -v`).
    pub fn new() -> Result<SlabAllocator> {
        Self::with_config_or_smaller(SlabConfig::default())
    }

    /// An allocator with `config`, retrying with a quarter of its
    /// `arena_size` (down to 1 GiB) while it cannot be created (the region
    /// itself already starts smaller when the OS refuses a big reservation).
    ///
    /// ```
    /// use slabcache_core::slab::{SlabAllocator, SlabConfig};
    /// let a = SlabAllocator::with_config_or_smaller(SlabConfig::default()).unwrap();
    /// assert!(a.config().arena_size >= 1 << 30);
    /// ```
    pub fn with_config_or_smaller(config: SlabConfig) -> Result<SlabAllocator> {
        let mut cfg = config;
        loop {
            match Self::with_config(cfg.clone()) {
                Err(e) if e.kind() == ErrorKind::OutOfMemory && cfg.arena_size / 4 >= 1 << 30 => {
                    cfg.arena_size /= 4;
                }
                other => return other,
            }
        }
    }

    /// An allocator with `config`.
    pub fn with_config(config: SlabConfig) -> Result<SlabAllocator> {
        Ok(SlabAllocator {
            heap: Arc::new(Heap::new(config)?),
        })
    }

    /// Whether `self` and `other` are the same allocator (clones of one).
    pub fn ptr_eq(&self, other: &SlabAllocator) -> bool {
        Arc::ptr_eq(&self.heap, &other.heap)
    }

    /// The options this allocator was built with.
    pub fn config(&self) -> &SlabConfig {
        &self.heap.config
    }

    /// Allocates `size` bytes (16-byte aligned; `size == 0` gives a unique
    /// 16-byte object). Contents are unspecified.
    #[inline]
    pub fn alloc(&self, size: usize) -> Result<NonNull<u8>> {
        self.raw_alloc(size).ok_or_else(|| oom(size))
    }

    /// Like [`SlabAllocator::alloc`], without building an error: `None` when
    /// out of memory. For the C ABI.
    #[inline]
    pub fn raw_alloc(&self, size: usize) -> Option<NonNull<u8>> {
        if self.heap.config.hardened {
            return NonNull::new(self.heap.alloc_hardened(size, MIN_ALIGN)? as *mut u8);
        }
        let addr = match class_of(size) {
            Some(c) => self.heap.alloc_small(c, size)?,
            None => {
                if size > isize::MAX as usize {
                    return None;
                }
                self.heap.alloc_large(size, MIN_ALIGN)?.0
            }
        };
        NonNull::new(addr as *mut u8)
    }

    /// Allocates `size` zeroed bytes.
    pub fn alloc_zeroed(&self, size: usize) -> Result<NonNull<u8>> {
        self.raw_alloc_zeroed(size).ok_or_else(|| oom(size))
    }

    /// [`SlabAllocator::alloc_zeroed`] returning `None` when out of memory.
    pub fn raw_alloc_zeroed(&self, size: usize) -> Option<NonNull<u8>> {
        if class_of(self.heap.class_request(size)).is_none() {
            if size > isize::MAX as usize {
                return None;
            }
            let (addr, fresh) = self.heap.alloc_large(size, MIN_ALIGN)?;
            if !fresh {
                // SAFETY: a live mapping of ours, at least `size` bytes.
                unsafe { std::ptr::write_bytes(addr as *mut u8, 0, size) };
            }
            return NonNull::new(addr as *mut u8);
        }
        let p = self.raw_alloc(size)?;
        // SAFETY: a live object of ours holding at least `size` bytes.
        unsafe { std::ptr::write_bytes(p.as_ptr(), 0, size) };
        Some(p)
    }

    /// Allocates `size` bytes aligned to `align` (a power of two). Alignments
    /// up to 4 KiB come from slabs; larger ones from a mapping of their own.
    ///
    /// ```
    /// let a = slabcache_core::slab::SlabAllocator::new().unwrap();
    /// let p = a.alloc_aligned(100, 256).unwrap();
    /// assert_eq!(p.as_ptr() as usize % 256, 0);
    /// a.free(p).unwrap();
    /// assert!(a.alloc_aligned(8, 48).is_err());
    /// ```
    pub fn alloc_aligned(&self, size: usize, align: usize) -> Result<NonNull<u8>> {
        if !align.is_power_of_two() {
            return Err(Error::invalid_argument(format!(
                "alignment must be a power of two, got {align}"
            )));
        }
        self.raw_alloc_aligned(size, align).ok_or_else(|| oom(size))
    }

    /// [`SlabAllocator::alloc_aligned`] returning `None` on failure
    /// (including a non-power-of-two `align`).
    pub fn raw_alloc_aligned(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        if !align.is_power_of_two() || size > isize::MAX as usize {
            return None;
        }
        if align <= MIN_ALIGN {
            return self.raw_alloc(size);
        }
        if self.heap.config.hardened {
            return NonNull::new(self.heap.alloc_hardened(size, align)? as *mut u8);
        }
        let addr = match (align <= MAX_SLAB_ALIGN)
            .then(|| aligned_class_of(size, align))
            .flatten()
        {
            Some(c) => self.heap.alloc_small(c, size)?,
            None => self.heap.alloc_large(size, align)?.0,
        };
        NonNull::new(addr as *mut u8)
    }

    /// Frees `ptr`. Refused (and nothing changes) unless `ptr` is a live
    /// allocation of this allocator: [`ErrorKind::DoubleFree`] when it is not
    /// allocated now, [`ErrorKind::InvalidFree`] when it never was an object start.
    #[inline]
    pub fn free(&self, ptr: NonNull<u8>) -> Result<()> {
        let addr = ptr.as_ptr() as usize;
        self.heap
            .free(addr, None)
            .map(|_| ())
            .map_err(|e| free_error(e, addr))
    }

    /// Frees `ptr`, allocated with `size` bytes: checked like
    /// [`SlabAllocator::free`], and `size` must fit the allocation.
    #[inline]
    pub fn free_sized(&self, ptr: NonNull<u8>, size: usize) -> Result<()> {
        let addr = ptr.as_ptr() as usize;
        self.heap
            .free(addr, Some(size))
            .map(|_| ())
            .map_err(|e| free_error(e, addr))
    }

    /// [`SlabAllocator::free`] without building an error message (for the C
    /// ABI): returns the usable size freed.
    #[inline]
    pub fn raw_free(&self, addr: usize) -> std::result::Result<usize, FreeError> {
        self.heap.free(addr, None)
    }

    /// Resizes live allocation `addr` to `size` bytes keeping its contents
    /// (the C `realloc`, for `size > 0`): in place when the slot or page
    /// run already fits or can grow, by `mremap` for huge blocks, else by
    /// allocate + copy + free. `Ok(None)`: out of memory, `addr` untouched.
    /// `Err`: `addr` is not a live allocation (nothing changed).
    ///
    /// ```
    /// let a = slabcache_core::slab::SlabAllocator::new().unwrap();
    /// let p = a.alloc(100).unwrap().as_ptr() as usize;
    /// let q = a.raw_realloc(p, 200_000).unwrap().unwrap();
    /// let r = a.raw_realloc(q.as_ptr() as usize, 300_000).unwrap().unwrap();
    /// assert!(a.raw_free(r.as_ptr() as usize).is_ok());
    /// ```
    pub fn raw_realloc(
        &self,
        addr: usize,
        size: usize,
    ) -> std::result::Result<Option<NonNull<u8>>, FreeError> {
        let usable = self.heap.usable_size(addr)?;
        if size > isize::MAX as usize {
            return Ok(None);
        }
        if usable <= size_class::MAX_SMALL && !self.heap.is_huge(addr) {
            if size <= usable && (size >= usable / 2 || size <= MIN_ALIGN) {
                return Ok(NonNull::new(addr as *mut u8));
            }
        } else if size > size_class::MAX_SMALL {
            if let Some(p) = self.heap.resize_in_place(addr, usable, size) {
                return Ok(NonNull::new(p as *mut u8));
            }
        }
        // A medium block that must move to grow gets headroom (half again),
        // so a buffer grown step by step is copied O(log n) times, not per step.
        let grown = if size > usable && size > size_class::MAX_SMALL && size <= medium::MEDIUM_MAX {
            size.max(usable + usable / 2).min(medium::MEDIUM_MAX)
        } else {
            size
        };
        let Some(q) = self.raw_alloc(grown) else {
            return Ok(None);
        };
        // SAFETY: both are live allocations of ours, `addr` holds `usable`
        // bytes and `q` at least `size`; they are distinct.
        unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, q.as_ptr(), usable.min(size)) };
        let _ = self.heap.free(addr, None);
        Ok(Some(q))
    }

    /// Sized free for the C ABI (`free_sized`, C++ sized `delete`): `size`
    /// must be what was asked for, to the allocator's granularity (same size
    /// class; same page count for medium and huge blocks). Refused otherwise,
    /// and nothing changes.
    pub fn raw_free_sized(
        &self,
        addr: usize,
        size: usize,
    ) -> std::result::Result<usize, FreeError> {
        let usable = self.heap.usable_size(addr)?;
        let expect = match class_of(self.heap.class_request(size)) {
            Some(c) => class_size(c),
            None => size.checked_next_multiple_of(4096).unwrap_or(usize::MAX),
        };
        if expect != usable
            && !(usable > size_class::MAX_SMALL
                && size <= usable
                && expect < usable
                && self.heap.is_huge(addr))
        {
            return Err(FreeError::Invalid("size does not match the allocation"));
        }
        self.heap.free(addr, Some(size))
    }

    /// Usable bytes of live allocation `ptr` (at least what was asked for).
    pub fn usable_size(&self, ptr: NonNull<u8>) -> Result<usize> {
        let addr = ptr.as_ptr() as usize;
        self.heap.usable_size(addr).map_err(|e| free_error(e, addr))
    }

    /// [`SlabAllocator::usable_size`] without an error message.
    pub fn raw_usable_size(&self, addr: usize) -> std::result::Result<usize, FreeError> {
        self.heap.usable_size(addr)
    }

    /// Whether `addr` lies in memory this allocator manages (its slab region
    /// or one of its live large mappings); says nothing about liveness.
    pub fn owns(&self, addr: usize) -> bool {
        self.heap.region.in_reservation(addr) || self.heap.usable_size(addr).is_ok()
    }

    /// Allocates one object per entry of `sizes`; all or nothing.
    pub fn alloc_many(&self, sizes: &[usize]) -> Result<Vec<(NonNull<u8>, usize)>> {
        let mut out = Vec::with_capacity(sizes.len());
        for &n in sizes {
            match self.raw_alloc(n) {
                Some(p) => out.push((p, n)),
                None => {
                    for &(p, n) in &out {
                        let _ = self.heap.free(p.as_ptr() as usize, Some(n));
                    }
                    return Err(oom(n));
                }
            }
        }
        Ok(out)
    }

    /// Frees every `(ptr, size)`; all or nothing: if any entry is not a live
    /// allocation of this allocator of at least that size, or appears twice,
    /// nothing is freed and the error names the first bad entry.
    pub fn free_many(&self, items: &[(NonNull<u8>, usize)]) -> Result<()> {
        let list: Vec<(usize, usize)> = items
            .iter()
            .map(|&(p, n)| (p.as_ptr() as usize, n))
            .collect();
        self.heap
            .free_many(&list)
            .map_err(|(e, addr)| free_error(e, addr))
    }

    /// Returns this thread's cached free objects to the central pools (so
    /// empty slabs can be released; also done when the thread exits).
    pub fn flush_thread_cache(&self) {
        thread_cache::flush(&self.heap);
    }

    /// Holds every lock of the allocator until the returned value is
    /// dropped: a `fork()` taken meanwhile leaves the child with consistent,
    /// unlocked state once the value is dropped on both sides (what the
    /// `LD_PRELOAD` library does in its `pthread_atfork` handlers).
    ///
    /// ```
    /// let a = slabcache_core::slab::SlabAllocator::new().unwrap();
    /// let held = a.lock_all();
    /// drop(held);
    /// a.free(a.alloc(8).unwrap()).unwrap();
    /// ```
    pub fn lock_all(&self) -> AllLocks<'_> {
        AllLocks {
            _held: self.heap.lock_all(),
        }
    }

    /// A snapshot of the allocator's memory use.
    pub fn stats(&self) -> SlabStats {
        stats::collect(&self.heap)
    }

    /// Slot size that an allocation of `size` bytes gets (`None`: above the
    /// largest class, rounded to pages instead).
    pub fn slot_size(size: usize) -> Option<usize> {
        class_of(size).map(class_size)
    }
}

#[cfg(test)]
mod tests;
