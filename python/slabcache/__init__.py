"""slabcache: memory allocator and cache manager for LLM serving and agent runtimes.

The hot paths live in a Rust core (``slabcache._native``); this package is
its typed Python face.

    >>> import slabcache
    >>> isinstance(slabcache.__version__, str)
    True
"""

from __future__ import annotations

from . import _native

# Public pieces, one module each (issue placeholders are filled as each lands).
from .allocator import Allocation, AllocationBatch, AllocatorStats, SlabAllocator
from .errors import (
    AlreadyExistsError,
    BufferExportedError,
    ClosedError,
    CorruptionError,
    DoubleFreeError,
    InvalidArgumentError,
    InvalidFreeError,
    InvalidTypeError,
    LockedError,
    NotFoundError,
    OutOfMemoryError,
    SlabcacheError,
    StorageError,
)

# from .skiplist import ...
from .vectors import Int8Index

from .arena import BlobArena

# isort: split
from .blocks import BlockEvents, BlockManager, StepBatch, StepResult

__version__: str = _native.__version__

__all__ = [
    "__version__",
    "Allocation",
    "AllocationBatch",
    "AllocatorStats",
    "SlabAllocator",
    "AlreadyExistsError",
    "BlobArena",
    "BufferExportedError",
    "ClosedError",
    "CorruptionError",
    "DoubleFreeError",
    "InvalidArgumentError",
    "InvalidFreeError",
    "InvalidTypeError",
    "Int8Index",
    "LockedError",
    "NotFoundError",
    "OutOfMemoryError",
    "SlabcacheError",
    "StorageError",
    # KV-cache BlockManager (issue 6)
    "BlockEvents",
    "BlockManager",
    "StepBatch",
    "StepResult",
]
