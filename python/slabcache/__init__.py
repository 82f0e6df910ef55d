"""slabcache: memory allocator and cache manager for LLM serving and agent runtimes.

The hot paths live in a Rust core (``slabcache._native``); this package is
its typed Python face, one module per piece:

- :class:`SlabAllocator` (``slabcache.allocator``): slab allocator with out-of-band metadata;
- :class:`BSkipList` (``slabcache.skiplist``): concurrent sorted map;
- :class:`Int8Index` (``slabcache.vectors``): INT8 SIMD vector search;
- :class:`BlobArena` (``slabcache.arena``): crash-safe WAL-backed blob store;
- :class:`BlockManager` (``slabcache.blocks``): paged KV-cache block manager;
- ``slabcache.kv``: the KV data plane under it (device pool, slab-allocated host tier,
  prefix cache in the blob arena);
- :class:`SemanticCache` (``slabcache.semantic``): LLM-response cache on the pieces above.

    >>> import slabcache
    >>> isinstance(slabcache.__version__, str)
    True
"""

from __future__ import annotations

from . import _native
from .allocator import Allocation, AllocationBatch, AllocatorStats, SlabAllocator
from .arena import BlobArena
from .blocks import BlockEvents, BlockManager, ScheduleConfig, ScheduleResult, StepBatch, StepResult
from .errors import (
    AlreadyExistsError,
    BufferExportedError,
    ClosedError,
    CorruptionError,
    DoubleFreeError,
    IndexOutOfRangeError,
    InvalidArgumentError,
    InvalidFreeError,
    InvalidTypeError,
    LockedError,
    NotFoundError,
    OutOfMemoryError,
    SlabcacheError,
    StorageError,
    UnsupportedFeatureError,
)
from .semantic import Hit, Policy, SemanticCache
from .skiplist import BSkipList
from .slb import SemanticLookasideBuffer
from .trap_guard import TrapGuard
from .vectors import Int8Index

__version__: str = _native.__version__

__all__ = [
    "__version__",
    # pieces
    "Allocation",
    "AllocationBatch",
    "AllocatorStats",
    "SlabAllocator",
    "BSkipList",
    "Int8Index",
    "BlobArena",
    "BlockEvents",
    "BlockManager",
    "ScheduleConfig",
    "ScheduleResult",
    "StepBatch",
    "StepResult",
    "SemanticCache",
    "Policy",
    "Hit",
    "SemanticLookasideBuffer",
    "TrapGuard",
    # errors
    "SlabcacheError",
    "AlreadyExistsError",
    "BufferExportedError",
    "ClosedError",
    "CorruptionError",
    "DoubleFreeError",
    "IndexOutOfRangeError",
    "InvalidArgumentError",
    "InvalidFreeError",
    "InvalidTypeError",
    "LockedError",
    "NotFoundError",
    "OutOfMemoryError",
    "StorageError",
    "UnsupportedFeatureError",
]
