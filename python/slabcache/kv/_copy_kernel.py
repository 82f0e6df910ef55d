"""The batched short-range copy: one Triton launch moves many small KV blocks.

Each program copies one block of one layer, 4-byte words, between the device
pool and the host tier's registered slab through its mapped (unified) address,
so short swap rows cost one launch instead of one DMA each. Imported only on
CUDA; an ImportError (no Triton) makes :class:`~slabcache.kv.KVTransfer` fall
back to one copy per short block.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

__all__ = ["copy_blocks_kernel"]

_BLOCK = 2048


@triton.jit
def _copy_words(src, dst, src_off, dst_off, nwords, BLOCK: tl.constexpr):
    i = tl.program_id(0)
    c = tl.program_id(1)
    so = tl.load(src_off + i)
    do = tl.load(dst_off + i)
    offs = c * BLOCK + tl.arange(0, BLOCK)
    m = offs < nwords
    x = tl.load(src + so + offs, mask=m)
    tl.store(dst + do + offs, x, mask=m)


class _Address:
    """A raw address that Triton accepts as a pointer argument (it asks the driver for the
    device address of registered host memory itself)."""

    dtype = torch.int32

    def __init__(self, address: int) -> None:
        self._address = address

    def data_ptr(self) -> int:
        return self._address


def copy_blocks_kernel(
    dev_tensor: Any,
    dev_base: int,
    host_base: int,
    src_off: Any,
    dst_off: Any,
    nwords: int,
    *,
    to_host: bool,
) -> None:
    """Copies ``nwords`` int32 words from ``src + src_off[i]`` to ``dst + dst_off[i]``
    for every ``i`` (offsets in words, int64 CUDA tensors); src/dst are the device
    base and the host base in the direction given."""
    dev, host = _Address(dev_base), _Address(host_base)
    src, dst = (dev, host) if to_host else (host, dev)
    n = src_off.numel()
    grid = (n, triton.cdiv(nwords, _BLOCK))
    _copy_words[grid](src, dst, src_off, dst_off, nwords, BLOCK=_BLOCK, num_warps=8)
