//! Options of an allocator instance.

/// Options of a [`SlabAllocator`](super::SlabAllocator).
///
/// ```
/// use slabcache_core::slab::SlabConfig;
/// let cfg = SlabConfig { arena_size: 1 << 30, zero_on_free: true, ..SlabConfig::default() };
/// assert!(cfg.thread_cache);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlabConfig {
    /// Address space reserved for slabs (bytes). Only what is used is committed.
    pub arena_size: usize,
    /// Overwrite every object with zeros when it is freed.
    pub zero_on_free: bool,
    /// Bytes of empty slabs kept resident for reuse; beyond this, empty slabs
    /// give their pages back to the OS with `madvise(MADV_DONTNEED)`.
    pub release_threshold: usize,
    /// Keep per-thread caches of free objects (fast path without locks).
    pub thread_cache: bool,
    /// Empty slabs each class keeps before handing one back to the slab pool.
    pub retain_empty_per_class: usize,
    /// Bytes of freed huge mappings kept for reuse instead of unmapped
    /// (0 in the hardened profile).
    pub large_cache_bytes: usize,
    /// The hardened profile (see `docs/allocator.md`): canaries checked on
    /// free, freed objects zeroed and checked on reuse, a free quarantine
    /// (delayed reuse), freed medium pages released and huge blocks unmapped
    /// at once, zero-size allocations in an inaccessible area.
    pub hardened: bool,
}

impl Default for SlabConfig {
    fn default() -> Self {
        SlabConfig {
            arena_size: 64 << 30,
            zero_on_free: false,
            release_threshold: 2 << 20,
            thread_cache: true,
            retain_empty_per_class: 0,
            large_cache_bytes: 128 << 20,
            hardened: false,
        }
    }
}
