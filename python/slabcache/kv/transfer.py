"""Executing the BlockManager's swap ranges between the device pool and the host tier.

``BlockManager.swap_out`` / ``swap_in`` return coalesced rows ``(src_start,
dst_start, n)``. :func:`plan_transfer` turns them into copies: a row becomes
one contiguous copy per layer (split only where it crosses a host slab
boundary); rows shorter than ``short_bytes`` per layer are gathered into one
batched copy instead, because a DMA of a few KiB costs its fixed latency,
not its bytes. :class:`KVTransfer` runs the plan: on CUDA asynchronously on
its own stream, long copies as ``cudaMemcpyAsync`` (through torch's
non-blocking ``copy_`` between the pool and the registered slabs) and short
ones as one Triton kernel that moves every short block through the host
tier's mapped address; on CPU with numpy.

    >>> import numpy as np
    >>> plan = plan_transfer(np.array([[0, 0, 8], [20, 8, 1]], np.int32), "out",
    ...                      slab_blocks=64, block_bytes=65536, short_bytes=131072)
    >>> plan.segments.tolist(), plan.short_device.tolist(), plan.short_host.tolist()
    ([[0, 0, 0, 8]], [20], [8])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ..errors import InvalidArgumentError
from .host import HostKVTier
from .pool import KVCachePool

__all__ = ["DEFAULT_SHORT_BYTES", "KVTransfer", "TransferHandle", "TransferPlan", "plan_transfer"]

#: Rows whose per-layer span is below this go to the batched kernel. Measured on an H200
#: over PCIe 5 (bench/RESULTS.md): the kernel beats one DMA per row up to 1 MiB (0.88 vs
#: 0.84 of the link's large-copy rate) and DMA wins from 2 MiB on.
DEFAULT_SHORT_BYTES = 2 << 20

Direction = Literal["out", "in"]


@dataclass
class TransferPlan:
    """Copies for one swap: ``segments`` int64 ``(m, 4)`` rows ``(device_start, slab,
    slab_start, n)``, each one contiguous copy per layer, and the short blocks
    ``short_device[i] <-> short_host[i]`` (host block ids) for the batched copy."""

    segments: np.ndarray
    short_device: np.ndarray
    short_host: np.ndarray

    @property
    def num_blocks(self) -> int:
        return int(self.segments[:, 3].sum()) + len(self.short_device)


def plan_transfer(
    ranges: npt.ArrayLike,
    direction: Direction,
    *,
    slab_blocks: int,
    block_bytes: int,
    short_bytes: int = DEFAULT_SHORT_BYTES,
    coalesce: bool = True,
) -> TransferPlan:
    """Splits swap rows at host slab boundaries and sets the short ones apart.

    ``direction="out"``: rows are ``(device_start, host_start, n)`` (``swap_out``);
    ``"in"``: ``(host_start, device_start, n)`` (``swap_in``). ``coalesce=False``
    makes one copy per block (the baseline the benchmark compares with).
    """
    r = np.asarray(ranges)
    if r.size == 0:
        r = np.zeros((0, 3), dtype=np.int64)
    if r.ndim != 2 or r.shape[1] != 3:
        raise InvalidArgumentError(f"ranges must be (k, 3), got shape {r.shape}")
    if direction not in ("out", "in"):
        raise InvalidArgumentError(f"direction must be 'out' or 'in', got {direction!r}")
    r = r.astype(np.int64)
    if r.size and (r.min() < 0 or (r[:, 2] <= 0).any()):
        raise InvalidArgumentError("ranges must hold non-negative starts and positive counts")
    dev, host = (r[:, 0], r[:, 1]) if direction == "out" else (r[:, 1], r[:, 0])
    segs: list[tuple[int, int, int, int]] = []
    short_d: list[np.ndarray] = []
    short_h: list[np.ndarray] = []
    for d0, h0, n in zip(dev.tolist(), host.tolist(), r[:, 2].tolist(), strict=True):
        if not coalesce:
            segs.extend((d0 + i, *divmod(h0 + i, slab_blocks), 1) for i in range(n))
            continue
        if n * block_bytes < short_bytes:
            short_d.append(np.arange(d0, d0 + n, dtype=np.int64))
            short_h.append(np.arange(h0, h0 + n, dtype=np.int64))
            continue
        while n > 0:  # split where the host range crosses into the next slab
            slab, j = divmod(h0, slab_blocks)
            take = min(n, slab_blocks - j)
            segs.append((d0, slab, j, take))
            d0, h0, n = d0 + take, h0 + take, n - take
    empty = np.zeros(0, dtype=np.int64)
    return TransferPlan(
        np.array(segs, dtype=np.int64).reshape(-1, 4),
        np.concatenate(short_d) if short_d else empty,
        np.concatenate(short_h) if short_h else empty,
    )


@dataclass
class TransferHandle:
    """A submitted transfer. On CUDA ``event`` is recorded on the transfer stream after
    the last copy: :meth:`wait` makes the engine's current stream wait for it (no host
    stall), :meth:`synchronize` blocks the host. On CPU the copy is already done."""

    event: Any = None
    num_copies: int = 0
    num_bytes: int = 0
    num_kernel_blocks: int = 0
    keep: list[Any] = field(default_factory=list)  # index tensors alive until the copy ran

    def wait(self, stream: Any = None) -> None:
        if self.event is not None:
            import torch

            (stream or torch.cuda.current_stream()).wait_event(self.event)

    def synchronize(self) -> None:
        if self.event is not None:
            self.event.synchronize()
            self.keep.clear()

    def done(self) -> bool:
        return self.event is None or bool(self.event.query())


class KVTransfer:
    """Moves blocks between a :class:`KVCachePool` and a :class:`HostKVTier`.

    Args:
        pool, host: the two tiers (same :class:`~slabcache.kv.KVLayout`).
        short_bytes: rows whose per-layer span is below this go to the batched copy.
        short_kernel: ``"auto"`` (Triton when importable on CUDA), ``"triton"`` or
            ``"none"`` (short rows then become one copy each).

    ``stats`` counts copies issued, bytes moved and blocks moved by the kernel.
    """

    def __init__(
        self,
        pool: KVCachePool,
        host: HostKVTier,
        *,
        short_bytes: int = DEFAULT_SHORT_BYTES,
        short_kernel: Literal["auto", "triton", "none"] = "auto",
    ) -> None:
        if pool.layout != host.layout:
            raise InvalidArgumentError(f"pool {pool.layout} and host {host.layout} differ")
        if short_kernel not in ("auto", "triton", "none"):
            raise InvalidArgumentError(
                f"short_kernel must be auto, triton or none: {short_kernel!r}"
            )
        if short_bytes < 0:
            raise InvalidArgumentError(f"short_bytes must be >= 0, got {short_bytes}")
        self.pool, self.host = pool, host
        self.short_bytes = int(short_bytes)
        self.stats = {"copies": 0, "bytes": 0, "kernel_blocks": 0, "transfers": 0}
        self._stream = None
        self._kernel = None
        self.kernel_error: str | None = None
        if pool.is_cuda:
            import torch

            if not host.pinned:
                raise InvalidArgumentError("a CUDA pool needs a pinned host tier (pin=True)")
            self._stream = torch.cuda.Stream(device=pool.device)
            if short_kernel != "none":
                try:
                    from ._copy_kernel import copy_blocks_kernel

                    if pool.layout.block_bytes % 16 == 0:
                        self._kernel = copy_blocks_kernel
                except ImportError as e:
                    if short_kernel == "triton":
                        raise
                    self.kernel_error = repr(e)
        if short_kernel == "none":
            self._kernel = None

    @property
    def stream(self) -> Any:
        """The CUDA stream transfers run on (None on CPU)."""
        return self._stream

    def swap_out(self, ranges: npt.ArrayLike, *, coalesce: bool = True) -> TransferHandle:
        """Device -> host for ``BlockManager.swap_out`` rows ``(device, host, n)``."""
        return self._run(ranges, "out", coalesce)

    def swap_in(self, ranges: npt.ArrayLike, *, coalesce: bool = True) -> TransferHandle:
        """Host -> device for ``BlockManager.swap_in`` rows ``(host, device, n)``."""
        return self._run(ranges, "in", coalesce)

    def plan(
        self, ranges: npt.ArrayLike, direction: Direction, coalesce: bool = True
    ) -> TransferPlan:
        """The copies :meth:`swap_out` (``"out"``) / :meth:`swap_in` (``"in"``) would issue."""
        lay = self.pool.layout
        short = self.short_bytes if (self._kernel is not None or not self.pool.is_cuda) else 0
        return plan_transfer(
            ranges,
            direction,
            slab_blocks=self.host.slab_blocks,
            block_bytes=lay.block_bytes,
            short_bytes=short,
            coalesce=coalesce,
        )

    def _run(self, ranges: npt.ArrayLike, direction: Direction, coalesce: bool) -> TransferHandle:
        plan = self.plan(ranges, direction, coalesce)
        self._check_bounds(plan)
        h = self._run_cuda(plan, direction) if self.pool.is_cuda else self._run_cpu(plan, direction)
        self.stats["copies"] += h.num_copies
        self.stats["bytes"] += h.num_bytes
        self.stats["kernel_blocks"] += h.num_kernel_blocks
        self.stats["transfers"] += 1
        return h

    def _check_bounds(self, plan: TransferPlan) -> None:
        seg = plan.segments
        if len(seg) and int((seg[:, 0] + seg[:, 3]).max()) > self.pool.num_blocks:
            raise InvalidArgumentError("a range runs past the device pool")
        hs = seg[:, 1] * self.host.slab_blocks + seg[:, 2] + seg[:, 3]
        if len(seg) and int(hs.max()) > self.host.num_blocks:
            raise InvalidArgumentError("a range runs past the host tier")
        if len(plan.short_device):
            if int(plan.short_device.max()) >= self.pool.num_blocks:
                raise InvalidArgumentError("a range runs past the device pool")
            if int(plan.short_host.max()) >= self.host.num_blocks:
                raise InvalidArgumentError("a range runs past the host tier")

    # ---- CPU: numpy -----------------------------------------------------------------

    def _run_cpu(self, plan: TransferPlan, direction: Direction) -> TransferHandle:
        lay, host = self.pool.layout, self.host
        copies = 0
        for d0, slab, j, n in plan.segments.tolist():
            for g in range(lay.num_layers):
                dv = self.pool.layer_bytes(g)[d0 : d0 + n]
                hv = host.block_view(g, slab, j, n)
                if direction == "out":
                    np.copyto(hv, dv)
                else:
                    np.copyto(dv, hv)
                copies += 1
        if len(plan.short_device):
            slabs, js = np.divmod(plan.short_host, host.slab_blocks)
            for s in np.unique(slabs).tolist():
                sel = slabs == s
                d, j = plan.short_device[sel], js[sel]
                for g in range(lay.num_layers):
                    full = host.block_view(g, s, 0, host.slab_blocks)
                    dv = self.pool.layer_bytes(g)
                    if direction == "out":
                        full[j] = dv[d]
                    else:
                        dv[d] = full[j]
                    copies += 1
        return TransferHandle(
            num_copies=copies,
            num_bytes=plan.num_blocks * lay.block_bytes_all_layers,
            num_kernel_blocks=len(plan.short_device),
        )

    # ---- CUDA: torch copies on a side stream + Triton for the short rows ------------

    def _run_cuda(self, plan: TransferPlan, direction: Direction) -> TransferHandle:
        import torch

        lay, host = self.pool.layout, self.host
        stream = self._stream
        assert stream is not None
        # The copies must see what the forward pass wrote (out) and must not write blocks
        # that queued work still reads (in): order after everything queued so far.
        stream.wait_stream(torch.cuda.current_stream(self.pool.device))
        handle = TransferHandle(num_bytes=plan.num_blocks * lay.block_bytes_all_layers)
        with torch.cuda.stream(stream):
            for d0, slab, j, n in plan.segments.tolist():
                for g in range(lay.num_layers):
                    dv = self.pool.layer_bytes(g)[d0 : d0 + n]
                    hv = host.torch_block_view(g, slab, j, n)
                    if direction == "out":
                        hv.copy_(dv, non_blocking=True)
                    else:
                        dv.copy_(hv, non_blocking=True)
                    handle.num_copies += 1
            if len(plan.short_device):
                handle.num_copies += self._short_cuda(plan, direction, handle)
                handle.num_kernel_blocks = len(plan.short_device)
            handle.event = torch.cuda.Event()
            handle.event.record(stream)
        return handle

    def _short_cuda(self, plan: TransferPlan, direction: Direction, handle: TransferHandle) -> int:
        import torch

        lay, host = self.pool.layout, self.host
        bb = lay.block_bytes
        slabs, js = np.divmod(plan.short_host, host.slab_blocks)
        launches = 0
        dev_base = [self.pool.layer_bytes(g).data_ptr() for g in range(lay.num_layers)]
        base0 = dev_base[0]
        for s in np.unique(slabs).tolist():
            sel = slabs == s
            d, j = plan.short_device[sel], js[sel]
            slab_addr = host.slab_addresses[s]
            # Offsets (in 4-byte words) of every (layer, block) from the first layer's
            # device base and from the slab's base: one launch moves them all.
            dev_off = np.concatenate(
                [(dev_base[g] - base0) + d * bb for g in range(lay.num_layers)]
            )
            host_off = np.concatenate(
                [(g * host.slab_blocks + j) * bb for g in range(lay.num_layers)]
            )
            offs = torch.from_numpy(np.stack([dev_off, host_off]) // 16).to(
                self.pool.device, non_blocking=False
            )
            handle.keep.append(offs)
            if self._kernel is not None:
                try:
                    if direction == "out":
                        self._kernel(base0, slab_addr, offs[0], offs[1], bb, to_host=True)
                    else:
                        self._kernel(base0, slab_addr, offs[1], offs[0], bb, to_host=False)
                    launches += 1
                    continue
                except Exception as e:  # compile/launch refused: fall back for good
                    self.kernel_error = repr(e)
                    self._kernel = None
            launches += self._per_block_cuda(d, s, j, direction)
        return launches

    def _per_block_cuda(
        self, dev: np.ndarray, slab: int, js: np.ndarray, direction: Direction
    ) -> int:
        n = 0
        for d, j in zip(dev.tolist(), js.tolist(), strict=True):
            for g in range(self.pool.layout.num_layers):
                dv = self.pool.layer_bytes(g)[d : d + 1]
                hv = self.host.torch_block_view(g, slab, j, 1)
                if direction == "out":
                    hv.copy_(dv, non_blocking=True)
                else:
                    dv.copy_(hv, non_blocking=True)
                n += 1
        return n
