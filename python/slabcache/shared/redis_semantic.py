"""The semantic cache's shared tier: one Redis behind every replica's local cache.

A :class:`~slabcache.SemanticCache` built with ``shared="redis://..."`` keeps
its local path (exact text → lookaside buffer → INT8 index → arena) as a near
cache and adds, per namespace (tenant):

* **write-through** of every insert, in the background: the payload, the
  vector as INT8 codes + scale, scope, category, text, cost and deadline; the
  entry's TTL becomes the Redis TTL;
* **one structure per (scope, category)**: a hash ``gid → record`` (codes,
  scale, deadline, text), so one ``HGETALL`` fetches a scope's candidates,
  scored here in numpy (cosine; the scale cancels); payloads are separate
  string keys, fetched only for the candidates that pass (a second round trip);
* **a local miss consults Redis** and fills the local tiers with the
  candidates that pass, then the local path decides (trap guard, verifier,
  adaptive floors apply to remote entries too);
* **invalidations** (``delete``, ``drop_scope``, an insert replacing an entry
  of the same text) are appended to a Redis stream in the same Lua script that
  changes the data; each replica reads it with a blocking ``XREAD`` and
  evicts its local copies. A stream, not pub/sub: a replica that reconnects
  reads what it missed (after a Redis restart it starts the new stream over);
* **failures degrade to local-only**: lookups wait at most the lookup timeout
  and skip Redis while the circuit breaker is open; writes queue and retry,
  and are dropped (counted) when the queue is full; nothing raises to the caller.

Redis vector search (``FT.SEARCH`` of RediSearch >= 2.4 / Redis Stack / Redis 8)
is detected and reported as ``stats()["server_vector_search"]`` (the module as
``stats()["server_search_module"]``); lookups use the scan above either way:
the servers available to build and test this (Debian's Redis 7.0, alone or with
Debian's RediSearch 1.2, which has no vector fields) cannot run an FT path.

    >>> RedisSemanticTier.__name__
    'RedisSemanticTier'
"""

from __future__ import annotations

import collections
import hashlib
import math
import os
import struct
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ClosedError, InvalidArgumentError
from ._client import (
    REROUTED,
    TRANSIENT,
    CircuitBreaker,
    RedisOptions,
    SharedTierError,
    check_namespace,
    connect,
    is_cluster,
    key_prefix,
    probe,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..semantic import Hit, SemanticCache

__all__ = ["RedisSemanticTier", "open_shared_tier"]

# record = nonce(8) | head | codes(dim) | text(utf-8)
_HEAD = struct.Struct(
    "<dddfIi"
)  # deadline (inf: none), created, cost, scale, dim, text length (-1: None)
_NONCE = 8
_CANDIDATES = 4
_QUANT_SLACK = 0.02  # INT8 codes move a cosine by up to ~0.01: fetch slightly below threshold
_STREAM_MAXLEN = 100_000
_TOMBSTONES = 65_536
# A (gid, nonce) removed from Redis (deleted, replaced, dropped) is remembered there this
# long, so a put the writer retries after a lost reply cannot bring it back; a put is not
# retried past half of it (dropped and counted instead).
_REDIS_TOMB_MS = 600_000
_RETRY_LIMIT_S = _REDIS_TOMB_MS / 2000

_PUT = """
local function extend(key, existed, ttl)
  if ttl <= 0 then redis.call('PERSIST', key) return end
  if existed == 0 then redis.call('PEXPIRE', key, ttl) return end
  local cur = redis.call('PTTL', key)
  if cur >= 0 and cur < ttl then redis.call('PEXPIRE', key, ttl) end
end
local ttl = tonumber(ARGV[4])
local nonce = string.sub(ARGV[2], 1, 8)
if redis.call('EXISTS', ARGV[6] .. nonce) == 1 then return 0 end  -- removed: a late retry
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old and string.sub(old, 1, 8) ~= nonce then
  redis.call('SET', ARGV[6] .. string.sub(old, 1, 8), '1', 'PX', ARGV[7])
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'op', 'd', 'g', ARGV[1],
             'n', string.sub(old, 1, 8))
end
local had_part = redis.call('EXISTS', KEYS[1])
local had_scope = redis.call('EXISTS', KEYS[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ttl)
else
  redis.call('SET', KEYS[2], ARGV[3])
end
redis.call('SADD', KEYS[3], KEYS[1])
extend(KEYS[1], had_part, ttl)
extend(KEYS[3], had_scope, ttl)
return 1
"""

# KEYS: part, payload, stream; ARGV: gid, nonce, maxlen, publish (1/0), tomb prefix, tomb ms
_DELETE = """
redis.call('SET', ARGV[5] .. ARGV[2], '1', 'PX', ARGV[6])
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old and string.sub(old, 1, 8) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
end
if ARGV[4] == '1' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'op', 'd', 'g', ARGV[1], 'n', ARGV[2])
end
return 1
"""

# KEYS: scope set, stream; ARGV: scope, payload key prefix, maxlen, tomb prefix, tomb ms
_DROP_SCOPE = """
local parts = redis.call('SMEMBERS', KEYS[1])
for _, p in ipairs(parts) do
  local recs = redis.call('HGETALL', p)
  for i = 1, #recs, 2 do
    redis.call('DEL', ARGV[2] .. recs[i])
    redis.call('SET', ARGV[4] .. string.sub(recs[i + 1], 1, 8), '1', 'PX', ARGV[5])
  end
  redis.call('DEL', p)
end
redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'op', 's', 's', ARGV[1])
return #parts
"""


def _h(s: str) -> str:
    return hashlib.blake2b(s.encode(), digest_size=16).hexdigest()


def _quantise(v: np.ndarray) -> tuple[bytes, float]:
    m = float(np.max(np.abs(v))) if v.size else 0.0
    scale = m / 127.0 if m > 0 else 1.0
    codes = np.clip(np.rint(v / scale), -127, 127).astype(np.int8)
    return codes.tobytes(), scale


class _Remote:
    __slots__ = ("gid", "nonce", "deadline", "created", "cost", "scale", "codes", "text")

    def __init__(self, gid: str, rec: bytes, dim: int) -> None:
        self.gid = gid
        self.nonce = rec[:_NONCE]
        dl, cr, cost, scale, d, tlen = _HEAD.unpack_from(rec, _NONCE)
        if d != dim:
            raise ValueError("dim")
        off = _NONCE + _HEAD.size
        self.deadline, self.created, self.cost, self.scale = dl, cr, cost, scale
        self.codes = np.frombuffer(rec, dtype=np.int8, count=dim, offset=off)
        self.text = None if tlen < 0 else rec[off + dim : off + dim + tlen].decode()


class RedisSemanticTier:
    """The shared tier of one :class:`~slabcache.SemanticCache` on a Redis server.

    Usually made by ``SemanticCache(..., shared=url_or_client, namespace=...)``;
    build it yourself to set options, then pass it as ``shared=``.

    Args:
        target: ``redis://host:port/db`` / ``rediss://`` URL, a
            ``redis+cluster://seed:port[,seed:port]/0`` URL, or a ``redis.Redis``.
        namespace: the tenant; every key starts with ``slabcache:{namespace}:sem:``.
        options: timeouts, credentials, TLS, breaker (:class:`RedisOptions`);
            keyword arguments (``password=``, ``lookup_timeout_s=``, ...) build one.
        max_pending: writes queued while Redis is slow or down; a put beyond it is
            dropped and counted (deletes are kept up to 4x this).
        fill: ``False``: write-through and invalidation only, no remote lookups.

    Raises:
        SharedAuthError: wrong password / ACL user without rights on the namespace.
        SharedTierError: Redis unreachable at construction.

    Every method that the cache calls is safe to call while Redis is down.
    """

    def __init__(
        self,
        target: Any,
        namespace: str = "default",
        *,
        options: RedisOptions | None = None,
        max_pending: int = 10_000,
        fill: bool = True,
        **option_kw: Any,
    ) -> None:
        self.namespace = check_namespace(namespace)
        self.options = options if options is not None else RedisOptions(**option_kw)
        if options is not None and option_kw:
            raise InvalidArgumentError("give either options= or option keywords, not both")
        self._target = target
        o = self.options
        self._pfx = key_prefix(self.namespace, "sem")
        self._stream = self._pfx + "inval"
        self._connect()
        info = probe(self._reader, self._pfx + "probe")
        self._run_id = info.get("run_id")
        self.server_version = str(info.get("redis_version", "?"))
        # Detected and reported only: lookups use the scan either way (no server with
        # vector search was available to test an FT.SEARCH path against).
        self.server_vector_search, self.server_search_module = self._detect_search()
        self._last_id = self._stream_tail()
        self.max_pending = int(max_pending)
        self.fill_enabled = bool(fill)
        self.breaker = CircuitBreaker(o.breaker_failures, o.breaker_cooldown_s)
        self._cache: SemanticCache | None = None
        self._lock = threading.Lock()  # guards the maps and the queue
        self._by_key: dict[int, tuple[str, bytes, str]] = {}  # local key -> gid, nonce, part key
        self._by_gid: dict[str, int] = {}
        self._tomb: collections.OrderedDict[tuple[str, bytes], None] = collections.OrderedDict()
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._wake = threading.Condition(self._lock)
        self._inflight = 0
        self._tls = threading.local()
        self._stop = threading.Event()
        self.counters = collections.Counter(
            {
                k: 0
                for k in (
                    "writes",
                    "write_errors",
                    "dropped_writes",
                    "dropped_deletes",
                    "remote_lookups",
                    "remote_hits",
                    "remote_skipped",
                    "remote_errors",
                    "fills",
                    "invalidations_applied",
                    "resyncs",
                    "relinked",
                    "unlinked_at_start",
                    "reroutes",
                )
            }  # fmt: skip
        )
        self._threads: list[threading.Thread] = []
        self._route_lock = threading.Lock()
        self._rerouted = False

    # -- wiring ----------------------------------------------------------------

    def attach(self, cache: SemanticCache) -> None:
        """Binds the tier to ``cache`` and starts its writer and listener threads."""
        if self._cache is not None and self._cache is not cache:
            raise InvalidArgumentError("a RedisSemanticTier serves one SemanticCache")
        self._cache = cache
        self._dim = cache.dim
        self._relink(cache)
        for fn, name in ((self._write_loop, "writer"), (self._listen_loop, "listener")):
            t = threading.Thread(target=fn, name=f"slabcache-redis-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def _connect(self) -> None:
        """(Re)builds the three connections; on a cluster, to the primary that serves
        the namespace's slot now."""
        o, t, route = self.options, self._target, self._pfx
        self._reader = connect(t, o, o.lookup_timeout_s, route)
        self._writer = connect(t, o, o.write_timeout_s, route)
        self._listen_client = connect(t, o, max(1.0, o.write_timeout_s) + 0.5, route)
        self._put_s = self._writer.register_script(_PUT)
        self._del_s = self._writer.register_script(_DELETE)
        self._drop_s = self._writer.register_script(_DROP_SCOPE)

    def _reroute(self) -> None:
        """A cluster moved the namespace's slot (resharding, failover): find its node."""
        if not is_cluster(self._target):
            return
        with self._route_lock:
            try:
                self._connect()
                self._rerouted = True
                self.counters["reroutes"] += 1
            except Exception:  # noqa: BLE001 - cluster unreachable: retried on the next error
                pass

    def _relink(self, cache: SemanticCache) -> None:
        """Entries the cache recovered from its arena that were shared when written: keep
        (and link again) those whose version Redis still holds, evict the others (deleted,
        replaced or dropped elsewhere while this replica was down, or never written to
        Redis). Runs before the listener starts, after the stream position was taken in
        the constructor, so a change after that position arrives through the stream."""
        with cache._lock:
            linked = [e for e in cache._entries.values() if e.link is not None]
        if not linked:
            return
        recs: list[Any] = []
        try:
            for i in range(0, len(linked), 1000):
                pipe = self._writer.pipeline(transaction=False)
                for e in linked[i : i + 1000]:
                    assert e.link is not None
                    pipe.hget(self._part_key(e.part), e.link[0])
                recs += pipe.execute()
        except TRANSIENT:
            recs += [None] * (len(linked) - len(recs))  # cannot check: a miss is safe
        with cache._lock, self._lock:
            for e, rec in zip(linked, recs, strict=True):
                assert e.link is not None
                gid, nonce = e.link
                if rec is not None and rec[:_NONCE] == nonce:
                    self._remember(e.key, gid, nonce, self._part_key(e.part))
                    self.counters["relinked"] += 1
                else:
                    cache._evict(e, expired=False, counted=False)
                    self.counters["unlinked_at_start"] += 1

    def new_link(self, part: str, text: str | None) -> tuple[str, bytes]:
        """The (gid, nonce) a new local entry gets: the cache stores it with the entry.
        A fill gets the Redis entry's own; an insert a fresh nonce, and a gid that is
        the same on every replica for the same normalised text."""
        fill = getattr(self._tls, "fill_link", None)
        if fill is not None:
            return fill  # type: ignore[no-any-return]
        gid = _h(part + "\x00" + _norm(text)) if text is not None else os.urandom(16).hex()
        return gid, os.urandom(_NONCE)

    def _detect_search(self) -> tuple[bool, str | None]:
        """Whether the server has vector search (``FT.CREATE ... VECTOR``), and its
        search module as ``"name version"``. Vector fields came with RediSearch 2.4
        (module version 20400; Redis 8's query engine reports 80000 and up): Debian's
        ``redis-redisearch`` 1.2 loads as module ``ft`` 10200 and has none."""
        try:
            mods = self._reader.execute_command("MODULE", "LIST")
        except Exception:  # noqa: BLE001 - MODULE LIST denied by an ACL, or absent
            return False, None
        for m in mods or []:
            d = m if isinstance(m, dict) else dict(zip(m[::2], m[1::2], strict=False))
            name = d.get(b"name", d.get("name", b""))
            ver = d.get(b"ver", d.get("ver", 0))
            if isinstance(name, bytes):
                name = name.decode()
            if str(name).lower() in ("search", "ft", "redisearch"):
                v = int(ver or 0)
                return v >= 20400, f"{name} {v // 10000}.{v // 100 % 100}.{v % 100}"
        return False, None

    def _stream_tail(self) -> bytes:
        try:
            last = self._reader.xrevrange(self._stream, count=1)
        except TRANSIENT as exc:
            raise SharedTierError(f"cannot reach Redis: {exc}") from exc
        return last[0][0] if last else b"0-0"

    def _part_key(self, part: str) -> str:
        return self._pfx + "p:" + _h(part)

    def _scope_key(self, scope: str) -> str:
        return self._pfx + "s:" + _h(scope)

    def _payload_key(self, gid: str) -> str:
        return self._pfx + "v:" + gid

    @property
    def _tomb_prefix(self) -> str:
        return self._pfx + "x:"

    # -- hooks the cache calls (under its lock) ----------------------------------

    def on_insert(
        self, entries: Sequence[Any], vectors: np.ndarray, payloads: Sequence[Any]
    ) -> None:
        """Queues the write-through of newly inserted local entries (never blocks)."""
        if getattr(self._tls, "filling", False):
            return
        ops = []
        live = self._cache._entries if self._cache is not None else {}
        for e, v, p in zip(entries, vectors, payloads, strict=True):
            current = live.get(e.key)
            if id(current) != id(e):  # replaced within the same batch
                continue
            gid, nonce = e.link if e.link is not None else self.new_link(e.part, e.text)
            pk = self._part_key(e.part)
            ops.append(("put", e.key, gid, nonce, pk, e.scope, e.deadline, e.created, e.cost,
                        e.text, np.array(v, dtype=np.float32), bytes(p), [None]))  # fmt: skip
        with self._lock:
            for op in ops:
                self._remember(op[1], op[2], op[3], op[4])
                if len(self._queue) >= self.max_pending:
                    self.counters["dropped_writes"] += 1
                    continue
                self._queue.append(op)
            self._prune()
            self._wake.notify()

    def on_delete(self, key: int) -> None:
        """Queues the removal of local entry ``key`` from Redis and its invalidation."""
        with self._lock:
            ref = self._by_key.pop(key, None)
            if ref is None:
                return
            gid, nonce, pk = ref
            if self._by_gid.get(gid) == key:
                del self._by_gid[gid]
            self._bury(gid, nonce)  # a fill fetched before this delete must not undo it
            if len(self._queue) >= 4 * self.max_pending:
                self.counters["dropped_deletes"] += 1
                return
            self._queue.append(("del", gid, nonce, pk))
            self._wake.notify()

    def on_drop_scope(self, scope: str) -> None:
        """Queues the removal of every entry of ``scope`` from Redis, on every replica."""
        with self._lock:
            self._queue.append(("drop", scope))
            self._wake.notify()

    def on_miss(
        self, cache: SemanticCache, v: np.ndarray, scope: str, category: str,
        text: str | None, threshold: float,
    ) -> Hit | None:  # fmt: skip
        """A local miss: fetch the scope's candidates from Redis, fill the local
        tiers with those that pass, and look up locally again. Called without
        the cache's lock; waits at most the lookup timeout for Redis."""
        if not self.fill_enabled or self._stop.is_set() or not cache.policy(category).cacheable:
            return None
        if not self.breaker.allow():
            self.counters["remote_skipped"] += 1
            return None
        part = cache._part(scope, category)
        pk = self._part_key(part)
        self.counters["remote_lookups"] += 1
        try:
            raw = self._reader.hgetall(pk)
            self.breaker.success()
        except TRANSIENT:
            self.breaker.failure()
            self.counters["remote_errors"] += 1
            return None
        if not raw:
            return None
        now = cache._clock()
        cands = self._candidates(raw, v, text, threshold, now, pk)
        if not cands:
            return None
        try:
            vals = self._reader.mget([self._payload_key(c.gid) for c in cands])
        except TRANSIENT:
            self.breaker.failure()
            self.counters["remote_errors"] += 1
            return None
        got = [(c, p[_NONCE:]) for c, p in zip(cands, vals, strict=True)
               if p is not None and p[:_NONCE] == c.nonce]  # fmt: skip
        if not got:
            return None
        return self._fill_and_lookup(cache, got, v, part, scope, category, text, threshold)

    def on_miss_many(
        self, cache: SemanticCache, m: np.ndarray, scopes: Sequence[str],
        categories: Sequence[str], texts: Sequence[str | None], thresholds: Sequence[float],
        out: list[Hit | None],
    ) -> list[Hit | None]:  # fmt: skip
        """:meth:`on_miss` for the ``None`` items of ``out`` (a ``lookup_many``): one
        pipelined ``HGETALL`` of their scopes and one ``MGET`` of all their candidates."""
        todo = [i for i, h in enumerate(out) if h is None and cache.policy(categories[i]).cacheable]
        if not todo or not self.fill_enabled or self._stop.is_set():
            return out
        if len(todo) == 1:
            i = todo[0]
            out[i] = self.on_miss(cache, m[i], scopes[i], categories[i], texts[i], thresholds[i])
            return out
        if not self.breaker.allow():
            self.counters["remote_skipped"] += len(todo)
            return out
        parts = {i: cache._part(scopes[i], categories[i]) for i in todo}
        pks = sorted({self._part_key(p) for p in parts.values()})
        self.counters["remote_lookups"] += len(todo)
        try:
            pipe = self._reader.pipeline(transaction=False)
            for pk in pks:
                pipe.hgetall(pk)
            raws = dict(zip(pks, pipe.execute(), strict=True))
            self.breaker.success()
        except TRANSIENT:
            self.breaker.failure()
            self.counters["remote_errors"] += 1
            return out
        now = cache._clock()
        cands: dict[int, list[_Remote]] = {}
        for i in todo:
            pk = self._part_key(parts[i])
            if raws[pk]:
                c = self._candidates(raws[pk], m[i], texts[i], thresholds[i], now, pk)
                if c:
                    cands[i] = c
        gids = sorted({c.gid for cs in cands.values() for c in cs})
        if not gids:
            return out
        try:
            vals = dict(zip(gids, self._reader.mget([self._payload_key(g) for g in gids]),
                            strict=True))  # fmt: skip
        except TRANSIENT:
            self.breaker.failure()
            self.counters["remote_errors"] += 1
            return out
        for i, cs in cands.items():
            got = [(c, vals[c.gid][_NONCE:]) for c in cs
                   if vals[c.gid] is not None and vals[c.gid][:_NONCE] == c.nonce]  # fmt: skip
            if got:
                out[i] = self._fill_and_lookup(cache, got, m[i], parts[i], scopes[i],
                                               categories[i], texts[i], thresholds[i])  # fmt: skip
        return out

    def _candidates(
        self, raw: dict[bytes, bytes], v: np.ndarray, text: str | None, thr: float,
        now: float, pk: str,
    ) -> list[_Remote]:  # fmt: skip
        recs: list[_Remote] = []
        expired: list[tuple[str, bytes]] = []
        with self._lock:
            tomb = self._tomb
            for g, rec in raw.items():
                try:
                    r = _Remote(g.decode(), rec, self._dim)
                except (ValueError, struct.error, UnicodeDecodeError):
                    continue  # another dim or a foreign record: never a hit
                if r.deadline <= now:
                    expired.append((r.gid, r.nonce))
                elif (r.gid, r.nonce) not in tomb:
                    recs.append(r)
            for gid, nonce in expired:  # lazily reap records Redis 7.0 cannot expire per field
                self._queue.append(("reap", gid, nonce, pk))
        if not recs:
            return []
        codes = np.stack([r.codes for r in recs]).astype(np.float32)
        norms = np.linalg.norm(codes, axis=1)
        qn = float(np.linalg.norm(v))
        scores = codes @ v / np.maximum(norms * qn, 1e-30)
        order = np.argsort(-scores)[:_CANDIDATES]
        out = [recs[i] for i in order if scores[i] >= thr - _QUANT_SLACK]
        if text is not None:
            nt = _norm(text)
            out += [r for r in recs if r.text is not None and _norm(r.text) == nt and r not in out]
        return out

    def _fill_and_lookup(
        self, cache: SemanticCache, got: list[tuple[_Remote, bytes]], v: np.ndarray,
        part: str, scope: str, category: str, text: str | None, thr: float,
    ) -> Hit | None:  # fmt: skip
        with cache._lock:
            if cache._closed:
                return None
            now = cache._clock()
            # Not: a removed version (a delete seen here or through the stream), an
            # expired one, or a gid this replica holds already (a second local copy
            # would not be linked to Redis, so a delete elsewhere could not reach it).
            with self._lock:
                got = [(r, p) for r, p in got if (r.gid, r.nonce) not in self._tomb
                       and r.deadline > now and not self._holds(cache, r.gid, now)]  # fmt: skip
            if not got:
                return None
            m = np.stack([r.codes.astype(np.float32) * np.float32(r.scale) for r, _ in got])
            ttls = [r.deadline - now if math.isfinite(r.deadline) else math.inf for r, _ in got]
            self._tls.filling = True
            try:
                keys = []
                for j, (r, p) in enumerate(got):  # one TTL each: _insert_batch takes a list
                    self._tls.fill_link = (r.gid, r.nonce)
                    keys += cache._insert_batch(m[j : j + 1], [p], [scope], [category], [r.text],
                                                [ttls[j]], [r.cost])  # fmt: skip
            finally:
                self._tls.filling = False
                self._tls.fill_link = None
            filled = set()
            with self._lock:
                for (r, _), k in zip(got, keys, strict=True):
                    if k is not None:
                        self._remember(k, r.gid, r.nonce, self._part_key(part))
                        filled.add(k)
            self.counters["fills"] += len(filled)
            pol = cache.policy(category)
            st = cache._cat_stats(category)
            hit = cache._lookup_one(v, part, category, text, thr, pol, now, st, None, None)
            if hit is not None and hit.key in filled:
                self.counters["remote_hits"] += 1
            return hit

    # -- bookkeeping -------------------------------------------------------------

    def _remember(self, key: int, gid: str, nonce: bytes, pk: str) -> None:
        # Called under the cache's lock and ours. One local copy per gid, always linked:
        # an older copy (same text, replaced) is gone locally; bury its version and
        # evict it if something left it behind.
        old = self._by_gid.get(gid)
        if old is not None and old != key:
            ref = self._by_key.pop(old, None)
            if ref is not None and ref[1] != nonce:
                self._bury(gid, ref[1])
            cache = self._cache
            e = cache._entries.get(old) if cache is not None else None
            if e is not None and cache is not None:
                cache._evict(e, expired=False, counted=False)
        self._by_key[key] = (gid, nonce, pk)
        self._by_gid[gid] = key

    def _bury(self, gid: str, nonce: bytes) -> None:
        self._tomb[(gid, nonce)] = None
        while len(self._tomb) > _TOMBSTONES:
            self._tomb.popitem(last=False)

    def _holds(self, cache: SemanticCache, gid: str, now: float) -> bool:
        key = self._by_gid.get(gid)
        e = cache._entries.get(key) if key is not None else None
        return e is not None and cache._alive(e, now)

    def _prune(self) -> None:
        # Local evictions (quota, TTL) do not call us: drop their refs in amortised O(1).
        cache = self._cache
        if cache is None or len(self._by_key) < 2 * len(cache._entries) + 1024:
            return
        live = cache._entries
        for k in [k for k in self._by_key if k not in live]:
            gid = self._by_key.pop(k)[0]
            if self._by_gid.get(gid) == k:
                del self._by_gid[gid]

    def _apply(self, fields: dict[bytes, bytes]) -> None:
        cache = self._cache
        if cache is None:
            return
        op = fields.get(b"op")
        while not cache._lock.acquire(timeout=0.05):  # close() holds it while joining us
            if self._stop.is_set():
                return
        try:
            self._apply_locked(cache, op, fields)
        finally:
            cache._lock.release()

    def _apply_locked(
        self, cache: SemanticCache, op: bytes | None, fields: dict[bytes, bytes]
    ) -> None:
        if cache._closed:
            return
        if op == b"d":
            gid, nonce = fields[b"g"].decode(), fields[b"n"]
            with self._lock:
                self._bury(gid, nonce)
                key = self._by_gid.get(gid)
                if key is None or self._by_key.get(key, ("", b""))[1] != nonce:
                    return
                del self._by_gid[gid]
                del self._by_key[key]
            e = cache._entries.get(key)
            if e is not None:
                cache._evict(e, expired=False, counted=False)
                self.counters["invalidations_applied"] += 1
        elif op == b"s":
            scope = fields[b"s"].decode()
            for e in [e for e in cache._entries.values() if e.scope == scope]:
                cache._evict(e, expired=False, counted=False)
                self.counters["invalidations_applied"] += 1

    # -- background threads ------------------------------------------------------

    def _write_loop(self) -> None:
        backoff = 0.01
        while True:
            with self._lock:
                while not self._queue and not self._stop.is_set():
                    self._wake.wait(0.5)
                if not self._queue and self._stop.is_set():
                    return
                batch = [self._queue.popleft() for _ in range(min(256, len(self._queue)))]
                now = time.monotonic()
                keep = [op for op in batch if op[0] != "put" or op[-1][0] is None
                        or now - op[-1][0] <= _RETRY_LIMIT_S]  # fmt: skip
                if len(keep) < len(batch):  # Redis may have forgotten removed versions
                    self.counters["dropped_writes"] += len(batch) - len(keep)
                    batch = keep
                self._inflight = len(batch)
            try:
                pipe = self._writer.pipeline(transaction=False)
                for op in batch:
                    self._queue_op(pipe, op)
                pipe.execute()
                self.counters["writes"] += len(batch)
                self.breaker.success()
                backoff = 0.01
                with self._lock:
                    self._inflight = 0
                    self._wake.notify_all()
            except TRANSIENT as exc:
                self.counters["write_errors"] += 1
                self.breaker.failure()
                if isinstance(exc, REROUTED):
                    self._reroute()
                with self._lock:  # retry the batch first (every op is idempotent)
                    self._inflight = 0
                    t = time.monotonic()
                    for op in batch:  # a put remembers when it was first sent in vain
                        if op[0] == "put" and op[-1][0] is None:
                            op[-1][0] = t
                    self._queue.extendleft(reversed(batch))
                    while len(self._queue) > 4 * self.max_pending:
                        self._queue.pop()
                        self.counters["dropped_writes"] += 1
                    self._wake.notify_all()
                if self._stop.wait(backoff):
                    return
                backoff = min(1.0, backoff * 2)
            except Exception:  # a server-side script error: drop the batch, count it
                self.counters["write_errors"] += 1
                self.counters["dropped_writes"] += len(batch)
                with self._lock:
                    self._inflight = 0
                    self._wake.notify_all()

    def _queue_op(self, pipe: Any, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "put":
            _, _key, gid, nonce, pk, scope, deadline, created, cost, text, vec, payload, _ = op
            codes, scale = _quantise(vec)
            tb = b"" if text is None else text.encode()
            rec = (nonce + _HEAD.pack(deadline, created, cost, scale, self._dim,
                                      -1 if text is None else len(tb)) + codes + tb)  # fmt: skip
            cache = self._cache
            now = cache._clock() if cache is not None else time.time()
            ttl_ms = 0 if not math.isfinite(deadline) else max(1, int((deadline - now) * 1000))
            self._put_s(
                keys=[pk, self._payload_key(gid), self._scope_key(scope), self._stream],
                args=[
                    gid,
                    rec,
                    nonce + payload,
                    ttl_ms,
                    _STREAM_MAXLEN,
                    self._tomb_prefix,
                    _REDIS_TOMB_MS,
                ],  # fmt: skip
                client=pipe,
            )
        elif kind in ("del", "reap"):
            _, gid, nonce, pk = op
            self._del_s(
                keys=[pk, self._payload_key(gid), self._stream],
                args=[
                    gid,
                    nonce,
                    _STREAM_MAXLEN,
                    "1" if kind == "del" else "0",
                    self._tomb_prefix,
                    _REDIS_TOMB_MS,
                ],  # fmt: skip
                client=pipe,
            )
        elif kind == "drop":
            scope = op[1]
            self._drop_s(
                keys=[self._scope_key(scope), self._stream],
                args=[scope, self._pfx + "v:", _STREAM_MAXLEN, self._tomb_prefix, _REDIS_TOMB_MS],
                client=pipe,
            )

    def _listen_loop(self) -> None:
        healthy = True
        while not self._stop.is_set():
            try:
                if not healthy:
                    self._resync()
                    healthy = True
                res = self._listen_client.xread({self._stream: self._last_id}, count=512, block=200)
                for _stream, msgs in res or []:
                    for mid, fields in msgs:
                        self._apply(fields)
                        self._last_id = mid
            except TRANSIENT as exc:
                healthy = False
                if isinstance(exc, REROUTED):
                    self._reroute()
                if self._stop.wait(0.05):
                    return
            except Exception:
                healthy = False
                if self._stop.wait(0.2):
                    return

    def _resync(self) -> None:
        """After a lost connection: a restarted server (new run id) has a new stream, so
        read it from the start; a trimmed-away gap means messages were missed, so check
        every shared local entry against Redis."""
        info = self._listen_client.info("server")
        if self._rerouted:  # another node serves the slot now: its stream is ours, moved
            self._rerouted = False
            self._run_id = info.get("run_id")
            try:
                xi = self._listen_client.xinfo_stream(self._stream)
            except Exception:  # noqa: BLE001 - no stream there: nothing to continue from
                xi = {}
            newest = xi.get("last-generated-id")
            if newest is None or _id(newest) < _id(self._last_id):
                # The new primary lacks our tail (a failover lost it): check what we hold
                # against Redis first, and only then move our position (sync() trusts it).
                self._reconcile()
                self._last_id = newest if newest is not None else b"0-0"
                return
            first = xi.get("first-entry")
            if first is not None and _id(first[0]) > _id(self._last_id):
                self._reconcile()  # may have been trimmed past us: keep reading from our id
            return
        if info.get("run_id") != self._run_id:
            self._run_id = info.get("run_id")
            self._last_id = b"0-0"
            self.counters["resyncs"] += 1
            return
        try:
            xi = self._listen_client.xinfo_stream(self._stream)
        except Exception:
            return
        # Entries newer than ours exist, and the oldest one kept is newer too (or none is
        # kept): some may have been trimmed before we read them. Conservative: reconcile.
        newest, first = xi.get("last-generated-id"), xi.get("first-entry")
        last = _id(self._last_id)
        missed = (
            newest is not None and _id(newest) > last and (first is None or _id(first[0]) > last)
        )
        if missed:
            self._reconcile()

    def _reconcile(self) -> None:
        self.counters["resyncs"] += 1
        with self._lock:
            refs = list(self._by_key.items())
        pipe = self._listen_client.pipeline(transaction=False)
        for _k, (gid, _n, pk) in refs:
            pipe.hget(pk, gid)
        recs = pipe.execute()
        for (_k, (gid, nonce, _pk)), rec in zip(refs, recs, strict=True):
            if rec is None or rec[:_NONCE] != nonce:
                self._apply({b"op": b"d", b"g": gid.encode(), b"n": nonce})

    # -- public ------------------------------------------------------------------

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Waits until every queued write reached Redis; ``False`` on timeout."""
        end = time.monotonic() + timeout_s
        with self._lock:
            while self._queue or self._inflight:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._wake.notify_all()
                self._wake.wait(min(left, 0.05))
        return True

    def sync(self, timeout_s: float = 5.0) -> bool:
        """:meth:`flush`, then waits until this replica has applied every invalidation
        Redis holds now; ``False`` on timeout.

        A barrier across replicas is ``flush()`` on the one that wrote, *then* ``sync()``
        on the one that reads: after both return ``True`` the reader serves nothing the
        writer deleted or replaced before its flush. ``sync()`` does not reach into
        another process's write queue (see docs/shared_tier.md, "Consistency")."""
        end = time.monotonic() + timeout_s
        if not self.flush(timeout_s):
            return False
        try:  # the writer's connection: its timeout suits a wait, the lookups' does not
            tail = self._writer.xrevrange(self._stream, count=1)
        except TRANSIENT:
            return False
        if not tail:
            return True
        want = _id(tail[0][0])
        while _id(self._last_id) < want:
            if time.monotonic() >= end:
                return False
            time.sleep(0.0005)
        return True

    @property
    def pending(self) -> int:
        """Writes queued for Redis now."""
        with self._lock:
            return len(self._queue) + self._inflight

    def stats(self) -> dict[str, Any]:
        """Counters (writes, drops, remote lookups/hits/errors, fills, invalidations),
        the queue length, the breaker state and what the server supports."""
        out: dict[str, Any] = dict(self.counters)
        out.update(
            pending=self.pending,
            breaker_open=self.breaker.is_open,
            breaker_opened=self.breaker.opened,
            shared_entries=len(self._by_key),
            server_version=self.server_version,
            server_vector_search=self.server_vector_search,
            server_search_module=self.server_search_module,
            namespace=self.namespace,
        )
        return out

    def close(self, flush_timeout_s: float = 1.0) -> None:
        """Flushes queued writes (waiting at most ``flush_timeout_s``), stops the
        threads and closes the connections. Idempotent."""
        if self._stop.is_set():
            return
        self.flush(flush_timeout_s)
        self._stop.set()
        with self._lock:
            self._wake.notify_all()
        for t in self._threads:
            t.join(timeout=2.0)
        with self._lock:  # what Redis never got is lost with this process: count it
            self.counters["dropped_writes"] += len(self._queue)
            self._queue.clear()
        for c in (self._reader, self._writer, self._listen_client):
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass

    def __enter__(self) -> RedisSemanticTier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisSemanticTier(namespace={self.namespace!r}, server={self.server_version})"


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _id(x: bytes | str) -> tuple[int, int]:
    s = x.decode() if isinstance(x, bytes) else x
    a, _, b = s.partition("-")
    return int(a), int(b or 0)


def open_shared_tier(shared: Any, namespace: str | None, cache: SemanticCache) -> RedisSemanticTier:
    """The tier ``SemanticCache(shared=...)`` uses: ``shared`` is a URL, a
    ``redis.Redis`` or a :class:`RedisSemanticTier` (then ``namespace`` must be
    ``None`` or the tier's)."""
    if isinstance(shared, RedisSemanticTier):
        if namespace is not None and namespace != shared.namespace:
            raise InvalidArgumentError(
                f"namespace {namespace!r} differs from the tier's {shared.namespace!r}"
            )
        tier = shared
    else:
        tier = RedisSemanticTier(shared, namespace if namespace is not None else "default")
    if tier._stop.is_set():
        raise ClosedError("the shared tier is closed")
    tier.attach(cache)
    return tier
