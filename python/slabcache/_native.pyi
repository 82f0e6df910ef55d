"""Type stubs for the Rust extension module ``slabcache._native``.

Each subsystem keeps its stubs in its own section below.
"""

from __future__ import annotations

import os  # blob arena
from collections.abc import Buffer, Iterable  # blob arena
from typing import Any, Self  # blob arena

__version__: str

# ---- info -----------------------------------------------------------------

def cpu_features() -> dict[str, bool]:
    """SIMD features of this CPU, e.g. ``{"avx2": True, "avx512f": False, ...}``."""

def build_info() -> dict[str, str]:
    """``version``, ``profile`` ("release" or "debug"), ``target_arch``, ``target_os``."""

# ---- slab allocator (slab.rs) ----------------------------------------------

# ---- B-skiplist (skiplist.rs) ------------------------------------------------

# ---- INT8 vector search (vector.rs) --------------------------------------------

# ---- blob arena (arena.rs) -----------------------------------------------------

class BlobBuffer:
    """Zero-copy view of one blob (exposes the buffer protocol, read-only)."""

    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    @property
    def generation(self) -> int: ...

class BlobArena:
    """Native WAL-backed mmap blob arena (see ``slabcache.arena.BlobArena``)."""

    def __new__(
        cls,
        path: str | os.PathLike[str],
        *,
        sync: str = "batch",
        batch_interval_ms: float = 10.0,
        batch_bytes: int = ...,
        checkpoint_bytes: int = ...,
        auto_compact: bool = True,
        compact_dead_ratio: float = 0.5,
        compact_min_dead_bytes: int = ...,
        verify_reads: bool = False,
        verify_replay: bool = True,
        create: bool = True,
        inline_max: int = ...,
    ) -> Self: ...
    def put(self, key: bytes | str, value: Buffer) -> None: ...
    def put_many(self, keys: Iterable[bytes | str], values: Iterable[Buffer]) -> None: ...
    def get(self, key: bytes | str) -> memoryview | None: ...
    def get_many(self, keys: Iterable[bytes | str]) -> list[memoryview | None]: ...
    def delete(self, key: bytes | str) -> bool: ...
    def __contains__(self, key: bytes | str) -> bool: ...
    def __len__(self) -> int: ...
    def keys(
        self,
        start: bytes | str | None = None,
        end: bytes | str | None = None,
        limit: int | None = None,
    ) -> list[bytes]: ...
    def flush(self) -> None: ...
    def checkpoint(self) -> None: ...
    def compact(self) -> dict[str, int | float]: ...
    def stats(self) -> dict[str, Any]: ...
    def verify(self) -> dict[str, int]: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def path(self) -> str: ...
    @property
    def sync(self) -> str: ...

# ---- KV block pool (blocks.rs) -------------------------------------------------
