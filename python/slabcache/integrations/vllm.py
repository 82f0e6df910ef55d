"""slabcache's BlockManager inside vLLM's v1 scheduler.

:class:`SlabcacheKVCacheManager` has the constructor and the methods of
vLLM's ``vllm.v1.core.kv_cache_manager.KVCacheManager`` that the v1
``Scheduler`` calls, with the same return types (``KVCacheBlocks`` of
``KVCacheBlock`` objects, ``PrefixCacheStats``, KV-cache events); the block
accounting, prefix caching and eviction run in slabcache's Rust core.
:class:`SlabcacheScheduler` is vLLM's ``Scheduler`` using it
(``SlabcacheAsyncScheduler``: its ``AsyncScheduler``); pass it as
``scheduler_cls`` (``SchedulerConfig(scheduler_cls=...)``, or
``--scheduler-cls slabcache.integrations.vllm.SlabcacheScheduler``)::

    from vllm.config import SchedulerConfig
    cfg = SchedulerConfig(scheduler_cls="slabcache.integrations.vllm.SlabcacheScheduler", ...)

Block ids equal vLLM's: vLLM keeps block 0 as its null block, so slabcache
manages ``num_blocks - 1`` blocks and id ``i`` here is slabcache's ``i - 1``;
the free queue starts in the same order, so an identical sequence of calls
gives identical block tables.

Supported: one KV-cache group of full attention (the common decoder-only
model), or hybrid groups of full attention and sliding window with one page
size (:class:`SlabcacheHybridKVCacheManager`, built automatically from such a
``KVCacheConfig``), prefix caching on or off, LoRA and ``cache_salt`` (as the block-hash
extra key), ``max_cache_hit_length``, requests that skip reading the prefix
cache, speculative tokens beyond the known tokens, lookahead slots, the
watermark with ``has_scheduled_reqs`` and ``reserved_blocks``,
``full_sequence_must_fit``, external computed tokens and
``delay_cache_blocks`` (KV connectors' loads; ``cache_blocks`` publishes the
delayed blocks). ``get_computed_blocks`` has no side effect (the request is
registered at its admission). Not supported (``NotImplementedError`` at
construction or at the call): Mamba, HiSparse and other group types,
groups with different block sizes, EAGLE block drop, sparse prefix-cache
retention with a sliding window, encoder-decoder cross attention, connectors' deferred frees and
``evict_blocks``, multimodal per-block hash keys
(multimodal requests are keyed as a whole, which is safe but hits less).
``docs/blocks.md`` lists how vLLM's own scheduler and prefix-caching tests
fare against this adapter.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..blocks import BlockManager
from ..errors import UnsupportedFeatureError

__all__ = [  # noqa: F822 - SlabcacheScheduler is built lazily by __getattr__
    "SlabcacheKVCacheManager",
    "SlabcacheHybridKVCacheManager",
    "SlabcacheScheduler",
    "SlabcacheAsyncScheduler",
    "KV_CACHE_MANAGER_SIGNATURE",
    "install",
]

# The parameters (name, default) this adapter mirrors (vLLM 0.33.0); the drift
# test compares them with the installed vLLM's.
_REQUIRED = "<required>"
KV_CACHE_MANAGER_SIGNATURE: tuple[tuple[str, object], ...] = (
    ("kv_cache_config", _REQUIRED),
    ("max_model_len", _REQUIRED),
    ("scheduler_block_size", _REQUIRED),
    ("hash_block_size", _REQUIRED),
    ("max_in_flight_tokens", None),
    ("enable_caching", True),
    ("use_eagle", False),
    ("num_hash_lookahead_tokens", 0),
    ("num_prefill_lookahead", 0),
    ("log_stats", False),
    ("enable_kv_cache_events", False),
    ("dcp_world_size", 1),
    ("pcp_world_size", 1),
    ("metrics_collector", None),
    ("watermark", 0.0),
    ("enable_mamba_shared_prefix_checkpoint", False),
)
ALLOCATE_SLOTS_SIGNATURE: tuple[tuple[str, object], ...] = (
    ("request", _REQUIRED),
    ("num_new_tokens", _REQUIRED),
    ("num_new_computed_tokens", 0),
    ("new_computed_blocks", None),
    ("num_lookahead_tokens", 0),
    ("num_external_computed_tokens", 0),
    ("delay_cache_blocks", False),
    ("num_encoder_tokens", 0),
    ("full_sequence_must_fit", False),
    ("reserved_blocks", 0),
    ("has_scheduled_reqs", True),
    ("skip_zeroing_group_ids", ()),
)


def _params(fn: Any) -> tuple[tuple[str, object], ...]:
    return tuple(
        (p.name, _REQUIRED if p.default is inspect.Parameter.empty else p.default)
        for p in inspect.signature(fn).parameters.values()
        if p.name != "self"
    )


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _lora_of(request: Any) -> tuple[int, str] | None:
    lora = getattr(request, "lora_request", None)
    if lora is None:
        return None
    return lora.lora_int_id, lora.lora_name


def _request_extra_key(request: Any) -> int:
    """The 64-bit block-hash extra key of a vLLM request: whatever makes the
    same tokens produce different KV (LoRA adapter, cache salt, multimodal
    inputs). 0 when none applies, so plain requests share blocks."""
    parts: list[bytes] = []
    lora = getattr(request, "lora_request", None)
    if lora is not None:
        parts.append(b"lora:" + str(getattr(lora, "lora_name", lora.lora_int_id)).encode())
    salt = getattr(request, "cache_salt", None)
    if salt:
        parts.append(b"salt:" + str(salt).encode())
    for f in getattr(request, "mm_features", None) or ():
        ident = getattr(f, "identifier", None) or getattr(f, "mm_hash", None)
        parts.append(b"mm:" + str(ident).encode())
    if not parts:
        return 0
    return int.from_bytes(hashlib.blake2b(b"\0".join(parts), digest_size=8).digest(), "little")


class _ReqToBlocks(Mapping[str, list[Any]]):
    """A read-only view of vLLM's ``req_to_blocks`` (request id -> its
    ``KVCacheBlock`` list), built from the core's tables on access; like
    vLLM's defaultdict, an unknown id reads as an empty list."""

    def __init__(self, owner: SlabcacheKVCacheManager) -> None:
        self._owner = owner

    def _live(self) -> list[str]:
        o = self._owner
        return [rid for rid, cid in o._ids.items() if cid in o._bm]

    def __getitem__(self, request_id: str) -> list[Any]:
        o = self._owner
        return [o._block_objs[i] for i in o._table(request_id)]

    def __contains__(self, request_id: object) -> bool:
        o = self._owner
        cid = o._ids.get(request_id) if isinstance(request_id, str) else None
        return cid is not None and cid in o._bm

    def __iter__(self) -> Iterator[str]:
        return iter(self._live())

    def __len__(self) -> int:
        return len(self._live())


class _NumCachedBlocks(_ReqToBlocks):
    """A read-only view of vLLM's ``num_cached_block`` (request id -> cached
    full blocks), from the core."""

    def __getitem__(self, request_id: str) -> Any:
        o = self._owner
        cid = o._ids.get(request_id)
        if cid is None or cid not in o._bm:
            raise KeyError(request_id)
        return o._bm.num_cached_blocks(cid)


class _GroupShim:
    """What the scheduler reads of a single-type manager (block size, spec,
    ``req_to_blocks``)."""

    def __init__(self, kv_cache_spec: Any, group_id: int, owner: Any = None) -> None:
        self.kv_cache_spec = kv_cache_spec
        self.req_to_blocks = _ReqToBlocks(owner)
        self.num_cached_block = _NumCachedBlocks(owner)
        self.block_size = kv_cache_spec.block_size
        self.kv_cache_group_id = group_id
        self.retains_longer_hit = False
        self.records_new_block_ids = True
        self.use_eagle = False


class _CoordinatorShim:
    """The few coordinator attributes vLLM's scheduler reads directly."""

    def __init__(self, owner: SlabcacheKVCacheManager, spec: Any) -> None:
        self._owner = owner
        self.single_type_managers = [_GroupShim(spec, 0, owner)]
        self.enable_partial_hash_hits = False
        self.eagle_group_ids: set[int] = set()
        self.drop_eagle_group_ids: set[int] = set()
        self.num_reprefillable_tokens = 0
        self.retention_interval: int | None = None

    def get_num_blocks_to_allocate(
        self, request_id: str, num_tokens: int, new_computed_blocks: Any = None, **_: Any
    ) -> int:
        o = self._owner
        have = len(o._table(request_id))
        hits = sum(len(g) for g in new_computed_blocks) if new_computed_blocks else 0
        return max(0, _cdiv(num_tokens, o.block_size) - have - hits)


class _FreeQueueShim:
    """``block_pool.free_block_queue``: its free count only (the queue itself
    lives in the core; ``free_block_order()`` on the core reads it)."""

    def __init__(self, pool: _BlockPoolShim) -> None:
        self._pool = pool

    @property
    def num_free_blocks(self) -> int:
        return self._pool.get_num_free_blocks()

    def get_all_free_blocks(self) -> list[Any]:
        """The free blocks in the core's reuse order (first = next handed out),
        as the ``KVCacheBlock`` objects the adapter returns."""
        objs = self._pool._owner._block_objs
        return [objs[int(b) + 1] for b in self._pool._free_order()]


class _BlockPoolShim:
    """vLLM's ``block_pool`` surface the scheduler touches."""

    def __init__(self, owner: SlabcacheKVCacheManager) -> None:
        self._owner = owner

    def get_num_free_blocks(self) -> int:
        return self._owner._bm.num_free_blocks

    @property
    def blocks(self) -> list[Any]:
        """Every block by vLLM id (0 = the null block); ``ref_cnt`` is the
        core's count, ``block_hash`` stays None (the core keeps its hashes)."""
        return self._owner._block_objs

    def _free_order(self) -> Any:
        return self._owner._bm.free_block_order()

    @property
    def free_block_queue(self) -> _FreeQueueShim:
        return _FreeQueueShim(self)

    @property
    def hash_block_size(self) -> int:
        return self._owner.block_size

    @property
    def enable_caching(self) -> bool:
        return self._owner.enable_caching

    def get_usage(self) -> float:
        return self._owner.usage

    @property
    def num_gpu_blocks(self) -> int:
        return self._owner._bm.num_blocks + 1

    def free_blocks(self, blocks: Any) -> None:
        if list(blocks):
            raise UnsupportedFeatureError("slabcache adapter: deferred block frees (KV connectors)")


class SlabcacheKVCacheManager:
    """vLLM's ``KVCacheManager`` interface backed by slabcache's BlockManager.

    Built with the same arguments as vLLM's class (the scheduler builds it);
    requests are vLLM ``Request`` objects.

        >>> import importlib.util
        >>> importlib.util.find_spec("vllm") is None or SlabcacheKVCacheManager is not None
        True
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> SlabcacheKVCacheManager:
        # A hybrid model's config builds the hybrid-group manager.
        cfg = args[0] if args else kwargs.get("kv_cache_config")
        if cls is SlabcacheKVCacheManager and cfg is not None and _is_hybrid_config(cfg):
            return object.__new__(SlabcacheHybridKVCacheManager)
        return object.__new__(cls)

    def __init__(
        self,
        kv_cache_config: Any,
        max_model_len: int,
        scheduler_block_size: int,
        hash_block_size: int,
        max_in_flight_tokens: int | None = None,
        enable_caching: bool = True,
        use_eagle: bool = False,
        num_hash_lookahead_tokens: int = 0,
        num_prefill_lookahead: int = 0,
        log_stats: bool = False,
        enable_kv_cache_events: bool = False,
        dcp_world_size: int = 1,
        pcp_world_size: int = 1,
        metrics_collector: Any = None,
        watermark: float = 0.0,
        enable_mamba_shared_prefix_checkpoint: bool = False,
    ) -> None:
        from vllm.v1.core.kv_cache_manager import KVCacheBlocks
        from vllm.v1.core.kv_cache_utils import KVCacheBlock
        from vllm.v1.kv_cache_interface import (
            AttentionSpec,
            CrossAttentionSpec,
            EncoderOnlyAttentionSpec,
            FullAttentionSpec,
            MLAAttentionSpec,
        )
        from vllm.v1.metrics.stats import PrefixCacheStats

        groups = kv_cache_config.kv_cache_groups
        if len(groups) != 1:
            raise UnsupportedFeatureError(
                f"slabcache adapter: {len(groups)} KV-cache groups (hybrid models) unsupported"
            )
        spec = groups[0].kv_cache_spec
        ok = isinstance(spec, FullAttentionSpec | MLAAttentionSpec) and not isinstance(
            spec, CrossAttentionSpec | EncoderOnlyAttentionSpec
        )
        if not ok or not isinstance(spec, AttentionSpec):
            raise UnsupportedFeatureError(
                f"slabcache adapter: KV-cache spec {type(spec).__name__} is not supported"
            )
        if getattr(spec, "sliding_window", None):
            raise UnsupportedFeatureError("slabcache adapter: sliding-window attention")
        if dcp_world_size != 1 or pcp_world_size != 1:
            raise UnsupportedFeatureError("slabcache adapter: context parallelism is not supported")
        eagle_ids = _spec_decode_groups(
            groups, use_eagle, enable_caching, scheduler_block_size, num_prefill_lookahead
        )
        self._KVCacheBlocks = KVCacheBlocks
        self._PrefixCacheStats = PrefixCacheStats
        self.kv_cache_config = kv_cache_config
        self.max_model_len = max_model_len
        self.block_size = spec.block_size
        # vLLM's drop_eagle_group_ids: lookups drop the last hit block.
        self._drop_eagle = use_eagle and 0 in eagle_ids
        if hash_block_size != self.block_size:
            raise UnsupportedFeatureError("slabcache adapter: hash_block_size != block_size")
        self.enable_caching = enable_caching
        self.enable_kv_cache_events = enable_kv_cache_events
        self.use_eagle = use_eagle
        self.log_stats = log_stats
        self.metrics_collector = metrics_collector
        self.prefix_cache_stats = PrefixCacheStats() if log_stats else None
        self.num_kv_cache_groups = 1
        self.mamba_shared_prefix_checkpoint = False
        self.retained_hit_group_ids: tuple[int, ...] = ()
        num_blocks = kv_cache_config.num_blocks
        if num_blocks < 2:
            raise ValueError("the KV cache needs at least 2 blocks (one is vLLM's null block)")
        self.watermark_blocks = int(watermark * num_blocks)
        # vLLM's block 0 is its null block: slabcache manages ids 1..num_blocks-1.
        self._bm = BlockManager(
            num_blocks - 1,
            self.block_size,
            enable_prefix_caching=enable_caching,
            enable_events=enable_kv_cache_events,
        )
        core_block = _core_block_cls()
        ref_of = self._bm.ref_count
        self._block_objs = [KVCacheBlock(0)] + [core_block(i, ref_of) for i in range(1, num_blocks)]
        self._block_objs[0].is_null = True
        self._ids: dict[str, int] = {}
        self._next_id = 0
        self._new_block_ids: list[int] = []
        # Tokens of each request the core has been given (core id -> count).
        self._known: dict[int, int] = {}
        self._events: list[Any] = []
        # Requests holding blocks: request id -> [core id, tokens given, computed].
        self._running: dict[str, list[int]] = {}
        self._core = self._bm._core
        from vllm.v1.request import RequestStatus

        self._RUNNING = RequestStatus.RUNNING
        # extra key -> (lora_int_id, lora_name), for BlockStored events.
        self._lora_of_key: dict[int, tuple[int, str]] = {}
        self.empty_kv_cache_blocks = KVCacheBlocks(((),))
        self.coordinator = _CoordinatorShim(self, spec)
        self.coordinator.eagle_group_ids = eagle_ids
        self.coordinator.drop_eagle_group_ids = eagle_ids if use_eagle else set()
        self.coordinator.single_type_managers[0].use_eagle = self._drop_eagle
        self._tag_events_by_session()
        self.block_pool = _BlockPoolShim(self)
        # vLLM's check of prefix_cache_retention_interval (full attention
        # caches densely and ignores a valid one).
        from vllm.v1.core.kv_cache_coordinator import _validate_prefix_cache_retention_interval

        retention = getattr(kv_cache_config, "prefix_cache_retention_interval", None)
        _validate_prefix_cache_retention_interval(retention, scheduler_block_size, kv_cache_config)
        self.coordinator.retention_interval = retention

    # ---- helpers -----------------------------------------------------------------

    def _core_id(self, request_id: str) -> int | None:
        return self._ids.get(request_id)

    def _register_id(self, request_id: str) -> int:
        cid = self._ids.get(request_id)
        if cid is None:
            cid = self._next_id
            self._next_id += 1
            self._ids[request_id] = cid
        return cid

    def _table(self, request_id: str) -> list[int]:
        cid = self._ids.get(request_id)
        if cid is None or cid not in self._bm:
            return []
        return (self._bm.block_table(cid) + 1).tolist()

    def _blocks(self, ids: Sequence[int]) -> Any:
        if not len(ids):
            return self.empty_kv_cache_blocks
        objs = self._block_objs
        return self._KVCacheBlocks(([objs[i] for i in ids],))

    def _extra_key(self, request: Any) -> int:
        key = _request_extra_key(request)
        lora = _lora_of(request)
        if lora is not None and self.enable_kv_cache_events:
            self._lora_of_key[key] = lora
        return key

    # ---- stats ---------------------------------------------------------------------

    @property
    def usage(self) -> float:
        """KV-cache usage in [0, 1] (vLLM's definition: the null block excluded)."""
        total = self._bm.num_blocks
        return 1.0 - self._bm.num_free_blocks / total if total else 0.0

    def make_prefix_cache_stats(self) -> Any:
        """Takes (and resets) the prefix-cache stats; None unless ``log_stats``."""
        if not self.log_stats:
            return None
        stats = self.prefix_cache_stats
        self.prefix_cache_stats = self._PrefixCacheStats()
        return stats

    def prefix_cache_lookup_enabled(self, request: Any) -> bool:
        return self.enable_caching and not request.skip_reading_prefix_cache

    def record_prefix_cache_stats(self, request: Any, num_hits: int) -> None:
        if not self.log_stats or not self.prefix_cache_lookup_enabled(request):
            return
        self.prefix_cache_stats.record(
            num_tokens=request.num_tokens,
            num_hits=num_hits,
            preempted=request.num_preemptions > 0,
        )

    # ---- lookup and allocation ---------------------------------------------------------

    def get_computed_blocks(
        self, request: Any, max_cache_hit_length: int | None = None
    ) -> tuple[Any, int, int]:
        """``(KVCacheBlocks, num_computed_tokens, shared_prefix_boundary=0)`` of a
        waiting request: its longest cached full-block prefix (at most
        ``num_tokens - 1`` tokens, or ``max_cache_hit_length``)."""
        if not self.prefix_cache_lookup_enabled(request):
            return self.empty_kv_cache_blocks, 0, 0
        limit = request.num_tokens - 1 if max_cache_hit_length is None else max_cache_hit_length
        cid = self._ids.get(request.request_id)
        if cid is not None and cid in self._bm and self._bm.num_computed_tokens(cid) > 0:
            raise UnsupportedFeatureError(
                "slabcache adapter: get_computed_blocks on a request holding computed blocks"
            )
        # Side-effect free: nothing is registered until the admission, so an
        # aborted waiting request leaves nothing behind.
        hit, n = self._bm.lookup(
            list(request.all_token_ids),
            extra_key=self._extra_key(request),
            max_hit_tokens=max(0, limit),
        )
        if self._drop_eagle and n > 0:
            # vLLM's FullAttentionManager with drop_eagle_block: the last hit
            # block is recomputed for the EAGLE/MTP drafting head.
            hit = hit[:-1]
            n -= self.block_size
        return self._blocks((hit + 1).tolist()), n, 0

    def get_computed_blocks_for_connector(
        self, request: Any, max_cache_hit_length: int | None = None
    ) -> tuple[Any, int, int, bool]:
        """One full-attention group: the plain lookup, never a divergent hit."""
        return (*self.get_computed_blocks(request, max_cache_hit_length), False)

    def allocate_slots(
        self,
        request: Any,
        num_new_tokens: int,
        num_new_computed_tokens: int = 0,
        new_computed_blocks: Any = None,
        num_lookahead_tokens: int = 0,
        num_external_computed_tokens: int = 0,
        delay_cache_blocks: bool = False,
        num_encoder_tokens: int = 0,
        full_sequence_must_fit: bool = False,
        reserved_blocks: int = 0,
        has_scheduled_reqs: bool = True,
        skip_zeroing_group_ids: tuple[int, ...] = (),
    ) -> Any:
        """vLLM's ``allocate_slots``: the new blocks (``KVCacheBlocks``) or None
        when they do not fit (nothing changed)."""
        from vllm.v1.request import RequestStatus

        if (
            num_new_tokens == 0
            and num_external_computed_tokens == 0
            and num_new_computed_tokens == 0
        ):
            raise ValueError(
                "num_new_tokens must be greater than 0 when there are no computed tokens to adopt"
            )
        if num_encoder_tokens:
            raise UnsupportedFeatureError("slabcache adapter: encoder-decoder cross attention")
        rid = request.request_id
        st = self._running.get(rid)
        if (
            st is not None
            and new_computed_blocks is None
            and not full_sequence_must_fit
            and request.status is self._RUNNING
        ):
            # Hot path (a running request's decode or next prefill chunk): one
            # core call, state mirrored here instead of queried.
            cid, core_known, core_computed = st
            tokens = request.all_token_ids
            known = len(tokens)
            mml = self.max_model_len
            target_tokens = min(request.num_computed_tokens, mml) + num_new_tokens
            target_slots = min(target_tokens + num_lookahead_tokens, mml)
            n_core = max(0, min(target_tokens, known) - core_computed)
            lookahead = max(0, target_slots - core_computed - n_core)
            appended = tokens[core_known:known] if known > core_known else None
            if n_core == 0 and lookahead == 0 and appended is None:
                return self.empty_kv_cache_blocks
            new = self._core.allocate_slots(cid, n_core, appended, lookahead, 0.0, reserved_blocks)
            if new is None:
                return None
            st[1] = known
            st[2] = core_computed + n_core
            self._known[cid] = known
            if not len(new):
                return self.empty_kv_cache_blocks
            ids = (new + 1).tolist()
            self._new_block_ids.extend(ids)
            objs = self._block_objs
            return self._KVCacheBlocks(([objs[i] for i in ids],))
        bm = self._bm
        bs = self.block_size
        cid = self._register_id(rid)
        hit_blocks = [] if new_computed_blocks is None else list(new_computed_blocks.blocks[0])
        if len(hit_blocks) * bs != num_new_computed_tokens:
            raise ValueError("num_new_computed_tokens disagrees with new_computed_blocks")
        tokens = request.all_token_ids
        known = len(tokens)
        admission = cid not in bm
        if admission:
            # Registered and allocated in one core call below (admit); no
            # prior lookup needed.
            core_known, core_computed = known, 0
        else:
            core_computed = bm.num_computed_tokens(cid)
            core_known = self._known[cid] if cid in self._known else known
            if hit_blocks:
                raise UnsupportedFeatureError(
                    "slabcache adapter: cached blocks for a request already holding blocks"
                )
        appended = list(tokens[core_known:known]) if known > core_known else None
        # vLLM's layout: comp | new_comp | new | lookahead. The core's computed
        # count never passes the known tokens; speculative tokens beyond them
        # (and anything vLLM rolled back) are slots, i.e. lookahead.
        total_computed = min(
            request.num_computed_tokens + num_new_computed_tokens + num_external_computed_tokens,
            self.max_model_len,
        )
        target_tokens = total_computed + num_new_tokens
        target_slots = min(target_tokens + num_lookahead_tokens, self.max_model_len)
        base = max(core_computed, num_new_computed_tokens)
        n_core = max(0, min(target_tokens, known) - base)
        lookahead = max(0, target_slots - (base + n_core))
        waiting = request.status in (RequestStatus.WAITING, RequestStatus.PREEMPTED)
        reserve = reserved_blocks + (self.watermark_blocks if has_scheduled_reqs and waiting else 0)
        if full_sequence_must_fit:
            full = min(request.num_tokens, self.max_model_len)
            have = (0 if admission else len(bm.block_table(cid))) + len(hit_blocks)
            need = max(0, _cdiv(full, bs) - have)
            evictable_hits = sum(1 for b in hit_blocks if bm.ref_count(b.block_id - 1) == 0)
            wm = self.watermark_blocks if has_scheduled_reqs and waiting else 0
            if need + wm > bm.num_free_blocks - evictable_hits:
                return None
        if admission:
            if n_core == 0 and lookahead == 0 and not hit_blocks:
                return self.empty_kv_cache_blocks
            new = bm.admit(
                cid,
                list(tokens),
                n_core,
                hit=[b.block_id - 1 for b in hit_blocks],
                num_lookahead_tokens=lookahead,
                extra_key=self._extra_key(request),
                reserve=reserve,
                delay_cache=delay_cache_blocks,
            )
            if new is None:
                return None
            self._known[cid] = known
            self._running[rid] = [cid, known, base + n_core]
            ids = (new + 1).tolist()
            self._new_block_ids.extend(ids)
            return self._blocks(ids)
        if delay_cache_blocks:
            raise UnsupportedFeatureError(
                "slabcache adapter: delay_cache_blocks for a request already holding blocks"
            )
        if n_core == 0 and lookahead == 0 and not hit_blocks:
            new = None
            if appended:
                new = bm.allocate_slots(cid, 0, appended, reserve=reserve)
                if new is None:
                    return None
                self._known[cid] = known
            if bm.block_table(cid).size:
                self._running[rid] = [cid, known, core_computed]
            return self.empty_kv_cache_blocks
        new = bm.allocate_slots(
            cid, n_core, appended, num_lookahead_tokens=lookahead, reserve=reserve
        )
        if new is None:
            return None
        self._known[cid] = known
        self._running[rid] = [cid, known, base + n_core]
        ids = (new + 1).tolist()
        self._new_block_ids.extend(ids)
        return self._blocks(ids)

    def free(self, request: Any) -> None:
        """Frees the request's blocks (tail first); a request with none is a no-op."""
        cid = self._ids.pop(request.request_id, None)
        if cid is None:
            return
        self._running.pop(request.request_id, None)
        self._known.pop(cid, None)
        if cid in self._bm:
            self._bm.free(cid)

    def cache_blocks(self, request: Any, num_computed_tokens: int) -> None:
        """Caches the request's full blocks up to ``num_computed_tokens``.

        The core caches every full block of known tokens at allocation; what
        is left are tokens that became known later (accepted speculative
        tokens, sampled outputs): they are appended, and the computed count
        advanced over slots the request already holds, which caches them.
        """
        if not self.enable_caching:
            return
        cid = self._ids.get(request.request_id)
        if cid is None or cid not in self._bm:
            return
        bm = self._bm
        if not bm.block_table(cid).size:
            return
        tokens = request.all_token_ids
        known = len(tokens)
        core_known = self._known.get(cid, known)
        target = min(num_computed_tokens, known)
        core_computed = bm.num_computed_tokens(cid)
        slots = len(bm.block_table(cid)) * self.block_size
        step = max(0, min(target, slots) - core_computed)
        appended = list(tokens[core_known:known]) if known > core_known else None
        # No new block can be needed (step stays within held slots), so this
        # cannot be refused; reserve=0 keeps the watermark out of it.
        if (step or appended) and bm.allocate_slots(cid, step, appended, reserve=0) is not None:
            self._known[cid] = known
            st = self._running.get(request.request_id)
            if st is not None:
                st[1] = known
                st[2] = core_computed + step
        # Blocks an admission with delay_cache_blocks left uncached (a KV load).
        bm.cache_blocks(cid, target)

    def remove_skipped_blocks(
        self, request_id: str, processed_computed_tokens: int, num_prompt_tokens: int | None = None
    ) -> None:
        """Full attention skips no blocks."""

    def pop_blocks_for_free(self, request: Any) -> list[Any]:
        raise UnsupportedFeatureError("slabcache adapter: deferred block frees (KV connectors)")

    def evict_blocks(self, block_ids: set[int]) -> None:
        raise UnsupportedFeatureError("slabcache adapter: evict_blocks (KV-load failure recovery)")

    def reset_prefix_cache(self) -> bool:
        """Drops every cached block hash; False (nothing changed) while any block
        is in use (vLLM's rule). With events on, the reset is one
        ``AllBlocksCleared`` event, not one removal per block."""
        bm = self._bm
        if bm.num_free_blocks != bm.num_blocks:
            return False
        if self.enable_kv_cache_events:
            from vllm.distributed.kv_events import AllBlocksCleared

            self._events.extend(self._convert_events(bm.drain_events()))
        if not bm.reset_prefix_cache():
            return False
        if self.enable_kv_cache_events:
            bm.drain_events()  # the per-block removals the reset recorded
            self._events.append(AllBlocksCleared())
        if self.log_stats:
            self.prefix_cache_stats.reset = True
        return True

    def get_num_common_prefix_blocks(self, running_request_id: str) -> list[int]:
        """Always 0 per group (vLLM removed cascade attention; kept for the API)."""
        return [0] * self.num_kv_cache_groups

    def _tag_events_by_session(self) -> None:
        """With events on, the stores of each ``allocate_slots`` /
        ``cache_blocks`` call are converted right after it, carrying the
        calling request's ``session_id`` as vLLM's ``BlockStored`` does (one
        event per call and chain, as vLLM's ``cache_full_blocks``). Events off:
        the plain methods, no per-call cost."""
        if not self.enable_kv_cache_events:
            return

        def tagged(fn: Any) -> Any:
            def call(request: Any, *args: Any, **kwargs: Any) -> Any:
                out = fn(request, *args, **kwargs)
                self._events.extend(self._drain_events(getattr(request, "session_id", None)))
                return out

            return call

        self.allocate_slots = tagged(self.allocate_slots)  # type: ignore[method-assign]
        self.cache_blocks = tagged(self.cache_blocks)  # type: ignore[method-assign]

    def _drain_events(self, session_id: str | None = None) -> list[Any]:
        return self._convert_events(self._bm.drain_events(), session_id)

    def take_events(self) -> list[Any]:
        """KV-cache events in vLLM's schema (``BlockStored`` / ``BlockRemoved``)."""
        if not self.enable_kv_cache_events:
            return []
        out, self._events = self._events, []
        out.extend(self._convert_events(self._bm.drain_events()))
        return out

    def _convert_events(self, ev: Any, session_id: str | None = None) -> list[Any]:
        """Core events as vLLM's: a run of stores that continue one chain
        (each block's parent is the previous block, same extra key) is one
        ``BlockStored`` with several hashes, as vLLM caches a request's newly
        full blocks in one event; removals stay one per block."""
        from vllm.distributed.kv_events import MEDIUM_GPU, BlockRemoved, BlockStored

        out: list[Any] = []
        last_hash: bytes | None = None
        last_key = -1
        for i in range(len(ev)):
            h = bytes(ev.hashes[i])
            if ev.kinds[i] == ev.STORED:
                parent = bytes(ev.parents[i]) if ev.has_parent[i] else None
                key = int(ev.extra_keys[i])
                toks = ev.tokens_of(i).tolist()
                prev = out[-1] if out else None
                if (
                    isinstance(prev, BlockStored)
                    and parent is not None
                    and parent == last_hash
                    and key == last_key
                ):
                    prev.block_hashes.append(h)
                    prev.token_ids.extend(toks)
                else:
                    lora = self._lora_of_key.get(key)
                    out.append(
                        BlockStored(
                            block_hashes=[h],
                            parent_block_hash=parent,
                            token_ids=toks,
                            block_size=self.block_size,
                            lora_id=None if lora is None else lora[0],
                            medium=MEDIUM_GPU,
                            lora_name=None if lora is None else lora[1],
                            group_idx=0,
                            session_id=session_id,
                        )
                    )
                last_hash, last_key = h, key
            else:
                out.append(BlockRemoved(block_hashes=[h], medium=MEDIUM_GPU))
                last_hash = None
        return out

    def get_blocks(self, request_id: str) -> Any:
        return self._blocks(self._table(request_id))

    def get_block_ids(self, request_id: str) -> tuple[list[int], ...]:
        """The request's block table, one list per KV-cache group."""
        return (self._table(request_id),)

    def get_block_ids_for_computed_tokens(
        self, request_id: str, num_computed_tokens: int
    ) -> tuple[list[int], ...]:
        return (self._table(request_id)[: _cdiv(num_computed_tokens, self.block_size)],)

    def estimate_cached_tokens(self, request: Any) -> int:
        cid = self._ids.get(request.request_id)
        if cid is None or cid not in self._bm or not self.enable_caching:
            return 0
        known = min(self._known.get(cid, request.num_tokens), request.num_tokens)
        return min(self._bm.num_computed_tokens(cid), known) // self.block_size * self.block_size

    def create_kv_cache_blocks(self, blocks: tuple[list[Any], ...]) -> Any:
        return self._KVCacheBlocks(blocks) if any(blocks) else self.empty_kv_cache_blocks

    def truncate_computed_blocks(self, blocks: Any, num_computed_tokens: int) -> Any:
        assert num_computed_tokens % self.block_size == 0
        n = num_computed_tokens // self.block_size
        return self.create_kv_cache_blocks((list(blocks.blocks[0][:n]),))

    def take_new_block_ids(self) -> list[int]:
        """New block ids since the last call (for KV-cache zeroing)."""
        ids, self._new_block_ids = self._new_block_ids, []
        return ids

    def record_blocks_for_zeroing(self, request_id: str, start_token: int) -> None:
        assert start_token % self.block_size == 0
        self._new_block_ids.extend(self._table(request_id)[start_token // self.block_size :])

    def take_kv_cache_block_copies(self) -> tuple[list[Any], list[Any]]:
        """Copy-on-write copies: none (vLLM's scheduler never forks here)."""
        return [], []

    def take_boundary_state_offloads(self) -> dict[str, list[tuple[int, int, int]]]:
        return {}

    def finalize_partial_tail_offloads(self, request: Any) -> list[tuple[int, int, int]]:
        return []

    def new_step_starts(self) -> None:
        """Nothing to do per step."""


# ---- hybrid KV-cache groups --------------------------------------------------------


_CORE_BLOCK_CLS: Any = None


def _core_block_cls() -> Any:
    """vLLM's ``KVCacheBlock`` whose ``ref_cnt`` is read from slabcache's core
    (the adapter's blocks never pass through vLLM's pool, so a plain field
    would stay 0). Writing another count raises: the core owns it."""
    global _CORE_BLOCK_CLS
    if _CORE_BLOCK_CLS is None:
        from vllm.v1.core.kv_cache_utils import KVCacheBlock

        class CoreKVCacheBlock(KVCacheBlock):  # type: ignore[misc]
            __slots__ = ("_ref_of",)

            def __init__(self, block_id: int, ref_of: Any) -> None:
                self._ref_of = ref_of
                super().__init__(block_id)

            @property  # type: ignore[override]
            def ref_cnt(self) -> int:
                return int(self._ref_of(self.block_id - 1))

            @ref_cnt.setter
            def ref_cnt(self, value: int) -> None:
                if value != self.ref_cnt:
                    raise AttributeError("slabcache adapter: ref_cnt is owned by the core")

        _CORE_BLOCK_CLS = CoreKVCacheBlock
    return _CORE_BLOCK_CLS


def _spec_decode_groups(
    groups: Sequence[Any],
    use_eagle: bool,
    enable_caching: bool,
    scheduler_block_size: int,
    num_prefill_lookahead: int,
) -> set[int]:
    """vLLM's ``coordinator.eagle_group_ids`` (the groups flagged
    ``is_eagle_group``, or every group when ``use_eagle`` flags none), after
    vLLM's multi-module MTP check; a multi-token prefill lookahead with
    caching is refused (vLLM then caches only ``num_computed - (lookahead -
    1)`` tokens, the core every computed full block)."""
    ids = {i for i, g in enumerate(groups) if getattr(g, "is_eagle_group", False)}
    if use_eagle and not ids:
        ids = set(range(len(groups)))
    if enable_caching and ids and scheduler_block_size < num_prefill_lookahead:
        raise ValueError(
            f"Multi-module MTP with prefix caching requires scheduler_block_size"
            f" (={scheduler_block_size}) >= num_speculative_tokens"
            f" (={num_prefill_lookahead})."
        )
    if enable_caching and num_prefill_lookahead > 1:
        raise UnsupportedFeatureError(
            "slabcache adapter: multi-token prefill lookahead (multi-module MTP)"
        )
    return ids


def _is_hybrid_config(kv_cache_config: Any) -> bool:
    """Several KV-cache groups, or one sliding-window group: the hybrid path."""
    groups = kv_cache_config.kv_cache_groups
    if len(groups) != 1:
        return True
    from vllm.v1.kv_cache_interface import SlidingWindowSpec

    return type(groups[0].kv_cache_spec) is SlidingWindowSpec


class _HybridTables(Mapping[str, list[Any]]):
    """vLLM's ``req_to_blocks`` of one group (request id -> its blocks, the
    null block for skipped ones), read from the core on access."""

    def __init__(self, owner: SlabcacheHybridKVCacheManager, group: int) -> None:
        self._owner = owner
        self._group = group

    def _live(self) -> list[str]:
        o = self._owner
        return [rid for rid, cid in o._ids.items() if o._hcore.contains(cid)]

    def __getitem__(self, request_id: str) -> list[Any]:
        o = self._owner
        cid = o._ids.get(request_id)
        if cid is None:
            return []
        objs = o._block_objs
        return [objs[b + 1] for b in o._hcore.block_table(cid, self._group)]

    def __contains__(self, request_id: object) -> bool:
        o = self._owner
        cid = o._ids.get(request_id) if isinstance(request_id, str) else None
        return cid is not None and o._hcore.contains(cid)

    def __iter__(self) -> Iterator[str]:
        return iter(self._live())

    def __len__(self) -> int:
        return len(self._live())


class _HybridNumCached(_HybridTables):
    """vLLM's ``num_cached_block`` of one group (only requests it tracks)."""

    def _live(self) -> list[str]:
        o = self._owner
        return [
            rid
            for rid, cid in o._ids.items()
            if o._hcore.num_cached_blocks(cid, self._group) is not None
        ]

    def __getitem__(self, request_id: str) -> Any:
        o = self._owner
        cid = o._ids.get(request_id)
        n = None if cid is None else o._hcore.num_cached_blocks(cid, self._group)
        if n is None:
            raise KeyError(request_id)
        return n

    def __contains__(self, request_id: object) -> bool:
        o = self._owner
        cid = o._ids.get(request_id) if isinstance(request_id, str) else None
        return cid is not None and o._hcore.num_cached_blocks(cid, self._group) is not None


class _HybridGroupShim:
    """What the scheduler reads of one group's single-type manager."""

    def __init__(self, owner: SlabcacheHybridKVCacheManager, spec: Any, group: int) -> None:
        self.kv_cache_spec = spec
        self.block_size = spec.block_size
        self.kv_cache_group_id = group
        self.req_to_blocks = _HybridTables(owner, group)
        self.num_cached_block = _HybridNumCached(owner, group)
        self.retains_longer_hit = False
        self.records_new_block_ids = True
        self.use_eagle = False
        self.enable_caching = owner.enable_caching
        window = getattr(spec, "sliding_window", None)
        if window is not None:
            self.sliding_window = window


class _HybridCoordinatorShim:
    """The coordinator attributes vLLM's scheduler reads, over the core."""

    def __init__(self, owner: SlabcacheHybridKVCacheManager, specs: Sequence[Any]) -> None:
        self._owner = owner
        self.single_type_managers = [_HybridGroupShim(owner, s, i) for i, s in enumerate(specs)]
        self.enable_partial_hash_hits = False
        self.eagle_group_ids: set[int] = set()
        self.drop_eagle_group_ids: set[int] = set()
        self.num_reprefillable_tokens = 0
        self.retention_interval: int | None = None
        self.kv_cache_config = owner.kv_cache_config

    def get_num_blocks_to_allocate(
        self,
        request_id: str,
        num_tokens: int,
        new_computed_blocks: Any = None,
        num_encoder_tokens: int = 0,
        total_computed_tokens: int = 0,
        num_local_computed_tokens: int = 0,
        num_tokens_main_model: int = 0,
        apply_admission_cap: bool = False,
        **_: Any,
    ) -> int:
        if new_computed_blocks is not None and any(len(g) for g in new_computed_blocks):
            raise UnsupportedFeatureError(
                "slabcache adapter: get_num_blocks_to_allocate with prefix-hit blocks"
            )
        o = self._owner
        cid = o._ids.get(request_id, -(2**63))
        return o._hcore.num_blocks_to_allocate(
            cid, num_tokens, total_computed_tokens, apply_admission_cap
        )

    def get_blocks(self, request_id: str) -> tuple[list[Any], ...]:
        return self._owner._group_blocks(request_id)


class SlabcacheHybridKVCacheManager(SlabcacheKVCacheManager):
    """:class:`SlabcacheKVCacheManager` for hybrid models: several KV-cache
    groups (full attention and sliding window, one page size) over one block
    pool, with vLLM 0.33's ``HybridKVCacheCoordinator`` semantics in the core
    (``slabcache_core::blocks::groups``). ``SlabcacheKVCacheManager(...)``
    returns one when vLLM's ``KVCacheConfig`` has several groups or a
    sliding-window group.

        >>> issubclass(SlabcacheHybridKVCacheManager, SlabcacheKVCacheManager)
        True
    """

    def __init__(
        self,
        kv_cache_config: Any,
        max_model_len: int,
        scheduler_block_size: int,
        hash_block_size: int,
        max_in_flight_tokens: int | None = None,
        enable_caching: bool = True,
        use_eagle: bool = False,
        num_hash_lookahead_tokens: int = 0,
        num_prefill_lookahead: int = 0,
        log_stats: bool = False,
        enable_kv_cache_events: bool = False,
        dcp_world_size: int = 1,
        pcp_world_size: int = 1,
        metrics_collector: Any = None,
        watermark: float = 0.0,
        enable_mamba_shared_prefix_checkpoint: bool = False,
    ) -> None:
        from vllm.v1.core.kv_cache_coordinator import _validate_prefix_cache_retention_interval
        from vllm.v1.core.kv_cache_manager import KVCacheBlocks
        from vllm.v1.core.kv_cache_utils import KVCacheBlock
        from vllm.v1.kv_cache_interface import (
            FullAttentionSpec,
            MLAAttentionSpec,
            SlidingWindowSpec,
            get_kv_cache_spec_kind,
            get_kv_cache_spec_sliding_window,
        )
        from vllm.v1.metrics.stats import PrefixCacheStats
        from vllm.v1.request import RequestStatus

        groups = kv_cache_config.kv_cache_groups
        if not groups:
            raise UnsupportedFeatureError("slabcache adapter: a model with no KV-cache group")
        if dcp_world_size != 1 or pcp_world_size != 1:
            raise UnsupportedFeatureError("slabcache adapter: context parallelism is not supported")
        if num_hash_lookahead_tokens:
            raise UnsupportedFeatureError(
                "slabcache adapter: lookahead block hashing (hybrid groups)"
            )
        eagle_ids = _spec_decode_groups(
            groups, use_eagle, enable_caching, scheduler_block_size, num_prefill_lookahead
        )
        if max_in_flight_tokens is None:
            max_in_flight_tokens = max_model_len
        specs = [g.kv_cache_spec for g in groups]
        core_groups: list[tuple[int, int, int]] = []
        for spec in specs:
            if type(spec) is SlidingWindowSpec:
                cap = spec.max_admission_blocks_per_request(
                    max_in_flight_tokens=max_in_flight_tokens, max_model_len=max_model_len
                )
                core_groups.append(
                    (spec.sliding_window, getattr(spec, "extra_retained_tokens", 0), cap)
                )
            elif type(spec) in (FullAttentionSpec, MLAAttentionSpec):
                core_groups.append((0, 0, -1))
            else:
                raise UnsupportedFeatureError(
                    f"slabcache adapter: KV-cache spec {type(spec).__name__} in a hybrid model "
                    "(full attention and sliding window are supported)"
                )
        block_size = specs[0].block_size
        if any(s.block_size != block_size for s in specs) or hash_block_size != block_size:
            raise UnsupportedFeatureError(
                "slabcache adapter: hybrid groups with different block sizes"
            )
        if scheduler_block_size != block_size:
            raise UnsupportedFeatureError("slabcache adapter: scheduler_block_size != block_size")
        retention = getattr(kv_cache_config, "prefix_cache_retention_interval", None)
        _validate_prefix_cache_retention_interval(retention, scheduler_block_size, kv_cache_config)
        if retention is not None and any(w for w, _, _ in core_groups):
            raise UnsupportedFeatureError(
                "slabcache adapter: sparse prefix-cache retention (prefix_cache_retention_interval)"
            )
        self._KVCacheBlocks = KVCacheBlocks
        self._PrefixCacheStats = PrefixCacheStats
        self.kv_cache_config = kv_cache_config
        self.max_model_len = max_model_len
        self.block_size = block_size
        self.enable_caching = enable_caching
        self.enable_kv_cache_events = enable_kv_cache_events
        self.use_eagle = use_eagle
        self.log_stats = log_stats
        self.metrics_collector = metrics_collector
        self.prefix_cache_stats = PrefixCacheStats() if log_stats else None
        self.num_kv_cache_groups = len(groups)
        self.mamba_shared_prefix_checkpoint = False
        self.retained_hit_group_ids: tuple[int, ...] = ()
        num_blocks = kv_cache_config.num_blocks
        if num_blocks < 2:
            raise ValueError("the KV cache needs at least 2 blocks (one is vLLM's null block)")
        if watermark < 0.0:
            raise ValueError("watermark must be non-negative")
        self.watermark_blocks = int(watermark * num_blocks)
        self.kv_cache_event_metadata = tuple(
            (get_kv_cache_spec_kind(s).value, get_kv_cache_spec_sliding_window(s)) for s in specs
        )
        from ..blocks import HybridBlockManager

        self._hbm = HybridBlockManager(
            num_blocks - 1,
            block_size,
            [w or None for w, _, _ in core_groups],
            extra_retained_tokens=[e for _, e, _ in core_groups],
            admission_caps=[None if c < 0 else c for _, _, c in core_groups],
            enable_prefix_caching=enable_caching,
            enable_events=enable_kv_cache_events,
            eagle_groups=sorted(eagle_ids) if use_eagle else (),
        )
        self._hcore = self._hbm._core
        core_block = _core_block_cls()
        ref_of = self._hbm.ref_count
        self._block_objs = [KVCacheBlock(0)] + [core_block(i, ref_of) for i in range(1, num_blocks)]
        self._block_objs[0].is_null = True
        self._ids: dict[str, int] = {}
        self._next_id = 0
        self._new_block_ids: list[int] = []
        self._known: dict[int, int] = {}
        self._events: list[Any] = []
        self._lora_of_key: dict[int, tuple[int, str]] = {}
        # (request id, tokens) of the prompt the core last hashed in a lookup.
        self._last_lookup: tuple[str, int] | None = None
        self._WAITING = (RequestStatus.WAITING, RequestStatus.PREEMPTED)
        self.empty_kv_cache_blocks = KVCacheBlocks(tuple(() for _ in groups))
        self.coordinator = _HybridCoordinatorShim(self, specs)
        drop_ids = eagle_ids if use_eagle else set()
        self.coordinator.eagle_group_ids = eagle_ids
        self.coordinator.drop_eagle_group_ids = drop_ids
        for i, m in enumerate(self.coordinator.single_type_managers):
            # vLLM sets the bit on every member of an attention group (same spec).
            m.use_eagle = any(specs[j] == specs[i] for j in drop_ids)
        self._tag_events_by_session()
        self.coordinator.retention_interval = retention
        self.block_pool = _HybridBlockPoolShim(self)

    # ---- helpers -----------------------------------------------------------------

    def _group_blocks(self, request_id: str) -> tuple[list[Any], ...]:
        cid = self._ids.get(request_id)
        if cid is None or not self._hcore.contains(cid):
            return tuple([] for _ in range(self.num_kv_cache_groups))
        objs = self._block_objs
        return tuple([objs[b + 1] for b in t] for t in self._hcore.block_tables(cid))

    def _to_blocks(self, tables: Sequence[Sequence[int]]) -> Any:
        objs = self._block_objs
        return self.create_kv_cache_blocks(tuple([objs[b + 1] for b in t] for t in tables))

    @property
    def usage(self) -> float:
        total = self._hbm.num_blocks
        return 1.0 - self._hcore.num_free_blocks / total if total else 0.0

    # ---- lookup and allocation ---------------------------------------------------------

    def get_computed_blocks(
        self, request: Any, max_cache_hit_length: int | None = None
    ) -> tuple[Any, int, int]:
        """The longest prefix cached in every group (fixed-point search in the
        core): per-group blocks, the null block where a window skips."""
        if not self.prefix_cache_lookup_enabled(request):
            return self.empty_kv_cache_blocks, 0, 0
        limit = request.num_tokens - 1 if max_cache_hit_length is None else max_cache_hit_length
        key = (request.request_id, request.num_tokens)
        if key == self._last_lookup:
            # The same waiting request as last time (refused, retried): the
            # core still holds its prompt's hashes.
            hit, n = self._hcore.find_longest_cache_hit(None, 0, max(0, limit))
        else:
            hit, n = self._hcore.find_longest_cache_hit(
                list(request.all_token_ids), self._extra_key(request), max(0, limit)
            )
            self._last_lookup = key
        return self._to_blocks(hit), n, 0

    def get_computed_blocks_for_connector(
        self, request: Any, max_cache_hit_length: int | None = None
    ) -> tuple[Any, int, int, bool]:
        """No Mamba group: the plain lookup, never a divergent hit."""
        return (*self.get_computed_blocks(request, max_cache_hit_length), False)

    def allocate_slots(
        self,
        request: Any,
        num_new_tokens: int,
        num_new_computed_tokens: int = 0,
        new_computed_blocks: Any = None,
        num_lookahead_tokens: int = 0,
        num_external_computed_tokens: int = 0,
        delay_cache_blocks: bool = False,
        num_encoder_tokens: int = 0,
        full_sequence_must_fit: bool = False,
        reserved_blocks: int = 0,
        has_scheduled_reqs: bool = True,
        skip_zeroing_group_ids: tuple[int, ...] = (),
    ) -> Any:
        """vLLM's ``allocate_slots`` over every group (one core call)."""
        if (
            num_new_tokens == 0
            and num_external_computed_tokens == 0
            and num_new_computed_tokens == 0
        ):
            raise ValueError(
                "num_new_tokens must be greater than 0 when there are no computed tokens to adopt"
            )
        if num_encoder_tokens:
            raise UnsupportedFeatureError("slabcache adapter: encoder-decoder cross attention")
        core = self._hcore
        cid = self._register_id(request.request_id)
        known_before = core.num_tokens(cid)
        tokens = request.all_token_ids
        known = len(tokens)
        from_lookup = False
        if known_before is None:
            if self._last_lookup == (request.request_id, known):
                new_tokens: list[int] | None = None
                key = 0
                from_lookup = True
            else:
                new_tokens = list(tokens)
                key = self._extra_key(request)
                self._last_lookup = None  # the core's remembered prompt changes
        else:
            new_tokens = list(tokens[known_before:]) if known > known_before else None
            key = 0
        hit = None
        if new_computed_blocks is not None:
            hit = [[b.block_id - 1 for b in g] for g in new_computed_blocks.blocks]
        wm = self.watermark_blocks if has_scheduled_reqs and request.status in self._WAITING else 0
        new = core.allocate_slots(
            cid,
            new_tokens,
            num_new_tokens,
            extra_key=key,
            hit=hit,
            num_computed_tokens=request.num_computed_tokens,
            num_new_computed_tokens=num_new_computed_tokens,
            num_external_computed_tokens=num_external_computed_tokens,
            num_lookahead_tokens=num_lookahead_tokens,
            num_in_flight_tokens=getattr(request, "num_in_flight_tokens", 0),
            max_model_len=self.max_model_len,
            reserved_blocks=reserved_blocks,
            watermark_blocks=wm,
            full_sequence_must_fit=full_sequence_must_fit,
            delay_cache=delay_cache_blocks,
            prompt_from_lookup=from_lookup,
        )
        if new is None:
            return None
        for g in new:
            self._new_block_ids.extend(b + 1 for b in g)
        return self._to_blocks(new)

    def free(self, request: Any) -> None:
        """Frees the request's blocks group by group, each table tail first."""
        cid = self._ids.pop(request.request_id, None)
        if cid is not None:
            self._hcore.free(cid)

    def cache_blocks(self, request: Any, num_computed_tokens: int) -> None:
        """Caches the request's full blocks up to ``num_computed_tokens`` in every group."""
        if not self.enable_caching:
            return
        cid = self._ids.get(request.request_id)
        if cid is None:
            return
        core = self._hcore
        have = core.num_tokens(cid)
        if have is None:
            return
        tokens = request.all_token_ids
        if len(tokens) > have:
            core.append_tokens(cid, list(tokens[have:]))
        core.cache_blocks(cid, num_computed_tokens)

    def remove_skipped_blocks(
        self, request_id: str, processed_computed_tokens: int, num_prompt_tokens: int | None = None
    ) -> None:
        """Frees the sliding-window blocks that left the window."""
        cid = self._ids.get(request_id)
        if cid is not None:
            self._hcore.remove_skipped_blocks(cid, max(0, processed_computed_tokens))

    def reset_prefix_cache(self) -> bool:
        """Drops every cached hash; False while any block is in use. One
        ``AllBlocksCleared`` event."""
        if not self._hcore.reset_prefix_cache():
            return False
        if self.enable_kv_cache_events:
            from vllm.distributed.kv_events import AllBlocksCleared

            self._events.extend(self._convert_hybrid_events())
            self._events.append(AllBlocksCleared())
        if self.log_stats:
            self.prefix_cache_stats.reset = True
        return True

    def take_events(self) -> list[Any]:
        """KV-cache events in vLLM's schema, per group (``group_idx``)."""
        if not self.enable_kv_cache_events:
            return []
        out, self._events = self._events, []
        out.extend(self._convert_hybrid_events())
        return out

    def _drain_events(self, session_id: str | None = None) -> list[Any]:
        return self._convert_hybrid_events(session_id)

    def _convert_hybrid_events(self, session_id: str | None = None) -> list[Any]:
        from vllm.distributed.kv_events import MEDIUM_GPU, BlockRemoved, BlockStored

        out: list[Any] = []
        meta = self.kv_cache_event_metadata
        for kind, group, _blocks, hashes, parent, key, toks in self._hcore.drain_events():
            if kind == 0:
                lora = self._lora_of_key.get(key)
                out.append(
                    BlockStored(
                        block_hashes=list(hashes),
                        parent_block_hash=parent,
                        token_ids=toks,
                        block_size=self.block_size,
                        lora_id=None if lora is None else lora[0],
                        medium=MEDIUM_GPU,
                        lora_name=None if lora is None else lora[1],
                        group_idx=group,
                        kv_cache_spec_kind=meta[group][0],
                        kv_cache_spec_sliding_window=meta[group][1],
                        session_id=session_id,
                    )
                )
            else:
                out.append(
                    BlockRemoved(block_hashes=list(hashes), medium=MEDIUM_GPU, group_idx=group)
                )
        return out

    def get_blocks(self, request_id: str) -> Any:
        return self.create_kv_cache_blocks(self._group_blocks(request_id))

    def get_block_ids(self, request_id: str) -> tuple[list[int], ...]:
        """The request's block tables, one per group (0: the null block)."""
        return self.get_blocks(request_id).get_block_ids()

    def get_block_ids_for_computed_tokens(
        self, request_id: str, num_computed_tokens: int
    ) -> tuple[list[int], ...]:
        n = _cdiv(num_computed_tokens, self.block_size)
        return tuple(ids[:n] for ids in self.get_block_ids(request_id))

    def estimate_cached_tokens(self, request: Any) -> int:
        """The shortest, over the groups, of the longest cached prefix a held block ends."""
        cid = self._ids.get(request.request_id)
        if cid is None or not self.enable_caching or not self._hcore.contains(cid):
            return 0
        core = self._hcore
        best: int | None = None
        for t in core.block_tables(cid):
            n = 0
            for i in range(len(t) - 1, -1, -1):
                if t[i] >= 0 and core.cached_hash(t[i]) is not None:
                    n = (i + 1) * self.block_size
                    break
            best = n if best is None else min(best, n)
        return best or 0

    def create_kv_cache_blocks(self, blocks: tuple[list[Any], ...]) -> Any:
        return self._KVCacheBlocks(blocks) if any(blocks) else self.empty_kv_cache_blocks

    def truncate_computed_blocks(self, blocks: Any, num_computed_tokens: int) -> Any:
        assert num_computed_tokens % self.block_size == 0
        n = num_computed_tokens // self.block_size
        return self.create_kv_cache_blocks(tuple(list(g[:n]) for g in blocks.blocks))

    def record_blocks_for_zeroing(self, request_id: str, start_token: int) -> None:
        assert start_token % self.block_size == 0
        start = start_token // self.block_size
        for ids in self.get_block_ids(request_id):
            self._new_block_ids.extend(ids[start:])

    def get_num_common_prefix_blocks(self, running_request_id: str) -> list[int]:
        return [0] * self.num_kv_cache_groups

    def evict_blocks(self, block_ids: set[int]) -> None:
        """Drops these blocks' cached hashes (a failed KV load); they stay held."""
        self._hcore.evict_blocks(sorted(b - 1 for b in block_ids if b > 0))


class _HybridBlockPoolShim(_BlockPoolShim):
    """vLLM's ``block_pool`` surface over the hybrid core."""

    def __init__(self, owner: SlabcacheHybridKVCacheManager) -> None:
        self._owner = owner
        self.null_block = owner._block_objs[0]

    def get_num_free_blocks(self) -> int:
        return self._owner._hcore.num_free_blocks

    def _free_order(self) -> Any:
        return self._owner._hbm.free_block_order()

    @property
    def num_gpu_blocks(self) -> int:
        return self._owner._hbm.num_blocks + 1


def install() -> None:
    """Makes every vLLM v1 scheduler built from now on use slabcache's manager
    (replaces ``KVCacheManager`` in vLLM's scheduler module)."""
    import vllm.v1.core.kv_cache_manager as kvm
    import vllm.v1.core.sched.scheduler as sched

    sched.KVCacheManager = SlabcacheKVCacheManager  # type: ignore[attr-defined]
    kvm.KVCacheManager = SlabcacheKVCacheManager  # type: ignore[attr-defined]


def _make_scheduler_cls(base: type, name: str) -> type:
    import vllm.v1.core.sched.scheduler as sched

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original = sched.KVCacheManager
        sched.KVCacheManager = SlabcacheKVCacheManager
        try:
            base.__init__(self, *args, **kwargs)
        finally:
            sched.KVCacheManager = original

    doc = f"vLLM's v1 ``{base.__name__}`` whose KV-cache manager is slabcache's."
    ns: dict[str, Any] = {"__init__": __init__, "__doc__": doc, "__module__": __name__}
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler

    if not issubclass(base, AsyncScheduler):
        ns.update(_fast_path_methods(base, __init__))
        ns["__doc__"] = doc + (
            " ``schedule()`` runs the step in one core call when the configuration"
            ' and the live requests allow it (``docs/blocks.md``, "Fast path"),'
            " stock ``schedule()`` otherwise."
        )
    return type(name, (base,), ns)


def _fast_path_methods(base: type, init: Any) -> dict[str, Any]:
    """``__init__`` / ``add_request`` / ``schedule`` of the scheduler with the
    one-call fast path (``_vllm_fast``)."""
    from . import _vllm_fast as fast

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        # Why the configuration is outside the fast path (None: inside).
        self._fast_config = fast.config_blocker(self)
        # Live requests outside the subset (their steps run stock).
        self._fast_blockers: dict[str, Any] = {}
        # Waiting requests the core holds (fast preemptions, refused arrivals).
        self._fast_waiting: set[str] = set()
        # Whether the fast path's mirrors are current (the last step ran it,
        # or no step ran yet).
        self._fast_active = self._fast_config is None
        # Steps run by each path (tests, benchmarks).
        self.fast_path_steps = 0
        self.stock_path_steps = 0

    def add_request(self: Any, request: Any) -> None:
        base.add_request(self, request)
        fast.add_request(self, request)

    def schedule(self: Any, throttle_prefills: bool = False) -> Any:
        if not fast.blocked(self, throttle_prefills):
            out = fast.schedule(self)
            if out is not None:
                self.fast_path_steps += 1
                return out
        fast.to_stock(self)
        self.stock_path_steps += 1
        return base.schedule(self, throttle_prefills)

    schedule.__doc__ = base.schedule.__doc__
    return {"__init__": __init__, "add_request": add_request, "schedule": schedule}


def __getattr__(name: str) -> Any:
    # The scheduler classes subclass vLLM's, so they are built on first use:
    # importing this module does not import vLLM.
    if name == "SlabcacheScheduler":
        from vllm.v1.core.sched.scheduler import Scheduler as base
    elif name == "SlabcacheAsyncScheduler":
        from vllm.v1.core.sched.async_scheduler import AsyncScheduler as base
    else:
        raise AttributeError(name)
    cls = _make_scheduler_cls(base, name)
    globals()[name] = cls
    return cls


def signature_of_installed_vllm() -> tuple[tuple[tuple[str, object], ...], ...]:
    """The installed vLLM's ``KVCacheManager.__init__`` and ``allocate_slots``
    parameters as ``(name, default)`` pairs."""
    from vllm.v1.core.kv_cache_manager import KVCacheManager

    return _params(KVCacheManager.__init__), _params(KVCacheManager.allocate_slots)
