"""The shapes of every ``stats()`` result (and of the arena's reports), one
``TypedDict`` per schema.

The dicts themselves are built in Rust (allocator, arena, block manager) or in
Python (semantic cache, KV tiers); these types are what the stubs and the
Python API declare, and ``tests/test_stats_types.py`` checks that the keys a
real call returns are exactly the keys declared here, so the two cannot drift.

    >>> from slabcache import SlabAllocator
    >>> from slabcache.stats_types import SlabStats
    >>> s: SlabStats = SlabAllocator().stats()
    >>> sorted(s) == sorted(SlabStats.__required_keys__)
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import numpy as np
import numpy.typing as npt

__all__ = [
    "ArenaCompactReport",
    "ArenaKVTierStats",
    "ArenaRecoveryStats",
    "ArenaRepairReport",
    "ArenaStats",
    "ArenaVerifyReport",
    "BlockManagerStats",
    "SemanticCacheStats",
    "SemanticCategoryStats",
    "SlabClassStats",
    "SlabStats",
    "TieredKVCacheStats",
    "VAttnKVCacheStats",
]


# ---- slab allocator: SlabAllocator.stats() (rust/python/src/slab.rs) -------------------------


class SlabClassStats(TypedDict):
    """One size class in use (an item of ``SlabStats["classes"]``)."""

    size: int
    slabs: int
    live: int
    bytes_in_use: int
    available: int


class SlabStats(TypedDict):
    """A snapshot of an allocator's memory (``SlabAllocator.stats()``)."""

    bytes_requested: int
    bytes_in_use: int
    bytes_mapped: int
    bytes_reserved: int
    metadata_bytes: int
    live_allocations: int
    slabs: int
    slabs_in_use: int
    slabs_free: int
    slabs_released: int
    large_allocations: int
    large_bytes: int
    fragmentation: float
    internal_waste: float
    classes: list[SlabClassStats]


# ---- blob arena: BlobArena.stats() (rust/python/src/arena.rs) --------------------------------


class ArenaRecoveryStats(TypedDict):
    """What recovery did when the arena was opened (``ArenaStats["recovery"]``)."""

    checkpoint_entries: int
    replayed_records: int
    truncated_bytes: int
    dropped_records: int
    stop_reason: str | None
    removed_files: int
    repaired_blobs: int
    seconds: float


class ArenaStats(TypedDict):
    """Sizes and counters of a blob arena (``BlobArena.stats()``)."""

    keys: int
    live_bytes: int
    data_bytes: int
    dead_bytes: int
    generations: int
    current_generation: int
    wal_segment: int
    wal_bytes: int
    next_seq: int
    syncs: int
    checkpoints: int
    compactions: int
    poisoned: bool
    store_id: int
    sync: str
    recovery: ArenaRecoveryStats


class ArenaCompactReport(TypedDict):
    """What one compaction did (``BlobArena.compact()``)."""

    generation: int
    blobs: int
    bytes_before: int
    bytes_after: int
    bad_blobs: int
    seconds: float


class ArenaVerifyReport(TypedDict):
    """What a full verification read and found intact (``BlobArena.verify()``)."""

    keys: int
    bytes: int
    wal_records: int
    generations: int


class ArenaRepairReport(TypedDict):
    """What an offline repair kept and dropped (``BlobArena.repair(path)``)."""

    kept_keys: int
    checkpoint_entries: int
    wal_records: int
    damaged_wal_bytes: int
    dropped: list[str]
    generation: int
    backup_dir: Path


# ---- KV cache: BlockManager.stats() (rust/python/src/blocks.rs) and the KV tiers -------------


class BlockManagerStats(TypedDict):
    """Usage and counters of the KV-cache block manager (``BlockManager.stats()``)."""

    num_blocks: int
    num_free_blocks: int
    num_cached_free_blocks: int
    num_pinned_blocks: int
    num_cpu_blocks: int
    num_used_cpu_blocks: int
    num_requests: int
    usage: float
    prefix_queries: int
    prefix_query_tokens: int
    prefix_hit_tokens: int
    prefix_hit_rate: float
    evictions: int
    cow_copies: int
    pins_created: int
    pins_released: int
    pins_expired: int
    swap_outs: int
    swap_ins: int
    blocks_swapped_out: int
    blocks_swapped_in: int
    swap_in_blocks_reused: int
    refusals: int
    preemptions: int


class VAttnKVCacheStats(TypedDict):
    """Page and byte counts of the virtual-memory KV cache (``VAttnKVCache.stats()``)."""

    num_pages: int
    created_pages: int
    pool_pages: int
    mapped_pages: int
    surplus_pages: int
    used_bytes: int
    mapped_bytes: int
    waste_bytes: int
    mapped_minus_used_bytes: int
    sync_maps: int
    requests: int
    swapped: int


class TieredKVCacheStats(TypedDict):
    """Counters of the KV data plane (``TieredKVCache.stats``, updated in place)."""

    device_hit_tokens: int
    disk_hit_tokens: int
    blocks_offloaded: int
    blocks_loaded: int
    cow_copies: int
    swap_out_blocks: int
    swap_in_blocks: int


class ArenaKVTierStats(TypedDict):
    """Counters of the arena-backed KV prefix tier (``ArenaKVTier.stats``, updated in place)."""

    puts: int
    hits: int
    misses: int
    evictions: int
    dropped_corrupt: int


# ---- semantic cache: SemanticCache.stats() (python/slabcache/semantic.py) --------------------


class SemanticCategoryStats(TypedDict):
    """One policy category of a semantic cache (``SemanticCacheStats["categories"][name]``)."""

    lookups: int
    hits: dict[str, int]
    hit_rate: float
    refused: dict[str, int]
    inserts: int
    evictions: int
    expirations: int
    entries: int
    bytes: int
    latency_us_p50: float | None
    latency_us_p99: float | None
    threshold: float
    hit_score_hist: npt.NDArray[np.int64]
    miss_score_hist: npt.NDArray[np.int64]


class SemanticCacheStats(TypedDict):
    """Per category and in total (``SemanticCache.stats()``)."""

    categories: dict[str, SemanticCategoryStats]
    entries: int
    bytes: int
    index_memory_bytes: int
    slb_entries: int
    hist_edges: npt.NDArray[np.float64]
