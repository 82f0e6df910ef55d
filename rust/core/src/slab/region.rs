//! The reserved slab region and its out-of-band metadata table.
//!
//! The region is a short list of *segments*: address-space reservations (no
//! access, no commit charge) added on demand, each with its own metadata
//! table. Slabs are numbered globally across segments, so the slab pool and
//! class pools see one run of slab ids. The first segment is as large as the
//! process may comfortably reserve (the whole `arena_size` normally; a
//! sixteenth of `RLIMIT_AS` under `ulimit -v`), later ones double the total
//! reserved so far, so a free finds its slab in one to a few range checks.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use super::os;
use super::slab_meta::{SlabMeta, SLAB_SHIFT, SLAB_SIZE};
use crate::{Error, Result};

/// Slabs committed at a time (4 MiB of slab memory); segments are multiples of it.
pub const COMMIT_CHUNK_SLABS: usize = 16;
/// Most segments a region can grow to.
const MAX_SEGMENTS: usize = 24;
/// Smallest segment (one commit chunk).
const MIN_SEGMENT: usize = COMMIT_CHUNK_SLABS * SLAB_SIZE;

struct Segment {
    base: AtomicUsize,
    slabs: AtomicUsize,
    /// Global id of the segment's first slab.
    first: AtomicUsize,
    meta: AtomicPtr<SlabMeta>,
    meta_reserved: AtomicUsize,
    meta_committed: AtomicUsize,
}

impl Segment {
    const fn empty() -> Segment {
        Segment {
            base: AtomicUsize::new(0),
            slabs: AtomicUsize::new(0),
            first: AtomicUsize::new(0),
            meta: AtomicPtr::new(std::ptr::null_mut()),
            meta_reserved: AtomicUsize::new(0),
            meta_committed: AtomicUsize::new(0),
        }
    }
}

/// The reserved slab segments plus their metadata tables.
pub struct Region {
    segs: [Segment; MAX_SEGMENTS],
    /// Segments published (grows only, under the slab-pool lock).
    nsegs: AtomicUsize,
    /// Slabs reserved over all segments.
    reserved_slabs: AtomicUsize,
    /// Upper bound on `reserved_slabs` (the configured `arena_size`).
    limit_slabs: usize,
    /// Slabs whose memory and metadata are committed (grows only, under the slab-pool lock).
    committed: AtomicUsize,
    meta_committed_bytes: AtomicUsize,
    meta_reserved_bytes: AtomicUsize,
}

// SAFETY: the raw pointers name mappings owned by the region for its whole
// life; all mutation of shared state goes through atomics or the caller's locks.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

/// `RLIMIT_AS` when finite.
fn address_space_limit() -> Option<usize> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut r) } != 0 || r.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(r.rlim_cur as usize)
}

fn meta_bytes_for(slabs: usize) -> usize {
    (slabs * std::mem::size_of::<SlabMeta>()).next_multiple_of(os::page_size())
}

/// Reserves a slab-aligned run of `slabs` slabs and its metadata table.
fn reserve_segment(slabs: usize) -> Option<(usize, *mut SlabMeta, usize)> {
    let bytes = slabs.checked_mul(SLAB_SIZE)?;
    // Over-reserve by one slab so the base can be slab aligned.
    let raw = os::reserve(bytes.checked_add(SLAB_SIZE)?)?;
    let raw_addr = raw.as_ptr() as usize;
    let base = raw_addr.next_multiple_of(SLAB_SIZE);
    // SAFETY: trimming the unaligned head and the tail of the reservation just made.
    unsafe {
        if base > raw_addr {
            os::unmap(raw.as_ptr(), base - raw_addr);
        }
        let tail = base + bytes;
        let raw_end = raw_addr + bytes + SLAB_SIZE;
        if raw_end > tail {
            os::unmap(tail as *mut u8, raw_end - tail);
        }
    }
    let meta_len = meta_bytes_for(slabs);
    match os::reserve(meta_len) {
        Some(m) => Some((base, m.as_ptr().cast(), meta_len)),
        None => {
            // SAFETY: releasing the slab reservation made above.
            unsafe { os::unmap(base as *mut u8, bytes) };
            None
        }
    }
}

impl Region {
    /// A region that may grow to `arena_size` bytes of slabs (rounded down
    /// to whole slabs, at least one). Reserves the first segment now.
    pub fn reserve(arena_size: usize) -> Result<Region> {
        let limit_slabs = arena_size >> SLAB_SHIFT;
        if limit_slabs == 0 {
            return Err(Error::invalid_argument(format!(
                "arena_size must be at least {SLAB_SIZE} bytes, got {arena_size}"
            )));
        }
        let r = Region {
            segs: [const { Segment::empty() }; MAX_SEGMENTS],
            nsegs: AtomicUsize::new(0),
            reserved_slabs: AtomicUsize::new(0),
            limit_slabs,
            committed: AtomicUsize::new(0),
            meta_committed_bytes: AtomicUsize::new(0),
            meta_reserved_bytes: AtomicUsize::new(0),
        };
        // Under an address-space limit take a sixteenth of it to start with
        // (the program needs the rest); grow later as slabs are carved.
        let first = match address_space_limit() {
            Some(lim) => (lim / 16 / SLAB_SIZE).max(COMMIT_CHUNK_SLABS),
            None => limit_slabs,
        };
        if !r.grow(first) {
            return Err(Error::out_of_memory(format!(
                "cannot reserve {MIN_SEGMENT} bytes of address space"
            )));
        }
        Ok(r)
    }

    /// Adds a segment of about `want` slabs (halving while the OS refuses,
    /// down to one commit chunk; never beyond the limit). Called under the
    /// slab-pool lock (or before the region is shared).
    fn grow(&self, want: usize) -> bool {
        let n = self.nsegs.load(Ordering::Acquire);
        let have = self.reserved_slabs.load(Ordering::Relaxed);
        if n == MAX_SEGMENTS || have >= self.limit_slabs {
            return false;
        }
        let mut slabs = want
            .min(self.limit_slabs - have)
            .next_multiple_of(COMMIT_CHUNK_SLABS)
            .min(self.limit_slabs - have);
        loop {
            if let Some((base, meta, meta_len)) = reserve_segment(slabs) {
                let seg = &self.segs[n];
                seg.base.store(base, Ordering::Relaxed);
                seg.slabs.store(slabs, Ordering::Relaxed);
                seg.first.store(have, Ordering::Relaxed);
                seg.meta.store(meta, Ordering::Relaxed);
                seg.meta_reserved.store(meta_len, Ordering::Relaxed);
                self.meta_reserved_bytes
                    .fetch_add(meta_len, Ordering::Relaxed);
                self.reserved_slabs.store(have + slabs, Ordering::Release);
                self.nsegs.store(n + 1, Ordering::Release);
                return true;
            }
            if slabs <= COMMIT_CHUNK_SLABS {
                return false;
            }
            slabs = (slabs / 2).next_multiple_of(COMMIT_CHUNK_SLABS);
        }
    }

    /// Start of the first segment (for tests).
    #[cfg(test)]
    pub fn base(&self) -> usize {
        self.segs[0].base.load(Ordering::Relaxed)
    }

    /// Slabs reserved so far (grows as the region does).
    pub fn max_slabs(&self) -> usize {
        self.reserved_slabs.load(Ordering::Acquire)
    }

    /// Segments reserved so far.
    #[cfg(test)]
    pub fn segments(&self) -> usize {
        self.nsegs.load(Ordering::Acquire)
    }

    /// Slabs committed so far.
    #[inline]
    pub fn committed(&self) -> usize {
        self.committed.load(Ordering::Acquire)
    }

    /// Bytes of address space reserved (slabs and metadata).
    pub fn reserved_bytes(&self) -> usize {
        self.max_slabs() * SLAB_SIZE + self.meta_reserved_bytes.load(Ordering::Relaxed)
    }

    /// Bytes of metadata table committed.
    pub fn meta_bytes(&self) -> usize {
        self.meta_committed_bytes.load(Ordering::Relaxed)
    }

    /// The segment holding `addr` and the global id of its slab (committed or not).
    #[inline(always)]
    fn locate(&self, addr: usize) -> Option<usize> {
        let s0 = &self.segs[0];
        let off = addr.wrapping_sub(s0.base.load(Ordering::Relaxed));
        if off < s0.slabs.load(Ordering::Relaxed) << SLAB_SHIFT {
            return Some(off >> SLAB_SHIFT);
        }
        let n = self.nsegs.load(Ordering::Acquire);
        for seg in &self.segs[..n] {
            let off = addr.wrapping_sub(seg.base.load(Ordering::Relaxed));
            let slabs = seg.slabs.load(Ordering::Relaxed);
            if off < slabs << SLAB_SHIFT {
                return Some(seg.first.load(Ordering::Relaxed) + (off >> SLAB_SHIFT));
            }
        }
        None
    }

    #[inline(always)]
    fn segment_of_slab(&self, s: usize) -> &Segment {
        // The first segment (slabs 0..) holds everything unless the region grew.
        let s0 = &self.segs[0];
        if s < s0.slabs.load(Ordering::Relaxed) {
            return s0;
        }
        let n = self.nsegs.load(Ordering::Acquire);
        let mut i = 1;
        while i + 1 < n {
            let seg = &self.segs[i];
            if s < seg.first.load(Ordering::Relaxed) + seg.slabs.load(Ordering::Relaxed) {
                return seg;
            }
            i += 1;
        }
        &self.segs[i]
    }

    /// The committed slab containing `addr`, if any.
    #[inline]
    pub fn slab_of(&self, addr: usize) -> Option<usize> {
        let s = self.locate(addr)?;
        if s < self.committed() {
            Some(s)
        } else {
            None
        }
    }

    /// Whether `addr` lies in the reserved slab area (committed or not).
    #[inline]
    pub fn in_reservation(&self, addr: usize) -> bool {
        self.locate(addr).is_some()
    }

    /// Start address of slab `s`.
    #[inline]
    pub fn slab_addr(&self, s: usize) -> usize {
        let seg = self.segment_of_slab(s);
        seg.base.load(Ordering::Relaxed) + ((s - seg.first.load(Ordering::Relaxed)) << SLAB_SHIFT)
    }

    /// Metadata of committed slab `s`.
    #[inline]
    pub fn meta(&self, s: usize) -> &SlabMeta {
        debug_assert!(s < self.committed());
        let seg = self.segment_of_slab(s);
        let local = s - seg.first.load(Ordering::Relaxed);
        // SAFETY: entries below `committed` are committed, zero-initialised
        // (a valid all-atomics/plain-data state) and live as long as `self`.
        unsafe { &*seg.meta.load(Ordering::Relaxed).add(local) }
    }

    /// Whether slabs `[s, s+n)` are contiguous in memory (one segment).
    pub fn contiguous(&self, s: usize, n: usize) -> bool {
        if s + n > self.max_slabs() {
            return false;
        }
        let seg = self.segment_of_slab(s);
        s + n <= seg.first.load(Ordering::Relaxed) + seg.slabs.load(Ordering::Relaxed)
    }

    /// First slab of the segment after the one holding slab `s`, if reserved.
    pub fn next_segment_start(&self, s: usize) -> Option<usize> {
        let seg = self.segment_of_slab(s);
        let next = seg.first.load(Ordering::Relaxed) + seg.slabs.load(Ordering::Relaxed);
        (next < self.max_slabs()).then_some(next)
    }

    /// Commits slabs (and their metadata) so that at least `slabs` are
    /// usable, reserving a new segment when the reserved ones are full.
    /// Called under the slab-pool lock. Returns false when out of room or memory.
    pub fn commit_to(&self, slabs: usize) -> bool {
        let mut have = self.committed.load(Ordering::Acquire);
        if slabs <= have {
            return true;
        }
        while slabs > self.max_slabs() {
            // Double what is reserved (each growth at least the shortfall).
            let want = self.max_slabs().max(slabs - self.max_slabs());
            if !self.grow(want) {
                return false;
            }
        }
        // Commit chunk by chunk, never across a segment boundary.
        while have < slabs {
            let seg = self.segment_of_slab(have);
            let first = seg.first.load(Ordering::Relaxed);
            let want = (have + 1)
                .next_multiple_of(COMMIT_CHUNK_SLABS)
                .min(first + seg.slabs.load(Ordering::Relaxed));
            let base = seg.base.load(Ordering::Relaxed);
            let meta = seg.meta.load(Ordering::Relaxed).cast::<u8>();
            let meta_from = seg.meta_committed.load(Ordering::Relaxed);
            let meta_to =
                meta_bytes_for(want - first).min(seg.meta_reserved.load(Ordering::Relaxed));
            // SAFETY: both ranges lie inside the segment's reservations and
            // are page aligned (slabs are multiples of the page size).
            unsafe {
                if meta_to > meta_from && !os::commit(meta.add(meta_from), meta_to - meta_from) {
                    return false;
                }
                let at = (base + ((have - first) << SLAB_SHIFT)) as *mut u8;
                if !os::commit(at, (want - have) * SLAB_SIZE) {
                    return false;
                }
            }
            if meta_to > meta_from {
                seg.meta_committed.store(meta_to, Ordering::Relaxed);
                self.meta_committed_bytes
                    .fetch_add(meta_to - meta_from, Ordering::Relaxed);
            }
            have = want;
            self.committed.store(have, Ordering::Release);
        }
        true
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        for seg in &self.segs[..self.nsegs.load(Ordering::Acquire)] {
            // SAFETY: both mappings were created in `grow`, and nothing can
            // reach them once the region is dropped.
            unsafe {
                os::unmap(
                    seg.base.load(Ordering::Relaxed) as *mut u8,
                    seg.slabs.load(Ordering::Relaxed) * SLAB_SIZE,
                );
                os::unmap(
                    seg.meta.load(Ordering::Relaxed).cast(),
                    seg.meta_reserved.load(Ordering::Relaxed),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_grows_by_segments_and_finds_every_slab() {
        let r = Region {
            segs: [const { Segment::empty() }; MAX_SEGMENTS],
            nsegs: AtomicUsize::new(0),
            reserved_slabs: AtomicUsize::new(0),
            limit_slabs: 1 << 12,
            committed: AtomicUsize::new(0),
            meta_committed_bytes: AtomicUsize::new(0),
            meta_reserved_bytes: AtomicUsize::new(0),
        };
        assert!(r.grow(COMMIT_CHUNK_SLABS));
        assert_eq!(r.segments(), 1);
        // Committing past the first segment adds more.
        assert!(r.commit_to(5 * COMMIT_CHUNK_SLABS));
        assert!(r.segments() >= 2);
        for s in 0..5 * COMMIT_CHUNK_SLABS {
            let a = r.slab_addr(s);
            assert_eq!(r.slab_of(a), Some(s));
            assert_eq!(r.slab_of(a + SLAB_SIZE - 1), Some(s));
            // SAFETY: the slab is committed.
            unsafe { *(a as *mut u8) = 1 };
            assert_eq!(r.meta(s).state.load(Ordering::Relaxed), 0);
        }
        assert!(!r.in_reservation(r.base().wrapping_sub(1)));
    }
}
