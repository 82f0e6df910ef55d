"""slabcache: memory allocator and cache manager for LLM serving and agent runtimes.

The hot paths live in a Rust core (``slabcache._native``); this package is
its typed Python face.

    >>> import slabcache
    >>> isinstance(slabcache.__version__, str)
    True
"""

from __future__ import annotations

from . import _native
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

# Public pieces, one module each (issue placeholders are filled as each lands).
# from .allocator import ...

from .skiplist import BSkipList

# from .vectors import ...

# from .arena import ...

# from .blocks import ...

__version__: str = _native.__version__

__all__ = [
    "__version__",
    "AlreadyExistsError",
    "BSkipList",
    "BufferExportedError",
    "ClosedError",
    "CorruptionError",
    "DoubleFreeError",
    "InvalidArgumentError",
    "InvalidFreeError",
    "InvalidTypeError",
    "LockedError",
    "NotFoundError",
    "OutOfMemoryError",
    "SlabcacheError",
    "StorageError",
]
