"""Prefix KV blocks shared through Redis, behind the local disk tier.

:class:`RedisKVTier` has the interface of :class:`~slabcache.kv.ArenaKVTier`
(``put``, ``get``, ``match_prefix``, ``in``) over Redis string keys
``slabcache:{ns}:kv:<fingerprint>:<chained block hash>`` (hex): the
fingerprint names the model and :class:`~slabcache.kv.KVLayout`, the chained
hash the whole prefix, so a hit is exactly the KV that prefix produces on that
model. :class:`NearFarKVTier` puts an ``ArenaKVTier`` (near) in front of it
(far) and is what :class:`~slabcache.kv.TieredKVCache` takes as ``disk=``:
``match_prefix`` continues a near match with blocks fetched from Redis (one
``EXISTS`` pipeline, then ``MGET``) and writes them into the arena, so ``get``
reads only the arena; ``put`` writes both.

Redis down or slow: ``match_prefix`` counts only local blocks, ``put`` keeps
the local copy and counts the dropped remote write; nothing raises (a
``get`` of a block that is not local raises ``NotFoundError`` as before).

    >>> RedisKVTier.__name__, NearFarKVTier.__name__
    ('RedisKVTier', 'NearFarKVTier')
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ClosedError, CorruptionError, InvalidArgumentError, NotFoundError
from ..kv.disk import ArenaKVTier, _hashes
from ..kv.layout import KVLayout
from ._client import (
    REROUTED,
    TRANSIENT,
    CircuitBreaker,
    RedisOptions,
    connect,
    is_cluster,
    key_prefix,
    probe,
)

__all__ = ["RedisKVTier", "NearFarKVTier"]

_CHUNK_BYTES = 64 << 20  # one MGET / pipeline carries at most this much


class RedisKVTier:
    """KV blocks in Redis by fingerprint + chained hash (``ArenaKVTier``'s interface).

    Args:
        target: ``redis://`` / ``rediss://`` URL, a ``redis+cluster://seed:port[,...]/0`` URL
            or a ``redis.Redis``.
        layout: the block shape; with ``model`` it makes the key fingerprint.
        model: a name for the weights the KV came from.
        namespace: the tenant (keys start with ``slabcache:{namespace}:kv:``).
        ttl_s: Redis TTL of each block (``None``: none; give Redis a ``maxmemory``
            with an ``allkeys-lru`` policy then).
        options: timeouts, credentials, TLS (:class:`RedisOptions`), or keywords.

    Raises:
        SharedAuthError, SharedTierError: at construction, as for the semantic tier.
    """

    def __init__(
        self,
        target: Any,
        layout: KVLayout,
        *,
        model: str = "",
        namespace: str = "default",
        ttl_s: float | None = None,
        options: RedisOptions | None = None,
        **option_kw: Any,
    ) -> None:
        if ttl_s is not None and not (ttl_s > 0 and math.isfinite(ttl_s)):
            raise InvalidArgumentError(f"ttl_s must be a positive finite number, got {ttl_s}")
        self.layout = layout
        self.fingerprint = layout.fingerprint(model)
        self.namespace = namespace
        self.options = options if options is not None else RedisOptions(**option_kw)
        self._pfx = key_prefix(namespace, "kv") + self.fingerprint.hex() + ":"
        # Blocks are large: reads get the write timeout, not the semantic lookup one.
        self._target = target
        self._client = connect(target, self.options, self.options.write_timeout_s, self._pfx)
        probe(self._client, self._pfx + "probe")
        self._payload = layout.block_bytes_all_layers
        self._ttl_ms = None if ttl_s is None else max(1, int(ttl_s * 1000))
        self.breaker = CircuitBreaker(
            self.options.breaker_failures, self.options.breaker_cooldown_s
        )
        self.stats = {"puts": 0, "hits": 0, "misses": 0, "dropped_writes": 0, "errors": 0,
                      "skipped": 0}  # fmt: skip
        self._closed = False

    def _key(self, h: bytes) -> str:
        return self._pfx + h.hex()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("Redis KV tier is closed")

    def _chunk(self) -> int:
        return max(1, _CHUNK_BYTES // max(1, self._payload))

    def put(self, hashes: npt.ArrayLike, rows: npt.ArrayLike) -> int:
        """Writes blocks (``uint8 [n, num_layers * block_bytes]``) under their hashes;
        returns how many were written (0 while Redis is unreachable: counted in
        ``stats["dropped_writes"]``, never raised)."""
        self._check_open()
        hs = _hashes(hashes)
        data = np.asarray(rows)
        if data.dtype != np.uint8 or data.shape != (len(hs), self._payload):
            raise InvalidArgumentError(
                f"rows must be uint8 ({len(hs)}, {self._payload}), got {data.dtype} {data.shape}"
            )
        if not self.breaker.allow():
            self.stats["dropped_writes"] += len(hs)
            self.stats["skipped"] += 1
            return 0
        written = 0
        step = self._chunk()
        try:
            for lo in range(0, len(hs), step):
                pipe = self._client.pipeline(transaction=False)
                for i in range(lo, min(len(hs), lo + step)):
                    pipe.set(self._key(hs[i].tobytes()), data[i].tobytes(), px=self._ttl_ms)
                pipe.execute()
                written = min(len(hs), lo + step)
            self.breaker.success()
        except TRANSIENT as exc:
            self.breaker.failure()
            self.stats["errors"] += 1
            self._maybe_reroute(exc)
            self.stats["dropped_writes"] += len(hs) - written
        self.stats["puts"] += written
        return written

    def _maybe_reroute(self, exc: BaseException) -> None:
        # A cluster moved the namespace's slot: connect to the node that serves it now.
        if isinstance(exc, REROUTED) and is_cluster(self._target):
            try:
                self._client = connect(self._target, self.options, self.options.write_timeout_s,
                                       self._pfx)  # fmt: skip
            except Exception:  # noqa: BLE001 - retried on the next error
                pass

    def match_prefix(self, hashes: npt.ArrayLike, start: int = 0) -> int:
        """How many of ``hashes[start:]`` Redis holds, counting until the first miss
        (0 while Redis is unreachable)."""
        self._check_open()
        hs = _hashes(hashes)
        if start >= len(hs) or not self.breaker.allow():
            return 0
        try:
            pipe = self._client.pipeline(transaction=False)
            for i in range(start, len(hs)):
                pipe.exists(self._key(hs[i].tobytes()))
            found = pipe.execute()
            self.breaker.success()
        except TRANSIENT as exc:
            self.breaker.failure()
            self.stats["errors"] += 1
            self._maybe_reroute(exc)
            return 0
        n = 0
        for f in found:
            if not f:
                break
            n += 1
        return n

    def fetch(self, hashes: npt.ArrayLike) -> list[bytes | None]:
        """The blocks' bytes (``None`` where Redis has none or is unreachable)."""
        self._check_open()
        hs = _hashes(hashes)
        out: list[bytes | None] = [None] * len(hs)
        if not self.breaker.allow():
            self.stats["skipped"] += 1
            return out
        step = self._chunk()
        try:
            for lo in range(0, len(hs), step):
                keys = [self._key(hs[i].tobytes()) for i in range(lo, min(len(hs), lo + step))]
                out[lo : lo + len(keys)] = self._client.mget(keys)
            self.breaker.success()
        except TRANSIENT as exc:
            self.breaker.failure()
            self.stats["errors"] += 1
            self._maybe_reroute(exc)
        for i, v in enumerate(out):
            if v is not None and len(v) != self._payload:
                raise CorruptionError(
                    f"block {hs[i].tobytes().hex()[:16]}... in Redis has {len(v)} bytes, "
                    f"the layout needs {self._payload}"
                )
        return out

    def get(self, hashes: npt.ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
        """The blocks as ``uint8 [n, num_layers * block_bytes]`` (into ``out`` if given);
        ``NotFoundError`` if Redis lacks one (or cannot be reached)."""
        hs = _hashes(hashes)
        if out is None:
            out = np.empty((len(hs), self._payload), dtype=np.uint8)
        elif out.dtype != np.uint8 or out.shape != (len(hs), self._payload):
            raise InvalidArgumentError(
                f"out must be uint8 ({len(hs)}, {self._payload}), got {out.dtype} {out.shape}"
            )
        vals = self.fetch(hs)
        for i, v in enumerate(vals):
            if v is None:
                self.stats["misses"] += 1
                raise NotFoundError(f"block {hs[i].tobytes().hex()[:16]}... is not in Redis")
            out[i] = np.frombuffer(v, dtype=np.uint8)
        self.stats["hits"] += len(hs)
        return out

    def __contains__(self, block_hash: bytes) -> bool:
        h = _hashes(np.frombuffer(bytes(block_hash), dtype=np.uint8))
        return self.match_prefix(h) == 1

    def flush(self) -> None:
        """Nothing to do: every ``put`` has reached Redis (or was counted dropped)."""

    def close(self) -> None:
        """Closes the connections. Idempotent."""
        if not self._closed:
            self._closed = True
            self._client.close()

    def __enter__(self) -> RedisKVTier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NearFarKVTier:
    """An :class:`~slabcache.kv.ArenaKVTier` (near) in front of a :class:`RedisKVTier`
    (far): pass it to :class:`~slabcache.kv.TieredKVCache` as ``disk=``.

    ``match_prefix`` counts the near blocks, then fetches the next ones from Redis
    and writes them into the arena (so ``get`` reads only the arena); ``put``
    writes both (write-through).
    """

    def __init__(self, near: ArenaKVTier, far: RedisKVTier) -> None:
        if near.layout != far.layout or near.fingerprint != far.fingerprint:
            raise InvalidArgumentError("near and far tiers have different layouts or models")
        self.near, self.far = near, far
        self.layout = near.layout
        self.fingerprint = near.fingerprint
        self.stats = {"far_blocks_filled": 0}

    def __len__(self) -> int:
        return len(self.near)

    def __contains__(self, block_hash: bytes) -> bool:
        return block_hash in self.near

    @property
    def nbytes(self) -> int:
        return self.near.nbytes

    def match_prefix(self, hashes: npt.ArrayLike, start: int = 0) -> int:
        """Blocks of ``hashes[start:]`` available until the first miss, near then far;
        the far ones are in the near tier when this returns."""
        hs = _hashes(hashes)
        a = self.near.match_prefix(hs, start)
        lo = start + a
        if lo >= len(hs):
            return a
        b = self.far.match_prefix(hs, lo)
        if b == 0:
            return a
        vals = self.far.fetch(hs[lo : lo + b])
        k = 0
        while k < b and vals[k] is not None:
            k += 1
        if k:
            rows = np.stack([np.frombuffer(v, dtype=np.uint8) for v in vals[:k]])  # type: ignore[arg-type]
            self.near.put(hs[lo : lo + k], rows)
            self.stats["far_blocks_filled"] += k
        # the near budget may have evicted some of them again: count what is there
        return self.near.match_prefix(hs, start)

    def get(self, hashes: npt.ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
        """The blocks from the near tier (``match_prefix`` brought the far ones there)."""
        return self.near.get(hashes, out=out)

    def put(self, hashes: npt.ArrayLike, rows: npt.ArrayLike) -> int:
        """Writes the blocks to the near tier and through to Redis; returns the near count."""
        n = self.near.put(hashes, rows)
        self.far.put(hashes, rows)
        return n

    def flush(self) -> None:
        self.near.flush()

    def close(self) -> None:
        """Closes both tiers."""
        self.near.close()
        self.far.close()

    def __enter__(self) -> NearFarKVTier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
