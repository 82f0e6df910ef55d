//! Allocator statistics, computed from the metadata on demand (the fast
//! paths keep no counters beyond each thread's requested-bytes tally).

use std::sync::atomic::Ordering;

use super::heap::Heap;
use super::size_class::{class_size, NUM_CLASSES};
use super::slab_meta::{state_class, SLAB_SIZE};
use super::slab_pool::CHUNK_SLABS;
use super::sync::lock;

/// Figures for one size class.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassStats {
    /// Slot size in bytes.
    pub size: usize,
    /// Slabs carved to this class.
    pub slabs: u64,
    /// Objects handed to users.
    pub live: u64,
    /// `live * size`.
    pub bytes_in_use: u64,
    /// Objects free in the central pool (the rest of the capacity sits in thread caches).
    pub available: u64,
}

/// A snapshot of an allocator's memory.
///
/// ```
/// use slabcache_core::slab::SlabAllocator;
/// let a = SlabAllocator::new().unwrap();
/// let p = a.alloc(100).unwrap();
/// let s = a.stats();
/// assert_eq!(s.bytes_requested, 100);
/// assert_eq!(s.bytes_in_use, 112);
/// assert_eq!(s.live_allocations, 1);
/// a.free_sized(p, 100).unwrap();
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlabStats {
    /// Bytes callers asked for, over live allocations (exact for sized frees;
    /// an unsized free counts the slot size off).
    pub bytes_requested: u64,
    /// Bytes of live allocations rounded to their slot (or page) size.
    pub bytes_in_use: u64,
    /// Bytes the allocator holds mapped and not given back to the OS: slabs,
    /// large mappings (live and cached), metadata.
    pub bytes_mapped: u64,
    /// Address space reserved.
    pub bytes_reserved: u64,
    /// Bytes of out-of-band metadata committed.
    pub metadata_bytes: u64,
    /// Live allocations (small and large).
    pub live_allocations: u64,
    /// Slabs carved from the region so far.
    pub slabs: u64,
    /// Slabs carved to a class right now.
    pub slabs_in_use: u64,
    /// Slabs in the free pool.
    pub slabs_free: u64,
    /// Free slabs whose pages were returned to the OS.
    pub slabs_released: u64,
    /// Live large allocations.
    pub large_allocations: u64,
    /// Usable bytes of live large allocations.
    pub large_bytes: u64,
    /// `1 - bytes_in_use / bytes_mapped` (0 when nothing is mapped): the
    /// share of mapped memory not holding live objects.
    pub fragmentation: f64,
    /// `1 - bytes_requested / bytes_in_use`: waste from rounding to slots.
    pub internal_waste: f64,
    /// Classes with at least one slab.
    pub classes: Vec<ClassStats>,
}

pub(crate) fn collect(heap: &Heap) -> SlabStats {
    let region = &heap.region;
    let mut classes: Vec<ClassStats> = (0..NUM_CLASSES)
        .map(|c| ClassStats {
            size: class_size(c),
            ..ClassStats::default()
        })
        .collect();
    for s in 0..(heap.slabs.carved() as usize).min(region.committed()) {
        let meta = region.meta(s);
        if let Some(c) = state_class(meta.state.load(Ordering::Acquire)) {
            let cs = &mut classes[c];
            cs.slabs += 1;
            cs.live += meta.live_objects(c);
            cs.available += meta.avail_count.load(Ordering::Relaxed) as u64;
        }
    }
    for cs in &mut classes {
        cs.bytes_in_use = cs.live * cs.size as u64;
    }
    let (huge_live, huge_usable, huge_mapped) = lock(&heap.large).totals();
    let (med_live, med_usable, med_resident, med_chunks) = heap.medium.totals();
    let large_live = huge_live + med_live;
    let large_usable = huge_usable + med_usable;
    let small_in_use: u64 = classes.iter().map(|c| c.bytes_in_use).sum();
    let slabs_in_use: u64 = classes.iter().map(|c| c.slabs).sum();
    let live_small: u64 = classes.iter().map(|c| c.live).sum();
    let carved = heap.slabs.carved();
    let released = heap.slabs.released();
    let medium_slabs = (med_chunks * CHUNK_SLABS) as u64;
    let bytes_mapped = carved.saturating_sub(released + medium_slabs) * SLAB_SIZE as u64
        + med_resident as u64
        + huge_mapped as u64
        + region.meta_bytes() as u64;
    let bytes_in_use = small_in_use + large_usable as u64;
    let requested = heap.requested_bytes().max(0) as u64;
    let ratio = |num: u64, den: u64| {
        if den == 0 {
            0.0
        } else {
            1.0 - num as f64 / den as f64
        }
    };
    SlabStats {
        bytes_requested: requested,
        bytes_in_use,
        bytes_mapped,
        bytes_reserved: region.reserved_bytes() as u64,
        metadata_bytes: region.meta_bytes() as u64,
        live_allocations: live_small + large_live as u64,
        slabs: carved,
        slabs_in_use,
        slabs_free: heap.slabs.free(),
        slabs_released: released,
        large_allocations: large_live as u64,
        large_bytes: large_usable as u64,
        fragmentation: ratio(bytes_in_use, bytes_mapped),
        internal_waste: ratio(requested.min(bytes_in_use), bytes_in_use),
        classes: classes.into_iter().filter(|c| c.slabs > 0).collect(),
    }
}
