"""SemanticCache: an LLM-response cache for agent runtimes and gateways.

Before paying for a model call, ask "have I answered (nearly) this before, for
this model, in this scope?":

    >>> import numpy as np
    >>> from slabcache import SemanticCache, Policy
    >>> cache = SemanticCache(None, dim=4, default=Policy(threshold=0.9),
    ...                       policies={"code": Policy(threshold=0.97)})
    >>> v = np.array([1, 0, 0, 0], dtype=np.float32)
    >>> key = cache.insert(v, b"42", scope="gpt-4o|t=0", text="What is 6 x 7?")
    >>> hit = cache.lookup(v * 0.99 + 0.01, scope="gpt-4o|t=0", text="what is 6 x 7")
    >>> bytes(hit.value), hit.source
    (b'42', 'slb')
    >>> cache.lookup(v, scope="claude|t=0") is None       # scopes never mix
    True
    >>> cache.lookup(v, scope="gpt-4o|t=0", text="What is 6 x 8?") is None   # trap guard
    True

Lookup path: the exact hash of (scope, category, normalised text) → the
:class:`~slabcache.slb.SemanticLookasideBuffer` (FP32 rows of recent hits and
inserts, SIMD scan) → the scope's INT8 index (FP32 re-score of the
candidates) → the payload from the blob arena (zero-copy ``memoryview``).

* **Scores** are cosine similarities in ``[-1, 1]``; ``threshold=1.0`` serves
  only exact matches (same text, or a vector equal up to float rounding).
* **Scope** (model, sampling parameters, system-prompt hash, tenant,
  conversation-prefix hash) and **category** together form a hard partition:
  each (scope, category) has its own index and buffer rows, searched alone.
* **Policies** per category: threshold, TTL, entry/byte quotas, cacheable,
  adaptive thresholds from :meth:`SemanticCache.report` feedback.
* **Eviction** removes the index row, the buffer row and the payload together:
  TTL deadlines (kept in a :class:`~slabcache.skiplist.BSkipList`), and
  ``"lru"``, ``"fifo"`` or ``"cost"`` when a quota is full.
* **Persistence**: with a path, every entry (metadata, vector, payload) is one
  record of a :class:`~slabcache.arena.BlobArena`; an acknowledged insert
  survives ``kill -9`` and is found again by the same lookup after reopening
  (the index is rebuilt from the arena, so vectors and payloads always agree).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from . import _native
from .arena import BlobArena, SyncModeName
from .errors import ClosedError, InvalidArgumentError, InvalidTypeError, NotFoundError
from .shared.redis_semantic import RedisSemanticTier, open_shared_tier
from .skiplist import BSkipList
from .slb import SemanticLookasideBuffer
from .stats_types import SemanticCacheStats, SemanticCategoryStats
from .trap_guard import TrapGuard

__all__ = ["Hit", "Policy", "SemanticCache", "EvictionName", "Verifier"]

EvictionName = Literal["lru", "fifo", "cost"]
#: ``verifier(cached_text, new_text, score) -> bool``: called on near-threshold hits.
Verifier = Callable[[str | None, str | None, float], bool]

_MAGIC = b"SCE1"
_HEAD = struct.Struct("<4sII")  # magic, metadata length, dim
_KEY_PREFIX = b"e"
_CANDIDATES = 4  # index candidates examined per lookup (the guard may refuse some)
# Once the guard refuses a candidate at score s, only candidates within this of
# s are still tried: if the nearest entry is a trap for the query, farther ones
# are likelier to be wrong too (serving them is how caches answer traps).
_FALLTHROUGH = 0.02
_HIST_BINS = 100  # nearest-score histogram over [-1, 1]
_LATENCY_WINDOW = 4096


def _check_unit_interval(name: str, v: float | None) -> None:
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise InvalidTypeError(f"{name} must be a number, got {type(v).__name__}")
    if not -1.0 <= float(v) <= 1.0:
        raise InvalidArgumentError(
            f"{name} must be a cosine similarity in [-1, 1], got {v} (GPTCache-style 0-4 "
            "L2 scales are not accepted)"
        )


@dataclass(frozen=True)
class Policy:
    """How one category of prompts is cached. ``None`` fields take the cache's
    default policy's value (``0`` is a value, never "unset").

    Args:
        threshold: cosine similarity in ``[-1, 1]`` a hit needs (``1.0``: exact only).
        ttl_s: seconds an entry lives (``math.inf``: forever).
        max_entries: entries kept in the category (the eviction order picks victims).
        max_bytes: payload bytes kept in the category.
        cacheable: ``False``: lookups miss and inserts are skipped.
        adaptive: learn thresholds from :meth:`SemanticCache.report` feedback.
        error_budget: adaptive: the share of wrong hits tolerated above a learned threshold.
        verify_margin: hits scoring below ``threshold + verify_margin`` go to the
            cache's ``verifier`` callback, if one is set.

        >>> Policy(threshold=0.97).threshold
        0.97
        >>> Policy(threshold=2.0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        slabcache.errors.InvalidArgumentError: threshold must be a cosine similarity in [-1, 1]...
    """

    threshold: float | None = None
    ttl_s: float | None = None
    max_entries: int | None = None
    max_bytes: int | None = None
    cacheable: bool | None = None
    adaptive: bool | None = None
    error_budget: float | None = None
    verify_margin: float | None = None

    def __post_init__(self) -> None:
        _check_unit_interval("threshold", self.threshold)
        if self.ttl_s is not None and not (float(self.ttl_s) > 0):
            raise InvalidArgumentError(f"ttl_s must be positive (or math.inf), got {self.ttl_s}")
        for name in ("max_entries", "max_bytes"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise InvalidArgumentError(f"{name} must be a positive int, got {v!r}")
        if self.error_budget is not None and not 0.0 < self.error_budget < 1.0:
            raise InvalidArgumentError(f"error_budget must be in (0, 1), got {self.error_budget}")
        if self.verify_margin is not None and not 0.0 <= self.verify_margin <= 2.0:
            raise InvalidArgumentError(f"verify_margin must be in [0, 2], got {self.verify_margin}")

    def merged_over(self, base: Policy) -> Policy:
        """This policy with its ``None`` fields taken from ``base``."""
        vals = {
            f: (getattr(self, f) if getattr(self, f) is not None else getattr(base, f))
            for f in self.__dataclass_fields__
        }
        return Policy(**vals)


_BUILTIN = Policy(
    threshold=0.92,
    ttl_s=math.inf,
    max_entries=None,
    max_bytes=None,
    cacheable=True,
    adaptive=False,
    error_budget=0.05,
    verify_margin=0.03,
)


@dataclass(frozen=True, slots=True)
class Hit:
    """A cache hit.

    Attributes:
        value: read-only zero-copy ``memoryview`` of the stored payload.
        score: cosine similarity of the query and the entry (``1.0`` for exact).
        key: the entry's key (for :meth:`SemanticCache.report` / ``delete``).
        age_s: seconds since the entry was inserted.
        source: ``"exact"``, ``"slb"`` or ``"index"``.
        category: the entry's category.
        text: the entry's prompt text, if it was given.
    """

    value: memoryview
    score: float
    key: int
    age_s: float
    source: str
    category: str
    text: str | None = None


class _Entry:
    __slots__ = (
        "key", "part", "scope", "category", "text", "exact", "created", "deadline", "cost",
        "size", "offset", "floor", "obs", "last_score", "link",
    )  # fmt: skip

    def __init__(self, key: int, part: str, scope: str, category: str, text: str | None,
                 exact: bytes | None, created: float, deadline: float, cost: float,
                 size: int, offset: int) -> None:  # fmt: skip
        self.key = key
        self.part = part
        self.scope = scope
        self.category = category
        self.text = text
        self.exact = exact
        self.created = created
        self.deadline = deadline
        self.cost = cost
        self.size = size
        self.offset = offset
        self.floor = -2.0  # adaptive: never serve at or below the highest wrong score
        self.obs: list[tuple[float, bool]] | None = None
        self.last_score = 1.0
        self.link: tuple[str, bytes] | None = None  # the shared tier's (gid, nonce)


@dataclass
class _CategoryStats:
    lookups: int = 0
    hits: dict[str, int] = field(default_factory=lambda: {"exact": 0, "slb": 0, "index": 0})
    refused: dict[str, int] = field(default_factory=dict)
    inserts: int = 0
    evictions: int = 0
    expirations: int = 0
    entries: int = 0
    bytes: int = 0
    latency_ns: deque[int] = field(default_factory=lambda: deque(maxlen=_LATENCY_WINDOW))
    hit_scores: np.ndarray = field(default_factory=lambda: np.zeros(_HIST_BINS, np.int64))
    miss_scores: np.ndarray = field(default_factory=lambda: np.zeros(_HIST_BINS, np.int64))
    obs: list[tuple[float, bool]] = field(default_factory=list)
    learned: float | None = None


def _normalise_text(text: str) -> str:
    return " ".join(text.lower().split())


def _exact_key(part: str, text: str) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(part.encode())
    h.update(b"\x00")
    h.update(_normalise_text(text).encode())
    return h.digest()


def _bin(score: float) -> int:
    return min(_HIST_BINS - 1, max(0, int((score + 1.0) * (_HIST_BINS / 2))))


def _bounded_threshold(
    obs: Sequence[tuple[float, bool]], budget: float, min_n: int
) -> float | None:
    """The lowest observed score ``t`` such that, among observations scoring
    ``>= t``, a one-sided upper confidence bound of the wrong-hit rate stays
    within ``budget``; ``None`` with fewer than ``min_n`` observations."""
    if len(obs) < min_n:
        return None
    srt = sorted(obs, key=lambda o: -o[0])
    n = wrong = 0
    best: float | None = None
    z = 1.645  # one-sided 95%
    for score, correct in srt:
        n += 1
        wrong += 0 if correct else 1
        p = wrong / n
        # Wilson upper bound of the error rate among the n highest scores.
        denom = 1 + z * z / n
        centre = p + z * z / (2 * n)
        spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        if n >= min_n and (centre + spread) / denom <= budget:
            best = score
    return best


class SemanticCache:
    """An LLM-response cache keyed by prompt embeddings, partitioned by scope.

    Args:
        path: directory of the cache's blob arena (created if missing), or
            ``None`` for a cache held in memory only.
        dim: embedding width.
        default: the policy of categories without their own (its ``None``
            fields take the built-in defaults: threshold 0.92, no TTL, no quota).
        policies: category name → :class:`Policy` (``None`` fields inherit ``default``).
        eviction: which entry a full quota drops: ``"lru"`` (least recently
            hit or inserted), ``"fifo"`` (oldest insert) or ``"cost"`` (the
            cheapest to recompute among the 8 least recently used).
        max_entries, max_bytes: quotas over all categories.
        trap_guard: ``True`` (a default :class:`~slabcache.trap_guard.TrapGuard`),
            ``False``, or your own callable ``(cached_text, new_text) -> reason | None``.
        verifier: optional ``(cached_text, new_text, score) -> bool`` called on hits
            scoring within the policy's ``verify_margin`` of its threshold.
        slb_per_scope, slb_capacity: lookaside-buffer rows per (scope, category) and in all.
        slb_min_score: a buffer hit is served without searching the index only at or
            above this cosine (and the threshold): the buffer holds recent rows, not
            all of them, so a weaker buffer hit could hide a closer entry; below it
            the index decides.
        cluster_above: a (scope, category) partition holding this many entries is
            rebuilt once as a clustered INT8 index (k-means pages, ``nlist = 4·√n``,
            probing 1/32 of them) so that lookups stop scanning every row; 0 keeps
            every partition exact (flat).
        sync: the arena's durability mode (``"always"``, ``"batch"``, ``"none"``);
            every mode survives ``kill -9`` (see ``docs/arena.md``).
        clock: wall-clock seconds (inject a fake one in tests); ages and TTLs use it.
        shared: a shared tier on Redis behind this near cache: a ``redis://host:port/db``
            URL (``redis+cluster://seed:port,...`` for a Cluster), a ``redis.Redis`` or a
            :class:`~slabcache.shared.RedisSemanticTier` (see ``docs/shared_tier.md``);
            ``None``: local only.
        namespace: the tenant's key namespace in Redis (default ``"default"``).

    Raises:
        InvalidArgumentError: a bad option; LockedError: another process has ``path`` open.

    Thread-safe: every call holds one lock; the vector work inside runs in the
    Rust core.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        dim: int,
        *,
        default: Policy | None = None,
        policies: Mapping[str, Policy] | None = None,
        eviction: EvictionName = "lru",
        max_entries: int | None = None,
        max_bytes: int | None = None,
        trap_guard: bool | Callable[[str, str], str | None] = True,
        verifier: Verifier | None = None,
        slb_per_scope: int = 64,
        slb_capacity: int = 16384,
        slb_min_score: float = 0.97,
        cluster_above: int = 20_000,
        sync: SyncModeName = "batch",
        clock: Callable[[], float] = time.time,
        shared: Any = None,
        namespace: str | None = None,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
            raise InvalidArgumentError(f"dim must be a positive int, got {dim!r}")
        if eviction not in ("lru", "fifo", "cost"):
            raise InvalidArgumentError(
                f'eviction must be "lru", "fifo" or "cost", got {eviction!r}'
            )
        for name, v in (("max_entries", max_entries), ("max_bytes", max_bytes)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise InvalidArgumentError(f"{name} must be a positive int, got {v!r}")
        if default is not None and not isinstance(default, Policy):
            raise InvalidTypeError("default must be a Policy")
        self.dim = int(dim)
        self._default = (default or Policy()).merged_over(_BUILTIN)
        self._policies: dict[str, Policy] = {}
        for cat, pol in (policies or {}).items():
            if not isinstance(cat, str) or not isinstance(pol, Policy):
                raise InvalidTypeError("policies must map str category names to Policy objects")
            self._policies[cat] = pol.merged_over(self._default)
        self.eviction: EvictionName = eviction
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        if trap_guard is True:
            self._guard: Callable[[str, str], str | None] | None = TrapGuard()
        elif trap_guard is False or trap_guard is None:
            self._guard = None
        elif callable(trap_guard):
            self._guard = trap_guard
        else:
            raise InvalidTypeError("trap_guard must be a bool or a callable")
        self.verifier = verifier
        _check_unit_interval("slb_min_score", slb_min_score)
        self.slb_min_score = float(slb_min_score)
        self._clock = clock
        self._lock = threading.RLock()
        if (
            isinstance(cluster_above, bool)
            or not isinstance(cluster_above, int)
            or cluster_above < 0
        ):
            raise InvalidArgumentError(f"cluster_above must be an int >= 0, got {cluster_above!r}")
        self._index = _native.ScopedIndex(self.dim, cluster_above)
        self._slb = SemanticLookasideBuffer(self.dim, slb_per_scope, slb_capacity)
        self._entries: dict[int, _Entry] = {}
        self._exact: dict[bytes, int] = {}
        self._lru: OrderedDict[int, None] = OrderedDict()  # all entries, LRU (or FIFO) order
        self._by_cat: dict[str, OrderedDict[int, None]] = {}
        self._deadlines = BSkipList("bytes")
        self._stats: dict[str, _CategoryStats] = {}
        self._total_bytes = 0
        self._next_key = 0
        self._flights: dict[bytes, _Flight] = {}
        self._closed = False
        self._lookups_since_expire = 0
        self._arena: BlobArena | None = None
        self._mem: dict[int, bytes] = {}
        if path is not None:
            self._arena = BlobArena(os.fspath(path), sync=sync)
            self._recover()
        self.shared: RedisSemanticTier | None = None  # docs/shared_tier.md
        if shared is not None:
            try:
                self.shared = open_shared_tier(shared, namespace, self)
            except BaseException:
                self.close()  # the arena's lock must not outlive a failed constructor
                raise

    # -- policies -----------------------------------------------------------

    def policy(self, category: str) -> Policy:
        """The effective policy of ``category`` (all fields set)."""
        return self._policies.get(category, self._default)

    def set_policy(self, category: str, policy: Policy) -> None:
        """Sets or replaces ``category``'s policy (``None`` fields inherit the default)."""
        if not isinstance(policy, Policy):
            raise InvalidTypeError("policy must be a Policy")
        with self._lock:
            self._policies[category] = policy.merged_over(self._default)
            self._enforce_quotas(category)

    def threshold(self, category: str) -> float:
        """The threshold lookups of ``category`` use now (learned if adaptive)."""
        pol = self.policy(category)
        st = self._stats.get(category)
        if pol.adaptive and st is not None and st.learned is not None:
            return st.learned
        return float(pol.threshold)  # type: ignore[arg-type]

    # -- helpers ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the semantic cache is closed")

    def _cat_stats(self, category: str) -> _CategoryStats:
        st = self._stats.get(category)
        if st is None:
            st = self._stats[category] = _CategoryStats()
        return st

    def _vector(self, vec: object) -> np.ndarray:
        if (
            type(vec) is np.ndarray
            and vec.dtype == np.float32
            and vec.ndim == 1
            and vec.flags.c_contiguous
        ):
            v = vec
        else:
            arr = np.asarray(vec)
            if arr.dtype.kind != "f":
                raise InvalidTypeError(
                    f"vectors must be floating-point arrays, got dtype {arr.dtype}"
                )
            if arr.ndim == 2 and arr.shape[0] == 1:
                arr = arr[0]
            v = np.ascontiguousarray(arr, dtype=np.float32)
        if v.ndim != 1 or v.shape[0] != self.dim:
            raise InvalidArgumentError(f"a vector must have shape [{self.dim}], got {v.shape}")
        return v

    def _matrix(self, vecs: object) -> np.ndarray:
        arr = np.asarray(vecs)
        if arr.dtype.kind != "f":
            raise InvalidTypeError(f"vectors must be floating-point arrays, got dtype {arr.dtype}")
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise InvalidArgumentError(f"vectors must have shape [n, {self.dim}], got {arr.shape}")
        with np.errstate(over="ignore"):
            m = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(m).all():
            raise InvalidArgumentError("vectors contain NaN or infinity")
        return m

    @staticmethod
    def _part(scope: str, category: str) -> str:
        if not isinstance(scope, str) or not isinstance(category, str):
            raise InvalidTypeError("scope and category must be str")
        return f"{scope}\x1f{category}"

    def _payload(self, e: _Entry) -> memoryview:
        if self._arena is not None:
            mv = self._arena.get(_KEY_PREFIX + e.key.to_bytes(8, "big"))
            if mv is None:  # cannot happen while the arena and the maps agree
                raise NotFoundError(f"entry {e.key} has no payload")
            return mv[e.offset :]
        return memoryview(self._mem[e.key])

    def _deadline_key(self, e: _Entry) -> bytes:
        return struct.pack(">QQ", int(e.deadline * 1e6), e.key)

    # -- lookup -------------------------------------------------------------

    def lookup(
        self,
        vec: npt.ArrayLike,
        scope: str = "",
        category: str = "default",
        text: str | None = None,
        *,
        threshold: float | None = None,
    ) -> Hit | None:
        """The cached entry for ``vec`` in ``scope`` (and ``category``), or ``None``.

        ``threshold`` overrides the policy's for this call (``None``: the policy's).
        With ``text``, an entry with the same normalised text is an exact hit,
        and the trap guard compares the texts of every candidate.
        """
        t0 = time.perf_counter_ns()
        with self._lock:
            self._check_open()
            pol = self.policy(category)
            st = self._cat_stats(category)
            st.lookups += 1
            if not pol.cacheable:
                st.latency_ns.append(time.perf_counter_ns() - t0)
                return None
            v = self._vector(vec)
            _check_unit_interval("threshold", threshold)
            part = self._part(scope, category)
            now = self._clock()
            self._maybe_expire(now)
            thr = self.threshold(category) if threshold is None else float(threshold)
            hit = self._lookup_one(v, part, category, text, thr, pol, now, st, None, None)
            st.latency_ns.append(time.perf_counter_ns() - t0)
            if hit is not None or self.shared is None:
                return hit
        return self.shared.on_miss(self, v, scope, category, text, thr)  # outside the lock

    def _lookup_one(
        self,
        v: np.ndarray,
        part: str,
        category: str,
        text: str | None,
        thr: float,
        pol: Policy,
        now: float,
        st: _CategoryStats,
        slb_hit: tuple[int, float] | None | bool,
        index_cands: tuple[np.ndarray, np.ndarray] | None,
    ) -> Hit | None:
        # 1. exact text
        if text is not None:
            key = self._exact.get(_exact_key(part, text))
            if key is not None:
                e = self._entries.get(key)
                if e is not None and self._alive(e, now):
                    return self._serve(e, 1.0, "exact", now, st, None)
        refused_key = -1
        refused_at: float | None = None
        nearest = -2.0
        # 2. lookaside buffer
        floor = max(thr, self.slb_min_score)
        if slb_hit is None:
            slb_hit = self._slb.find_nearest(v, floor, part)
        if slb_hit and slb_hit[1] >= floor:  # type: ignore[index]
            key, score = slb_hit  # type: ignore[misc]
            nearest = score
            e = self._entries.get(key)
            if e is not None and self._alive(e, now):
                ok = self._accept(e, score, thr, pol, text, st)
                if ok:
                    return self._serve(e, score, "slb", now, st, None)
                refused_at = score
            refused_key = key
        # 3. INT8 index, FP32 re-score; the best candidates in order
        if index_cands is None:
            index_cands = self._index.search_one(part, v, _CANDIDATES)
        scores, keys = index_cands
        for score, key in zip(scores.tolist(), keys.tolist(), strict=True):
            if key < 0:
                break
            nearest = max(nearest, score)
            if score < thr or (refused_at is not None and score < refused_at - _FALLTHROUGH):
                break
            if key == refused_key:
                continue
            e = self._entries.get(key)
            if e is None or not self._alive(e, now):
                continue
            if self._accept(e, score, thr, pol, text, st):
                # Promote: the dequantised INT8 row goes into the buffer once.
                # (Buffer rows are copies: a row it evicts stays in the index.)
                self._slb._insert(part, key, self._index.reconstruct(part, key))
                return self._serve(e, score, "index", now, st, None)
            if refused_at is None:
                refused_at = score
        st.miss_scores[_bin(nearest)] += 1 if nearest > -2.0 else 0
        return None

    def _accept(
        self, e: _Entry, score: float, thr: float, pol: Policy, text: str | None,
        st: _CategoryStats,
    ) -> bool:  # fmt: skip
        if score < thr or score <= e.floor:
            return False
        if self._guard is not None and text is not None and e.text is not None:
            reason = self._guard(e.text, text)
            if reason is not None:
                st.refused[reason] = st.refused.get(reason, 0) + 1
                return False
        margin = float(pol.verify_margin)  # type: ignore[arg-type]
        if self.verifier is not None and score < thr + margin:
            if not self.verifier(e.text, text, score):
                st.refused["verifier"] = st.refused.get("verifier", 0) + 1
                return False
        return True

    def _alive(self, e: _Entry, now: float) -> bool:
        if e.deadline <= now:
            self._evict(e, expired=True)
            return False
        return True

    def _serve(
        self, e: _Entry, score: float, source: str, now: float, st: _CategoryStats, _: Any
    ) -> Hit:
        st.hits[source] += 1
        st.hit_scores[_bin(score)] += 1
        e.last_score = score
        if self.eviction != "fifo":
            self._lru.move_to_end(e.key)
            self._by_cat[e.category].move_to_end(e.key)
        return Hit(
            value=self._payload(e),
            score=float(score),
            key=e.key,
            age_s=max(0.0, now - e.created),
            source=source,
            category=e.category,
            text=e.text,
        )

    def lookup_many(
        self,
        vecs: npt.ArrayLike,
        scopes: Sequence[str] | str = "",
        categories: Sequence[str] | str = "default",
        texts: Sequence[str | None] | None = None,
    ) -> list[Hit | None]:
        """:meth:`lookup` for ``n`` queries (``vecs`` float ``[n, dim]``) in one call:
        one buffer scan and one batched index search for all of them."""
        t0 = time.perf_counter_ns()
        with self._lock:
            self._check_open()
            m = self._matrix(vecs)
            n = m.shape[0]
            sc = [scopes] * n if isinstance(scopes, str) else list(scopes)
            cats = [categories] * n if isinstance(categories, str) else list(categories)
            tx: list[str | None] = list(texts) if texts is not None else [None for _ in range(n)]
            if not (len(sc) == len(cats) == len(tx) == n):
                raise InvalidArgumentError(
                    "scopes, categories and texts must have one item per vector"
                )
            now = self._clock()
            self._maybe_expire(now)
            parts = [self._part(s, c) for s, c in zip(sc, cats, strict=True)]
            pols = [self.policy(c) for c in cats]
            thrs = np.array([self.threshold(c) for c in cats], dtype=np.float32)
            floors = np.maximum(thrs, np.float32(self.slb_min_score))
            slb_keys, slb_scores = self._slb._find_many(m, parts, floors)
            s_all, k_all = self._index.search_many(parts, m, _CANDIDATES)
            out: list[Hit | None] = []
            for i in range(n):
                st = self._cat_stats(cats[i])
                st.lookups += 1
                if not pols[i].cacheable:
                    out.append(None)
                    continue
                sk = int(slb_keys[i])
                slb_hit = (sk, float(slb_scores[i])) if sk >= 0 else False
                out.append(
                    self._lookup_one(
                        m[i],
                        parts[i],
                        cats[i],
                        tx[i],
                        float(thrs[i]),
                        pols[i],
                        now,
                        st,
                        slb_hit,
                        (s_all[i], k_all[i]),
                    )  # fmt: skip
                )
            per = (time.perf_counter_ns() - t0) // max(1, n)
            for c in set(cats):
                self._cat_stats(c).latency_ns.append(per)
            if self.shared is None:
                return out
        return self.shared.on_miss_many(self, m, sc, cats, tx, thrs.tolist(), out)  # no lock

    def nearest(
        self, vec: npt.ArrayLike, scope: str = "", category: str = "default"
    ) -> tuple[int, float, str | None] | None:
        """The nearest live entry of (scope, category) regardless of thresholds:
        ``(key, score, text)`` or ``None``. Serves nothing and counts nothing:
        for calibrating with :meth:`report` and for diagnostics."""
        with self._lock:
            self._check_open()
            v = self._vector(vec)
            part = self._part(scope, category)
            scores, keys = self._index.search_one(part, v, 1)
            if keys[0] < 0:
                return None
            e = self._entries.get(int(keys[0]))
            if e is None:
                return None
            return e.key, float(scores[0]), e.text

    # -- insert -------------------------------------------------------------

    def insert(
        self,
        vec: npt.ArrayLike,
        value: Any,
        scope: str = "",
        category: str = "default",
        text: str | None = None,
        ttl_s: float | None = None,
        cost: float = 0.0,
    ) -> int | None:
        """Stores ``value`` (bytes-like) for ``vec``; returns the entry's key, or
        ``None`` if the category is not cacheable. An entry with the same
        (scope, category, normalised text) is replaced. Durable per ``sync``
        when this returns."""
        keys = self._insert_batch(
            self._vector(vec)[None, :], [value], [scope], [category], [text], [ttl_s], [cost]
        )
        return keys[0]

    def insert_many(
        self,
        vecs: npt.ArrayLike,
        values: Sequence[Any],
        scopes: Sequence[str] | str = "",
        categories: Sequence[str] | str = "default",
        texts: Sequence[str | None] | None = None,
        ttl_s: float | None = None,
        costs: Sequence[float] | float = 0.0,
    ) -> list[int | None]:
        """:meth:`insert` for ``n`` entries: one arena write (one WAL record batch,
        at most one fsync) and one index insert for all of them."""
        m = self._matrix(vecs)
        n = m.shape[0]
        vals = list(values)
        sc = [scopes] * n if isinstance(scopes, str) else list(scopes)
        cats = [categories] * n if isinstance(categories, str) else list(categories)
        tx: list[str | None] = list(texts) if texts is not None else [None for _ in range(n)]
        cs = [costs] * n if isinstance(costs, int | float) else list(costs)
        if not (len(vals) == len(sc) == len(cats) == len(tx) == len(cs) == n):
            raise InvalidArgumentError(
                "values, scopes, categories, texts and costs need one item per vector"
            )
        return self._insert_batch(m, vals, sc, cats, tx, [ttl_s] * n, cs)

    def _insert_batch(
        self,
        m: np.ndarray,
        values: list[Any],
        scopes: list[str],
        cats: list[str],
        texts: list[str | None],
        ttls: list[float | None],
        costs: list[float],
    ) -> list[int | None]:
        if not np.isfinite(m).all():
            raise InvalidArgumentError("vectors contain NaN or infinity")
        views = []
        for v in values:
            try:
                mv = memoryview(v)
            except TypeError:
                raise InvalidTypeError(
                    f"values must be bytes-like, got {type(v).__name__}"
                ) from None
            if not mv.c_contiguous:
                raise InvalidArgumentError("values must be contiguous buffers")
            views.append(mv.cast("B") if mv.ndim != 1 or mv.format != "B" else mv)
        for t in texts:
            if t is not None and not isinstance(t, str):
                raise InvalidTypeError(f"text must be a str or None, got {type(t).__name__}")
        for c in costs:
            if (
                isinstance(c, bool)
                or not isinstance(c, int | float)
                or not math.isfinite(c)
                or c < 0
            ):
                raise InvalidArgumentError(f"cost must be a finite number >= 0, got {c!r}")
        for ttl_s in ttls:
            if ttl_s is not None and not float(ttl_s) > 0:
                raise InvalidArgumentError(f"ttl_s must be positive (or math.inf), got {ttl_s}")
        with self._lock:
            self._check_open()
            now = self._clock()
            self._maybe_expire(now, force=True)
            out: list[int | None] = []
            new: list[_Entry] = []
            rows: list[int] = []
            records: list[bytes] = []
            akeys: list[bytes] = []
            for i in range(m.shape[0]):
                pol = self.policy(cats[i])
                part = self._part(scopes[i], cats[i])
                if not pol.cacheable:
                    out.append(None)
                    continue
                ttl = ttls[i] if ttls[i] is not None else pol.ttl_s
                deadline = now + float(ttl) if ttl is not None and math.isfinite(ttl) else math.inf
                text = texts[i]
                exact = _exact_key(part, text) if text is not None else None
                key = self._next_key
                self._next_key += 1
                meta = {
                    "s": scopes[i], "c": cats[i], "t": texts[i], "at": now,
                    "dl": None if math.isinf(deadline) else deadline, "cost": float(costs[i]),
                }  # fmt: skip
                link = self.shared.new_link(part, text) if self.shared is not None else None
                if link is not None:  # kept with the entry: a restart re-links it
                    meta["sh"] = link[0] + ":" + link[1].hex()
                mb = json.dumps(meta, separators=(",", ":")).encode()
                head = _HEAD.pack(_MAGIC, len(mb), self.dim) + mb + m[i].tobytes()
                e = _Entry(key, part, scopes[i], cats[i], texts[i], exact, now, deadline,
                           float(costs[i]), views[i].nbytes, len(head))  # fmt: skip
                e.link = link
                new.append(e)
                rows.append(i)
                if self._arena is not None:
                    akeys.append(_KEY_PREFIX + key.to_bytes(8, "big"))
                    records.append(head + views[i].tobytes())
                out.append(key)
            if not new:
                return out
            # Durable first: a crash after this point is repaired by recovery.
            if self._arena is not None:
                if len(akeys) == 1:
                    self._arena.put(akeys[0], records[0])
                else:
                    self._arena.put_many(akeys, records)
            else:
                for e, i in zip(new, rows, strict=True):
                    self._mem[e.key] = views[i].tobytes()
            # Same exact text in one partition: the newer entry replaces the older.
            for e in new:
                if e.exact is not None:
                    old = self._exact.get(e.exact)
                    if old is not None and old in self._entries:
                        self._evict(self._entries[old], expired=False, counted=False)
            sub = m[rows]
            self._index.add_many(
                [e.part for e in new], np.array([e.key for e in new], dtype=np.int64), sub
            )
            latest: dict[bytes, _Entry] = {}
            for j, e in enumerate(new):
                self._register(e)
                self._slb._insert(e.part, e.key, sub[j])
                self._cat_stats(e.category).inserts += 1
                if e.exact is not None:
                    older = latest.get(e.exact)
                    latest[e.exact] = e
                    if older is not None:  # the same text twice in one batch: keep the last
                        self._evict(older, expired=False, counted=False)
            if self.shared is not None:
                self.shared.on_insert(new, sub, [views[i] for i in rows])
            for cat in {e.category for e in new}:
                self._enforce_quotas(cat)
            self._enforce_global()
            return out

    def _register(self, e: _Entry) -> None:
        self._entries[e.key] = e
        if e.exact is not None:
            self._exact[e.exact] = e.key
        self._lru[e.key] = None
        self._by_cat.setdefault(e.category, OrderedDict())[e.key] = None
        if math.isfinite(e.deadline):
            self._deadlines[self._deadline_key(e)] = e.key
        st = self._cat_stats(e.category)
        st.entries += 1
        st.bytes += e.size
        self._total_bytes += e.size

    # -- removal ------------------------------------------------------------

    def _evict(self, e: _Entry, *, expired: bool, counted: bool = True) -> None:
        """Removes an entry everywhere: payload (durably first), index row,
        buffer row, maps."""
        if self._entries.get(e.key) is not e:
            return
        if self._arena is not None:
            self._arena.delete(_KEY_PREFIX + e.key.to_bytes(8, "big"))
        else:
            self._mem.pop(e.key, None)
        self._index.remove(e.part, np.array([e.key], dtype=np.int64))
        self._slb.remove(e.key)
        del self._entries[e.key]
        if e.exact is not None and self._exact.get(e.exact) == e.key:
            del self._exact[e.exact]
        self._lru.pop(e.key, None)
        self._by_cat[e.category].pop(e.key, None)
        if math.isfinite(e.deadline):
            self._deadlines.pop(self._deadline_key(e), None)
        st = self._cat_stats(e.category)
        st.entries -= 1
        st.bytes -= e.size
        self._total_bytes -= e.size
        if counted:
            if expired:
                st.expirations += 1
            else:
                st.evictions += 1

    def delete(self, key: int) -> bool:
        """Removes entry ``key`` (payload, index row, buffer row); returns whether it existed."""
        with self._lock:
            self._check_open()
            e = self._entries.get(int(key))
            if e is None or not self._alive(e, self._clock()):
                return False
            if self.shared is not None:
                self.shared.on_delete(e.key)
            self._evict(e, expired=False, counted=False)
            return True

    def drop_scope(self, scope: str) -> int:
        """Removes every entry of ``scope`` (all categories); returns how many."""
        with self._lock:
            self._check_open()
            victims = [e for e in self._entries.values() if e.scope == scope]
            if self.shared is not None:
                self.shared.on_drop_scope(scope)
            for e in victims:
                self._evict(e, expired=False, counted=False)
            return len(victims)

    def expire(self) -> int:
        """Removes every entry whose TTL has passed; returns how many."""
        with self._lock:
            self._check_open()
            return self._expire(self._clock())

    def _expire(self, now: float) -> int:
        n = 0
        limit = int(now * 1e6)
        while True:
            first = self._deadlines.first()
            if first is None:
                return n
            dkey, key = first
            if struct.unpack(">QQ", dkey)[0] > limit:
                return n
            e = self._entries.get(key)
            if e is None:
                self._deadlines.pop(dkey, None)
                continue
            self._evict(e, expired=True)
            n += 1

    def _maybe_expire(self, now: float, force: bool = False) -> None:
        self._lookups_since_expire += 1
        if force or self._lookups_since_expire >= 64:
            self._lookups_since_expire = 0
            if len(self._deadlines):
                self._expire(now)

    def _victim(self, order: OrderedDict[int, None]) -> _Entry:
        it = iter(order)
        if self.eviction == "cost":
            sample = [self._entries[next(it)] for _ in range(min(8, len(order)))]
            return min(sample, key=lambda e: e.cost)
        return self._entries[next(it)]

    def _enforce_quotas(self, category: str) -> None:
        pol = self.policy(category)
        order = self._by_cat.get(category)
        if not order:
            return
        st = self._cat_stats(category)
        while order and (
            (pol.max_entries is not None and st.entries > pol.max_entries)
            or (pol.max_bytes is not None and st.bytes > pol.max_bytes)
        ):
            self._evict(self._victim(order), expired=False)

    def _enforce_global(self) -> None:
        while self._lru and (
            (self.max_entries is not None and len(self._entries) > self.max_entries)
            or (self.max_bytes is not None and self._total_bytes > self.max_bytes)
        ):
            self._evict(self._victim(self._lru), expired=False)

    # -- feedback -----------------------------------------------------------

    def report(self, key: int, correct: bool, score: float | None = None) -> None:
        """Feedback on a hit (or a :meth:`nearest` candidate) of entry ``key``:
        was serving it right? ``score`` defaults to the score of its last hit.

        Adaptive categories learn from it (an idea of verified semantic caching,
        vCache, arXiv 2502.03771): a wrong report at score ``s`` stops the entry
        from being served at or below ``s``; the category's threshold becomes the
        lowest observed score above which the upper 95% confidence bound of the
        wrong-hit rate is within the policy's ``error_budget``.
        """
        with self._lock:
            self._check_open()
            e = self._entries.get(int(key))
            if e is None:
                raise NotFoundError(f"entry {key} is not in the cache")
            _check_unit_interval("score", score)
            s = e.last_score if score is None else float(score)
            pol = self.policy(e.category)
            if e.obs is None:
                e.obs = []
            e.obs.append((s, bool(correct)))
            if not correct:
                e.floor = max(e.floor, s)
            st = self._cat_stats(e.category)
            st.obs.append((s, bool(correct)))
            if pol.adaptive:
                learned = _bounded_threshold(st.obs, float(pol.error_budget), 20)  # type: ignore[arg-type]
                st.learned = learned

    # -- single flight ------------------------------------------------------

    def get_or_compute(
        self,
        vec: npt.ArrayLike,
        fn: Callable[[], Any],
        scope: str = "",
        category: str = "default",
        text: str | None = None,
        ttl_s: float | None = None,
        cost: float = 0.0,
    ) -> memoryview:
        """The cached value for ``vec``, or ``fn()`` computed once and inserted.

        Concurrent calls that miss with the same (scope, category, text) — or the
        same vector when no text is given — compute once: the others wait for
        the first and get its value. If ``fn`` raises, every waiter gets the
        exception and nothing is inserted.
        """
        v = self._vector(vec)
        hit = self.lookup(v, scope, category, text)
        if hit is not None:
            return hit.value
        part = self._part(scope, category)
        fkey = (
            _exact_key(part, text)
            if text is not None
            else hashlib.blake2b(part.encode() + b"\x00" + v.tobytes(), digest_size=16).digest()
        )
        with self._lock:
            flight = self._flights.get(fkey)
            leader = flight is None
            if leader:
                flight = self._flights[fkey] = _Flight()
        assert flight is not None
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return memoryview(flight.value)  # type: ignore[arg-type]
        try:
            # A concurrent leader may have finished between our miss and now.
            hit = self.lookup(v, scope, category, text)
            if hit is not None:
                flight.value = bytes(hit.value)
                return hit.value
            value = fn()
            try:
                mv = memoryview(value)
            except TypeError:
                raise InvalidTypeError(
                    f"get_or_compute: fn must return a bytes-like value, got {type(value).__name__}"
                ) from None
            flight.value = mv.tobytes()
            self.insert(v, mv, scope, category, text, ttl_s, cost)
            return memoryview(flight.value)
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                self._flights.pop(fkey, None)
            flight.done.set()

    # -- stats, persistence -------------------------------------------------

    def stats(self) -> SemanticCacheStats:
        """Per category: lookups, hits by source, hit rate, refusals by reason,
        inserts, evictions, expirations, entries, bytes, latency p50/p99 (µs,
        over the last 4096 lookups), the learned threshold, and 100-bin
        histograms over [-1, 1] of the nearest score of hits and of misses;
        plus totals."""
        with self._lock:
            cats: dict[str, SemanticCategoryStats] = {}
            for name, st in self._stats.items():
                hits = sum(st.hits.values())
                lat = np.array(st.latency_ns, dtype=np.float64) / 1e3
                cats[name] = {
                    "lookups": st.lookups,
                    "hits": dict(st.hits),
                    "hit_rate": hits / st.lookups if st.lookups else 0.0,
                    "refused": dict(st.refused),
                    "inserts": st.inserts,
                    "evictions": st.evictions,
                    "expirations": st.expirations,
                    "entries": st.entries,
                    "bytes": st.bytes,
                    "latency_us_p50": float(np.percentile(lat, 50)) if lat.size else None,
                    "latency_us_p99": float(np.percentile(lat, 99)) if lat.size else None,
                    "threshold": self.threshold(name),
                    "hit_score_hist": st.hit_scores.copy(),
                    "miss_score_hist": st.miss_scores.copy(),
                }
            return {
                "categories": cats,
                "entries": len(self._entries),
                "bytes": self._total_bytes,
                "index_memory_bytes": int(self._index.memory_bytes),
                "slb_entries": len(self._slb),
                "hist_edges": np.linspace(-1.0, 1.0, _HIST_BINS + 1),
            }

    def _recover(self) -> None:
        assert self._arena is not None
        keys = self._arena.keys(start=_KEY_PREFIX, end=bytes([_KEY_PREFIX[0] + 1]))
        if not keys:
            return
        now = self._clock()
        vals = self._arena.get_many(keys)
        entries: list[_Entry] = []
        vecs: list[np.ndarray] = []
        dead: list[bytes] = []
        for ak, rec in zip(keys, vals, strict=True):
            if rec is None:
                continue
            magic, mlen, dim = _HEAD.unpack_from(rec, 0)
            if magic != _MAGIC or dim != self.dim:
                from .errors import CorruptionError

                raise CorruptionError(
                    f"entry {ak!r} is not a semantic-cache record of dim {self.dim} (dim {dim})"
                )
            meta = json.loads(bytes(rec[_HEAD.size : _HEAD.size + mlen]))
            off = _HEAD.size + mlen
            key = int.from_bytes(ak[1:], "big")
            self._next_key = max(self._next_key, key + 1)
            deadline = math.inf if meta["dl"] is None else float(meta["dl"])
            if deadline <= now:
                dead.append(ak)
                continue
            part = self._part(meta["s"], meta["c"])
            text = meta["t"]
            vec_end = off + 4 * self.dim
            e = _Entry(key, part, meta["s"], meta["c"], text,
                       _exact_key(part, text) if text is not None else None, float(meta["at"]),
                       deadline, float(meta["cost"]), len(rec) - vec_end, vec_end)  # fmt: skip
            if "sh" in meta:  # shared when written: the shared tier checks it against Redis
                gid, _, nonce = str(meta["sh"]).partition(":")
                e.link = (gid, bytes.fromhex(nonce))
            entries.append(e)
            vecs.append(np.frombuffer(rec, dtype=np.float32, count=self.dim, offset=off))
        for ak in dead:
            self._arena.delete(ak)
        if not entries:
            return
        # Older entries first so that a replaced exact text maps to the newest.
        order = sorted(range(len(entries)), key=lambda i: entries[i].key)
        entries = [entries[i] for i in order]
        mat = np.ascontiguousarray(np.stack([vecs[i] for i in order]))
        self._index.add_many(
            [e.part for e in entries], np.array([e.key for e in entries], dtype=np.int64), mat
        )
        for e in entries:
            self._register(e)
        for c in {e.category for e in entries}:
            self._enforce_quotas(c)
        self._enforce_global()

    def flush(self) -> None:
        """Makes every acknowledged insert and delete durable now (``sync="batch"``/``"none"``)."""
        with self._lock:
            self._check_open()
            if self._arena is not None:
                self._arena.flush()

    def close(self) -> None:
        """Flushes and closes the arena; later calls raise :class:`ClosedError`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.shared is not None:
                self.shared.close()
            if self._arena is not None:
                self._arena.close()

    def __enter__(self) -> SemanticCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int | np.integer) and int(key) in self._entries

    def __repr__(self) -> str:
        where = "memory" if self._arena is None else repr(os.fspath(self._arena.path))
        return f"SemanticCache({where}, dim={self.dim}, entries={len(self)})"


class _Flight:
    __slots__ = ("done", "value", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: bytes | None = None
        self.error: BaseException | None = None
