"""The device tier: one KV tensor per layer, created through DLPack.

``KVCachePool`` allocates ``[num_blocks, 2, block_size, num_kv_heads,
head_dim]`` per layer with the framework the engine uses (numpy on CPU,
torch or CuPy on CUDA) and works on it through a DLPack view: the data
plane (copies, gathers) runs on torch on CUDA and on numpy on CPU, so an
engine written with CuPy shares the very same memory. Block ids are the
:class:`~slabcache.BlockManager`'s.

    >>> import numpy as np
    >>> from slabcache.kv import KVLayout, KVCachePool
    >>> pool = KVCachePool(KVLayout(2, 4, 2, 8, "float32"), num_blocks=6)
    >>> pool.layer(0).shape
    (6, 2, 4, 2, 8)
    >>> pool.layer(0)[1] = 1.0
    >>> pool.copy_blocks(np.array([[1, 5]], dtype=np.int32))   # copy-on-write: 1 -> 5
    >>> float(pool.layer(0)[5].sum())
    128.0
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ..errors import InvalidArgumentError, InvalidTypeError
from .layout import KVLayout

__all__ = ["Framework", "KVCachePool"]

Framework = Literal["numpy", "torch", "cupy"]


def _torch() -> Any:
    try:
        import torch
    except ImportError:  # pragma: no cover - depends on the machine
        raise InvalidArgumentError("device='cuda' needs torch installed") from None
    return torch


def _block_ids(ids: npt.ArrayLike, limit: int, name: str) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.dtype.kind not in "iu":
        raise InvalidTypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False).reshape(-1)
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= limit):
        raise InvalidArgumentError(f"{name} must be in [0, {limit}), got {arr.min()}..{arr.max()}")
    return arr


class KVCachePool:
    """Paged KV storage on the device: one ``[num_blocks, 2, block_size, H, D]`` tensor per layer.

    Args:
        layout: the block shape (:class:`KVLayout`).
        num_blocks: blocks per layer (the BlockManager's ``num_blocks``).
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:N"``).
        framework: who allocates the tensors: ``"numpy"`` (CPU only), ``"torch"``
            or ``"cupy"`` (CUDA); :meth:`layer` returns that framework's array.
            Default: numpy on CPU, torch on CUDA.

    Raises ``InvalidArgumentError`` for an impossible combination (numpy on
    CUDA, bfloat16 in numpy, zero blocks).
    """

    def __init__(
        self,
        layout: KVLayout,
        num_blocks: int,
        *,
        device: str = "cpu",
        framework: Framework | None = None,
    ) -> None:
        if not isinstance(layout, KVLayout):
            raise InvalidTypeError(f"layout must be a KVLayout, got {type(layout).__name__}")
        if not isinstance(num_blocks, int | np.integer) or isinstance(num_blocks, bool):
            raise InvalidTypeError("num_blocks must be an int")
        if num_blocks <= 0:
            raise InvalidArgumentError(f"num_blocks must be positive, got {num_blocks}")
        self.layout = layout
        self.num_blocks = int(num_blocks)
        self.is_cuda = device.startswith("cuda")
        if not self.is_cuda and device != "cpu":
            raise InvalidArgumentError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
        self.device = device
        fw = framework or ("torch" if self.is_cuda else "numpy")
        if fw not in ("numpy", "torch", "cupy"):
            raise InvalidArgumentError(f"framework must be numpy, torch or cupy, got {fw!r}")
        if fw == "numpy" and self.is_cuda:
            raise InvalidArgumentError("numpy cannot allocate on CUDA: use torch or cupy")
        if fw == "cupy" and not self.is_cuda:
            raise InvalidArgumentError("cupy allocates on CUDA only")
        self.framework: Framework = fw
        shape = (self.num_blocks, *layout.block_shape)
        self._native = [self._allocate(shape) for _ in range(layout.num_layers)]
        # The data plane's byte views [num_blocks, block_bytes], taken through DLPack.
        self._bytes = [self._byte_view(x) for x in self._native]

    # ---- creation -------------------------------------------------------------

    def _allocate(self, shape: tuple[int, ...]) -> Any:
        dt = self.layout.dtype
        if self.framework == "numpy":
            if dt == "bfloat16":
                raise InvalidArgumentError("numpy has no bfloat16: use float16/float32 on CPU")
            return np.zeros(shape, dtype=dt)
        if self.framework == "cupy":
            import cupy

            if dt == "bfloat16":
                raise InvalidArgumentError("cupy has no bfloat16: use framework='torch'")
            with cupy.cuda.Device(self._device_index()):
                return cupy.zeros(shape, dtype=dt)
        torch = _torch()
        return torch.zeros(shape, dtype=getattr(torch, dt), device=self.device)

    def _device_index(self) -> int:
        return int(self.device.split(":")[1]) if ":" in self.device else 0

    def _byte_view(self, x: Any) -> Any:
        nb, bb = self.num_blocks, self.layout.block_bytes
        if self.is_cuda:
            torch = _torch()
            t = torch.from_dlpack(x)  # zero-copy for cupy arrays; identity for torch
            return t.view(torch.uint8).view(nb, bb)
        arr = np.from_dlpack(x)
        return arr.view(np.uint8).reshape(nb, bb)

    # ---- access -----------------------------------------------------------------

    def layer(self, i: int) -> Any:
        """Layer ``i``'s KV tensor, ``[num_blocks, 2, block_size, H, D]``, in the pool's
        framework (any DLPack consumer can share it: ``torch.from_dlpack(pool.layer(i))``)."""
        return self._native[i]

    def layer_bytes(self, i: int) -> Any:
        """Layer ``i`` as ``uint8 [num_blocks, block_bytes]`` (numpy on CPU, torch on CUDA)."""
        return self._bytes[i]

    @property
    def nbytes(self) -> int:
        return self.num_blocks * self.layout.block_bytes_all_layers

    def _idx(self, ids: np.ndarray) -> Any:
        if self.is_cuda:
            return _torch().as_tensor(ids, device=self.device)
        return ids

    # ---- block copies -------------------------------------------------------------

    def copy_blocks(self, pairs: npt.ArrayLike) -> None:
        """Executes copy-on-write copies ``(src, dst)`` (``BlockManager.drain_copies()``)
        in every layer: one batched index copy per layer (on CUDA on the current stream,
        so the forward pass that follows sees them)."""
        p = np.asarray(pairs)
        if p.size == 0:
            return
        if p.ndim != 2 or p.shape[1] != 2:
            raise InvalidArgumentError(f"pairs must be (k, 2), got shape {p.shape}")
        src = self._idx(_block_ids(p[:, 0], self.num_blocks, "src"))
        dst = self._idx(_block_ids(p[:, 1], self.num_blocks, "dst"))
        for b in self._bytes:
            if self.is_cuda:
                b.index_copy_(0, dst, b.index_select(0, src))
            else:
                b[dst] = b[src]

    def read_blocks(self, block_ids: npt.ArrayLike) -> np.ndarray:
        """Blocks' bytes over every layer as host ``uint8 [n, num_layers * block_bytes]``
        (layer-major inside a row: the disk tier's value format). Synchronous."""
        ids = _block_ids(block_ids, self.num_blocks, "block_ids")
        if self.is_cuda:
            torch = _torch()
            idx = self._idx(ids)
            rows = torch.cat([b.index_select(0, idx) for b in self._bytes], dim=1)
            host: np.ndarray = rows.cpu().numpy()
            return host
        return np.concatenate([b[ids] for b in self._bytes], axis=1)

    def write_blocks(self, block_ids: npt.ArrayLike, rows: npt.ArrayLike) -> None:
        """Writes rows in :meth:`read_blocks`'s format into ``block_ids`` of every layer."""
        ids = _block_ids(block_ids, self.num_blocks, "block_ids")
        data = np.asarray(rows)
        want = (len(ids), self.layout.block_bytes_all_layers)
        if data.dtype != np.uint8 or data.shape != want:
            raise InvalidArgumentError(f"rows must be uint8 {want}, got {data.dtype} {data.shape}")
        bb = self.layout.block_bytes
        if self.is_cuda:
            torch = _torch()
            src = torch.from_numpy(np.ascontiguousarray(data))
            # from pinned staging (see staging()) the upload is one async DMA
            pinned = src.is_pinned()
            dev = src.to(self.device, non_blocking=pinned)
            if pinned:  # staging() waits for this before handing the buffer out again
                self._staging_event = torch.cuda.Event()
                self._staging_event.record()
            idx = self._idx(ids)
            for g, b in enumerate(self._bytes):
                b.index_copy_(0, idx, dev[:, g * bb : (g + 1) * bb])
            return
        for g, b in enumerate(self._bytes):
            b[ids] = data[:, g * bb : (g + 1) * bb]

    def staging(self, num_blocks: int) -> np.ndarray:
        """A reusable host buffer ``uint8 [num_blocks, num_layers * block_bytes]`` for
        loads into the pool: pinned on CUDA (so :meth:`write_blocks` from it is DMA).
        Valid until the next call with a larger ``num_blocks``."""
        row = self.layout.block_bytes_all_layers
        ev = getattr(self, "_staging_event", None)
        if ev is not None:  # the last upload from it may still be in flight
            ev.synchronize()
            self._staging_event = None
        cur = getattr(self, "_staging", None)
        if cur is None or cur.shape[0] < num_blocks:
            n = max(num_blocks, 2 * (0 if cur is None else cur.shape[0]))
            if self.is_cuda:
                torch = _torch()
                t = torch.empty((n, row), dtype=torch.uint8, pin_memory=True)
                self._staging_t = t
                cur = t.numpy()
            else:
                cur = np.empty((n, row), dtype=np.uint8)
            self._staging = cur
        return cur[:num_blocks]

    # ---- token-level access for attention -------------------------------------------

    def write_tokens(self, layer: int, slots: Any, k: Any, v: Any) -> None:
        """Stores ``k``/``v`` ``[n, H, D]`` of tokens at ``slots`` (``block * block_size +
        offset``, the slot mapping a paged-attention engine passes) in layer ``layer``."""
        t = self._native[layer]
        bs = self.layout.block_size
        t[slots // bs, 0, slots % bs] = k
        t[slots // bs, 1, slots % bs] = v

    def gather_tokens(self, layer: int, block_table: Any, num_tokens: int) -> tuple[Any, Any]:
        """K and V ``[num_tokens, H, D]`` of one sequence, read through its block table."""
        t = self._native[layer]
        bs = self.layout.block_size
        if self.framework == "numpy":
            pos = np.arange(num_tokens)
        else:
            pos = _torch().arange(num_tokens, device=self.device)
        blocks = block_table[pos // bs]
        return t[blocks, 0, pos % bs], t[blocks, 1, pos % bs]

    def __repr__(self) -> str:
        lay = self.layout
        return (
            f"KVCachePool({lay.num_layers} x [{self.num_blocks}, 2, {lay.block_size}, "
            f"{lay.num_kv_heads}, {lay.head_dim}] {lay.dtype}, {self.framework} on {self.device})"
        )
