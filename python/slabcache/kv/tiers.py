"""Three tiers under one BlockManager: what the engine calls around each scheduler decision.

:class:`TieredKVCache` executes the :class:`~slabcache.BlockManager`'s
decisions on real bytes:

* **evictions** (``BlockRemoved`` events of blocks with a prefix hash) are
  written to the disk tier *before* anything can overwrite those blocks, i.e.
  before the copy-on-write copies and the forward pass that follow;
* **copy-on-write** copies (``drain_copies``) run in the device pool;
* **swap-out / swap-in** ranges run on :class:`~slabcache.kv.KVTransfer`;
  :meth:`ready` makes the engine's stream wait for them;
* **admission** looks the prompt up on the device (``get_computed_blocks``)
  and then on disk: blocks found only on disk are loaded into the newly
  allocated blocks instead of being recomputed, also after a restart.

    >>> import numpy as np
    >>> from slabcache import BlockManager
    >>> from slabcache.kv import KVLayout, KVCachePool, TieredKVCache
    >>> bm = BlockManager(num_blocks=8, block_size=4)
    >>> tiers = TieredKVCache(bm, KVCachePool(KVLayout(1, 4, 1, 4, "float32"), 8))
    >>> adm = tiers.admit(1, list(range(10)))
    >>> adm.num_computed_tokens, adm.block_table.tolist()
    (0, [0, 1, 2])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..blocks import BlockManager, StepBatch, StepResult, block_hashes
from ..errors import InvalidArgumentError
from ..stats_types import TieredKVCacheStats
from .disk import ArenaKVTier
from .host import HostKVTier
from .pool import KVCachePool
from .transfer import KVTransfer, TransferHandle

__all__ = ["Admission", "TieredKVCache"]


@dataclass
class Admission:
    """What :meth:`TieredKVCache.admit` found: ``num_device_tokens`` hit on the device,
    ``num_disk_tokens`` loaded from disk, so the model computes the prompt from
    ``num_computed_tokens`` on. ``block_table`` is the request's table."""

    num_device_tokens: int
    num_disk_tokens: int
    block_table: np.ndarray

    @property
    def num_computed_tokens(self) -> int:
        return self.num_device_tokens + self.num_disk_tokens


class TieredKVCache:
    """The data plane of one BlockManager: device pool, optional host and disk tiers.

    Args:
        manager: the BlockManager (its ``num_blocks``/``block_size`` must match the pool).
        pool: the device tier.
        host: the host tier (needed for swapping; ``num_cpu_blocks`` blocks at least).
        disk: the disk tier (turns the manager's events on).
        transfer: the copy engine (default: one over ``pool`` and ``host``).
    """

    def __init__(
        self,
        manager: BlockManager,
        pool: KVCachePool,
        *,
        host: HostKVTier | None = None,
        disk: ArenaKVTier | None = None,
        transfer: KVTransfer | None = None,
    ) -> None:
        if manager.num_blocks != pool.num_blocks or manager.block_size != pool.layout.block_size:
            raise InvalidArgumentError(
                f"manager ({manager.num_blocks} blocks of {manager.block_size}) and pool "
                f"({pool.num_blocks} of {pool.layout.block_size}) disagree"
            )
        if host is not None and host.num_blocks < manager.num_cpu_blocks:
            raise InvalidArgumentError(
                f"host tier has {host.num_blocks} blocks, the manager uses {manager.num_cpu_blocks}"
            )
        if disk is not None and disk.layout != pool.layout:
            raise InvalidArgumentError("disk tier and pool have different layouts")
        self.manager, self.pool, self.host, self.disk = manager, pool, host, disk
        self.transfer = transfer or (KVTransfer(pool, host) if host is not None else None)
        if disk is not None:
            manager.set_events_enabled(True)
        self._pending: list[TransferHandle] = []
        self.stats: TieredKVCacheStats = {
            "device_hit_tokens": 0,
            "disk_hit_tokens": 0,
            "blocks_offloaded": 0,
            "blocks_loaded": 0,
            "cow_copies": 0,
            "swap_out_blocks": 0,
            "swap_in_blocks": 0,
        }

    # ---- admission: device prefix cache, then disk --------------------------------

    def admit(
        self,
        req_id: int,
        prompt: npt.ArrayLike,
        *,
        extra_key: int | str | bytes | None = None,
        program: int | None = None,
        now: float | None = None,
    ) -> Admission | None:
        """Registers and allocates a new request; loads its disk-only prefix blocks.

        Returns None (nothing allocated) when the prompt does not fit. As on the
        device, at most ``len(prompt) - 1`` tokens hit: the last token is computed.
        """
        bm, bs = self.manager, self.manager.block_size
        toks = np.asarray(prompt, dtype=np.int64)
        _, n_dev = bm.get_computed_blocks(req_id, toks, extra_key=extra_key, program=program)
        k = n_dev // bs
        new = bm.allocate_slots(req_id, len(toks) - n_dev, now=now)
        if new is None:
            return None
        self.after_schedule()  # evicted blocks reach the disk before they are overwritten
        # Look on disk only now: that write may have added blocks of this very prefix, or
        # evicted some (byte budget). At most len(prompt) - 1 tokens hit, as on the device.
        d = 0
        hashes = None
        max_full = (len(toks) - 1) // bs
        if self.disk is not None and max_full > k:
            hashes = block_hashes(toks, bs, extra_key)[:max_full]
            d = self.disk.match_prefix(hashes, start=k)
        table = bm.block_table(req_id)
        if d:
            assert hashes is not None
            rows = self.disk.get(hashes[k : k + d], out=self.pool.staging(d))  # type: ignore[union-attr]
            self.pool.write_blocks(table[k : k + d], rows)
            self.stats["blocks_loaded"] += d
        self.stats["device_hit_tokens"] += n_dev
        self.stats["disk_hit_tokens"] += d * bs
        return Admission(n_dev, d * bs, table)

    def allocate(
        self,
        req_id: int,
        num_new_tokens: int,
        token_ids: npt.ArrayLike | None = None,
        *,
        now: float | None = None,
    ) -> np.ndarray | None:
        """``BlockManager.allocate_slots`` + :meth:`after_schedule` (a decode step)."""
        new = self.manager.allocate_slots(req_id, num_new_tokens, token_ids, now=now)
        if new is not None:
            self.after_schedule()
        return new

    def step(self, batch: StepBatch, **kwargs: Any) -> StepResult:
        """``BlockManager.step`` + :meth:`after_schedule` with the step's CoW copies.

        New requests in the batch see only the device prefix cache; admit them with
        :meth:`admit` first to also reload their prefix from disk.
        """
        res = self.manager.step(batch, **kwargs)
        self.after_schedule(copies=res.copies)
        return res

    def fork(self, parent_id: int, child_id: int) -> None:
        """``BlockManager.fork``; the copies it causes later run in :meth:`after_schedule`."""
        self.manager.fork(parent_id, child_id)

    def after_schedule(self, copies: npt.ArrayLike | None = None) -> None:
        """Runs after every manager call that allocates (``allocate_slots``, ``step``,
        ``swap_in``): writes newly evicted prefix blocks to disk, then executes the
        copy-on-write copies (``copies``: ``StepResult.copies``; default ``drain_copies()``)."""
        # Blocks a pending swap-out still reads may have been handed out again: every
        # write into the pool below (and the forward pass) queues after those copies.
        self.ready()
        if self.disk is not None:
            self._offload_evicted()
        cp = self.manager.drain_copies() if copies is None else np.asarray(copies)
        if len(cp):
            self.pool.copy_blocks(cp)
            self.stats["cow_copies"] += len(cp)

    def _offload_evicted(self) -> None:
        ev = self.manager.drain_events()
        if not len(ev):
            return
        # A block stored and then removed again inside one drain window never had its
        # KV computed (no forward pass ran in between): only the first removal of a
        # block whose content predates the window is real KV.
        stored: set[int] = set()
        ids: list[int] = []
        rows: list[int] = []
        for i, (kind, b) in enumerate(zip(ev.kinds.tolist(), ev.block_ids.tolist(), strict=True)):
            if kind == ev.STORED:
                stored.add(b)
            elif b not in stored:
                ids.append(b)
                rows.append(i)
        if not ids:
            return
        hs = ev.hashes[rows]
        todo = [i for i in range(len(ids)) if hs[i].tobytes() not in self.disk]  # type: ignore[operator]
        if todo:
            data = self.pool.read_blocks(np.asarray(ids, dtype=np.int64)[todo])
            self.disk.put(hs[todo], data)  # type: ignore[union-attr]
            self.stats["blocks_offloaded"] += len(todo)

    # ---- host tier ----------------------------------------------------------------

    def swap_out(self, req_id: int) -> TransferHandle | None:
        """Swaps a request to the host tier (None: host full, nothing changed). The copy
        runs asynchronously; :meth:`ready` orders the next forward pass after it."""
        if self.transfer is None:
            raise InvalidArgumentError("no host tier: swap_out needs host=")
        ranges = self.manager.swap_out(req_id)
        if ranges is None:
            return None
        h = self.transfer.swap_out(ranges)
        self._pending.append(h)
        self.stats["swap_out_blocks"] += int(ranges[:, 2].sum()) if len(ranges) else 0
        return h

    def swap_in(self, req_id: int, *, now: float | None = None) -> TransferHandle | None:
        """Brings a request back (None: does not fit, nothing changed)."""
        if self.transfer is None:
            raise InvalidArgumentError("no host tier: swap_in needs host=")
        ranges = self.manager.swap_in(req_id, now=now)
        if ranges is None:
            return None
        self.after_schedule()  # blocks evicted to make room go to disk before the copy
        h = self.transfer.swap_in(ranges)
        self._pending.append(h)
        self.stats["swap_in_blocks"] += int(ranges[:, 2].sum()) if len(ranges) else 0
        return h

    def ready(self, stream: Any = None) -> None:
        """Makes ``stream`` (default: current) wait for every transfer submitted so far."""
        for h in self._pending:
            h.wait(stream)
        self._pending.clear()

    def synchronize(self) -> None:
        """Blocks the host until every submitted transfer finished."""
        for h in self._pending:
            h.synchronize()
        self._pending.clear()
