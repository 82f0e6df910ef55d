"""The shape of one KV block, and the fingerprint that names it on disk.

Every tier stores a block the same way: for each layer, its K and V for
``block_size`` tokens, ``[2, block_size, num_kv_heads, head_dim]`` in
``dtype``. The device pool is ``[num_blocks, 2, block_size, num_kv_heads,
head_dim]`` per layer (block-major, the layout FlashInfer's paged KV cache
calls NHD): one block of one layer is one contiguous span of
``block_bytes`` bytes, so ``n`` consecutive block ids are one contiguous
copy. (vLLM's FlashAttention layout ``[2, num_blocks, ...]`` would split
every copy in two, one for K and one for V.)

    >>> lay = KVLayout(num_layers=2, block_size=16, num_kv_heads=8, head_dim=128, dtype="float16")
    >>> lay.block_bytes, lay.block_bytes_all_layers
    (65536, 131072)
    >>> len(lay.fingerprint("tiny-llama"))
    16
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..errors import InvalidArgumentError, InvalidTypeError

__all__ = ["DTYPE_SIZES", "KVLayout"]

#: Element sizes of the dtypes a pool may hold (numpy has no bfloat16: the
#: CPU path stores float16/float32; the bytes move the same way for any).
DTYPE_SIZES: dict[str, int] = {"float16": 2, "bfloat16": 2, "float32": 4, "uint8": 1, "int8": 1}


@dataclass(frozen=True)
class KVLayout:
    """Per-layer KV block shape: ``[2, block_size, num_kv_heads, head_dim]`` of ``dtype``."""

    num_layers: int
    block_size: int
    num_kv_heads: int
    head_dim: int
    dtype: str = "float16"

    def __post_init__(self) -> None:
        for name in ("num_layers", "block_size", "num_kv_heads", "head_dim"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise InvalidTypeError(f"{name} must be an int, got {type(v).__name__}")
            if v <= 0:
                raise InvalidArgumentError(f"{name} must be positive, got {v}")
        if self.dtype not in DTYPE_SIZES:
            raise InvalidArgumentError(
                f"dtype must be one of {sorted(DTYPE_SIZES)}, got {self.dtype!r}"
            )

    @property
    def itemsize(self) -> int:
        return DTYPE_SIZES[self.dtype]

    @property
    def block_shape(self) -> tuple[int, int, int, int]:
        """One block of one layer: ``(2, block_size, num_kv_heads, head_dim)``."""
        return (2, self.block_size, self.num_kv_heads, self.head_dim)

    @property
    def block_bytes(self) -> int:
        """Bytes of one block of one layer (K and V)."""
        return 2 * self.block_size * self.num_kv_heads * self.head_dim * self.itemsize

    @property
    def block_bytes_all_layers(self) -> int:
        """Bytes of one block over every layer: what the host and disk tiers store per block."""
        return self.num_layers * self.block_bytes

    def fingerprint(self, model: str = "") -> bytes:
        """16 bytes naming ``model`` + this layout; part of every disk-tier key, so KV
        written by another model, dtype or block shape can never be read back as a hit."""
        text = (
            f"slabcache-kv-v1|{model}|L{self.num_layers}|bs{self.block_size}|"
            f"h{self.num_kv_heads}|d{self.head_dim}|{self.dtype}|[nb,2,bs,h,d]"
        )
        return hashlib.blake2b(text.encode(), digest_size=16).digest()
