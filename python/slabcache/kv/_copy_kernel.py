"""The batched short-range copy: one Triton launch moves many small KV blocks.

Each program copies one chunk of one block of one layer between the device
pool and the host tier's registered slab through its mapped (unified)
address, so short swap rows cost one launch instead of one DMA each. Offsets
are passed in 16-byte units and scaled inside the kernel, which tells Triton
every access is 16-byte aligned (so it emits 128-bit loads and stores).
Imported only on CUDA; an ImportError (no Triton) makes
:class:`~slabcache.kv.KVTransfer` fall back to one copy per short block.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

__all__ = ["CONFIG", "copy_blocks_kernel"]

#: Words (int32) per program and warps per program; bench/kv_device.py measures others.
CONFIG = {"block": 4096, "num_warps": 8}


@triton.jit
def _copy_words(src, dst, src_off16, dst_off16, nwords, BLOCK: tl.constexpr):
    i = tl.program_id(0)
    c = tl.program_id(1)
    so = tl.load(src_off16 + i) * 4  # 16-byte units -> int32 words, known multiple of 4
    do = tl.load(dst_off16 + i) * 4
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
    dev_base: int,
    host_base: int,
    src_off16: Any,
    dst_off16: Any,
    nbytes: int,
    *,
    to_host: bool,
) -> None:
    """Copies ``nbytes`` (a multiple of 16) from ``src + 16 * src_off16[i]`` to ``dst + 16 *
    dst_off16[i]`` for every ``i`` (int64 CUDA tensors); src/dst are the device base and
    the host base in the direction given."""
    dev, host = _Address(dev_base), _Address(host_base)
    src, dst = (dev, host) if to_host else (host, dev)
    n = src_off16.numel()
    nwords = nbytes // 4
    block = CONFIG["block"]
    grid = (n, triton.cdiv(nwords, block))
    _copy_words[grid](
        src, dst, src_off16, dst_off16, nwords, BLOCK=block, num_warps=CONFIG["num_warps"]
    )
