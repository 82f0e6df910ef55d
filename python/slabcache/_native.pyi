"""Type stubs for the Rust extension module ``slabcache._native``.

Each subsystem keeps its stubs in its own section below.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__version__: str

# ---- info -----------------------------------------------------------------

def cpu_features() -> dict[str, bool]:
    """SIMD features of this CPU, e.g. ``{"avx2": True, "avx512f": False, ...}``."""

def build_info() -> dict[str, str]:
    """``version``, ``profile`` ("release" or "debug"), ``target_arch``, ``target_os``."""

# ---- slab allocator (slab.rs) ----------------------------------------------

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

# ---- KV block pool (blocks.rs) -------------------------------------------------
