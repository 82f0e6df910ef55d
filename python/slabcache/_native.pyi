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

# ---- INT8 vector search (vector.rs) --------------------------------------------

# ---- blob arena (arena.rs) -----------------------------------------------------

# ---- KV block pool (blocks.rs) -------------------------------------------------
