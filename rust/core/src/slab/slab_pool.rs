//! The pool of slabs not carved to any class: carving fresh ones from the
//! region, recycling empty ones, and giving their pages back to the OS.

use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Mutex;

use super::os;
use super::region::Region;
use super::slab_meta::{pack_state, state_class, MEDIUM_TAG, NIL, SLAB_SIZE};
use super::sync::{lock, Locked};

/// Slabs per medium chunk (carved here at once; `medium` runs their pages).
pub const CHUNK_SLABS: usize = 16;

pub(crate) struct PoolState {
    /// Slabs ever carved from the region (the bump pointer).
    carved: usize,
    /// Head of the free-slab stack (linked through `PoolLinks::next`).
    free_head: u32,
    free_count: usize,
    /// Free slabs whose pages are still resident.
    dirty_count: usize,
}

/// Slabs owned by no class.
pub struct SlabPool {
    state: Mutex<PoolState>,
    release_threshold: usize,
    /// Free slabs whose pages were returned to the OS (read by stats).
    released: AtomicU64,
    carved: AtomicU64,
    free: AtomicU64,
}

impl SlabPool {
    /// An empty pool; free slabs beyond `release_threshold` bytes are `madvise`d away.
    pub fn new(release_threshold: usize) -> SlabPool {
        SlabPool {
            state: Mutex::new(PoolState {
                carved: 0,
                free_head: NIL,
                free_count: 0,
                dirty_count: 0,
            }),
            release_threshold,
            released: AtomicU64::new(0),
            carved: AtomicU64::new(0),
            free: AtomicU64::new(0),
        }
    }

    /// Takes a slab (recycled first, else freshly carved) and marks it as
    /// belonging to `class`. Returns `None` when the region is full.
    ///
    /// The caller holds `class`'s lock and initialises the central bitmap.
    pub fn take(&self, region: &Region, class: usize) -> Option<usize> {
        let mut st = lock(&self.state);
        let s = if st.free_head != NIL {
            let s = st.free_head as usize;
            let meta = region.meta(s);
            // SAFETY: a slab in the free list is owned by the slab-pool lock, which we hold.
            let links = unsafe { meta.links() };
            st.free_head = links.next;
            st.free_count -= 1;
            if links.released {
                links.released = false;
                self.released.fetch_sub(1, Ordering::Relaxed);
            } else {
                st.dirty_count -= 1;
            }
            s
        } else {
            if st.carved >= region.max_slabs() || !region.commit_to(st.carved + 1) {
                return None;
            }
            st.carved += 1;
            self.carved.store(st.carved as u64, Ordering::Relaxed);
            st.carved - 1
        };
        self.free.store(st.free_count as u64, Ordering::Relaxed);
        let meta = region.meta(s);
        let gen = meta.state.load(Ordering::Relaxed) >> 8;
        // SAFETY: the slab was just removed from the free list (or freshly
        // carved), so no one else reaches its links.
        let links = unsafe { meta.links() };
        links.next = NIL;
        links.prev = NIL;
        links.in_partial = false;
        links.scan_hint = 0;
        meta.state
            .store(pack_state(gen, Some(class)), Ordering::Release);
        Some(s)
    }

    /// Carves a medium chunk: `CHUNK_SLABS` fresh contiguous slabs, marked
    /// medium (a chunk never crosses a segment boundary: slabs skipped to
    /// avoid that go to the free list). Returns the first slab, `None` when
    /// out of room.
    pub fn take_chunk(&self, region: &Region) -> Option<usize> {
        let mut st = lock(&self.state);
        let mut start = st.carved;
        if !region.commit_to(start + CHUNK_SLABS) {
            return None;
        }
        if !region.contiguous(start, CHUNK_SLABS) {
            start = region.next_segment_start(start)?;
            if !region.commit_to(start + CHUNK_SLABS) || !region.contiguous(start, CHUNK_SLABS) {
                return None;
            }
        }
        for s in st.carved..start {
            // Fresh, never-touched slabs: they count as released (zero, not resident).
            // SAFETY: carved just now, so no one else reaches its links.
            let links = unsafe { region.meta(s).links() };
            links.next = st.free_head;
            links.in_partial = false;
            links.released = true;
            st.free_head = s as u32;
            st.free_count += 1;
            self.released.fetch_add(1, Ordering::Relaxed);
        }
        for s in start..start + CHUNK_SLABS {
            region
                .meta(s)
                .state
                .store(pack_state(0, None) | MEDIUM_TAG, Ordering::Release);
        }
        st.carved = start + CHUNK_SLABS;
        self.carved.store(st.carved as u64, Ordering::Relaxed);
        self.free.store(st.free_count as u64, Ordering::Relaxed);
        Some(start)
    }

    /// Returns empty slab `s` (no allocated and no available objects left
    /// set) to the pool. Bumps its generation so a racing free of a stale
    /// pointer is detected.
    pub fn give(&self, region: &Region, s: usize) {
        let meta = region.meta(s);
        let old = meta.state.load(Ordering::Relaxed);
        debug_assert!(state_class(old).is_some());
        meta.state.store(
            pack_state((old >> 8).wrapping_add(1) & 0x00ff_ffff, None),
            Ordering::Release,
        );
        let mut st = lock(&self.state);
        // SAFETY: the slab now belongs to the slab-pool lock, which we hold.
        let links = unsafe { meta.links() };
        links.next = st.free_head;
        links.in_partial = false;
        st.free_head = s as u32;
        st.free_count += 1;
        if (st.dirty_count + 1) * SLAB_SIZE > self.release_threshold {
            // SAFETY: the slab is empty (all objects free and out of every
            // cache) and page aligned inside the committed region.
            unsafe { os::release(region.slab_addr(s) as *mut u8, SLAB_SIZE) };
            links.released = true;
            self.released.fetch_add(1, Ordering::Relaxed);
        } else {
            links.released = false;
            st.dirty_count += 1;
        }
        self.free.store(st.free_count as u64, Ordering::Relaxed);
    }

    /// Holds the pool's lock (see `SlabAllocator::lock_all`).
    pub(crate) fn lock_guard(&self) -> Locked<'_, PoolState> {
        lock(&self.state)
    }

    /// Slabs carved so far.
    pub fn carved(&self) -> u64 {
        self.carved.load(Ordering::Relaxed)
    }
    /// Slabs in the free list.
    pub fn free(&self) -> u64 {
        self.free.load(Ordering::Relaxed)
    }
    /// Free slabs whose pages were given back to the OS.
    pub fn released(&self) -> u64 {
        self.released.load(Ordering::Relaxed)
    }
}
