//! Medium allocations (above the largest size class, up to [`MEDIUM_MAX`]):
//! runs of 4 KiB pages inside 4 MiB *chunks* carved from the slab region.
//!
//! A chunk is 16 contiguous slabs whose slab states say "medium"; its
//! page-run metadata ([`ChunkMeta`]: free/dirty bitmaps and the length of the
//! block starting at each page) lives in a page of its own, found through the
//! metadata of each of its slabs, never next to user data. So medium blocks cost no
//! mapping each (`vm.max_map_count` no longer bounds how many can be live),
//! are checked on free exactly like small objects, and `realloc` can grow a
//! block in place when the pages after it are free.
//!
//! Chunks belong to one of [`ARENAS`] arenas (one lock each; a thread uses
//! the arena picked for it on first use), and are never handed back to the
//! slab pool: freed pages are `madvise`d away once a chunk holds more than
//! [`DIRTY_LIMIT_PAGES`] free resident pages, or at once when
//! `release_on_free` is set (the hardened profile).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crossbeam_utils::CachePadded;

use super::free_error::FreeError;
use super::os;
use super::region::Region;
use super::slab_meta::SLAB_SIZE;
use super::slab_pool::{SlabPool, CHUNK_SLABS};
use super::sync::{lock, Locked};

const PAGE_SHIFT: usize = 12;
const PAGE: usize = 1 << PAGE_SHIFT;
/// Pages per chunk (1024: 4 MiB).
pub const CHUNK_PAGES: usize = CHUNK_SLABS * SLAB_SIZE / PAGE;
const WORDS: usize = CHUNK_PAGES / 64;
/// Largest medium request; larger ones get a mapping of their own.
pub const MEDIUM_MAX: usize = 2 << 20;
/// Arenas (locks) medium chunks are spread over.
pub const ARENAS: usize = 8;
/// Free resident pages a chunk keeps before they are given back to the OS.
pub const DIRTY_LIMIT_PAGES: usize = CHUNK_PAGES * 7 / 8;

/// Page-run metadata of one chunk (one page of its own; touched under the arena lock).
#[repr(C)]
pub struct ChunkMeta {
    base: usize,
    arena: usize,
    next: *mut ChunkMeta,
    free_pages: usize,
    dirty_pages: usize,
    /// 1: page free.
    free: [u64; WORDS],
    /// 1: page free and possibly resident/non-zero (not given back yet).
    dirty: [u64; WORDS],
    /// 1: a freed block started here and the page was not reused since
    /// (tells a double free from a wild pointer).
    freed_start: [u64; WORDS],
    /// Pages of the live block starting at each page, 0 elsewhere.
    len: [u16; CHUNK_PAGES],
}

const _: () = assert!(std::mem::size_of::<ChunkMeta>() <= PAGE);

fn bit(words: &[u64; WORDS], i: usize) -> bool {
    words[i / 64] >> (i % 64) & 1 == 1
}

/// The words that bits `[from, to)` touch, each with the mask of those bits in it.
fn word_masks(from: usize, to: usize) -> impl Iterator<Item = (usize, u64)> {
    let mut i = from;
    std::iter::from_fn(move || {
        if i >= to {
            return None;
        }
        let w = i / 64;
        let lo = i % 64;
        let hi = (to - w * 64).min(64);
        let mask = if hi - lo == 64 {
            u64::MAX
        } else {
            ((1u64 << (hi - lo)) - 1) << lo
        };
        i = w * 64 + hi;
        Some((w, mask))
    })
}

/// Sets (`on`) or clears bits `[from, to)`.
fn set_range(words: &mut [u64; WORDS], from: usize, to: usize, on: bool) {
    for (w, mask) in word_masks(from, to) {
        if on {
            words[w] |= mask;
        } else {
            words[w] &= !mask;
        }
    }
}

/// Bits set in `[from, to)`.
fn count_range(words: &[u64; WORDS], from: usize, to: usize) -> usize {
    word_masks(from, to)
        .map(|(w, mask)| (words[w] & mask).count_ones() as usize)
        .sum()
}

/// First index `>= from` whose bit equals `want`, or `CHUNK_PAGES`.
fn next_with(words: &[u64; WORDS], from: usize, want: bool) -> usize {
    let mut i = from;
    while i < CHUNK_PAGES {
        let w = i / 64;
        let word = if want { words[w] } else { !words[w] } >> (i % 64);
        if word != 0 {
            return (i + word.trailing_zeros() as usize).min(CHUNK_PAGES);
        }
        i = (w + 1) * 64;
    }
    CHUNK_PAGES
}

impl ChunkMeta {
    /// First run of `n` free pages (first fit).
    fn find_run(&self, n: usize) -> Option<usize> {
        let mut i = 0;
        while i + n <= CHUNK_PAGES {
            let s = next_with(&self.free, i, true);
            if s + n > CHUNK_PAGES {
                return None;
            }
            let e = next_with(&self.free, s, false);
            if e - s >= n {
                return Some(s);
            }
            i = e;
        }
        None
    }

    /// Takes free pages `[p, p+n)`; returns whether they are all fresh (zero).
    fn take(&mut self, p: usize, n: usize) -> bool {
        let dirty = count_range(&self.dirty, p, p + n);
        set_range(&mut self.free, p, p + n, false);
        set_range(&mut self.dirty, p, p + n, false);
        set_range(&mut self.freed_start, p, p + n, false);
        self.free_pages -= n;
        self.dirty_pages -= dirty;
        dirty == 0
    }

    /// Gives every free resident page back to the OS.
    fn purge(&mut self) {
        let mut i = 0;
        while i < CHUNK_PAGES {
            let s = next_with(&self.dirty, i, true);
            if s == CHUNK_PAGES {
                break;
            }
            let e = next_with(&self.dirty, s, false);
            // SAFETY: pages `[s, e)` are free (no user holds them) and lie
            // inside this chunk's committed slabs; page aligned.
            unsafe {
                os::release(
                    (self.base + (s << PAGE_SHIFT)) as *mut u8,
                    (e - s) << PAGE_SHIFT,
                )
            };
            i = e;
        }
        self.dirty = [0; WORDS];
        self.dirty_pages = 0;
    }
}

pub(crate) struct ArenaState {
    chunks: *mut ChunkMeta,
    nchunks: usize,
    live_blocks: usize,
    live_pages: usize,
}

// SAFETY: the chunk list is only walked under the arena's lock; chunks are never freed
// while the allocator lives.
unsafe impl Send for ArenaState {}

/// The medium allocator of one heap.
pub struct Medium {
    arenas: [CachePadded<Mutex<ArenaState>>; ARENAS],
    release_on_free: bool,
    next_arena: AtomicUsize,
}

thread_local! {
    static ARENA_OF_THREAD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// What a medium allocation hands back.
pub struct MediumBlock {
    pub addr: usize,
    /// All pages come fresh from the OS (read as zero).
    pub fresh: bool,
}

impl Medium {
    pub fn new(release_on_free: bool) -> Medium {
        Medium {
            arenas: [const {
                CachePadded::new(Mutex::new(ArenaState {
                    chunks: std::ptr::null_mut(),
                    nchunks: 0,
                    live_blocks: 0,
                    live_pages: 0,
                }))
            }; ARENAS],
            release_on_free,
            next_arena: AtomicUsize::new(0),
        }
    }

    fn my_arena(&self) -> usize {
        ARENA_OF_THREAD
            .try_with(|a| {
                let v = a.get();
                if v != usize::MAX {
                    return v;
                }
                let v = self.next_arena.fetch_add(1, Ordering::Relaxed) % ARENAS;
                a.set(v);
                v
            })
            .unwrap_or(0)
    }

    /// Allocates `size` bytes (`MAX_SMALL < size <= MEDIUM_MAX`), page aligned.
    pub fn alloc(&self, region: &Region, slabs: &SlabPool, size: usize) -> Option<MediumBlock> {
        let n = size.div_ceil(PAGE);
        debug_assert!(n > 0 && n * PAGE <= MEDIUM_MAX);
        let a = self.my_arena();
        let mut st = lock(&self.arenas[a]);
        let mut c = st.chunks;
        while !c.is_null() {
            // SAFETY: chunks in the list are live mappings, accessed under the arena lock.
            let chunk = unsafe { &mut *c };
            if chunk.free_pages >= n {
                if let Some(p) = chunk.find_run(n) {
                    let fresh = chunk.take(p, n);
                    chunk.len[p] = n as u16;
                    st.live_blocks += 1;
                    st.live_pages += n;
                    return Some(MediumBlock {
                        addr: chunk.base + (p << PAGE_SHIFT),
                        fresh,
                    });
                }
            }
            c = chunk.next;
        }
        // A new chunk (arena lock, then slab-pool lock: the documented order).
        let head = slabs.take_chunk(region)?;
        let page = os::map(PAGE)?;
        let chunk = page.as_ptr().cast::<ChunkMeta>();
        // SAFETY: a fresh zeroed page (all-zero is a valid ChunkMeta bar the
        // fields set here), owned by this arena from now on.
        let cm = unsafe { &mut *chunk };
        cm.base = region.slab_addr(head);
        cm.arena = a;
        cm.next = st.chunks;
        cm.free = [u64::MAX; WORDS];
        cm.free_pages = CHUNK_PAGES;
        for s in head..head + CHUNK_SLABS {
            region
                .meta(s)
                .chunk
                .store(chunk as usize, Ordering::Release);
        }
        st.chunks = chunk;
        st.nchunks += 1;
        let fresh = cm.take(0, n);
        cm.len[0] = n as u16;
        st.live_blocks += 1;
        st.live_pages += n;
        Some(MediumBlock {
            addr: cm.base,
            fresh,
        })
    }

    /// The chunk metadata of slab `s` (a medium slab holding `addr`), and
    /// the page index of `addr` in the chunk.
    fn locate(
        region: &Region,
        s: usize,
        addr: usize,
    ) -> Result<(*mut ChunkMeta, usize), FreeError> {
        let c = region.meta(s).chunk.load(Ordering::Acquire) as *mut ChunkMeta;
        if c.is_null() {
            return Err(FreeError::Invalid("in a medium chunk being set up"));
        }
        // SAFETY: `base` is written once before the pointer is published.
        let base = unsafe { (*c).base };
        let off = addr - base;
        if !off.is_multiple_of(PAGE) {
            return Err(FreeError::Invalid("not the start of a block"));
        }
        Ok((c, off >> PAGE_SHIFT))
    }

    fn arena_of(c: *mut ChunkMeta) -> usize {
        // SAFETY: `arena` is written once before the pointer is published.
        unsafe { (*c).arena }
    }

    /// Frees the block at `addr` (in medium slab `s`);
    /// `size` (when given) must fit. Returns the usable size freed.
    pub fn free(
        &self,
        region: &Region,
        s: usize,
        addr: usize,
        size: Option<usize>,
    ) -> Result<usize, FreeError> {
        let (c, p) = Self::locate(region, s, addr)?;
        let mut st = lock(&self.arenas[Self::arena_of(c)]);
        // SAFETY: chunk state is accessed under its arena's lock.
        let chunk = unsafe { &mut *c };
        let n = chunk.len[p] as usize;
        if n == 0 {
            return Err(if bit(&chunk.freed_start, p) {
                FreeError::Double
            } else {
                FreeError::Invalid("not the start of a block")
            });
        }
        if size.is_some_and(|s| s > n * PAGE) {
            return Err(FreeError::Invalid("size larger than the allocation"));
        }
        chunk.len[p] = 0;
        set_range(&mut chunk.free, p, p + n, true);
        set_range(&mut chunk.dirty, p, p + n, true);
        set_range(&mut chunk.freed_start, p, p + 1, true);
        chunk.free_pages += n;
        chunk.dirty_pages += n;
        st.live_blocks -= 1;
        st.live_pages -= n;
        // An emptied chunk keeps its dirty pages (bounded by the limit): purging it at once made
        // every alloc+free pair of one medium block fault its pages in again (4.6 us per 64 KiB
        // pair against glibc's 29 ns in `slabcache bench allocator`).
        if self.release_on_free || chunk.dirty_pages > DIRTY_LIMIT_PAGES {
            chunk.purge();
        }
        Ok(n * PAGE)
    }

    /// Usable bytes of the live block at `addr`.
    pub fn usable_size(&self, region: &Region, s: usize, addr: usize) -> Result<usize, FreeError> {
        let (c, p) = Self::locate(region, s, addr)?;
        let _st = lock(&self.arenas[Self::arena_of(c)]);
        // SAFETY: under the arena lock.
        let chunk = unsafe { &*c };
        match chunk.len[p] as usize {
            0 if bit(&chunk.freed_start, p) => Err(FreeError::Double),
            0 => Err(FreeError::Invalid("not the start of a block")),
            n => Ok(n * PAGE),
        }
    }

    /// Grows (or keeps) the live block at `addr` to hold `size` bytes
    /// without moving it, when the pages after it are free. Returns the new
    /// usable size, or `None` (nothing changed).
    pub fn grow_in_place(
        &self,
        region: &Region,
        s: usize,
        addr: usize,
        size: usize,
    ) -> Option<usize> {
        if size > MEDIUM_MAX {
            return None;
        }
        let (c, p) = Self::locate(region, s, addr).ok()?;
        let mut st = lock(&self.arenas[Self::arena_of(c)]);
        // SAFETY: under the arena lock.
        let chunk = unsafe { &mut *c };
        let n = chunk.len[p] as usize;
        let want = size.div_ceil(PAGE);
        if n == 0 {
            return None;
        }
        if want <= n {
            return Some(n * PAGE);
        }
        let end = p + want;
        if end > CHUNK_PAGES || count_range(&chunk.free, p + n, end) != want - n {
            return None;
        }
        chunk.take(p + n, want - n);
        chunk.len[p] = want as u16;
        st.live_pages += want - n;
        Some(want * PAGE)
    }

    /// Live blocks, their usable bytes, resident bytes (live and free-dirty
    /// pages, chunk metadata) and chunks.
    pub fn totals(&self) -> (usize, usize, usize, usize) {
        let (mut blocks, mut live, mut resident, mut chunks) = (0, 0, 0, 0);
        for a in &self.arenas {
            let st = lock(a);
            chunks += st.nchunks;
            blocks += st.live_blocks;
            live += st.live_pages * PAGE;
            let mut c = st.chunks;
            resident += st.live_pages * PAGE;
            while !c.is_null() {
                // SAFETY: under the arena lock.
                let chunk = unsafe { &*c };
                resident += chunk.dirty_pages * PAGE + PAGE;
                c = chunk.next;
            }
        }
        (blocks, live, resident, chunks)
    }

    /// Holds every arena lock (see `SlabAllocator::lock_all`).
    pub(crate) fn lock_all(&self) -> Vec<Locked<'_, ArenaState>> {
        self.arenas.iter().map(|a| lock(a)).collect()
    }
}

impl Drop for Medium {
    fn drop(&mut self) {
        for a in &self.arenas {
            let st = lock(a);
            let mut c = st.chunks;
            while !c.is_null() {
                // SAFETY: the chunk page is ours; read its link before unmapping it.
                let next = unsafe { (*c).next };
                // SAFETY: mapped in `alloc`, no longer reachable.
                unsafe { os::unmap(c.cast(), PAGE) };
                c = next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_helpers_agree() {
        let mut w = [0u64; WORDS];
        set_range(&mut w, 3, 130, true);
        assert_eq!(count_range(&w, 0, CHUNK_PAGES), 127);
        assert_eq!(next_with(&w, 0, true), 3);
        assert_eq!(next_with(&w, 3, false), 130);
        set_range(&mut w, 64, 128, false);
        assert_eq!(count_range(&w, 0, CHUNK_PAGES), 127 - 64);
        assert_eq!(next_with(&w, 64, true), 128);
        assert_eq!(next_with(&[0; WORDS], 0, true), CHUNK_PAGES);
    }

    #[test]
    fn range_helpers_match_bit_by_bit() {
        // Word-aligned, in-word, empty and whole-chunk ranges, against one bit at a time.
        let edges = [
            0,
            1,
            5,
            63,
            64,
            65,
            127,
            128,
            200,
            1000,
            CHUNK_PAGES - 1,
            CHUNK_PAGES,
        ];
        let mut w = [0u64; WORDS];
        let mut model = [false; CHUNK_PAGES];
        for (k, &from) in edges.iter().enumerate() {
            for &to in &edges[k..] {
                let on = (from + to) % 3 != 0;
                set_range(&mut w, from, to, on);
                model[from..to].iter_mut().for_each(|b| *b = on);
                for (i, want) in model.iter().enumerate() {
                    assert_eq!(bit(&w, i), *want, "bit {i} after [{from}, {to})");
                }
                let want = model[from..to].iter().filter(|b| **b).count();
                assert_eq!(count_range(&w, from, to), want, "count of [{from}, {to})");
            }
        }
    }
}
