"""KV data plane on three tiers, under the :class:`~slabcache.BlockManager`'s decisions.

- :class:`KVCachePool`: device tier, ``[num_blocks, 2, block_size, H, D]`` per layer;
- :class:`HostKVTier`: host tier in slabs of :class:`~slabcache.SlabAllocator`,
  registered with CUDA;
- :class:`KVTransfer`: swap ranges as coalesced async copies (+ a batched kernel
  for short ones);
- :class:`ArenaKVTier`: disk tier in a :class:`~slabcache.BlobArena`, by chained
  prefix hash, byte budget;
- :class:`TieredKVCache`: ties them to one BlockManager;
- :mod:`slabcache.kv.vattn`: the alternative to paged blocks, virtually contiguous KV per
  request with pages mapped on demand (vAttention; ``docs/vattn.md``).

See ``docs/kv_tiers.md``.
"""

from __future__ import annotations

from .disk import ArenaKVTier
from .host import HostKVTier
from .layout import KVLayout
from .pool import KVCachePool
from .tiers import Admission, TieredKVCache
from .transfer import KVTransfer, TransferHandle, TransferPlan, plan_transfer

__all__ = [
    "Admission",
    "ArenaKVTier",
    "HostKVTier",
    "KVCachePool",
    "KVLayout",
    "KVTransfer",
    "TieredKVCache",
    "TransferHandle",
    "TransferPlan",
    "plan_transfer",
]
