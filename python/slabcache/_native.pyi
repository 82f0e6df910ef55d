"""Type stubs for the Rust extension module ``slabcache._native``.

Each subsystem keeps its stubs in its own section below.
"""

from __future__ import annotations

__version__: str

# ---- info -----------------------------------------------------------------

def cpu_features() -> dict[str, bool]:
    """SIMD features of this CPU, e.g. ``{"avx2": True, "avx512f": False, ...}``."""

def build_info() -> dict[str, str]:
    """``version``, ``profile`` ("release" or "debug"), ``target_arch``, ``target_os``."""

# ---- slab allocator (slab.rs) ----------------------------------------------

# ---- B-skiplist (skiplist.rs) ------------------------------------------------

from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

class BSkipListCore:
    """The native concurrent B-skiplist; ``slabcache.skiplist.BSkipList`` subclasses it.

    The mapping dunders are native; the ``_``-prefixed methods are the subclass's building
    blocks (``mode``: 0 keys, 1 values, 2 items).
    """

    def __new__(cls, key_type: str = "int", *args: Any, **kwargs: Any) -> BSkipListCore: ...
    @property
    def key_type(self) -> str: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: Any) -> bool: ...
    def __getitem__(self, key: Any) -> Any: ...
    def __setitem__(self, key: Any, value: Any) -> None: ...
    def __delitem__(self, key: Any) -> None: ...
    def _contains(self, key: Any) -> bool: ...
    def _get(self, key: Any, default: Any) -> Any: ...
    def _insert(self, key: Any, value: Any) -> None: ...
    def _remove(self, key: Any, default: Any) -> Any: ...
    def _setdefault(self, key: Any, value: Any) -> Any: ...
    def _first(self) -> tuple[Any, Any] | None: ...
    def _last(self) -> tuple[Any, Any] | None: ...
    def _pop_first(self) -> tuple[Any, Any] | None: ...
    def _lower_bound(self, key: Any, inclusive: bool) -> tuple[Any, Any] | None: ...
    def _upper_bound(self, key: Any, inclusive: bool) -> tuple[Any, Any] | None: ...
    def _clear(self) -> None: ...
    def _iter(
        self,
        lo: Any | None,
        hi: Any | None,
        lo_inclusive: bool,
        hi_inclusive: bool,
        reverse: bool,
        mode: int,
    ) -> BSkipListIter: ...
    def _update_many_numeric(self, keys: np.ndarray, values: np.ndarray) -> None:
        """int64 (int map) / float64 (float map) keys, int64 values; GIL released."""
    def _update_many_objects(self, keys: Any, values: Any) -> None: ...
    def _get_many(self, keys: Any) -> tuple[np.ndarray, np.ndarray]: ...
    def _range_arrays(
        self, lo: Any | None, hi: Any | None, lo_inclusive: bool, hi_inclusive: bool
    ) -> tuple[np.ndarray, np.ndarray]: ...

class BSkipListIter(Iterator[Any]):
    """A lazy range iterator, valid while other threads write the map."""

    def __iter__(self) -> BSkipListIter: ...
    def __next__(self) -> Any: ...

# ---- INT8 vector search (vector.rs) --------------------------------------------

# ---- blob arena (arena.rs) -----------------------------------------------------

# ---- KV block pool (blocks.rs) -------------------------------------------------
