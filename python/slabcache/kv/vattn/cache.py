"""vAttention: each request slot's KV in one contiguous virtual range, pages mapped on demand.

:class:`VAttnKVCache` reserves, for every *layer group* (``layers_per_group``
consecutive layers), one virtual range of ``max_slots x max_tokens`` tokens,
laid out ``[slot, token, layer_in_group, K|V, kv_head, head_dim]``. Physical
pages (the driver's ``page_size``, 2 MiB on a GPU) are mapped into a slot's
range from its start as the request grows, so request ``r``'s K of layer ``l``
is the strided tensor ``K[slot, :length]`` that an unchanged attention kernel
(PyTorch SDPA, FlashAttention) reads directly: no block table, no gather.

Putting a group's layers side by side in each token row makes one page hold
``page_size / (layers_per_group * 2 * H * D * itemsize)`` tokens of *all* of
the group's layers; with one group for the whole model a 2 MiB page of a
Llama-3-8B-shaped KV (8 KV heads x 128, fp16, 32 layers) holds 16 tokens,
the internal fragmentation of 16-token paged blocks, while a page per layer
would hold 1024.

Policies (the :class:`~slabcache.BlockManager`'s where they apply):

- admission under a page budget (``num_pages`` physical pages) and a
  ``watermark`` fraction kept free, as the BlockManager's;
- *deferred reclamation*: a finished request's slot keeps its pages mapped;
  the next request given that slot reuses them with no unmap/map pair, and
  they are unmapped only when another slot needs a page and none is free;
- a pool of pre-created physical handles (``precreate``), so growth never waits
  for ``cuMemCreate``;
- map-ahead (:meth:`map_tokens`, or in the background with
  :class:`~slabcache.kv.vattn.MapAhead`) separate from the used length
  (:meth:`extend`), so mapping can overlap the step's compute;
- TTL pins: :meth:`finish` with ``ttl_s`` keeps the slot and its pages for a
  next turn (:meth:`resume`), not reclaimable until it expires;
- prefix sharing of whole pages (:meth:`fork`): the child's range maps the
  parent's physical handles; the partial last page is copied;
- swap of whole pages to a :class:`~slabcache.kv.HostKVTier` (:meth:`swap_out`
  / :meth:`swap_in`).

>>> from slabcache.kv.vattn import HostVMMDriver, VAttnKVCache
>>> drv = HostVMMDriver(page_size=4096)
>>> cache = VAttnKVCache(drv, num_layers=2, num_kv_heads=2, head_dim=16, dtype="float32",
...                      max_slots=4, max_tokens=64, num_pages=16)
>>> cache.page_tokens                 # 4096 B / (2 layers * K,V * 2 heads * 16 * 4 B)
8
>>> slot = cache.admit(7, 10)         # request 7, 10 prompt tokens: 2 pages
>>> k, v = cache.request_kv(7, layer=1)
>>> k.shape, v.shape
((10, 2, 16), (10, 2, 16))
>>> k[:] = 1.0; float(cache.layer_kv(1)[0][slot, :10].sum())
320.0
>>> cache.stats()["mapped_pages"], cache.stats()["used_bytes"]
(2, 5120)
>>> cache.finish(7)                   # pages stay mapped in the free slot
>>> cache.admit(8, 6, slot=slot) == slot and drv.counts["map"]   # reused: no new map
2
>>> cache.close()
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    OutOfMemoryError,
)
from ...stats_types import VAttnKVCacheStats
from ..layout import DTYPE_SIZES, KVLayout
from .driver import VMMDriver

__all__ = ["VAttnKVCache"]

_FREE, _ACTIVE, _PINNED = "free", "active", "pinned"


@dataclass
class _Slot:
    index: int
    pages: list[list[int]]  # per group: handles mapped at pages 0..n-1 of this slot's range
    state: str = _FREE
    req: int | None = None
    length: int = 0  # tokens in use
    deadline: float = math.inf
    last_use: float = 0.0


@dataclass
class _Swapped:
    length: int
    host_blocks: list[list[int]] = field(default_factory=list)  # per group


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class VAttnKVCache:
    """KV of up to ``max_slots`` requests in virtually contiguous ranges over ``driver``.

    Args:
        driver: a :class:`~slabcache.kv.vattn.VMMDriver`
            (:class:`~slabcache.kv.vattn.HostVMMDriver` on the CPU,
            :class:`~slabcache.kv.vattn.CudaVMMDriver` on a GPU).
        num_layers, num_kv_heads, head_dim, dtype: the model's KV shape.
        max_slots: requests resident at once (one virtual range each, per group).
        max_tokens: longest request (virtual; costs no memory until mapped).
        num_pages: physical page budget (``num_pages * page_size`` bytes at most).
        layers_per_group: layers sharing one token row (default: all); must divide
            ``num_layers``, and a token row must divide the page.
        watermark: fraction of ``num_pages`` that :meth:`admit` keeps free for growth.
        precreate: physical pages created up front into the handle pool (default all).
        host_pages: pages of host tier for :meth:`swap_out` (0: no swap).
        framework: ``"numpy"`` or ``"torch"`` views (a CUDA driver needs torch).
    """

    def __init__(
        self,
        driver: VMMDriver,
        *,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: str = "float16",
        max_slots: int,
        max_tokens: int,
        num_pages: int,
        layers_per_group: int | None = None,
        watermark: float = 0.0,
        precreate: int | None = None,
        host_pages: int = 0,
        framework: str | None = None,
    ) -> None:
        for name, val in (
            ("num_layers", num_layers),
            ("num_kv_heads", num_kv_heads),
            ("head_dim", head_dim),
            ("max_slots", max_slots),
            ("max_tokens", max_tokens),
            ("num_pages", num_pages),
        ):
            if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
                raise InvalidArgumentError(f"{name} must be a positive int, got {val!r}")
        if dtype not in DTYPE_SIZES:
            raise InvalidArgumentError(f"dtype must be one of {sorted(DTYPE_SIZES)}")
        if not 0.0 <= watermark < 1.0:
            raise InvalidArgumentError(f"watermark must be in [0, 1), got {watermark}")
        g = num_layers if layers_per_group is None else layers_per_group
        if g <= 0 or num_layers % g:
            raise InvalidArgumentError(f"layers_per_group {g} must divide num_layers {num_layers}")
        self.driver = driver
        self.num_layers, self.num_kv_heads, self.head_dim = num_layers, num_kv_heads, head_dim
        self.dtype, self.itemsize = dtype, DTYPE_SIZES[dtype]
        self.layers_per_group, self.num_groups = g, num_layers // g
        self.token_bytes = g * 2 * num_kv_heads * head_dim * self.itemsize  # one group's row
        self.page_size = driver.page_size
        if self.page_size % self.token_bytes:
            raise InvalidArgumentError(
                f"a token row of {self.token_bytes} bytes ({g} layers) does not divide the "
                f"{self.page_size}-byte page; choose another layers_per_group"
            )
        self.page_tokens = self.page_size // self.token_bytes
        self.slot_pages = _ceil_div(max_tokens, self.page_tokens)
        self.max_tokens = self.slot_pages * self.page_tokens
        self.max_slots = max_slots
        self.slot_bytes = self.slot_pages * self.page_size
        self.num_pages = num_pages
        self.watermark = watermark
        self._wm_pages = int(watermark * num_pages)
        if framework is None:
            framework = "torch" if driver.device == "cuda" else "numpy"
        if framework not in ("numpy", "torch") or (
            driver.device == "cuda" and framework != "torch"
        ):
            raise InvalidArgumentError(
                f"framework {framework!r} does not fit a {driver.device} driver"
            )
        self.framework = framework
        self._lock = threading.RLock()
        self._closed = False

        self._bases: list[int] = []
        self._free_handles: list[int] = []
        self._created = 0
        self._refs: dict[int, int] = {}
        self._slots = [_Slot(i, [[] for _ in range(self.num_groups)]) for i in range(max_slots)]
        self._req_slot: dict[int, int] = {}
        self._swapped: dict[int, _Swapped] = {}
        self._clock = 0.0
        self.sync_maps = 0  # pages mapped inside extend()/admit() (on the critical path)
        try:
            for _ in range(self.num_groups):
                self._bases.append(driver.reserve(max_slots * self.slot_bytes))
            n = num_pages if precreate is None else min(precreate, num_pages)
            for _ in range(n):
                self._free_handles.append(driver.create())
                self._created += 1
        except BaseException:
            self.close()
            raise
        self._group_views = [self._view(b) for b in self._bases]
        self.host: Any = None
        self._host_free: list[int] = []
        if host_pages:
            from ..host import HostKVTier

            lay = KVLayout(
                num_layers=1,
                block_size=self.page_tokens * g,
                num_kv_heads=num_kv_heads,
                head_dim=head_dim,
                dtype=dtype,
            )
            assert lay.block_bytes == self.page_size
            self.host = HostKVTier(lay, host_pages, pin=driver.device == "cuda")
            self._host_free = list(range(host_pages - 1, -1, -1))

    # ---- views ----------------------------------------------------------------------

    def _view(self, base: int) -> Any:
        """uint8 view of one group's whole reservation (touching unmapped bytes faults)."""
        n = self.max_slots * self.slot_bytes
        if self.driver.device == "cuda":
            import torch

            class _Range:
                __cuda_array_interface__ = {
                    "data": (base, False),
                    "shape": (n,),
                    "typestr": "|u1",
                    "version": 3,
                }

            return torch.as_tensor(
                _Range(), device=f"cuda:{getattr(self.driver, 'device_index', 0)}"
            )
        import ctypes

        arr = np.ctypeslib.as_array((ctypes.c_uint8 * n).from_address(base))
        if self.framework == "torch":
            import torch

            return torch.from_numpy(arr)
        return arr

    def _typed(self, flat: Any) -> Any:
        shape = (
            self.max_slots,
            self.max_tokens,
            self.layers_per_group,
            2,
            self.num_kv_heads,
            self.head_dim,
        )
        if self.framework == "torch":
            import torch

            return flat.view(getattr(torch, self.dtype)).view(shape)
        return flat.view(np.dtype(self.dtype)).reshape(shape)

    def group_tensor(self, group: int) -> Any:
        """``[max_slots, max_tokens, layers_per_group, 2, H, D]`` view of one group's range."""
        return self._typed(self._group_views[group])

    def layer_kv(self, layer: int) -> tuple[Any, Any]:
        """K and V of ``layer`` for every slot: ``[max_slots, max_tokens, H, D]`` strided views.

        Slice ``[:b, :n]`` for a batch in slots ``0..b-1`` whose pages cover ``n`` tokens.
        """
        if not 0 <= layer < self.num_layers:
            raise InvalidArgumentError(f"layer {layer} not in [0, {self.num_layers})")
        t = self.group_tensor(layer // self.layers_per_group)
        j = layer % self.layers_per_group
        return t[:, :, j, 0], t[:, :, j, 1]

    def request_kv(self, req_id: int, layer: int) -> tuple[Any, Any]:
        """K and V ``[length, H, D]`` of one request's tokens in ``layer``."""
        s = self._slots[self.slot_of(req_id)]
        k, v = self.layer_kv(layer)
        return k[s.index, : s.length], v[s.index, : s.length]

    def _page_bytes(self, group: int, slot: int, page: int) -> Any:
        off = slot * self.slot_bytes + page * self.page_size
        return self._group_views[group][off : off + self.page_size]

    def _va(self, group: int, slot: int, page: int) -> int:
        return self._bases[group] + slot * self.slot_bytes + page * self.page_size

    # ---- page accounting ------------------------------------------------------------

    def _keep(self, s: _Slot) -> int:
        """Pages of ``s`` that hold tokens: the rest (map-ahead, a longer former owner's
        pages, a free slot's) are surplus, reclaimable at any time."""
        return 0 if s.state == _FREE else _ceil_div(s.length, self.page_tokens)

    def _held_pages(self) -> int:
        """Distinct physical pages holding tokens of active or pinned requests."""
        held: set[int] = set()
        for s in self._slots:
            k = self._keep(s)
            if k:
                for pg in s.pages:
                    held.update(pg[:k])
        return len(held)

    @property
    def available_pages(self) -> int:
        """Pages a new request could get: uncreated, pooled, or surplus in some slot."""
        with self._lock:
            return self.num_pages - self._held_pages()

    def _take_handle(self, exclude: _Slot | None = None) -> int:
        if self._free_handles:
            return self._free_handles.pop()
        if self._created < self.num_pages:
            h = self.driver.create()
            self._created += 1
            return h
        # Deferred reclamation: unmap surplus pages, last first, from the least recently
        # used free slot, then from the tails of live slots (never from ``exclude``, the
        # slot being grown).
        for s in sorted(
            (s for s in self._slots if s is not exclude and self._has_surplus(s)),
            key=lambda s: (s.state != _FREE, s.last_use),
        ):
            keep = self._keep(s)
            while True:
                g = max(range(self.num_groups), key=lambda i: len(s.pages[i]))
                if len(s.pages[g]) <= keep:
                    break
                if self._unmap_last(s, g) and self._free_handles:
                    return self._free_handles.pop()
        raise OutOfMemoryError(f"all {self.num_pages} pages are held by live requests")

    def _has_surplus(self, s: _Slot) -> bool:
        keep = self._keep(s)
        return any(len(p) > keep for p in s.pages)

    def _unmap_last(self, s: _Slot, g: int) -> bool:
        """Unmaps the last page of slot ``s`` in group ``g``; True if its handle came free."""
        i = len(s.pages[g]) - 1
        h = s.pages[g].pop()
        self.driver.unmap(self._va(g, s.index, i))
        self._refs[h] -= 1
        if self._refs[h] == 0:
            del self._refs[h]
            self._free_handles.append(h)
            return True
        return False

    def _map_pages(self, s: _Slot, tokens: int) -> int:
        need = _ceil_div(tokens, self.page_tokens)
        todo: list[tuple[int, int, int]] = []  # (group, va, handle)
        try:
            for g in range(self.num_groups):
                for i in range(len(s.pages[g]), need):
                    todo.append((g, self._va(g, s.index, i), self._take_handle(exclude=s)))
            if todo:
                self.driver.map_batch([(va, h) for _, va, h in todo])
        except BaseException:
            self._free_handles.extend(h for _, _, h in todo)
            raise
        for g, _, h in todo:
            s.pages[g].append(h)
            self._refs[h] = self._refs.get(h, 0) + 1
        return len(todo)

    def _pages_to_map(self, s: _Slot, tokens: int) -> int:
        need = _ceil_div(tokens, self.page_tokens)
        return sum(max(0, need - len(p)) for p in s.pages)

    # ---- request lifecycle ------------------------------------------------------------

    def _now(self, now: float | None) -> float:
        self._clock = time.monotonic() if now is None else now
        return self._clock

    def slot_of(self, req_id: int) -> int:
        """The slot index holding ``req_id`` (active or pinned)."""
        i = self._req_slot.get(req_id)
        if i is None:
            raise NotFoundError(f"request {req_id} holds no slot")
        return i

    def length(self, req_id: int) -> int:
        """Tokens in use by ``req_id``."""
        return self._slots[self.slot_of(req_id)].length

    def can_admit(self, num_tokens: int) -> bool:
        """Whether :meth:`admit` of ``num_tokens`` would pass the budget and watermark now."""
        with self._lock:
            need = self.num_groups * _ceil_div(num_tokens, self.page_tokens)
            return self.available_pages - need >= self._wm_pages

    def _pick_slot(self, slot: int | None, need_tokens: int) -> _Slot | None:
        if slot is not None:
            if not 0 <= slot < self.max_slots:
                raise InvalidArgumentError(f"slot {slot} not in [0, {self.max_slots})")
            s = self._slots[slot]
            return s if s.state == _FREE else None
        free = [s for s in self._slots if s.state == _FREE]
        if not free:
            return None
        # Best fit on the pages still mapped: enough to need no map call, few to spare.
        need = _ceil_div(need_tokens, self.page_tokens)

        def fit(s: _Slot) -> tuple[int, int, int]:
            have = min(len(p) for p in s.pages)
            return (0 if have >= need else 1, abs(have - need), s.index)

        return min(free, key=fit)

    def _claim(self, s: _Slot, req_id: int, now: float) -> None:
        # Pages shared with another slot must not be written by the new request: drop
        # this slot's mapping from the first shared page on.
        for g in range(self.num_groups):
            pg = s.pages[g]
            first = next((i for i, h in enumerate(pg) if self._refs[h] > 1), len(pg))
            while len(pg) > first:
                self._unmap_last(s, g)
        s.state, s.req, s.length, s.deadline, s.last_use = _ACTIVE, req_id, 0, math.inf, now
        self._req_slot[req_id] = s.index

    def admit(
        self, req_id: int, num_tokens: int, *, slot: int | None = None, now: float | None = None
    ) -> int | None:
        """Gives ``req_id`` a slot with pages for ``num_tokens`` tokens; None if it cannot.

        None when no slot is free (or ``slot`` is taken) or when mapping the request
        would leave fewer than ``watermark * num_pages`` pages available.
        """
        with self._lock:
            self._check_open()
            now = self._now(now)
            self.expire(now)
            if req_id in self._req_slot or req_id in self._swapped:
                raise AlreadyExistsError(f"request {req_id} is already admitted")
            self._check_tokens(num_tokens)
            s = self._pick_slot(slot, num_tokens)
            if s is None or not self.can_admit(num_tokens):
                return None
            self._claim(s, req_id, now)
            self.sync_maps += self._map_pages(s, num_tokens)
            s.length = num_tokens
            return s.index

    def _check_tokens(self, n: int) -> None:
        if not isinstance(n, int | np.integer) or n < 0 or n > self.max_tokens:
            raise InvalidArgumentError(f"num_tokens must be in [0, {self.max_tokens}], got {n}")

    def map_tokens(self, req_id: int, num_tokens: int) -> int:
        """Maps pages so that ``req_id``'s range covers ``num_tokens`` (its length is unchanged).

        This is map-ahead: call it for the next step's tokens while this step computes.
        Returns the pages mapped. Raises :class:`~slabcache.errors.OutOfMemoryError` when
        the budget is used up by live requests.
        """
        with self._lock:
            self._check_open()
            s = self._slots[self.slot_of(req_id)]
            self._check_tokens(num_tokens)
            return self._map_pages(s, num_tokens)

    def map_ahead(self, targets: Iterable[tuple[int, int]], max_pages: int | None = None) -> int:
        """:meth:`map_tokens` for several ``(req_id, num_tokens)``, at most ``max_pages`` pages.

        Call it right after launching a step (the GPU computes while the CPU maps:
        mapping does not stall running kernels); the page cap spreads a burst of
        boundary crossings over several steps. Requests that are gone or do not fit
        are skipped (:meth:`extend` maps what is still missing). Returns pages mapped.
        """
        n = 0
        with self._lock:
            for req, tokens in targets:
                i = self._req_slot.get(req)
                if i is None or self._closed:
                    continue
                s = self._slots[i]
                tokens = min(tokens, self.max_tokens)
                if max_pages is not None:
                    have = min(len(p) for p in s.pages)
                    need = _ceil_div(tokens, self.page_tokens)
                    room = (max_pages - n) // self.num_groups
                    if room <= 0:
                        break
                    tokens = min(tokens, (have + room) * self.page_tokens)
                try:
                    n += self._map_pages(s, tokens)
                except OutOfMemoryError:
                    break
                if max_pages is not None and need > have + room:
                    break
        return n

    def extend(self, req_id: int, num_tokens: int) -> int:
        """Sets ``req_id``'s length to ``num_tokens``, mapping what map-ahead has not.

        Returns the pages this call had to map itself (0 when map-ahead kept up).
        """
        with self._lock:
            self._check_open()
            s = self._slots[self.slot_of(req_id)]
            if s.state != _ACTIVE:
                raise InvalidArgumentError(f"request {req_id} is pinned; resume() it first")
            self._check_tokens(num_tokens)
            n = self._map_pages(s, num_tokens)
            self.sync_maps += n
            s.length = num_tokens
            return n

    def trim(self, req_id: int) -> int:
        """Unmaps ``req_id``'s pages past its length back to the pool; returns how many."""
        with self._lock:
            s = self._slots[self.slot_of(req_id)]
            keep = _ceil_div(s.length, self.page_tokens)
            n = 0
            for g in range(self.num_groups):
                while len(s.pages[g]) > keep:
                    self._unmap_last(s, g)
                    n += 1
            return n

    def pages_missing(self, req_id: int, num_tokens: int) -> int:
        """Pages ``req_id`` still needs mapped to cover ``num_tokens``."""
        with self._lock:
            return self._pages_to_map(self._slots[self.slot_of(req_id)], num_tokens)

    def finish(self, req_id: int, *, ttl_s: float | None = None, now: float | None = None) -> None:
        """Ends ``req_id``. With ``ttl_s`` its slot and pages stay pinned for :meth:`resume`.

        Without, the slot becomes free but keeps its pages mapped (deferred reclamation).
        """
        with self._lock:
            now = self._now(now)
            if req_id in self._swapped and req_id not in self._req_slot:
                self._drop_swapped(req_id)
                return
            s = self._slots[self.slot_of(req_id)]
            if ttl_s is not None:
                if not ttl_s > 0:
                    raise InvalidArgumentError(f"ttl_s must be positive, got {ttl_s}")
                s.state, s.deadline, s.last_use = _PINNED, now + ttl_s, now
                return
            self._release_slot(s, now)

    def _release_slot(self, s: _Slot, now: float) -> None:
        if s.req is not None:
            self._req_slot.pop(s.req, None)
        s.state, s.req, s.length, s.deadline, s.last_use = _FREE, None, 0, math.inf, now

    def resume(self, req_id: int, *, now: float | None = None) -> int | None:
        """Reactivates a pinned request (its pages and length kept); None if it expired."""
        with self._lock:
            now = self._now(now)
            self.expire(now)
            i = self._req_slot.get(req_id)
            if i is None:
                return None
            s = self._slots[i]
            if s.state != _PINNED:
                raise InvalidArgumentError(f"request {req_id} is not pinned")
            s.state, s.deadline, s.last_use = _ACTIVE, math.inf, now
            return i

    def expire(self, now: float | None = None) -> int:
        """Frees pinned slots whose TTL has passed; returns how many."""
        with self._lock:
            now = self._clock if now is None else now
            n = 0
            for s in self._slots:
                if s.state == _PINNED and s.deadline <= now:
                    self._release_slot(s, now)
                    n += 1
            return n

    # ---- prefix sharing ---------------------------------------------------------------

    def fork(
        self, parent: int, child: int, num_tokens: int, *, now: float | None = None
    ) -> int | None:
        """Admits ``child`` with the first ``num_tokens`` tokens of ``parent``'s KV.

        Whole pages are shared (the parent's physical handles mapped into the child's
        range, no copy); the partial last page, if any, is a private copy. Both may
        append afterwards. None if no slot or pages are available.
        """
        with self._lock:
            self._check_open()
            now = self._now(now)
            p = self._slots[self.slot_of(parent)]
            if child in self._req_slot or child in self._swapped:
                raise AlreadyExistsError(f"request {child} is already admitted")
            if not 0 <= num_tokens <= p.length:
                raise InvalidArgumentError(f"num_tokens must be in [0, {p.length}]")
            full, rest = divmod(num_tokens, self.page_tokens)
            need = self.num_groups * (1 if rest else 0)
            s = self._pick_slot(None, num_tokens)
            if s is None or s is p or self.available_pages - need < self._wm_pages:
                return None
            self._claim(s, child, now)
            for g in range(self.num_groups):
                while len(s.pages[g]) > 0:  # the child's own old pages go back to the pool
                    self._unmap_last(s, g)
                for i in range(full):
                    h = p.pages[g][i]
                    self.driver.map(self._va(g, s.index, i), h)
                    s.pages[g].append(h)
                    self._refs[h] += 1
            if rest:
                self.sync_maps += self._map_pages(s, num_tokens)
                for g in range(self.num_groups):
                    self._page_bytes(g, s.index, full)[:] = self._page_bytes(g, p.index, full)
            s.length = num_tokens
            return s.index

    # ---- swap to the host tier ------------------------------------------------------

    def swap_out(self, req_id: int, *, now: float | None = None) -> None:
        """Copies ``req_id``'s pages to the host tier and frees its slot.

        The slot keeps its pages mapped (they are reclaimable); on a GPU this waits for
        the copies, so the pages can be reused by the next request at once.
        """
        with self._lock:
            self._check_open()
            if self.host is None:
                raise InvalidArgumentError("no host tier: make the cache with host_pages > 0")
            now = self._now(now)
            s = self._slots[self.slot_of(req_id)]
            n = _ceil_div(s.length, self.page_tokens)
            if len(self._host_free) < n * self.num_groups:
                raise OutOfMemoryError(
                    f"host tier has {len(self._host_free)} free pages, {n * self.num_groups} needed"
                )
            rec = _Swapped(s.length)
            for g in range(self.num_groups):
                ids = [self._host_free.pop() for _ in range(n)]
                for i, hid in enumerate(ids):
                    self._host_page(hid)[:] = self._page_bytes(g, s.index, i)
                rec.host_blocks.append(ids)
            self._sync()
            self._swapped[req_id] = rec
            self._release_slot(s, now)

    def swap_in(
        self, req_id: int, *, slot: int | None = None, now: float | None = None
    ) -> int | None:
        """Brings a swapped-out request back into a slot; None if it does not fit now."""
        with self._lock:
            self._check_open()
            now = self._now(now)
            rec = self._swapped.get(req_id)
            if rec is None:
                raise NotFoundError(f"request {req_id} is not swapped out")
            s = self._pick_slot(slot, rec.length)
            if s is None or not self.can_admit(rec.length):
                return None
            del self._swapped[req_id]
            self._claim(s, req_id, now)
            self.sync_maps += self._map_pages(s, rec.length)
            for g, ids in enumerate(rec.host_blocks):
                for i, hid in enumerate(ids):
                    self._page_bytes(g, s.index, i)[:] = self._host_page(hid)
            self._sync()
            self._host_free.extend(i for ids in rec.host_blocks for i in ids)
            s.length = rec.length
            return s.index

    def _drop_swapped(self, req_id: int) -> None:
        rec = self._swapped.pop(req_id)
        self._host_free.extend(i for ids in rec.host_blocks for i in ids)

    def _host_page(self, hid: int) -> Any:
        slab, j = self.host.locate(hid)
        if self.framework == "torch":
            return self.host.torch_block_view(0, slab, j, 1)[0]
        return self.host.block_view(0, slab, j, 1)[0]

    def _sync(self) -> None:
        if self.driver.device == "cuda":
            import torch

            torch.cuda.current_stream().synchronize()

    @property
    def swapped(self) -> list[int]:
        """Requests whose KV is on the host tier."""
        return sorted(self._swapped)

    # ---- introspection --------------------------------------------------------------

    def stats(self) -> VAttnKVCacheStats:
        """Page and byte counts (a page mapped into two slots counts once).

        ``mapped_pages`` hold tokens of active or pinned requests; ``waste_bytes`` is
        their bytes past those tokens (internal fragmentation, as of paged blocks).
        ``surplus_pages`` are mapped but hold no live token (free slots' pages kept for
        reuse, map-ahead, a longer former owner's tail): reclaimable on demand, and
        ``mapped_minus_used_bytes`` counts them too.
        """
        with self._lock:
            live: set[int] = set()
            every: set[int] = set()
            used = 0
            for s in self._slots:
                k = self._keep(s)
                for pg in s.pages:
                    live.update(pg[:k])
                    every.update(pg)
                used += s.length * self.token_bytes * self.num_groups
            return {
                "num_pages": self.num_pages,
                "created_pages": self._created,
                "pool_pages": len(self._free_handles),
                "mapped_pages": len(live),
                "surplus_pages": len(every - live),
                "used_bytes": used,
                "mapped_bytes": len(live) * self.page_size,
                "waste_bytes": len(live) * self.page_size - used,
                "mapped_minus_used_bytes": len(every) * self.page_size - used,
                "sync_maps": self.sync_maps,
                "requests": len(self._req_slot),
                "swapped": len(self._swapped),
            }

    def slot_state(self, slot: int) -> tuple[str, int | None, int, list[list[int]]]:
        """``(state, request, length, handles per group)`` of one slot (tests, debugging)."""
        s = self._slots[slot]
        return s.state, s.req, s.length, [list(p) for p in s.pages]

    def _check_open(self) -> None:
        if self._closed:
            from ...errors import ClosedError

            raise ClosedError("VAttnKVCache is closed")

    def close(self) -> None:
        """Unmaps and releases every page and frees the ranges."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._group_views = []
            for s in getattr(self, "_slots", []):
                for g in range(len(s.pages)):
                    while s.pages[g]:
                        self._unmap_last(s, g)
            for h in self._free_handles:
                self.driver.release(h)
            self._free_handles = []
            for b in self._bases:
                self.driver.free(b)
            self._bases = []
            if getattr(self, "host", None) is not None:
                self.host.close()
                self.host = None

    def __enter__(self) -> VAttnKVCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"VAttnKVCache({self.num_groups} group(s) x {self.max_slots} slots x "
            f"{self.max_tokens} tokens, page {self.page_size} B = {self.page_tokens} tokens, "
            f"{self.num_pages} pages)"
        )
