"""Type stubs for the Rust extension module ``slabcache._native``.

Each subsystem keeps its stubs in its own section below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

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

# ---- blob arena (arena.rs) -----------------------------------------------------

# ---- KV block pool (blocks.rs) -------------------------------------------------
