//! The immutable contents of a node: one allocation holding a small header,
//! the sorted keys, then the items (values in a leaf, child pointers in an
//! inner node).
//!
//! A block is never changed after it is published (but for an inner block's
//! child hints, atomics that only ever serve as prefetch addresses: see
//! `node::hints`). A writer builds a new block (moving the unchanged entries
//! bitwise out of the old one), swaps the node's pointer, and retires the old
//! block through the epoch collector with a *shallow* free: the entries now
//! live in the new block, so only the memory (and the entries the write
//! removed) are freed. Readers therefore never lock and never see a
//! half-written node.
//!
//! Keys and items are stored in two arrays so a binary search touches only
//! keys: with `B = 64` and 8-byte keys that is at most 8 cache lines.
//!
//! Every write allocates one block and retires one, so block memory goes
//! through a small per-thread [`pool`] of freed blocks, by exact size: the
//! thread that runs a batch of retired blocks' destructors keeps them for its
//! next writes instead of handing each to `free` (which, for a block another
//! thread allocated, takes that thread's malloc arena lock: with 16 writer
//! threads, the lock waits were the insert tail).

use std::alloc::{handle_alloc_error, Layout};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicUsize, Ordering};

use pool::{alloc, dealloc};

/// A per-thread cache of freed block memory, by size (16-byte classes, so no
/// block is ever larger than it would be from `malloc`).
///
/// A block freed on thread T goes to T's cache (up to [`pool::BUDGET`] bytes
/// in all; beyond that, to the allocator); a block allocated on T comes from
/// T's cache when one of that exact size is there. The memory is plain bytes:
/// which thread allocated it does not matter.
pub(crate) mod pool {
    use std::alloc::Layout;
    use std::cell::RefCell;

    /// Blocks up to this size are cached.
    const MAX_POOLED: usize = 4096;
    const STEP: usize = 16;
    const CLASSES: usize = MAX_POOLED / STEP + 1;
    /// Most bytes one thread keeps cached (the rest goes back to `free`).
    pub(crate) const BUDGET: usize = 256 << 10;
    /// Most blocks of one size one thread keeps.
    const PER_CLASS: usize = 64;

    struct Pool {
        free: Vec<Vec<*mut u8>>,
        bytes: usize,
        /// Bytes allocated from the allocator (cache misses) since the last
        /// new reserve.
        missed: usize,
        /// This thread's heap reserve (null: none yet); see [`reserve_heap`].
        reserve: *mut u8,
    }

    impl Drop for Pool {
        fn drop(&mut self) {
            if !self.reserve.is_null() {
                // SAFETY: the reserve was allocated with this layout and is
                // owned by this pool alone.
                unsafe { std::alloc::dealloc(self.reserve, reserve_layout()) };
            }
            for (class, list) in self.free.iter().enumerate() {
                let layout = class_layout(class);
                for &p in list {
                    // SAFETY: every cached pointer was allocated with this
                    // class's layout (see `normal`) and is owned by the cache.
                    unsafe { std::alloc::dealloc(p, layout) };
                }
            }
        }
    }

    thread_local! {
        static POOL: RefCell<Pool> = const { RefCell::new(Pool { free: Vec::new(), bytes: 0, missed: 0, reserve: std::ptr::null_mut() }) };
    }

    #[inline]
    fn class_layout(class: usize) -> Layout {
        // Classes start at 1 (sizes 1..=16 bytes): never a zero size.
        Layout::from_size_align(class * STEP, STEP).expect("pool class layout")
    }

    /// The class and the layout actually used for `layout`, or `None` if it
    /// is not cached (too large or over-aligned).
    #[inline]
    fn normal(layout: Layout) -> Option<(usize, Layout)> {
        if layout.align() > STEP || layout.size() > MAX_POOLED || layout.size() == 0 {
            return None;
        }
        let class = layout.size().div_ceil(STEP);
        Some((class, class_layout(class)))
    }

    /// Allocates block memory for `layout` (from this thread's cache if it
    /// has a block of that size); null on allocation failure.
    ///
    /// # Safety
    /// `layout` has a non-zero size.
    #[inline]
    pub(crate) unsafe fn alloc(layout: Layout) -> *mut u8 {
        let Some((class, real)) = normal(layout) else {
            // SAFETY: the caller guarantees a non-zero size.
            return unsafe { std::alloc::alloc(layout) };
        };
        let hit = POOL
            .try_with(|p| {
                let mut p = p.try_borrow_mut().ok()?;
                let got = p.free.get_mut(class).and_then(Vec::pop);
                match got {
                    Some(_) => p.bytes -= real.size(),
                    None => p.missed += real.size(),
                }
                got
            })
            .ok()
            .flatten();
        match hit {
            Some(got) => got,
            // SAFETY: `real` has a non-zero size.
            None => unsafe { std::alloc::alloc(real) },
        }
    }

    /// Frees block memory allocated by [`alloc`] with the same `layout`.
    ///
    /// # Safety
    /// `ptr` came from [`alloc`] with `layout` and is not used again.
    #[inline]
    pub(crate) unsafe fn dealloc(ptr: *mut u8, layout: Layout) {
        let Some((class, real)) = normal(layout) else {
            // SAFETY: not a pooled layout: `alloc` used the allocator directly.
            return unsafe { std::alloc::dealloc(ptr, layout) };
        };
        let kept = POOL
            .try_with(|p| {
                let Ok(mut p) = p.try_borrow_mut() else {
                    return false;
                };
                if p.bytes + real.size() > BUDGET {
                    return false;
                }
                if p.free.is_empty() {
                    p.free = (0..CLASSES).map(|_| Vec::new()).collect();
                }
                let list = &mut p.free[class];
                if list.len() >= PER_CLASS {
                    return false;
                }
                list.push(ptr);
                p.bytes += real.size();
                true
            })
            .unwrap_or(false);
        if !kept {
            // SAFETY: `alloc` allocated `ptr` with `real` (directly or
            // through a cache that got it from the allocator with `real`).
            unsafe { std::alloc::dealloc(ptr, real) };
        }
    }

    /// Misses (bytes) after which [`reserve_heap`] takes a new reserve.
    const RESERVE_EVERY: usize = 64 << 10;
    /// The size of one reserve: below glibc's smallest mmap threshold
    /// (128 KiB), so it comes from the thread's heap and not from `mmap`.
    const RESERVE: usize = 120 << 10;

    #[inline]
    fn reserve_layout() -> Layout {
        Layout::from_size_align(RESERVE, STEP).expect("reserve layout")
    }

    /// Makes the allocator grow this thread's heap in large steps. Call with
    /// no lock held (it may make a system call).
    ///
    /// glibc grows a thread's malloc arena (every thread but the first
    /// uses one) by exactly the pages a request lacks, with one `mprotect`
    /// per growth: a map that grows by small blocks makes one system call
    /// per 4 KiB, and `mprotect` takes the process's memory-map lock for
    /// writing, so on many threads each waits for the others' (and stalls
    /// their page faults). Measured on the dev VM (2 threads, 1M-key load
    /// into a fresh process): about 11,000 `mprotect`s in the map's first
    /// load, none in later loads, which reuse the grown heaps.
    ///
    /// So each thread holds one [`RESERVE`]-byte allocation (never written
    /// but for the allocator's own headers). After every [`RESERVE_EVERY`]
    /// bytes the thread took from the allocator it allocates the next
    /// reserve and then frees the previous one: the new one comes from a free
    /// hole that big or from the end of the heap (one growth, one
    /// `mprotect`, for up to 120 KiB), and the freed one is a hole the next
    /// small requests are carved from instead of growing the heap page by
    /// page (1,000 `mprotect`s instead of 11,000 on the same load). Freeing
    /// the old one before taking the new would leave the memory at the
    /// heap's end, where glibc's main arena trims it back at once. Costs: up
    /// to 120 KiB of address space per writing thread (freed at thread
    /// exit), and under any allocator one allocation and one free per 64 KiB
    /// allocated.
    #[inline]
    pub(crate) fn reserve_heap() {
        let due = POOL
            .try_with(|p| {
                let Ok(mut p) = p.try_borrow_mut() else {
                    return false;
                };
                if p.missed < RESERVE_EVERY {
                    return false;
                }
                p.missed = 0;
                true
            })
            .unwrap_or(false);
        if !due {
            return;
        }
        // SAFETY: a non-zero size.
        let new = unsafe { std::alloc::alloc(reserve_layout()) };
        let old = POOL
            .try_with(|p| match p.try_borrow_mut() {
                Ok(mut p) => std::mem::replace(&mut p.reserve, new),
                Err(_) => new,
            })
            .unwrap_or(new);
        if !old.is_null() {
            // SAFETY: `old` is a reserve allocated above with the same layout
            // (now or by an earlier call), owned by nobody else, never read.
            unsafe { std::alloc::dealloc(old, reserve_layout()) };
        }
    }

    /// Bytes this thread holds cached (for tests).
    #[cfg(test)]
    pub(crate) fn cached_bytes() -> usize {
        POOL.with(|p| p.borrow().bytes)
    }
}

/// The fixed part at the start of each block.
#[repr(C)]
pub(crate) struct Header<K, N> {
    /// The right neighbour at the same level (null: rightmost).
    pub next: *const N,
    /// The right neighbour's low fence (`None` exactly when `next` is null):
    /// a search for `k >= high` moves right without touching the neighbour.
    pub high: Option<K>,
    pub nkeys: u32,
    pub nitems: u32,
}

/// A typed view of a block: `K` keys and `T` items (`T` is `V` in leaves and
/// `*const Node` in inner nodes). With `H` (inner blocks), the items are
/// followed by one [`AtomicUsize`] hint per item: a guess of that child's
/// current block (see `node::hints`), the one part of a published block that
/// is ever written, and only ever read as a prefetch address.
pub(crate) struct Block<K, T, N, const H: bool = false> {
    _p: PhantomData<(K, T, N)>,
}

impl<K, T, N, const H: bool> Block<K, T, N, H> {
    /// The block's layout and the offsets of its keys, items and hints.
    #[inline]
    fn layout4(nkeys: usize, nitems: usize) -> (Layout, usize, usize, usize) {
        let head = Layout::new::<Header<K, N>>();
        let keys = Layout::array::<K>(nkeys).expect("block too large");
        let items = Layout::array::<T>(nitems).expect("block too large");
        let hints =
            Layout::array::<AtomicUsize>(if H { nitems } else { 0 }).expect("block too large");
        let (l, koff) = head.extend(keys).expect("block too large");
        let (l, ioff) = l.extend(items).expect("block too large");
        let (l, hoff) = l.extend(hints).expect("block too large");
        (l.pad_to_align(), koff, ioff, hoff)
    }

    #[inline]
    fn layout(nkeys: usize, nitems: usize) -> (Layout, usize, usize) {
        let (l, koff, ioff, _) = Self::layout4(nkeys, nitems);
        (l, koff, ioff)
    }

    /// The child hints of the block at `h` (empty unless `H`).
    ///
    /// # Safety
    /// `h` must point to a live block of this type.
    #[inline]
    pub unsafe fn hints<'a>(h: *const Header<K, N>) -> &'a [AtomicUsize] {
        if !H {
            return &[];
        }
        // SAFETY: as in `items`: a live hinted block's `nitems` hints sit at
        // `hoff`, zeroed by `Builder::new`; they are atomics, so shared
        // references to them may be written through.
        unsafe {
            let nk = (*h).nkeys as usize;
            let ni = (*h).nitems as usize;
            let (_, _, _, hoff) = Self::layout4(nk, ni);
            std::slice::from_raw_parts((h as *const u8).add(hoff) as *const AtomicUsize, ni)
        }
    }

    /// The keys of the block at `h`.
    ///
    /// # Safety
    /// `h` must point to a live block of this type.
    #[inline]
    pub unsafe fn keys<'a>(h: *const Header<K, N>) -> &'a [K] {
        // SAFETY: the caller guarantees a live block at `h`: its header is
        // initialised and its `nkeys` keys sit at `koff`, all written by `Builder`.
        unsafe {
            let n = (*h).nkeys as usize;
            let (_, koff, _) = Self::layout(n, 0);
            std::slice::from_raw_parts((h as *const u8).add(koff) as *const K, n)
        }
    }

    /// The items of the block at `h`.
    ///
    /// # Safety
    /// `h` must point to a live block of this type.
    #[inline]
    pub unsafe fn items<'a>(h: *const Header<K, N>) -> &'a [T] {
        // SAFETY: as in `keys`: a live block's `nitems` items sit at `ioff`.
        unsafe {
            let nk = (*h).nkeys as usize;
            let ni = (*h).nitems as usize;
            let (_, _, ioff) = Self::layout(nk, ni);
            std::slice::from_raw_parts((h as *const u8).add(ioff) as *const T, ni)
        }
    }

    /// Frees the block's memory without dropping its keys, items or `high`
    /// fence, except key `drop_key`, item `drop_item` and (if `drop_high`) the
    /// fence: the entries a write removed. All others were moved bitwise into
    /// a newer block.
    ///
    /// # Safety
    /// `h` is a live block no one will read again; the entries not named are
    /// owned elsewhere (or are `Copy`).
    pub unsafe fn free_shallow(
        h: *mut Header<K, N>,
        drop_key: Option<usize>,
        drop_item: Option<usize>,
        drop_high: bool,
    ) {
        // SAFETY: the caller hands over a live block no one reads again; the
        // indices are inside it (checked in debug builds) and each named entry is
        // dropped once; the memory goes back with the layout it was allocated with.
        unsafe {
            let nk = (*h).nkeys as usize;
            let ni = (*h).nitems as usize;
            let (layout, koff, ioff) = Self::layout(nk, ni);
            let base = h as *mut u8;
            if let Some(i) = drop_key {
                debug_assert!(i < nk);
                ptr::drop_in_place((base.add(koff) as *mut K).add(i));
            }
            if let Some(i) = drop_item {
                debug_assert!(i < ni);
                ptr::drop_in_place((base.add(ioff) as *mut T).add(i));
            }
            if drop_high {
                ptr::drop_in_place(ptr::addr_of_mut!((*h).high));
            }
            dealloc(base, layout);
        }
    }

    /// The size of the allocation behind the live block at `h` (read when the
    /// block is retired, while its header is still in cache, so that freeing
    /// it later need not load the cold header again).
    ///
    /// # Safety
    /// `h` must point to a live block of this type.
    #[inline]
    pub unsafe fn alloc_size(h: *const Header<K, N>) -> usize {
        // SAFETY: the caller guarantees a live block: its header is readable.
        let (nk, ni) = unsafe { ((*h).nkeys as usize, (*h).nitems as usize) };
        Self::layout(nk, ni).0.size()
    }

    /// [`free_shallow`](Self::free_shallow) for a block whose allocation size
    /// was taken with [`alloc_size`](Self::alloc_size): when none of the named
    /// entries needs dropping (plain-data keys and values), the memory is
    /// freed without touching the block.
    ///
    /// # Safety
    /// As for `free_shallow`; `size` is `alloc_size(h)`.
    #[inline]
    pub unsafe fn free_shallow_sized(
        h: *mut Header<K, N>,
        size: usize,
        drop_key: Option<usize>,
        drop_item: Option<usize>,
        drop_high: bool,
    ) {
        let drops = (drop_key.is_some() && std::mem::needs_drop::<K>())
            || (drop_item.is_some() && std::mem::needs_drop::<T>())
            || (drop_high && std::mem::needs_drop::<Option<K>>());
        if drops {
            // SAFETY: forwarded from the caller.
            return unsafe { Self::free_shallow(h, drop_key, drop_item, drop_high) };
        }
        // The alignment does not depend on the entry counts.
        let align = Self::layout(0, 0).0.align();
        // SAFETY: `size` and `align` are those of the layout the block was
        // allocated with (`Builder::new`): `size` came from `alloc_size`.
        unsafe { dealloc(h as *mut u8, Layout::from_size_align_unchecked(size, align)) };
    }

    /// Takes apart a block that was built but never published: returns the
    /// item at `item` (and, if `key_owned`, the key at the same index), and
    /// frees the memory without dropping anything else (the other entries
    /// are bitwise copies still owned by the block they came from).
    ///
    /// # Safety
    /// `h` is a finished, unpublished block that owns exactly those entries.
    pub unsafe fn discard(h: *mut Header<K, N>, item: usize, key_owned: bool) -> (Option<K>, T) {
        // SAFETY: the caller guarantees `h` is ours alone and that the named
        // entries are initialised and owned by it: each is read out once, then
        // the memory is freed with nothing dropped.
        unsafe {
            let t = ptr::read(&Self::items(h)[item]);
            let k = key_owned.then(|| ptr::read(&Self::keys(h)[item]));
            Self::free_shallow(h, None, None, false);
            (k, t)
        }
    }

    /// Frees the block and drops every key and item.
    ///
    /// # Safety
    /// `h` is a live block no one will read again, owning its entries.
    pub unsafe fn free_deep(h: *mut Header<K, N>) {
        // SAFETY: the caller hands over a live block that owns every entry and
        // that no one reads again: each key, item and the header is dropped once,
        // then the memory is freed with its own layout.
        unsafe {
            let nk = (*h).nkeys as usize;
            let ni = (*h).nitems as usize;
            let (layout, koff, ioff) = Self::layout(nk, ni);
            let base = h as *mut u8;
            ptr::drop_in_place(ptr::slice_from_raw_parts_mut(base.add(koff) as *mut K, nk));
            ptr::drop_in_place(ptr::slice_from_raw_parts_mut(base.add(ioff) as *mut T, ni));
            ptr::drop_in_place(h);
            dealloc(base, layout);
        }
    }
}

/// Builds a block of exactly `nkeys` keys and `nitems` items, in order.
pub(crate) struct Builder<K, T, N, const H: bool = false> {
    base: NonNull<u8>,
    nkeys: usize,
    nitems: usize,
    koff: usize,
    ioff: usize,
    kw: usize,
    iw: usize,
    _p: PhantomData<(K, T, N)>,
}

impl<K, T, N, const H: bool> Builder<K, T, N, H> {
    /// Allocates a block for `nkeys` keys and `nitems` items.
    pub fn new(next: *const N, high: Option<K>, nkeys: usize, nitems: usize) -> Self {
        let (layout, koff, ioff, hoff) = Block::<K, T, N, H>::layout4(nkeys, nitems);
        // SAFETY: the layout has a non-zero size (the header is never empty).
        let raw = unsafe { alloc(layout) };
        let Some(base) = NonNull::new(raw) else {
            handle_alloc_error(layout)
        };
        if H {
            // SAFETY: the hints (`nitems` words at `hoff`) lie inside the fresh
            // allocation; zero is "no hint".
            unsafe { ptr::write_bytes(raw.add(hoff) as *mut AtomicUsize, 0, nitems) };
        }
        let header = Header::<K, N> {
            next,
            high,
            nkeys: u32::try_from(nkeys).expect("node too large"),
            nitems: u32::try_from(nitems).expect("node too large"),
        };
        // SAFETY: `base` is a fresh allocation aligned for the header.
        unsafe { ptr::write(base.as_ptr() as *mut Header<K, N>, header) };
        Builder {
            base,
            nkeys,
            nitems,
            koff,
            ioff,
            kw: 0,
            iw: 0,
            _p: PhantomData,
        }
    }

    /// Sets the `high` fence (the one passed to `new` must have been `None`).
    #[inline]
    pub fn set_high(&mut self, high: Option<K>) {
        // SAFETY: the header was written in `new` with a `None` fence, which
        // owns nothing, so overwriting it leaks nothing.
        unsafe {
            let h = self.base.as_ptr() as *mut Header<K, N>;
            debug_assert!((*h).high.is_none());
            ptr::write(ptr::addr_of_mut!((*h).high), high);
        }
    }

    #[inline]
    pub fn push_key(&mut self, k: K) {
        assert!(self.kw < self.nkeys);
        // SAFETY: slot `kw` is inside the allocation and not yet written.
        unsafe {
            ptr::write(
                (self.base.as_ptr().add(self.koff) as *mut K).add(self.kw),
                k,
            )
        };
        self.kw += 1;
    }

    #[inline]
    pub fn push_item(&mut self, t: T) {
        assert!(self.iw < self.nitems);
        // SAFETY: slot `iw` is inside the allocation and not yet written.
        unsafe {
            ptr::write(
                (self.base.as_ptr().add(self.ioff) as *mut T).add(self.iw),
                t,
            )
        };
        self.iw += 1;
    }

    /// Copies `src` bitwise after the keys written so far.
    ///
    /// # Safety
    /// The caller gives up ownership of these keys in `src`'s block: that block
    /// must then be freed with [`Block::free_shallow`] (not dropping them).
    #[inline]
    pub unsafe fn move_keys(&mut self, src: &[K]) {
        assert!(self.kw + src.len() <= self.nkeys);
        // SAFETY: the assert keeps the destination inside this fresh allocation,
        // which cannot overlap `src`; ownership moves as the caller promised.
        unsafe {
            ptr::copy_nonoverlapping(
                src.as_ptr(),
                (self.base.as_ptr().add(self.koff) as *mut K).add(self.kw),
                src.len(),
            )
        };
        self.kw += src.len();
    }

    /// Copies `src` bitwise after the items written so far.
    ///
    /// # Safety
    /// As for [`Builder::move_keys`].
    #[inline]
    pub unsafe fn move_items(&mut self, src: &[T]) {
        assert!(self.iw + src.len() <= self.nitems);
        // SAFETY: as in `move_keys`, for the item array.
        unsafe {
            ptr::copy_nonoverlapping(
                src.as_ptr(),
                (self.base.as_ptr().add(self.ioff) as *mut T).add(self.iw),
                src.len(),
            )
        };
        self.iw += src.len();
    }

    /// The finished block.
    pub fn finish(self) -> *mut Header<K, N> {
        assert!(
            self.kw == self.nkeys && self.iw == self.nitems,
            "block builder not filled"
        );
        let p = self.base.as_ptr() as *mut Header<K, N>;
        std::mem::forget(self);
        p
    }
}

impl<K, T, N> Builder<K, T, N, true> {
    /// [`move_items`](Self::move_items), carrying each item's hint along
    /// (`hints` are the source block's, read and copied one by one: a hint is
    /// written by concurrent descents, so it is never copied bitwise).
    ///
    /// # Safety
    /// As for [`Builder::move_items`].
    #[inline]
    pub unsafe fn move_kids(&mut self, src: &[T], hints: &[AtomicUsize]) {
        assert!(src.len() == hints.len() && self.iw + src.len() <= self.nitems);
        let (_, _, _, hoff) = Block::<K, T, N, true>::layout4(self.nkeys, self.nitems);
        // SAFETY: hint slots `iw..iw + len` lie inside this fresh allocation
        // (the assert), were zeroed in `new`, and nobody else sees them yet.
        let dst = unsafe {
            std::slice::from_raw_parts(
                (self.base.as_ptr().add(hoff) as *const AtomicUsize).add(self.iw),
                src.len(),
            )
        };
        for (d, h) in dst.iter().zip(hints) {
            d.store(h.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.move_items(src) };
    }
}

impl<K, T, N, const H: bool> Drop for Builder<K, T, N, H> {
    fn drop(&mut self) {
        // Only reached if building panicked (a key's `Clone` panicked): the
        // entries written so far may be bitwise copies still owned by the old
        // block, so none are dropped (a clone may leak; nothing is freed
        // twice). Only the header and the memory go.
        let (layout, _, _) = Block::<K, T, N, H>::layout(self.nkeys, self.nitems);
        // SAFETY: the memory is ours; the header's fence may be a bitwise
        // copy too, so it is not dropped either.
        unsafe { dealloc(self.base.as_ptr(), layout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_read_free() {
        let mut b = Builder::<String, Vec<u8>, ()>::new(ptr::null(), Some("z".into()), 2, 2);
        b.push_key("a".into());
        b.push_key("b".into());
        b.push_item(vec![1]);
        b.push_item(vec![2, 3]);
        let h = b.finish();
        // SAFETY: `h` is the block just built, read then freed once.
        unsafe {
            assert_eq!(Block::<String, Vec<u8>, ()>::keys(h), ["a", "b"]);
            assert_eq!(Block::<String, Vec<u8>, ()>::items(h)[1], vec![2, 3]);
            assert_eq!((*h).high.as_deref(), Some("z"));
            Block::<String, Vec<u8>, ()>::free_deep(h);
        }
    }

    fn filled<T: From<u8> + Copy>(n: usize) -> *mut Header<T, ()> {
        let mut b = Builder::<T, T, ()>::new(ptr::null(), None, n, n);
        for _ in 0..n {
            b.push_key(T::from(1));
            b.push_item(T::from(2));
        }
        b.finish()
    }

    #[test]
    fn pool_reuses_exact_sizes_within_budget() {
        // A freed block of one size comes back for the next block of that size.
        let h = filled::<u64>(5);
        let before = pool::cached_bytes();
        // SAFETY: `h` was just built; freed once.
        unsafe { Block::<u64, u64, ()>::free_deep(h) };
        assert!(pool::cached_bytes() > before);
        let again = filled::<u64>(5);
        assert_eq!(again, h, "same-size block reused from the cache");
        assert_eq!(pool::cached_bytes(), before);
        // SAFETY: as above.
        unsafe { Block::<u64, u64, ()>::free_deep(again) };
        // The cache never holds more than its budget.
        let many: Vec<_> = (0..2000).map(|_| filled::<u64>(60)).collect();
        for h in many {
            // SAFETY: each block freed once.
            unsafe { Block::<u64, u64, ()>::free_deep(h) };
        }
        assert!(pool::cached_bytes() <= pool::BUDGET);
        // Over-aligned or large blocks bypass the cache and still work.
        let big = filled::<u64>(1000);
        // SAFETY: as above.
        unsafe { Block::<u64, u64, ()>::free_deep(big) };
        let wide = filled::<u128>(3);
        // SAFETY: as above.
        unsafe { Block::<u128, u128, ()>::free_deep(wide) };
    }
}
