//! The reserved slab region and its out-of-band metadata table.
//!
//! Both are reserved up front (no access, no commit charge) and committed in
//! chunks as slabs are carved, so the address arithmetic `slab = (addr -
//! base) >> SLAB_SHIFT` is all a free needs to find a slab's metadata.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::os;
use super::slab_meta::{SlabMeta, SLAB_SHIFT, SLAB_SIZE};
use crate::{Error, Result};

/// Slabs committed at a time (4 MiB of slab memory).
const COMMIT_CHUNK_SLABS: usize = 16;

/// A reserved run of slabs plus the table of their metadata.
pub struct Region {
    base: *mut u8,
    max_slabs: usize,
    meta: *mut SlabMeta,
    meta_reserved: usize,
    /// Slabs whose memory and metadata are committed (grows only, under the slab-pool lock).
    committed: AtomicUsize,
    meta_committed_bytes: AtomicUsize,
}

// SAFETY: the raw pointers name mappings owned by the region for its whole
// life; all mutation of shared state goes through atomics or the caller's locks.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Reserves room for `arena_size` bytes of slabs (rounded down to whole slabs).
    pub fn reserve(arena_size: usize) -> Result<Region> {
        let max_slabs = arena_size >> SLAB_SHIFT;
        if max_slabs == 0 {
            return Err(Error::invalid_argument(format!(
                "arena_size must be at least {SLAB_SIZE} bytes, got {arena_size}"
            )));
        }
        let page = os::page_size();
        let slab_bytes = max_slabs * SLAB_SIZE;
        let meta_reserved = (max_slabs * std::mem::size_of::<SlabMeta>()).next_multiple_of(page);
        // Over-reserve by one slab so the base can be slab aligned (cheap masks, and
        // `usable` arithmetic never crosses a slab).
        let raw = os::reserve(slab_bytes + SLAB_SIZE).ok_or_else(|| {
            Error::out_of_memory(format!(
                "cannot reserve {slab_bytes} bytes of address space"
            ))
        })?;
        let raw_addr = raw.as_ptr() as usize;
        let base_addr = raw_addr.next_multiple_of(SLAB_SIZE);
        // SAFETY: trimming the unaligned head and the tail of the reservation just made.
        unsafe {
            if base_addr > raw_addr {
                os::unmap(raw.as_ptr(), base_addr - raw_addr);
            }
            let tail = base_addr + slab_bytes;
            let raw_end = raw_addr + slab_bytes + SLAB_SIZE;
            if raw_end > tail {
                os::unmap(tail as *mut u8, raw_end - tail);
            }
        }
        let meta = match os::reserve(meta_reserved) {
            Some(m) => m,
            None => {
                // SAFETY: releasing the slab reservation made above.
                unsafe { os::unmap(base_addr as *mut u8, slab_bytes) };
                return Err(Error::out_of_memory("cannot reserve the metadata table"));
            }
        };
        Ok(Region {
            base: base_addr as *mut u8,
            max_slabs,
            meta: meta.as_ptr().cast(),
            meta_reserved,
            committed: AtomicUsize::new(0),
            meta_committed_bytes: AtomicUsize::new(0),
        })
    }

    /// Start of the slab area.
    #[inline]
    pub fn base(&self) -> usize {
        self.base as usize
    }

    /// Slabs the region can ever hold.
    pub fn max_slabs(&self) -> usize {
        self.max_slabs
    }

    /// Slabs committed so far.
    #[inline]
    pub fn committed(&self) -> usize {
        self.committed.load(Ordering::Acquire)
    }

    /// Bytes of address space reserved (slabs and metadata).
    pub fn reserved_bytes(&self) -> usize {
        self.max_slabs * SLAB_SIZE + self.meta_reserved
    }

    /// Bytes of metadata table committed.
    pub fn meta_bytes(&self) -> usize {
        self.meta_committed_bytes.load(Ordering::Relaxed)
    }

    /// The committed slab containing `addr`, if any.
    #[inline]
    pub fn slab_of(&self, addr: usize) -> Option<usize> {
        let off = addr.wrapping_sub(self.base as usize);
        let s = off >> SLAB_SHIFT;
        if s < self.committed() {
            Some(s)
        } else {
            None
        }
    }

    /// Whether `addr` lies in the reserved slab area (committed or not).
    #[inline]
    pub fn in_reservation(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.base as usize) < self.max_slabs * SLAB_SIZE
    }

    /// Start address of slab `s`.
    #[inline]
    pub fn slab_addr(&self, s: usize) -> usize {
        self.base as usize + (s << SLAB_SHIFT)
    }

    /// Metadata of committed slab `s`.
    #[inline]
    pub fn meta(&self, s: usize) -> &SlabMeta {
        debug_assert!(s < self.committed());
        // SAFETY: entries below `committed` are committed, zero-initialised
        // (a valid all-atomics/plain-data state) and live as long as `self`.
        unsafe { &*self.meta.add(s) }
    }

    /// Commits slabs (and their metadata) so that at least `slabs` are usable.
    /// Called under the slab-pool lock. Returns false when out of room or memory.
    pub fn commit_to(&self, slabs: usize) -> bool {
        let have = self.committed.load(Ordering::Acquire);
        if slabs <= have {
            return true;
        }
        if slabs > self.max_slabs {
            return false;
        }
        let want = slabs
            .next_multiple_of(COMMIT_CHUNK_SLABS)
            .min(self.max_slabs);
        let page = os::page_size();
        let meta_from = self.meta_committed_bytes.load(Ordering::Relaxed);
        let meta_to = (want * std::mem::size_of::<SlabMeta>())
            .next_multiple_of(page)
            .min(self.meta_reserved);
        // SAFETY: both ranges lie inside the reservations made in `reserve`
        // and are page aligned (slabs are multiples of the page size).
        unsafe {
            if meta_to > meta_from
                && !os::commit(self.meta.cast::<u8>().add(meta_from), meta_to - meta_from)
            {
                return false;
            }
            if !os::commit(self.base.add(have * SLAB_SIZE), (want - have) * SLAB_SIZE) {
                return false;
            }
        }
        self.meta_committed_bytes
            .store(meta_to.max(meta_from), Ordering::Relaxed);
        self.committed.store(want, Ordering::Release);
        true
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: both mappings were created in `reserve`, and nothing can
        // reach them once the region is dropped.
        unsafe {
            os::unmap(self.base, self.max_slabs * SLAB_SIZE);
            os::unmap(self.meta.cast(), self.meta_reserved);
        }
    }
}
