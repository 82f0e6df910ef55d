"""Type stubs for the Rust extension module ``slabcache._native``.

Each subsystem keeps its stubs in its own section below.
"""

from __future__ import annotations

import os
from collections.abc import Buffer, Callable, Iterable
from typing import Any, Self

import numpy as np
import numpy.typing as npt

__version__: str

# ---- info -----------------------------------------------------------------

def cpu_features() -> dict[str, bool]:
    """SIMD features of this CPU, e.g. ``{"avx2": True, "avx512f": False, ...}``."""

def build_info() -> dict[str, str]:
    """``version``, ``profile`` ("release" or "debug"), ``target_arch``, ``target_os``."""

# ---- slab allocator (slab.rs) ----------------------------------------------

class SlabAllocator:
    """Slab allocator with out-of-band metadata; see ``slabcache.allocator``."""

    def __init__(
        self,
        arena_size: int | None = None,
        *,
        zero_on_free: bool = False,
        release_threshold: int | None = None,
        thread_cache: bool = True,
    ) -> None: ...
    def alloc(self, size: int, zero: bool = False) -> Allocation: ...
    def free(self, allocation: Allocation) -> None: ...
    def alloc_many(self, sizes: npt.ArrayLike, zero: bool = False) -> AllocationBatch: ...
    def free_many(self, items: AllocationBatch | Iterable[Allocation]) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def owns(self, address: int) -> bool: ...
    @staticmethod
    def slot_size(size: int) -> int | None: ...
    @property
    def config(self) -> dict[str, int | bool]: ...

class Allocation:
    """A live allocation: a writable buffer (``memoryview(a)``, ``np.asarray(a)``)."""

    @property
    def address(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def freed(self) -> bool: ...
    def __len__(self) -> int: ...
    def view(self, dtype: npt.DTypeLike = None) -> np.ndarray: ...
    def __enter__(self) -> Allocation: ...
    def __exit__(self, *args: object) -> bool: ...
    def __buffer__(self, flags: int) -> memoryview: ...
    def __release_buffer__(self, view: memoryview) -> None: ...

class AllocationBatch:
    """Allocations made by one ``alloc_many`` call; freed together by ``free_many``."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> Allocation: ...
    @property
    def addresses(self) -> npt.NDArray[np.uint64]: ...
    @property
    def sizes(self) -> npt.NDArray[np.int64]: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def freed(self) -> bool: ...

def slab_bench_pairs(size: int, iters: int, repeat: int = 5) -> tuple[float, float]:
    """ns per alloc+free pair: (slabcache core, glibc malloc), same run."""

def slab_bench_trace(
    ops: int, max_live: int, seed: int = 42, repeat: int = 3
) -> tuple[float, float]:
    """ns per op of the mixed trace: (slabcache core, glibc malloc), same run."""

def slab_hold_trace(
    ops: int, max_live: int, seed: int, system: bool, callback: Callable[[], Any]
) -> tuple[int, int, Any, Any, dict[str, Any] | None]:
    """Runs the mixed trace (every byte written), calling ``callback`` before
    the first allocation and while the final live set is held: (peak live
    requested bytes, final live requested bytes, first result, second result,
    stats or None for glibc)."""

def slab_hold_objects(count: int, size: int, system: bool, callback: Callable[[], Any]) -> Any:
    """Holds ``count`` objects of ``size`` bytes while ``callback`` runs."""

# ---- B-skiplist (skiplist.rs) ------------------------------------------------

# ---- INT8 vector search (vector.rs) --------------------------------------------

class Int8Index:
    """INT8 index; use ``slabcache.Int8Index`` (which validates and converts input)."""

    def __init__(
        self,
        dim: int,
        metric: str = "cosine",
        index_type: str = "flat",
        nlist: int = 0,
        nprobe: int = 8,
        kernel: str | None = None,
    ) -> None: ...
    def add(
        self, vectors: npt.NDArray[np.float32], ids: npt.NDArray[np.int64] | None = None
    ) -> npt.NDArray[np.int64]: ...
    def search(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...
    def remove(self, ids: npt.NDArray[np.int64]) -> int: ...
    def train(self, vectors: npt.NDArray[np.float32]) -> None: ...
    def __len__(self) -> int: ...
    def __contains__(self, id: int) -> bool: ...
    def save(self, path: str) -> None: ...
    @staticmethod
    def load(path: str, kernel: str | None = None) -> Int8Index: ...
    @property
    def dim(self) -> int: ...
    @property
    def metric(self) -> str: ...
    @property
    def kernel(self) -> str: ...
    def set_kernel(self, name: str) -> None: ...
    @property
    def index_type(self) -> str: ...
    @property
    def nlist(self) -> int: ...
    @property
    def nprobe(self) -> int: ...
    @nprobe.setter
    def nprobe(self, value: int) -> None: ...
    @property
    def is_trained(self) -> bool: ...
    @property
    def memory_bytes(self) -> int: ...

def int8_kernels() -> list[str]:
    """INT8 kernels this CPU supports, scalar first."""

def int8_default_kernel() -> str:
    """The kernel ``SLABCACHE_SIMD`` selects, or the fastest."""

def int8_dot(
    a: npt.NDArray[np.int8], b: npt.NDArray[np.int8], kernel: str | None = None
) -> npt.NDArray[np.int32]:
    """Row-wise exact INT8 dot products."""

def int8_quantize(
    x: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """Symmetric per-row INT8 quantization: (codes, scales)."""

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


class BlockManagerCore:
    """Native block manager; use ``slabcache.blocks.BlockManager`` instead."""

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        num_cpu_blocks: int = 0,
        enable_prefix_caching: bool = True,
        watermark: float = 0.0,
        enable_events: bool = False,
    ) -> None: ...
    @property
    def num_blocks(self) -> int: ...
    @property
    def block_size(self) -> int: ...
    @property
    def num_cpu_blocks(self) -> int: ...
    @property
    def enable_prefix_caching(self) -> bool: ...
    @property
    def watermark(self) -> float: ...
    @property
    def num_free_blocks(self) -> int: ...
    @property
    def num_requests(self) -> int: ...
    def contains(self, req_id: int) -> bool: ...
    def get_computed_blocks(
        self,
        req_id: int,
        token_ids: npt.NDArray[np.int32] | list[int],
        extra_key: int = 0,
        program: int | None = None,
    ) -> tuple[npt.NDArray[np.int32], int]: ...
    def allocate_slots(
        self,
        req_id: int,
        num_new_tokens: int,
        token_ids: npt.NDArray[np.int32] | list[int] | None = None,
        num_lookahead_tokens: int = 0,
        now: float = 0.0,
    ) -> npt.NDArray[np.int32] | None: ...
    def free(self, req_id: int) -> None: ...
    def fork(self, parent_id: int, child_id: int) -> None: ...
    def pin(
        self, req_id: int, ttl_s: float, program: int | None = None, now: float = 0.0
    ) -> None: ...
    def unpin(self, program: int) -> None: ...
    def expire_pins(self, now: float) -> int: ...
    def pin_deadline(self, program: int) -> float | None: ...
    def swap_out(self, req_id: int) -> npt.NDArray[np.int32] | None: ...
    def swap_in(self, req_id: int, now: float = 0.0) -> npt.NDArray[np.int32] | None: ...
    def block_table(self, req_id: int) -> npt.NDArray[np.int32]: ...
    def host_block_table(self, req_id: int) -> npt.NDArray[np.int32] | None: ...
    def num_computed_tokens(self, req_id: int) -> int: ...
    def block_tables(
        self, req_ids: npt.NDArray[np.int64], pad: int = -1, min_width: int = 0
    ) -> npt.NDArray[np.int32]: ...
    def step(
        self,
        req_ids: npt.NDArray[np.int64],
        num_new_tokens: npt.NDArray[np.int64],
        token_ids: npt.NDArray[np.int32],
        token_offsets: npt.NDArray[np.int64],
        extra_keys: npt.NDArray[np.uint64] | None = None,
        programs: npt.NDArray[np.int64] | None = None,
        finished: npt.NDArray[np.int64] | None = None,
        num_lookahead_tokens: int = 0,
        now: float = 0.0,
        want_tables: bool = False,
        pad: int = -1,
        fcfs: bool = False,
    ) -> tuple[
        npt.NDArray[np.int32],
        npt.NDArray[np.int32],
        npt.NDArray[np.int32],
        npt.NDArray[np.int64],
        npt.NDArray[np.int32],
        npt.NDArray[np.int32] | None,
    ]:
        """(num_scheduled, num_cached_tokens, new_blocks, new_block_offsets, copies, tables)."""
    def drain_copies(self) -> npt.NDArray[np.int32]: ...
    def drain_events(
        self,
    ) -> tuple[
        npt.NDArray[np.uint8],
        npt.NDArray[np.int32],
        npt.NDArray[np.uint8],
        npt.NDArray[np.uint8],
        npt.NDArray[np.bool_],
    ]:
        """(kinds, block_ids, hashes (n, 32), parents (n, 32), has_parent)."""
    def set_events_enabled(self, on: bool) -> None: ...
    def reset_prefix_cache(self) -> bool: ...
    def ref_count(self, block_id: int) -> int: ...
    def free_block_order(self) -> npt.NDArray[np.int32]: ...
    def stats(self) -> dict[str, float]: ...
    def check_invariants(self) -> None: ...

def block_hashes(
    token_ids: npt.NDArray[np.int32], block_size: int, extra_key: int = 0
) -> npt.NDArray[np.uint8]:
    """Chained BLAKE3 hashes of every full block: uint8 (n, 32)."""
