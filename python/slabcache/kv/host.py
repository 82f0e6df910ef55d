"""The host tier: KV blocks in memory carved by slabcache's own slab allocator.

The memory comes from :class:`~slabcache.SlabAllocator` in a few large
slabs (allocations above 32 KiB are page-aligned mappings of their own), and
on CUDA each slab is registered with the driver (``cudaHostRegister``,
portable + mapped) so host<->device copies are DMA and a kernel may read or
write the slab through its unified address. The BlockManager's host block
id ``h`` lives in slab ``h // slab_blocks``; inside a slab the layout is
layer-major, ``[num_layers, slab_blocks, block_bytes]``, so consecutive
host ids of one layer are one contiguous span.

    >>> import numpy as np
    >>> from slabcache.kv import KVLayout, HostKVTier
    >>> host = HostKVTier(KVLayout(2, 4, 2, 8, "float32"), num_blocks=10, slab_blocks=4)
    >>> host.num_slabs, host.locate(5)
    (3, (1, 1))
    >>> host.block_view(layer=1, slab=1, start=1, n=2).shape
    (2, 512)
    >>> host.close()
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..allocator import Allocation, SlabAllocator
from ..errors import (
    BufferExportedError,
    ClosedError,
    InvalidArgumentError,
    InvalidTypeError,
    OutOfMemoryError,
)
from .layout import KVLayout

__all__ = ["HostKVTier"]

# cudaHostRegisterPortable | cudaHostRegisterMapped: usable from every context,
# and addressable by kernels (the batched short-range copy kernel reads/writes it).
_REGISTER_FLAGS = 0x01 | 0x02
_DEFAULT_SLAB_BYTES = 1 << 30
# Allocations above the allocator's largest class (32 KiB) are page-aligned mappings of
# their own; slabs are at least this big and whole pages, so no two slabs share a page
# (cudaHostRegister works on pages, and a page registered twice is an error).
_MIN_SLAB_BYTES = 64 << 10
_PAGE = 4096


class HostKVTier:
    """``num_blocks`` host KV blocks (all layers each) in slab-allocated, registered memory.

    Args:
        layout: the block shape.
        num_blocks: host blocks (the BlockManager's ``num_cpu_blocks``).
        allocator: the :class:`~slabcache.SlabAllocator` to carve from (a new one if None).
        slab_blocks: blocks per slab (default: as many as fit in 1 GiB). A swap range
            crossing a slab boundary is split there, so bigger slabs mean fewer copies.
        pin: register the slabs with CUDA (``None``: when torch sees a GPU).

    :meth:`close` unregisters and frees the slabs (views must be gone by then).
    """

    def __init__(
        self,
        layout: KVLayout,
        num_blocks: int,
        *,
        allocator: SlabAllocator | None = None,
        slab_blocks: int | None = None,
        pin: bool | None = None,
    ) -> None:
        if not isinstance(num_blocks, int | np.integer) or isinstance(num_blocks, bool):
            raise InvalidTypeError("num_blocks must be an int")
        if num_blocks <= 0:
            raise InvalidArgumentError(f"num_blocks must be positive, got {num_blocks}")
        self.layout = layout
        self.num_blocks = int(num_blocks)
        per_block = layout.block_bytes_all_layers
        if slab_blocks is None:
            slab_blocks = max(1, _DEFAULT_SLAB_BYTES // per_block)
        if slab_blocks <= 0:
            raise InvalidArgumentError(f"slab_blocks must be positive, got {slab_blocks}")
        self.slab_blocks = int(min(slab_blocks, self.num_blocks))
        self.num_slabs = -(-self.num_blocks // self.slab_blocks)
        self.allocator = allocator if allocator is not None else SlabAllocator()
        self._slabs: list[Allocation] = []
        self._views: list[np.ndarray] = []  # per slab: uint8 [L, slab_blocks, block_bytes]
        self._torch_views: list[Any] | None = None
        self.pinned = False
        self._closed = False
        try:
            for _ in range(self.num_slabs):
                size = max(self.slab_blocks * per_block, _MIN_SLAB_BYTES)
                a = self.allocator.alloc(-(-size // _PAGE) * _PAGE, zero=True)
                self._slabs.append(a)
                used = self.slab_blocks * per_block
                self._views.append(
                    a.view(np.uint8)[:used].reshape(
                        layout.num_layers, self.slab_blocks, layout.block_bytes
                    )
                )
        except MemoryError as e:
            self.close()
            raise OutOfMemoryError(f"host tier of {self.nbytes} bytes: {e}") from e
        if pin is None:
            pin = _cuda_available()
        if pin:
            self._register()

    @property
    def nbytes(self) -> int:
        return self.num_slabs * self.slab_blocks * self.layout.block_bytes_all_layers

    @property
    def slab_addresses(self) -> list[int]:
        """Base address of each slab (what was registered with CUDA)."""
        return [a.address for a in self._slabs]

    def locate(self, host_block: int) -> tuple[int, int]:
        """``(slab, index in slab)`` of a host block id."""
        if not 0 <= host_block < self.num_blocks:
            raise InvalidArgumentError(f"host block {host_block} not in [0, {self.num_blocks})")
        return divmod(int(host_block), self.slab_blocks)

    def block_view(self, layer: int, slab: int, start: int, n: int) -> np.ndarray:
        """uint8 ``[n, block_bytes]`` view of ``n`` consecutive blocks of one layer in one slab."""
        self._check_open()
        return self._views[slab][layer, start : start + n]

    def torch_block_view(self, layer: int, slab: int, start: int, n: int) -> Any:
        """The same span as a CPU torch tensor sharing the (registered) memory."""
        self._check_open()
        if self._torch_views is None:
            import torch

            self._torch_views = [torch.from_numpy(v) for v in self._views]
        return self._torch_views[slab][layer, start : start + n]

    def block_address(self, layer: int, host_block: int) -> int:
        """Address of one block of one layer (for the batched copy kernel)."""
        slab, j = self.locate(host_block)
        lay = self.layout
        return self._slabs[slab].address + (layer * self.slab_blocks + j) * lay.block_bytes

    def read(self, host_blocks: np.ndarray) -> np.ndarray:
        """Host blocks' bytes, every layer, as ``uint8 [n, num_layers * block_bytes]``."""
        self._check_open()
        rows = np.empty((len(host_blocks), self.layout.block_bytes_all_layers), dtype=np.uint8)
        bb = self.layout.block_bytes
        for i, h in enumerate(np.asarray(host_blocks, dtype=np.int64)):
            s, j = self.locate(int(h))
            for g in range(self.layout.num_layers):
                rows[i, g * bb : (g + 1) * bb] = self._views[s][g, j]
        return rows

    # ---- CUDA registration ------------------------------------------------------

    def _register(self) -> None:
        import torch

        cudart = torch.cuda.cudart()
        for a in self._slabs:
            res = cudart.cudaHostRegister(a.address, a.nbytes, _REGISTER_FLAGS)
            if int(res) == _CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED:
                # An earlier owner of these pages freed them while still registered (a tier
                # collected without close()): we own the pages now, so renew the registration.
                cudart.cudaHostUnregister(a.address)
                res = cudart.cudaHostRegister(a.address, a.nbytes, _REGISTER_FLAGS)
            torch.cuda.check_error(res)
        self.pinned = True

    def close(self) -> None:
        """Unregisters (CUDA) and frees the slabs back to the allocator. Idempotent.

        Raises ``BufferExportedError`` while a view of a slab is still alive (a numpy
        array or tensor taken from :meth:`block_view`): the tier is then closed for use,
        the slabs still held stay allocated (unregistered), and a later ``close()``
        frees them.
        """
        if getattr(self, "_closed", False) and not self._slabs:
            return
        self._closed = True
        self._torch_views = None
        self._views = []
        if self.pinned:
            import torch

            cudart = torch.cuda.cudart()
            for a in self._slabs:
                cudart.cudaHostUnregister(a.address)
            self.pinned = False
        kept: list[Allocation] = []
        error: BufferExportedError | None = None
        for a in self._slabs:
            try:
                self.allocator.free(a)
            except BufferExportedError as e:
                kept.append(a)
                error = e
        self._slabs = kept
        if error is not None:
            raise error

    def __del__(self) -> None:
        # A tier dropped without close() must still unregister its slabs before the allocator
        # frees (and may hand out again) their pages: a stale registration makes the next
        # cudaHostRegister of that range fail.
        try:
            self.close()
        except Exception:  # noqa: BLE001 - best effort at teardown; close() says what failed
            pass

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("host tier is closed")

    def __enter__(self) -> HostKVTier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"HostKVTier({self.num_blocks} blocks in {self.num_slabs} slabs of "
            f"{self.slab_blocks}, {self.nbytes} B, pinned={self.pinned})"
        )


#: cudaErrorHostMemoryAlreadyRegistered
_CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED = 712


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
