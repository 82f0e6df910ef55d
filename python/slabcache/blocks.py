"""Paged KV-cache block manager for LLM serving engines.

A serving engine keeps its KV cache in a pool of fixed-size blocks
(PagedAttention) and gives each request a *block table*. :class:`BlockManager`
decides which blocks each request gets, every scheduler step, in the Rust
core: prefix caching by chained block hash (requests sharing a system prompt
share its blocks), LRU eviction of freed-but-cached blocks, copy-on-write
fork, swapping to a host tier in coalesced ranges, and TTL pins that keep an
agent's finished turn resident while it waits on a tool call. Behaviour
follows vLLM's v1 ``KVCacheManager``; see ``docs/blocks.md``.

    >>> from slabcache import BlockManager
    >>> bm = BlockManager(num_blocks=64, block_size=4)
    >>> system = list(range(8))                       # 2 full blocks shared by all
    >>> blocks, n_cached = bm.get_computed_blocks(1, system + [100, 101])
    >>> n_cached
    0
    >>> bm.allocate_slots(1, 10).tolist()             # 10 prompt tokens -> 3 blocks
    [0, 1, 2]
    >>> blocks, n_cached = bm.get_computed_blocks(2, system + [200])
    >>> blocks.tolist(), n_cached                     # the system prompt hits
    ([0, 1], 8)
    >>> bm.allocate_slots(2, 1).tolist()
    [3]
    >>> bm.block_tables([1, 2]).tolist()
    [[0, 1, 2], [0, 1, 3]]
    >>> bm.free(1); bm.free(2); bm.check_invariants()

One call per scheduler step (the format is described in :class:`StepBatch`):

    >>> bm2 = BlockManager(num_blocks=16, block_size=4)
    >>> batch = StepBatch.from_lists([7, 8], [100, 100], [[1, 2, 3, 4, 5], [1, 2, 3, 4, 9]])
    >>> res = bm2.step(batch)
    >>> res.num_scheduled.tolist(), res.num_cached_tokens.tolist()
    ([5, 1], [0, 4])
"""

from __future__ import annotations

import hashlib
import itertools
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _native
from .errors import InvalidArgumentError, InvalidTypeError
from .stats_types import BlockManagerStats

__all__ = [
    "BlockEvents",
    "BlockManager",
    "HybridBlockManager",
    "NULL_BLOCK",
    "ScheduleConfig",
    "ScheduleResult",
    "StepBatch",
    "StepResult",
    "block_hashes",
    "extra_key",
]

_I32_MAX = 2**31 - 1
_EMPTY_I32 = np.zeros(0, dtype=np.int32)
_DTYPES: dict[type[np.integer[Any]], np.dtype[Any]] = {
    t: np.dtype(t) for t in (np.int32, np.int64, np.uint64)
}


def _req_id(x: Any, name: str = "req_id") -> int:
    # bool is an int subclass; True as a request id is a bug, not request 1.
    if isinstance(x, bool | np.bool_):
        raise InvalidTypeError(f"{name} must be an int, got bool")
    try:
        v = operator.index(x)
    except TypeError:
        raise InvalidTypeError(f"{name} must be an int, got {type(x).__name__}") from None
    if not -(2**63) <= v < 2**63:
        raise InvalidArgumentError(f"{name} {v} does not fit in int64")
    return v


def _count(x: Any, name: str, hi: int = 2**62) -> int:
    """A non-negative int count (bool refused), range-checked so the core
    never sees a value pyo3 would reject with a bare ``OverflowError``."""
    if isinstance(x, bool | np.bool_):
        raise InvalidTypeError(f"{name} must be an int, got bool")
    try:
        v = operator.index(x)
    except TypeError:
        raise InvalidTypeError(f"{name} must be an int, got {type(x).__name__}") from None
    if not 0 <= v <= hi:
        raise InvalidArgumentError(f"{name} must be in [0, {hi}], got {v}")
    return v


def _int_array(x: Any, name: str, dtype: type[np.integer], lo: int, hi: int) -> np.ndarray:
    """``x`` as a C-contiguous 1-D array of ``dtype``, every value in ``[lo, hi]``.

    An array that already has the right dtype and layout passes through
    untouched (the core validates values: negative counts and token ids are
    rejected there); anything else is converted with a range check so that
    nothing wraps around.
    """
    if type(x) is np.ndarray and x.dtype is _DTYPES[dtype] and x.ndim == 1 and x.flags.c_contiguous:
        return x
    arr = np.asarray(x)
    if arr.size == 0:
        return np.zeros(0, dtype=dtype)
    if arr.ndim != 1:
        raise InvalidArgumentError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise InvalidTypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    if int(arr.min()) < lo or int(arr.max()) > hi:
        raise InvalidArgumentError(f"{name} values must be in [{lo}, {hi}]")
    return np.ascontiguousarray(arr, dtype=dtype)


def _tokens(x: Any, name: str = "token_ids") -> np.ndarray:
    return _int_array(x, name, np.int32, 0, _I32_MAX)


def _tokens_arg(x: Any) -> np.ndarray | list[int]:
    """Token ids for a per-request call: lists go to the core as they are
    (it checks each value), anything else becomes a checked int32 array."""
    if type(x) is list:
        return x
    return _tokens(x)


def extra_key(key: int | str | bytes | None) -> int:
    """The 64-bit extra hash key for a LoRA id, cache salt or multimodal hash.

    Ints in ``[0, 2**64)`` are used as they are; ``str``/``bytes`` are hashed
    (BLAKE2b, 8 bytes), so any stable name works. ``None`` is 0 (no key).

        >>> extra_key(None), extra_key(5)
        (0, 5)
        >>> extra_key("lora-a") == extra_key(b"lora-a") != 0
        True
    """
    if key is None:
        return 0
    if isinstance(key, str):
        key = key.encode()
    if isinstance(key, bytes):
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
    try:
        v = operator.index(key)
    except TypeError:
        raise InvalidTypeError(
            f"extra_key must be int, str or bytes, got {type(key).__name__}"
        ) from None
    if not 0 <= v < 2**64:
        raise InvalidArgumentError(f"extra_key must be in [0, 2**64), got {v}")
    return v


def block_hashes(
    token_ids: npt.ArrayLike, block_size: int, extra_key: int | str | bytes | None = None
) -> np.ndarray:
    """Chained BLAKE3 hashes of every full block of ``token_ids``: uint8 ``(n, 32)``.

    The same hashes the manager caches under and publishes in its events, so
    a router can compute a prompt's hashes and match them against workers'.

        >>> block_hashes([1, 2, 3, 4, 5], block_size=2).shape
        (2, 32)
    """
    return _native.block_hashes(_tokens(token_ids), int(block_size), _extra_key(extra_key))


@dataclass
class StepBatch:
    """One scheduler step's requests, as flat arrays (one entry per request).

    * ``req_ids`` int64 ``[n]``: unique request ids.
    * ``num_new_tokens`` int64 ``[n]``: each request's token budget this step.
    * ``token_ids`` int32 ``[total]`` and ``token_offsets`` int64 ``[n + 1]``:
      entry ``i``'s token ids are ``token_ids[token_offsets[i]:token_offsets[i+1]]``.
      For a request the manager does not know yet this is its **prompt**; it is
      admitted with its cached prefix and ``min(budget, uncached prompt)``
      tokens are scheduled (chunked prefill when the budget is smaller). For a
      running request the slice is **appended** (e.g. last step's sampled
      token) and ``min(budget, known - computed)`` tokens are scheduled.
    * ``extra_keys`` uint64 ``[n]`` (optional): LoRA id / salt of new requests.
    * ``programs`` int64 ``[n]`` (optional, -1 = none): agent program of new
      requests; admitting one releases that program's TTL pin.
    * ``finished`` int64 ``[m]`` (optional): requests to free before scheduling.

    Build it with numpy directly on the hot path, or with :meth:`from_lists`.
    """

    req_ids: np.ndarray
    num_new_tokens: np.ndarray
    token_ids: np.ndarray = field(default_factory=lambda: _EMPTY_I32)
    token_offsets: np.ndarray | None = None
    extra_keys: np.ndarray | None = None
    programs: np.ndarray | None = None
    finished: np.ndarray | None = None

    @classmethod
    def from_lists(
        cls,
        req_ids: Sequence[int],
        num_new_tokens: Sequence[int],
        token_ids: Sequence[Sequence[int] | np.ndarray] | None = None,
        *,
        extra_keys: Sequence[int] | None = None,
        programs: Sequence[int] | None = None,
        finished: Sequence[int] | None = None,
    ) -> StepBatch:
        """A batch from per-request lists (convenience; one concatenate).

        >>> b = StepBatch.from_lists([1, 2], [16, 1], [[5, 6, 7], [9]])
        >>> b.token_offsets.tolist()
        [0, 3, 4]
        """
        n = len(req_ids)
        if token_ids is None:
            toks = _EMPTY_I32
            offsets = np.zeros(n + 1, dtype=np.int64)
        else:
            if len(token_ids) != n:
                raise InvalidArgumentError(
                    f"token_ids has {len(token_ids)} entries for {n} requests"
                )
            parts = [_tokens(t) for t in token_ids]
            lens = np.fromiter((len(p) for p in parts), dtype=np.int64, count=n)
            offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(lens, out=offsets[1:])
            toks = np.concatenate(parts) if parts else _EMPTY_I32
        return cls(
            req_ids=np.asarray(req_ids, dtype=np.int64),
            num_new_tokens=np.asarray(num_new_tokens, dtype=np.int64),
            token_ids=toks,
            token_offsets=offsets,
            extra_keys=None if extra_keys is None else np.asarray(extra_keys, dtype=np.uint64),
            programs=None if programs is None else np.asarray(programs, dtype=np.int64),
            finished=None if finished is None else np.asarray(finished, dtype=np.int64),
        )


@dataclass
class StepResult:
    """What :meth:`BlockManager.step` decided, per entry of the batch.

    * ``num_scheduled`` int32 ``[n]``: tokens to compute; ``-1`` = did not fit
      (that request is unchanged; a new one is not admitted).
    * ``num_cached_tokens`` int32 ``[n]``: prefix-cache hit tokens of admitted requests.
    * ``new_blocks`` int32 / ``new_block_offsets`` int64 ``[n + 1]``: blocks
      appended to each table (CSR layout).
    * ``copies`` int32 ``[k, 2]``: copy-on-write ``(src, dst)`` block copies to
      run before the forward pass.
    * ``block_tables`` int32 ``[n, width]`` padded with ``pad``, when requested.
    """

    num_scheduled: np.ndarray
    num_cached_tokens: np.ndarray
    new_blocks: np.ndarray
    new_block_offsets: np.ndarray
    copies: np.ndarray
    block_tables: np.ndarray | None = None

    @property
    def refused(self) -> np.ndarray:
        """Boolean mask of entries that did not fit."""
        return self.num_scheduled < 0

    def new_blocks_of(self, i: int) -> np.ndarray:
        """Blocks appended to entry ``i``'s table (a view)."""
        return self.new_blocks[self.new_block_offsets[i] : self.new_block_offsets[i + 1]]


@dataclass(frozen=True)
class ScheduleConfig:
    """vLLM's scheduler limits for :meth:`BlockManager.schedule` (vLLM's names;
    ``full_sequence_must_fit`` is ``scheduler_reserve_full_isl``, on by default
    in vLLM 0.33; ``watermark_blocks`` is ``int(watermark * num_gpu_blocks)``).

    >>> ScheduleConfig(max_num_batched_tokens=2048, max_model_len=8192).max_num_seqs
    256
    """

    max_num_batched_tokens: int
    max_model_len: int
    max_num_seqs: int = 256
    long_prefill_token_threshold: int = 0
    num_lookahead_tokens: int = 0
    full_sequence_must_fit: bool = True
    watermark_blocks: int = 0


@dataclass
class ScheduleResult:
    """One :meth:`BlockManager.schedule` step, in vLLM's order (running
    requests first, then admissions), one entry per scheduled request:

    * ``req_ids`` int64, ``num_scheduled`` int32 (tokens to compute),
      ``num_computed`` int32 (computed before this step; an admission's
      prefix-cache hit), ``kinds`` uint8 (``RUNNING``, ``NEW``, ``RESUMED``);
    * ``blocks`` int32 / ``block_offsets`` int64 ``[n + 1]`` (CSR): a running
      request's new blocks, an admission's whole block table;
    * ``preempted`` int64: requests preempted this step (now waiting, at the
      front of the queue), in order; ``copies`` int32 ``(k, 2)`` copy-on-write.
    """

    RUNNING = 0
    NEW = 1
    RESUMED = 2

    req_ids: np.ndarray
    num_scheduled: np.ndarray
    num_computed: np.ndarray
    kinds: np.ndarray
    blocks: np.ndarray
    block_offsets: np.ndarray
    preempted: np.ndarray
    copies: np.ndarray

    def blocks_of(self, i: int) -> np.ndarray:
        """Entry ``i``'s blocks (a view)."""
        return self.blocks[self.block_offsets[i] : self.block_offsets[i + 1]]


_EMPTY_I64 = np.zeros(0, dtype=np.int64)
_ZERO_OFFSETS = np.zeros(1, dtype=np.int64)


def _csr(parts: Sequence[Sequence[int] | np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Token lists as (concatenated int32 tokens, int64 offsets)."""
    if not parts:
        return _EMPTY_I32, _ZERO_OFFSETS
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    if all(type(p) is list for p in parts):
        # One conversion (and one range check) for all the lists.
        return _tokens(list(itertools.chain.from_iterable(parts))), offsets
    return np.concatenate([_tokens(p) for p in parts]), offsets


@dataclass
class BlockEvents:
    """Prefix-cache events, oldest first: ``kinds`` (0 = stored, 1 = removed),
    ``block_ids``, ``hashes`` uint8 ``(n, 32)``, and for stored blocks their
    ``parents`` (``has_parent`` false for a sequence's first block), the
    ``extra_keys`` they were hashed with and their token ids (event ``i``'s
    are ``token_ids[token_offsets[i]:token_offsets[i + 1]]``; empty for
    removals) — the fields of vLLM's ``BlockStored``."""

    STORED = 0
    REMOVED = 1

    kinds: np.ndarray
    block_ids: np.ndarray
    hashes: np.ndarray
    parents: np.ndarray
    has_parent: np.ndarray
    extra_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    token_ids: np.ndarray = field(default_factory=lambda: _EMPTY_I32)
    token_offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))

    def tokens_of(self, i: int) -> np.ndarray:
        """Event ``i``'s token ids (int32; empty for a removal)."""
        return self.token_ids[self.token_offsets[i] : self.token_offsets[i + 1]]

    def __len__(self) -> int:
        return len(self.kinds)

    def hash_hex(self, i: int) -> str:
        """Event ``i``'s block hash as 64 hex characters."""
        return bytes(self.hashes[i]).hex()


class BlockManager:
    """The paged KV-cache block manager.

    Args:
        num_blocks: device blocks in the pool (ids ``0..num_blocks``).
        block_size: tokens per block.
        num_cpu_blocks: host-tier blocks for :meth:`swap_out` (0: no swapping).
        enable_prefix_caching: share full blocks between requests by content.
        watermark: fraction of blocks kept free when admitting a request or
            swapping one in (running requests may use them).
        enable_events: record :class:`BlockEvents` for :meth:`drain_events`.
        clock: seconds, for TTL pins (default ``time.monotonic``); every
            method that takes ``now`` uses ``clock()`` when ``now`` is None.

    Request ids are ints (int64). Errors are ``slabcache.errors`` classes and
    leave the manager unchanged.

        >>> bm = BlockManager(num_blocks=8, block_size=16)
        >>> bm.num_free_blocks
        8
    """

    def __init__(
        self,
        num_blocks: int,
        block_size: int = 16,
        num_cpu_blocks: int = 0,
        *,
        enable_prefix_caching: bool = True,
        watermark: float = 0.0,
        enable_events: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, v in (
            ("num_blocks", num_blocks),
            ("block_size", block_size),
            ("num_cpu_blocks", num_cpu_blocks),
        ):
            if not isinstance(v, int | np.integer) or isinstance(v, bool):
                raise InvalidTypeError(f"{name} must be an int, got {type(v).__name__}")
        self._core = _native.BlockManagerCore(
            _count(num_blocks, "num_blocks", _I32_MAX),
            _count(block_size, "block_size", _I32_MAX),
            _count(num_cpu_blocks, "num_cpu_blocks", _I32_MAX),
            bool(enable_prefix_caching),
            float(watermark),
            bool(enable_events),
        )
        self._clock = clock

    # ---- configuration and state ------------------------------------------------

    @property
    def num_blocks(self) -> int:
        return self._core.num_blocks

    @property
    def block_size(self) -> int:
        return self._core.block_size

    @property
    def num_cpu_blocks(self) -> int:
        return self._core.num_cpu_blocks

    @property
    def num_free_blocks(self) -> int:
        """Blocks no request or pin references (cached-evictable ones included)."""
        return self._core.num_free_blocks

    @property
    def num_requests(self) -> int:
        return self._core.num_requests

    def __contains__(self, req_id: int) -> bool:
        return self._core.contains(_req_id(req_id))

    def __repr__(self) -> str:
        return (
            f"BlockManager(num_blocks={self.num_blocks}, block_size={self.block_size}, "
            f"free={self.num_free_blocks}, requests={self.num_requests})"
        )

    def _now(self, now: float | None) -> float:
        return float(self._clock() if now is None else now)

    # ---- per-request API (vLLM names) -------------------------------------------

    def get_computed_blocks(
        self,
        req_id: int,
        token_ids: npt.ArrayLike,
        *,
        extra_key: int | str | bytes | None = None,
        program: int | None = None,
        max_hit_tokens: int | None = None,
    ) -> tuple[np.ndarray, int]:
        """Registers a waiting request's prompt and finds its longest cached prefix.

        Returns ``(block_ids int32, num_cached_tokens)``. Only full blocks hit,
        and a prompt that is cached whole still recomputes its last block (as
        in vLLM: the model needs the last token's logits). Nothing is
        allocated; the next :meth:`allocate_slots` takes these blocks.
        ``extra_key`` (LoRA id, cache salt, multimodal hash) separates KV that
        the same tokens produce differently; ``program`` ties the request to an
        agent program whose TTL pin its admission releases.
        ``max_hit_tokens`` caps the hit (vLLM's ``max_cache_hit_length``; 0
        skips the prefix cache, e.g. for a prompt-logprobs request); the next
        allocation takes exactly the returned blocks.
        """
        prog = None if program is None else _req_id(program, "program")
        limit = None if max_hit_tokens is None else _count(max_hit_tokens, "max_hit_tokens")
        return self._core.get_computed_blocks(
            _req_id(req_id), _tokens_arg(token_ids), _extra_key(extra_key), prog, limit
        )

    def lookup(
        self,
        token_ids: npt.ArrayLike,
        *,
        extra_key: int | str | bytes | None = None,
        max_hit_tokens: int | None = None,
    ) -> tuple[np.ndarray, int]:
        """The longest cached prefix of a prompt, ``(block_ids int32,
        num_cached_tokens)``, with no side effect: nothing is registered, so a
        waiting request that is looked up and then aborted leaves nothing
        behind (compare :meth:`get_computed_blocks`). Admit it with
        :meth:`admit`, passing the blocks found.

        >>> bm = BlockManager(num_blocks=8, block_size=2)
        >>> bm.admit(1, [1, 2, 3], 3) is not None
        True
        >>> hit, n = bm.lookup([1, 2, 9])
        >>> hit.tolist(), n, bm.num_requests
        ([0], 2, 1)
        """
        limit = None if max_hit_tokens is None else _count(max_hit_tokens, "max_hit_tokens")
        return self._core.lookup(_tokens_arg(token_ids), _extra_key(extra_key), limit)

    def admit(
        self,
        req_id: int,
        token_ids: npt.ArrayLike,
        num_new_tokens: int,
        *,
        hit: npt.ArrayLike | None = None,
        num_external_tokens: int = 0,
        num_lookahead_tokens: int = 0,
        extra_key: int | str | bytes | None = None,
        program: int | None = None,
        reserve: int | None = None,
        delay_cache: bool = False,
        now: float | None = None,
    ) -> np.ndarray | None:
        """Registers a new request with its known tokens and allocates its
        admission in one all-or-nothing call: the cached ``hit`` blocks (from
        :meth:`lookup`; they must still hold this prompt's prefix), slots for
        ``num_external_tokens`` whose KV a connector loads (counted computed),
        ``num_new_tokens`` to compute, and lookahead slots. Returns the new
        block ids, or None when they do not fit (nothing is registered then).
        ``delay_cache=True`` keeps the new full blocks out of the prefix cache
        until :meth:`cache_blocks` (an asynchronous KV load, vLLM's
        ``delay_cache_blocks``). With no ``hit`` this is an allocation without
        a prior lookup.

        >>> bm = BlockManager(num_blocks=8, block_size=2)
        >>> bm.admit(1, [1, 2, 3, 4, 5], 1, num_external_tokens=4, delay_cache=True).tolist()
        [0, 1, 2]
        >>> bm.lookup([1, 2, 3, 4, 9])[1], bm.cache_blocks(1, 4), bm.lookup([1, 2, 3, 4, 9])[1]
        (0, None, 4)
        >>> bm.admit(2, [7] * 20, 20) is None, 2 in bm
        (True, False)
        """
        prog = None if program is None else _req_id(program, "program")
        hit_arr = None if hit is None else _int_array(hit, "hit", np.int32, 0, _I32_MAX)
        return self._core.admit(
            _req_id(req_id),
            _tokens_arg(token_ids),
            _count(num_new_tokens, "num_new_tokens"),
            hit_arr,
            _count(num_external_tokens, "num_external_tokens"),
            _count(num_lookahead_tokens, "num_lookahead_tokens"),
            _extra_key(extra_key),
            prog,
            None if reserve is None else _count(reserve, "reserve"),
            bool(delay_cache),
            self._now(now),
        )

    def cache_blocks(self, req_id: int, num_tokens: int) -> None:
        """Registers the request's full blocks among its first ``num_tokens``
        computed tokens in the prefix cache (after ``admit(delay_cache=True)``,
        once the loaded KV is there).

        >>> bm = BlockManager(num_blocks=8, block_size=2)
        >>> _ = bm.admit(1, [1, 2, 3], 0, num_external_tokens=2, delay_cache=True)
        >>> bm.cache_blocks(1, 2)
        >>> bm.lookup([1, 2, 5])[1]
        2
        """
        self._core.cache_blocks(_req_id(req_id), _count(num_tokens, "num_tokens"))

    def allocate_slots(
        self,
        req_id: int,
        num_new_tokens: int,
        token_ids: npt.ArrayLike | None = None,
        *,
        num_lookahead_tokens: int = 0,
        now: float | None = None,
        reserve: int | None = None,
    ) -> np.ndarray | None:
        """Slots for ``num_new_tokens`` more tokens, all or nothing.

        ``token_ids`` are appended to the request's tokens first (a decode
        step's sampled token); a waiting request's prompt came with
        :meth:`get_computed_blocks`, and its first allocation takes the
        cached prefix and then ``num_new_tokens`` tokens past it (the
        watermark applies). Returns the newly appended block ids (int32), or
        ``None`` when they do not fit, with nothing changed. Copy-on-write
        copies are reported by :meth:`drain_copies`. ``reserve`` (blocks to
        leave free) replaces the watermark rule when given.
        """
        toks = None if token_ids is None else _tokens_arg(token_ids)
        return self._core.allocate_slots(
            _req_id(req_id),
            _count(num_new_tokens, "num_new_tokens"),
            toks,
            _count(num_lookahead_tokens, "num_lookahead_tokens"),
            self._now(now),
            None if reserve is None else _count(reserve, "reserve"),
        )

    def free(self, req_id: int) -> None:
        """Frees a finished or preempted request (tail blocks become evictable first).

        Unknown ids raise ``NotFoundError``; a second free ``DoubleFreeError``.
        """
        self._core.free(_req_id(req_id))

    def fork(self, parent_id: int, child_id: int) -> None:
        """A new request ``child_id`` sharing every block of ``parent_id``.

        Appending into a shared partial block later copies it first
        (:meth:`drain_copies` reports the copy).
        """
        self._core.fork(_req_id(parent_id, "parent_id"), _req_id(child_id, "child_id"))

    def pin(
        self,
        req_id: int,
        ttl_s: float,
        *,
        program: int | None = None,
        now: float | None = None,
    ) -> None:
        """Finishes ``req_id`` but keeps its cached blocks resident for ``ttl_s`` seconds.

        For an agent turn that ends in a tool call (Continuum): the pinned
        blocks cannot be evicted until the deadline, :meth:`unpin`, or the
        admission of the program's next request (``program`` defaults to the
        program given at :meth:`get_computed_blocks`, else ``req_id``). The
        request's partial last block is freed at once.
        """
        prog = None if program is None else _req_id(program, "program")
        self._core.pin(_req_id(req_id), float(ttl_s), prog, self._now(now))

    def unpin(self, program: int) -> None:
        """Releases ``program``'s pin now (``NotFoundError`` if it has none)."""
        self._core.unpin(_req_id(program, "program"))

    def expire_pins(self, now: float | None = None) -> int:
        """Releases every pin whose deadline has passed, in deadline order; returns how many.

        Also done at the start of every allocation, swap-in and step.
        """
        return self._core.expire_pins(self._now(now))

    def pin_deadline(self, program: int) -> float | None:
        """``program``'s pin deadline, or None when it holds no pin."""
        return self._core.pin_deadline(_req_id(program, "program"))

    def swap_out(self, req_id: int) -> np.ndarray | None:
        """Moves a request to the host tier.

        Returns int32 ``(k, 3)`` rows ``(device_start, host_start, num_blocks)``:
        contiguous copies the engine issues before the device blocks are
        reused, or ``None`` (nothing changed) when the host tier is full.
        """
        return self._core.swap_out(_req_id(req_id))

    def swap_in(self, req_id: int, *, now: float | None = None) -> np.ndarray | None:
        """Brings a swapped request back: int32 ``(k, 3)`` rows ``(host_start,
        device_start, num_blocks)``, or ``None`` (nothing changed) if it does not fit.
        Blocks whose content the device still caches are reused, not copied."""
        return self._core.swap_in(_req_id(req_id), self._now(now))

    def block_table(self, req_id: int) -> np.ndarray:
        """The request's device block table (int32)."""
        return self._core.block_table(_req_id(req_id))

    def host_block_table(self, req_id: int) -> np.ndarray | None:
        """The request's host block table while swapped out, else None."""
        return self._core.host_block_table(_req_id(req_id))

    def block_tables(
        self, req_ids: npt.ArrayLike, *, pad: int = -1, min_width: int = 0
    ) -> np.ndarray:
        """Block tables of many requests: int32 ``(n, width)`` padded with ``pad``,
        ready for a paged-attention kernel (``torch.from_numpy`` shares it)."""
        ids = _int_array(req_ids, "req_ids", np.int64, -(2**63), 2**63 - 1)
        return self._core.block_tables(ids, int(pad), _count(min_width, "min_width"))

    def num_cached_blocks(self, req_id: int) -> int:
        """Leading blocks of the request registered in the prefix cache.

        >>> bm = BlockManager(num_blocks=8, block_size=2)
        >>> _ = bm.admit(1, [1, 2, 3], 3)
        >>> bm.num_cached_blocks(1)
        1
        """
        return self._core.num_cached_blocks(_req_id(req_id))

    def num_computed_tokens(self, req_id: int) -> int:
        """Tokens of the request whose KV its blocks hold."""
        return self._core.num_computed_tokens(_req_id(req_id))

    # ---- one call per scheduler step ----------------------------------------------

    def step(
        self,
        batch: StepBatch,
        *,
        num_lookahead_tokens: int = 0,
        now: float | None = None,
        block_tables: bool = False,
        pad: int = -1,
        fcfs: bool = False,
    ) -> StepResult:
        """Serves a whole scheduler step in one call into the core.

        Frees ``batch.finished``, expires due pins, then for each entry admits
        (new request: prefix lookup + allocation) or extends (running request)
        all or nothing. The batch is validated first: a malformed batch raises
        and changes nothing; an entry that does not fit gets
        ``num_scheduled == -1``. With ``block_tables=True`` the result carries
        the padded tables of ``batch.req_ids`` too. With ``fcfs=True`` admission
        is first-come-first-served: after the first new request that does not
        fit, later new requests in the batch are not tried (``-1``), as a
        vLLM-style scheduler stops admitting.
        """
        n = len(batch.req_ids)
        req_ids = _int_array(batch.req_ids, "req_ids", np.int64, -(2**63), 2**63 - 1)
        budgets = _int_array(batch.num_new_tokens, "num_new_tokens", np.int64, 0, 2**62)
        toks = _tokens(batch.token_ids)
        if batch.token_offsets is None:
            if toks.size:
                raise InvalidArgumentError("token_ids given without token_offsets")
            offsets = np.zeros(n + 1, dtype=np.int64)
        else:
            offsets = _int_array(batch.token_offsets, "token_offsets", np.int64, 0, 2**62)
        extra = (
            None
            if batch.extra_keys is None
            else _int_array(batch.extra_keys, "extra_keys", np.uint64, 0, 2**64 - 1)
        )
        progs = (
            None
            if batch.programs is None
            else _int_array(batch.programs, "programs", np.int64, -(2**63), 2**63 - 1)
        )
        fin = (
            None
            if batch.finished is None
            else _int_array(batch.finished, "finished", np.int64, -(2**63), 2**63 - 1)
        )
        sched, cached, new_blocks, new_offsets, copies, tables = self._core.step(
            req_ids,
            budgets,
            toks,
            offsets,
            extra,
            progs,
            fin,
            _count(num_lookahead_tokens, "num_lookahead_tokens"),
            self._now(now),
            bool(block_tables),
            int(pad),
            bool(fcfs),
        )
        return StepResult(sched, cached, new_blocks, new_offsets, copies, tables)

    def schedule(
        self,
        config: ScheduleConfig,
        *,
        finished: Sequence[int] | np.ndarray = (),
        appended: Sequence[tuple[int, Sequence[int] | np.ndarray]] = (),
        arrivals: Sequence[tuple[int, Sequence[int] | np.ndarray]] = (),
        arrival_extra_keys: Sequence[int] | None = None,
        now: float | None = None,
    ) -> ScheduleResult:
        """One step of vLLM's v1 scheduler (FCFS) and its KV-cache manager, in one call.

        The manager owns the running and waiting queues. ``finished`` requests
        are freed first, ``appended`` ``(req_id, tokens)`` pairs extend running
        requests (the tokens sampled last step), ``arrivals`` ``(req_id,
        prompt)`` join the waiting queue. Then, as vLLM 0.33's
        ``Scheduler.schedule()``: running requests in order share one token
        budget, a request whose slots do not fit preempts the last running
        request and retries; in a step that preempted nothing, waiting requests
        are admitted in order (prefix hit, chunked prefill) until one does not
        fit or ``max_num_seqs`` run. Computed tokens advance at scheduling.
        Invalid input raises and changes nothing.

        >>> bm = BlockManager(num_blocks=4, block_size=4)
        >>> cfg = ScheduleConfig(8, 64, full_sequence_must_fit=False)
        >>> r = bm.schedule(cfg, arrivals=[(1, list(range(10))), (2, [9, 9, 9, 9])])
        >>> r.req_ids.tolist(), r.num_scheduled.tolist()     # one shared budget of 8
        ([1], [8])
        >>> r = bm.schedule(cfg)
        >>> r.req_ids.tolist(), r.num_scheduled.tolist()
        ([1, 2], [2, 4])
        >>> r = bm.schedule(cfg, appended=[(1, [7, 7, 7])])  # a 4th block: preempt 2
        >>> r.req_ids.tolist(), r.preempted.tolist(), bm.waiting_queue().tolist()
        ([1], [2], [2])
        """
        if isinstance(finished, np.ndarray):
            fin = finished
        else:
            fin = np.array([_req_id(x, "finished") for x in finished], dtype=np.int64)
        if appended:
            a_ids = np.array([_req_id(a[0]) for a in appended], dtype=np.int64)
            a_toks, a_offs = _csr([a[1] for a in appended])
        else:
            a_ids, a_toks, a_offs = _EMPTY_I64, _EMPTY_I32, _ZERO_OFFSETS
        if arrivals:
            n_ids = np.array([_req_id(a[0]) for a in arrivals], dtype=np.int64)
            n_toks, n_offs = _csr([a[1] for a in arrivals])
        else:
            n_ids, n_toks, n_offs = _EMPTY_I64, _EMPTY_I32, _ZERO_OFFSETS
        return self.schedule_arrays(
            config,
            fin,
            a_ids,
            a_toks,
            a_offs,
            n_ids,
            n_toks,
            n_offs,
            arrival_extra_keys=arrival_extra_keys,
            now=now,
        )

    def schedule_arrays(
        self,
        config: ScheduleConfig,
        finished: np.ndarray,
        appended_ids: np.ndarray,
        appended_tokens: np.ndarray,
        appended_offsets: np.ndarray,
        arrival_ids: np.ndarray,
        arrival_tokens: np.ndarray,
        arrival_offsets: np.ndarray,
        *,
        arrival_extra_keys: Sequence[int] | np.ndarray | None = None,
        now: float | None = None,
        running: np.ndarray | None = None,
        waiting: np.ndarray | None = None,
    ) -> ScheduleResult:
        """:meth:`schedule` with its inputs as flat arrays (CSR tokens: request
        ``i``'s are ``tokens[offsets[i]:offsets[i + 1]]``), for callers that
        build them in bulk.

        ``running`` / ``waiting`` (int64 ids; either given): the caller keeps
        the queues (vLLM's ``Scheduler`` does). The step runs on these queues
        (``waiting`` next admission first, the arrivals behind it) and leaves
        every request outside the manager's queues afterwards, so the
        per-request methods keep working on them between steps; ``finished``
        must be empty (use :meth:`free`), the requests must be registered
        (per-request API or earlier arrivals) and not in :meth:`schedule`'s
        own queues, waiting ones without blocks (arrivals are registered and
        placed where ``waiting`` names them; unnamed ones are only
        registered), and
        ``long_prefill_token_threshold`` is taken as this step's effective cap
        (the caller applies "only when more than one request is eligible").
        Preempted requests stay registered (tokens kept, no blocks).

        >>> bm = BlockManager(num_blocks=8, block_size=4)
        >>> e, e32, o = np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(1, np.int64)
        >>> r = bm.schedule_arrays(ScheduleConfig(16, 64), e, e, e32, o, np.array([7]),
        ...     np.array([1, 2, 3], np.int32), np.array([0, 3]), running=e, waiting=np.array([7]))
        >>> r.req_ids.tolist(), bm.running_queue().tolist(), 7 in bm
        ([7], [], True)

        >>> bm = BlockManager(num_blocks=8, block_size=4)
        >>> e = np.zeros(0, np.int64)
        >>> r = bm.schedule_arrays(ScheduleConfig(16, 64), e, e, np.zeros(0, np.int32),
        ...     np.zeros(1, np.int64), np.array([5]), np.array([1, 2, 3], np.int32),
        ...     np.array([0, 3]))
        >>> r.kinds.tolist() == [ScheduleResult.NEW]
        True
        """
        extra = (
            None
            if arrival_extra_keys is None
            else _int_array(arrival_extra_keys, "arrival_extra_keys", np.uint64, 0, 2**64 - 1)
        )
        c = config
        out = self._core.schedule(
            _int_array(finished, "finished", np.int64, -(2**63), 2**63 - 1),
            _int_array(appended_ids, "appended_ids", np.int64, -(2**63), 2**63 - 1),
            _tokens(appended_tokens, "appended_tokens"),
            _int_array(appended_offsets, "appended_offsets", np.int64, 0, 2**62),
            _int_array(arrival_ids, "arrival_ids", np.int64, -(2**63), 2**63 - 1),
            _tokens(arrival_tokens, "arrival_tokens"),
            _int_array(arrival_offsets, "arrival_offsets", np.int64, 0, 2**62),
            extra,
            self._now(now),
            max_num_batched_tokens=_count(c.max_num_batched_tokens, "max_num_batched_tokens"),
            max_model_len=_count(c.max_model_len, "max_model_len"),
            max_num_seqs=_count(c.max_num_seqs, "max_num_seqs"),
            long_prefill_token_threshold=_count(
                c.long_prefill_token_threshold, "long_prefill_token_threshold"
            ),
            num_lookahead_tokens=_count(c.num_lookahead_tokens, "num_lookahead_tokens"),
            full_sequence_must_fit=bool(c.full_sequence_must_fit),
            watermark_blocks=_count(c.watermark_blocks, "watermark_blocks"),
            running=None
            if running is None and waiting is None
            else _int_array(
                _EMPTY_I64 if running is None else running, "running", np.int64, -(2**63), 2**63 - 1
            ),
            waiting=None
            if running is None and waiting is None
            else _int_array(
                _EMPTY_I64 if waiting is None else waiting, "waiting", np.int64, -(2**63), 2**63 - 1
            ),
        )
        return ScheduleResult(*out)

    def running_queue(self) -> np.ndarray:
        """:meth:`schedule`'s running queue (int64 ids, oldest first).

        >>> BlockManager(num_blocks=4, block_size=4).running_queue().tolist()
        []
        """
        return self._core.running_queue()

    def waiting_queue(self) -> np.ndarray:
        """:meth:`schedule`'s waiting queue (int64 ids, next admission first).

        >>> BlockManager(num_blocks=4, block_size=4).waiting_queue().tolist()
        []
        """
        return self._core.waiting_queue()

    # ---- outputs for the engine ----------------------------------------------------

    def drain_copies(self) -> np.ndarray:
        """Copy-on-write copies made since the last drain: int32 ``(k, 2)`` rows ``(src, dst)``."""
        return self._core.drain_copies()

    def drain_events(self) -> BlockEvents:
        """Prefix-cache events since the last drain (needs ``enable_events=True``)."""
        return BlockEvents(*self._core.drain_events())

    def set_events_enabled(self, on: bool) -> None:
        """Turns the event stream on or off (off drops buffered events)."""
        self._core.set_events_enabled(bool(on))

    def reset_prefix_cache(self) -> bool:
        """Forgets every cached hash; False (nothing changed) while blocks are in use."""
        return self._core.reset_prefix_cache()

    def stats(self) -> BlockManagerStats:
        """Usage and counters: ``usage``, ``prefix_hit_rate``, ``prefix_hit_tokens``,
        ``evictions``, ``cow_copies``, ``pins_*``, ``swap_*``, ``refusals``, ..."""
        return self._core.stats()

    # ---- for tests -------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Raises ``CorruptionError`` if any internal invariant is broken (tests)."""
        self._core.check_invariants()

    def ref_count(self, block_id: int) -> int:
        """A device block's reference count (tests, debugging)."""
        return self._core.ref_count(operator.index(block_id))

    def free_block_order(self) -> np.ndarray:
        """Free blocks from next-reused to last (tests, debugging)."""
        return self._core.free_block_order()


_extra_key = extra_key


#: The table entry of a skipped sliding-window block (vLLM's null block).
NULL_BLOCK = -1


class HybridBlockManager:
    """Block tables of several KV-cache groups (full attention and sliding
    window, one page size) over one shared pool, with vLLM 0.33's
    ``HybridKVCacheCoordinator`` semantics (``docs/blocks.md``, "Hybrid
    KV-cache groups").

    Args:
        num_blocks: blocks in the shared pool (ids ``0..num_blocks``).
        block_size: tokens per block, every group.
        sliding_windows: one entry per group: ``None`` for full attention,
            else the window in tokens.
        extra_retained_tokens: per group, tokens kept below the window (vLLM's
            ``extra_retained_tokens``); default 0.
        admission_caps: per group, the block cap that ``full_sequence_must_fit``
            applies (vLLM's ``max_admission_blocks_per_request``); default none.
        enable_prefix_caching: cache full blocks (keyed per group).
        enable_events: record events for :meth:`drain_events`.
        eagle_groups: the groups with vLLM's EAGLE/MTP last-block drop (its
            ``drop_eagle_group_ids``): their hit search matches one block
            more and drops the last hit block, so the drafting head recomputes it.

    Tables hold :data:`NULL_BLOCK` (-1) where a window skipped a block.

        >>> bm = HybridBlockManager(32, 4, [None, 4])   # full attention + window 4
        >>> prompt = list(range(13))
        >>> [len(g) for g in bm.allocate_slots(1, prompt, 13)]
        [4, 4]
        >>> hit, n = bm.find_longest_cache_hit(prompt, max_hit_tokens=12)
        >>> n, hit[1]
        (12, [-1, -1, 6])
        >>> bm.free(1); bm.num_free_blocks
        32
    """

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        sliding_windows: Sequence[int | None],
        *,
        extra_retained_tokens: Sequence[int] | None = None,
        admission_caps: Sequence[int | None] | None = None,
        enable_prefix_caching: bool = True,
        enable_events: bool = False,
        eagle_groups: Sequence[int] = (),
    ) -> None:
        n = len(sliding_windows)
        extra = [0] * n if extra_retained_tokens is None else list(extra_retained_tokens)
        caps = [None] * n if admission_caps is None else list(admission_caps)
        if len(extra) != n or len(caps) != n:
            raise InvalidArgumentError(
                "extra_retained_tokens and admission_caps need one entry per group"
            )
        groups: list[tuple[int, int, int]] = []
        for i, w in enumerate(sliding_windows):
            if w is not None and _count(w, f"sliding_windows[{i}]", _I32_MAX) == 0:
                raise InvalidArgumentError("a sliding window must be >= 1 token")
            cap = caps[i]
            groups.append(
                (
                    0 if w is None else int(w),
                    _count(extra[i], f"extra_retained_tokens[{i}]", _I32_MAX),
                    -1 if cap is None else _count(cap, f"admission_caps[{i}]", _I32_MAX),
                )
            )
        self._core = _native.HybridBlockManagerCore(
            _count(num_blocks, "num_blocks", _I32_MAX),
            _count(block_size, "block_size", _I32_MAX),
            groups,
            bool(enable_prefix_caching),
            bool(enable_events),
            [_count(g, "eagle_groups", n - 1) for g in eagle_groups],
        )

    @property
    def num_blocks(self) -> int:
        return self._core.num_blocks

    @property
    def block_size(self) -> int:
        return self._core.block_size

    @property
    def num_groups(self) -> int:
        return self._core.num_groups

    @property
    def num_free_blocks(self) -> int:
        """Blocks no request holds (cached-evictable ones included)."""
        return self._core.num_free_blocks

    def __contains__(self, req_id: int) -> bool:
        return self._core.contains(_req_id(req_id))

    def find_longest_cache_hit(
        self,
        token_ids: Sequence[int] | npt.ArrayLike,
        *,
        extra_key: int | str | bytes | None = None,
        max_hit_tokens: int | None = None,
    ) -> tuple[list[list[int]], int]:
        """The longest prefix cached in every group, at most ``max_hit_tokens``
        (default: all): ``(blocks per group, hit tokens)``. Changes nothing."""
        limit = None if max_hit_tokens is None else _count(max_hit_tokens, "max_hit_tokens")
        return self._core.find_longest_cache_hit(
            _tokens_arg(token_ids), _extra_key_of(extra_key), limit
        )

    def allocate_slots(
        self,
        req_id: int,
        new_tokens: Sequence[int] | npt.ArrayLike | None,
        num_new_tokens: int,
        *,
        extra_key: int | str | bytes | None = None,
        hit: Sequence[Sequence[int]] | None = None,
        num_computed_tokens: int = 0,
        num_new_computed_tokens: int = 0,
        num_external_computed_tokens: int = 0,
        num_lookahead_tokens: int = 0,
        num_in_flight_tokens: int = 0,
        max_model_len: int = 2**62,
        reserved_blocks: int = 0,
        watermark_blocks: int = 0,
        full_sequence_must_fit: bool = False,
        delay_cache: bool = False,
    ) -> list[list[int]] | None:
        """vLLM's ``KVCacheManager.allocate_slots`` over every group:
        ``new_tokens`` are the tokens the request gained since the last call
        (its prompt the first time), ``hit`` a :meth:`find_longest_cache_hit`
        result. Returns the new blocks per group, or None (they do not fit;
        blocks that left the window are freed anyway, as in vLLM)."""
        return self._core.allocate_slots(
            _req_id(req_id),
            None if new_tokens is None else _tokens_arg(new_tokens),
            _count(num_new_tokens, "num_new_tokens"),
            extra_key=_extra_key_of(extra_key),
            hit=None if hit is None else [[int(b) for b in g] for g in hit],
            num_computed_tokens=_count(num_computed_tokens, "num_computed_tokens"),
            num_new_computed_tokens=_count(num_new_computed_tokens, "num_new_computed_tokens"),
            num_external_computed_tokens=_count(
                num_external_computed_tokens, "num_external_computed_tokens"
            ),
            num_lookahead_tokens=_count(num_lookahead_tokens, "num_lookahead_tokens"),
            num_in_flight_tokens=_count(num_in_flight_tokens, "num_in_flight_tokens"),
            max_model_len=_count(max_model_len, "max_model_len"),
            reserved_blocks=_count(reserved_blocks, "reserved_blocks"),
            watermark_blocks=_count(watermark_blocks, "watermark_blocks"),
            full_sequence_must_fit=bool(full_sequence_must_fit),
            delay_cache=bool(delay_cache),
        )

    def append_tokens(self, req_id: int, token_ids: Sequence[int] | npt.ArrayLike) -> None:
        """Tokens the request gained (sampled, accepted) without allocating."""
        self._core.append_tokens(_req_id(req_id), _tokens_arg(token_ids))

    def cache_blocks(self, req_id: int, num_tokens: int) -> None:
        """Caches the request's full blocks up to ``num_tokens``, every group."""
        self._core.cache_blocks(_req_id(req_id), _count(num_tokens, "num_tokens"))

    def remove_skipped_blocks(self, req_id: int, num_computed_tokens: int) -> None:
        """Frees the sliding-window blocks before the window."""
        self._core.remove_skipped_blocks(
            _req_id(req_id), _count(num_computed_tokens, "num_computed_tokens")
        )

    def free(self, req_id: int) -> None:
        """Frees the request's blocks, group by group, tail first (unknown: no-op)."""
        self._core.free(_req_id(req_id))

    def block_tables(self, req_id: int) -> list[list[int]]:
        """The request's table per group (empty lists if unknown)."""
        return self._core.block_tables(_req_id(req_id))

    def num_cached_blocks(self, req_id: int, group: int) -> int | None:
        """vLLM's ``num_cached_block`` of a group (None: not tracked)."""
        return self._core.num_cached_blocks(_req_id(req_id), _count(group, "group"))

    def ref_count(self, block_id: int) -> int:
        return self._core.ref_count(_count(block_id, "block_id", _I32_MAX))

    def free_block_order(self) -> npt.NDArray[np.int32]:
        """Free blocks in eviction order (first = next allocated)."""
        return self._core.free_block_order()

    def reset_prefix_cache(self) -> bool:
        """Drops every cached hash; False (nothing changed) while a block is in use."""
        return self._core.reset_prefix_cache()

    def evict_blocks(self, block_ids: Sequence[int]) -> None:
        """Drops the cached hashes of these blocks (vLLM's ``evict_blocks``:
        held blocks stay held, free ones stay in place)."""
        self._core.evict_blocks([_count(b, "block_id", _I32_MAX) for b in block_ids])

    def drain_events(
        self,
    ) -> list[tuple[int, int, list[int], list[bytes], bytes | None, int, list[int]]]:
        """``(kind 0 stored / 1 removed, group, blocks, hashes, parent, extra_key,
        token_ids)`` per event: a store per group and caching call, a removal
        per evicted block."""
        return self._core.drain_events()

    def check_invariants(self) -> None:
        """Raises ``CorruptError`` if the tables, ref counts and cache disagree."""
        self._core.check_invariants()


_extra_key_of = extra_key
