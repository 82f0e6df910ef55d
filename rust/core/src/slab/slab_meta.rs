//! Out-of-band metadata of one slab: its class, the bitmap of objects handed
//! to users, and the central pool's bitmap of objects free to hand out.
//!
//! A [`SlabMeta`] never lives next to user data: the table of them sits in its
//! own mapping and is indexed by `(addr - base) / SLAB_SIZE`, so a buffer
//! overflow in user memory cannot reach it.
//!
//! Each object is in exactly one of three states:
//!
//! | state                    | `allocated` byte | `avail` bit |
//! |--------------------------|------------------|-------------|
//! | handed to the user       | 1                | 0           |
//! | in some thread's cache   | 0                | 0           |
//! | in the central pool      | 0                | 1           |
//!
//! `allocated` is one atomic byte per object: every free swaps it to 0 and a
//! 0 already there means a double free (exactly one of two racing frees
//! wins). A byte rather than a bit lets an allocation from a thread cache
//! mark its object with a plain store instead of a locked read-modify-write
//! (only the cache owning an object can set its byte), at 1/16 of the
//! smallest object's size. `avail` belongs to the class lock.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};

use super::size_class::{class_size, MIN_ALIGN, NUM_CLASSES};

/// log2 of the slab size.
pub const SLAB_SHIFT: u32 = 18;
/// Bytes in one slab (256 KiB): a run of pages holding objects of one class.
pub const SLAB_SIZE: usize = 1 << SLAB_SHIFT;
/// Most objects one slab can hold (16-byte class).
pub const MAX_OBJECTS: usize = SLAB_SIZE / MIN_ALIGN;
/// 64-bit words in one bitmap.
pub const WORDS: usize = MAX_OBJECTS / 64;
/// "No slab" in the intrusive lists.
pub const NIL: u32 = u32::MAX;

const fn build_caps() -> [u32; NUM_CLASSES] {
    let sizes = super::size_class::CLASS_SIZES;
    let mut out = [0u32; NUM_CLASSES];
    let mut i = 0;
    while i < NUM_CLASSES {
        out[i] = (SLAB_SIZE / sizes[i] as usize) as u32;
        i += 1;
    }
    out
}

const fn build_magic() -> [u64; NUM_CLASSES] {
    let sizes = super::size_class::CLASS_SIZES;
    let mut out = [0u64; NUM_CLASSES];
    let mut i = 0;
    while i < NUM_CLASSES {
        out[i] = (1u64 << 40) / sizes[i] as u64 + 1;
        i += 1;
    }
    out
}

/// Objects per slab for each class.
pub const CAPACITY: [u32; NUM_CLASSES] = build_caps();
/// `ceil(2^40 / size)`: `(off * MAGIC) >> 40 == off / size` for every slab offset.
const MAGIC: [u64; NUM_CLASSES] = build_magic();

/// Index of the object starting at byte `offset` of a slab of `class`, or
/// `None` when `offset` is not on an object boundary (tested below:
/// `object_index_accepts_boundaries_only`).
#[inline]
pub fn object_index(class: usize, offset: usize) -> Option<usize> {
    let idx = ((offset as u64 * MAGIC[class]) >> 40) as usize;
    if idx * class_size(class) == offset && idx < CAPACITY[class] as usize {
        Some(idx)
    } else {
        None
    }
}

/// Index of the object at `offset`, known to be an object boundary.
#[inline]
pub fn object_index_unchecked(class: usize, offset: usize) -> usize {
    ((offset as u64 * MAGIC[class]) >> 40) as usize
}

/// Packs a slab state word: generation (bumped on every recycle) and class.
#[inline]
pub fn pack_state(gen: u32, class: Option<usize>) -> u32 {
    (gen << 8) | class.map_or(0, |c| c as u32 + 1)
}

/// Low byte of the state of a slab that belongs to a medium chunk.
pub const MEDIUM_TAG: u32 = 0xff;

/// The class in a state word, `None` for a slab not carved to a class (or
/// part of a medium chunk).
#[inline]
pub fn state_class(state: u32) -> Option<usize> {
    match state & 0xff {
        0 | MEDIUM_TAG => None,
        c => Some(c as usize - 1),
    }
}

/// Whether a state word marks a slab of a medium chunk.
#[inline]
pub fn state_is_medium(state: u32) -> bool {
    state & 0xff == MEDIUM_TAG
}

/// Links and scan hint; touched only under the owning class lock (or the
/// slab-pool lock while the slab is in the free list).
pub struct PoolLinks {
    /// The next slab in the class's partial list (or the pool's free list).
    pub next: u32,
    /// The previous slab in that list.
    pub prev: u32,
    /// Whether the slab is on its class's partial list now.
    pub in_partial: bool,
    /// Set while the slab's pages are given back to the OS (free list only).
    pub released: bool,
    /// The bitmap word where the last free slot was found: the next search starts there.
    pub scan_hint: u32,
}

/// Metadata of one slab. Lives in the metadata table, never in the slab.
///
/// Field order keeps what every slab touches (state, counts, links, the
/// first bitmap words, the first live bytes) in the entry's first page, so a
/// slab of large objects costs one resident metadata page.
#[repr(C)]
pub struct SlabMeta {
    /// `gen << 8 | (class + 1)`; low byte 0: not carved to a class.
    pub state: AtomicU32,
    /// Objects in the central pool (written under the class lock, read by stats).
    pub avail_count: AtomicU32,
    /// Medium chunks: the chunk's page-run metadata (head slab only; set once).
    pub chunk: AtomicUsize,
    links: UnsafeCell<PoolLinks>,
    avail: UnsafeCell<[u64; WORDS]>,
    /// 1: the object is handed to a user.
    pub allocated: [AtomicU8; MAX_OBJECTS],
}

// SAFETY: the `UnsafeCell` fields are only accessed by a thread holding the
// lock that owns the slab (its class lock, or the slab-pool lock while it is
// in the free list); the rest is atomic.
unsafe impl Sync for SlabMeta {}

impl SlabMeta {
    /// The links of this slab.
    ///
    /// # Safety
    /// The caller holds the lock owning the slab, and no other reference
    /// from `links`/`avail` is alive.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub unsafe fn links(&self) -> &mut PoolLinks {
        // SAFETY: forwarded to the caller.
        unsafe { &mut *self.links.get() }
    }

    /// The central pool's bitmap of this slab.
    ///
    /// # Safety
    /// As for [`SlabMeta::links`].
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub unsafe fn avail(&self) -> &mut [u64; WORDS] {
        // SAFETY: forwarded to the caller.
        unsafe { &mut *self.avail.get() }
    }

    /// Live (user-held) objects, counted from the bitmap.
    pub fn live_objects(&self, class: usize) -> u64 {
        self.allocated[..CAPACITY[class] as usize]
            .iter()
            .map(|b| (b.load(Ordering::Relaxed) != 0) as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn object_index_accepts_boundaries_only() {
        for class in 0..NUM_CLASSES {
            let size = class_size(class);
            let cap = CAPACITY[class] as usize;
            for idx in [0, 1, cap / 2, cap - 1] {
                assert_eq!(object_index(class, idx * size), Some(idx));
                if size > 16 {
                    assert_eq!(object_index(class, idx * size + 16), None);
                }
                assert_eq!(object_index(class, idx * size + 1), None);
            }
            assert_eq!(
                object_index(class, cap * size),
                None,
                "past the last object"
            );
        }
    }

    #[test]
    fn state_round_trips() {
        assert_eq!(state_class(pack_state(7, Some(71))), Some(71));
        assert_eq!(state_class(pack_state(7, None)), None);
        assert_ne!(pack_state(1, Some(3)), pack_state(2, Some(3)));
    }
}
