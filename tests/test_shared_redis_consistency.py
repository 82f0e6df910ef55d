"""Deterministic regressions for the shared tier's consistency: each test pins one
interleaving of write-behind writes, the invalidation stream and fills from Redis
that once served (or could serve) an entry deleted elsewhere. See
docs/shared_tier.md, "Consistency"."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("redis", reason="redis-py is not installed (test extra)")

from slabcache import SemanticCache  # noqa: E402
from slabcache.shared import RedisSemanticTier  # noqa: E402

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not on PATH (Debian: apt-get install -y redis-server)",
)
DIM = 16


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    from test_shared_redis import RedisServer

    srv = RedisServer(tmp_path)
    yield srv
    srv.kill()


def _replica(server: Any, **kw: Any) -> SemanticCache:
    tier = RedisSemanticTier(server.url, "c", lookup_timeout_s=2.0, **kw)
    return SemanticCache(None, dim=DIM, shared=tier)


def _tier(c: SemanticCache) -> RedisSemanticTier:
    assert c.shared is not None
    return c.shared


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _at_cosine(x: np.ndarray, cos: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector whose cosine with unit ``x`` is ``cos``."""
    r = rng.standard_normal(DIM).astype(np.float32)
    r -= (r @ x) * x
    r /= np.linalg.norm(r)
    return (cos * x + np.sqrt(1 - cos * cos) * r).astype(np.float32)


def _slow_listener(c: SemanticCache, monkeypatch: pytest.MonkeyPatch, delay_s: float) -> None:
    tier = _tier(c)
    apply = tier._apply

    def slow(fields: dict[bytes, bytes]) -> None:
        time.sleep(delay_s)
        apply(fields)

    monkeypatch.setattr(tier, "_apply", slow)


def test_sync_covers_another_replicas_delete_only_after_that_replica_flushed(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The interleaving the two-replica model test found: B deletes an entry A holds;
    # A.sync() ran before B's write-behind queue reached Redis, so it had nothing to
    # wait for, and A (whose listener is slow here) still served the entry. sync()
    # covers what is in Redis when it starts; B.flush() is what puts B's delete there.
    rng = np.random.default_rng(1)
    a, b = _replica(server), _replica(server)
    try:
        v = _unit(rng)
        b.insert(v, b"v36", scope="s", text="q0")
        assert _tier(b).flush(5.0)
        h = a.lookup(v, scope="s", text="q0")
        assert h is not None and bytes(h.value) == b"v36"  # A filled it from Redis
        _slow_listener(a, monkeypatch, 0.3)
        hb = b.lookup(v, scope="s", text="q0")
        assert hb is not None and b.delete(hb.key)
        assert _tier(b).flush(5.0)
        assert _tier(a).sync(5.0)  # must wait for A's (slow) listener to apply it
        assert a.lookup(v, scope="s", text="q0") is None
        assert _tier(a).stats()["invalidations_applied"] == 1
    finally:
        a.close()
        b.close()


def test_a_refetched_candidate_already_held_is_not_filled_twice(server: Any) -> None:
    # A untexted entry filled once, then fetched again by a lookup that misses locally
    # but lands in the fetch slack below the threshold: a second local copy used to be
    # made and only it stayed linked to Redis, so a delete elsewhere evicted it and
    # left the first copy serving the deleted entry.
    rng = np.random.default_rng(2)
    a, b = _replica(server), _replica(server)
    try:
        x = _unit(rng)
        q = _at_cosine(x, 0.95, rng)
        b.insert(x, b"gone", scope="s")
        assert _tier(b).flush(5.0)
        h = a.lookup(q, scope="s", threshold=0.9)
        assert h is not None and bytes(h.value) == b"gone"
        assert a.lookup(q, scope="s", threshold=0.96) is None  # 0.95 < 0.96, in the slack
        assert len(a._entries) == 1, "the held candidate was filled a second time"
        hb = b.lookup(x, scope="s")
        assert hb is not None and b.delete(hb.key)
        assert _tier(b).flush(5.0)
        assert _tier(a).sync(5.0)
        assert a.lookup(q, scope="s", threshold=0.9) is None
        assert len(a._entries) == 0
    finally:
        a.close()
        b.close()


def test_a_fill_fetched_before_a_local_delete_does_not_bring_it_back(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Thread 1 fetched a candidate (HGETALL + MGET); thread 2 deletes that entry on the
    # same replica before thread 1 fills. The fill must not re-insert it (the delete's
    # invalidation has not come back through the stream yet: the listener is slow).
    rng = np.random.default_rng(3)
    a, b = _replica(server), _replica(server)
    try:
        x = _unit(rng)
        b.insert(x, b"gone", scope="s", text="q")
        assert _tier(b).flush(5.0)
        ta = _tier(a)
        h = a.lookup(x, scope="s", text="q")
        assert h is not None
        part = a._part("s", "default")
        raw = ta._reader.hgetall(ta._part_key(part))
        got = [(r, b"gone") for r in ta._candidates(raw, x, "q", 0.9, a._clock(), "")]
        assert len(got) == 1
        _slow_listener(a, monkeypatch, 1.0)
        assert a.delete(h.key)
        ta._fill_and_lookup(a, got, x, part, "s", "default", "q", 0.9)
        assert a.lookup(x, scope="s", text="q") is None
    finally:
        a.close()
        b.close()


def test_a_retried_put_cannot_resurrect_an_entry_deleted_meanwhile(server: Any) -> None:
    # The writer retries a whole batch after a timeout, although Redis may have run
    # it: a put re-run after another replica deleted (or replaced) that entry must
    # not bring it back in Redis.
    rng = np.random.default_rng(4)
    a, b = _replica(server), _replica(server)
    try:
        x = _unit(rng)
        ta = _tier(a)
        sent: list[tuple[Any, ...]] = []
        queue_op = ta._queue_op

        def spy(pipe: Any, op: tuple[Any, ...]) -> None:
            sent.append(op)
            queue_op(pipe, op)

        ta._queue_op = spy  # type: ignore[method-assign]
        a.insert(x, b"old", scope="s", text="q")
        assert ta.flush(5.0)
        (put,) = [op for op in sent if op[0] == "put"]
        hb = b.lookup(x, scope="s", text="q")
        assert hb is not None and b.delete(hb.key)
        assert _tier(b).flush(5.0)
        with ta._lock:  # what the writer does after a TRANSIENT error: send it again
            ta._queue.append(put)
            ta._wake.notify()
        assert ta.flush(5.0)
        c = _replica(server)
        try:
            assert c.lookup(x, scope="s", text="q") is None
        finally:
            c.close()
        assert server.client().hlen(ta._part_key(a._part("s", "default"))) == 0
    finally:
        a.close()
        b.close()


def test_a_retried_put_cannot_bring_back_an_entry_of_a_dropped_scope(server: Any) -> None:
    rng = np.random.default_rng(5)
    a, b = _replica(server), _replica(server)
    try:
        x = _unit(rng)
        ta = _tier(a)
        sent: list[tuple[Any, ...]] = []
        queue_op = ta._queue_op

        def spy(pipe: Any, op: tuple[Any, ...]) -> None:
            sent.append(op)
            queue_op(pipe, op)

        ta._queue_op = spy  # type: ignore[method-assign]
        a.insert(x, b"old", scope="s")
        assert ta.flush(5.0)
        (put,) = [op for op in sent if op[0] == "put"]
        assert b.drop_scope("s") == 0  # B holds none of it: the drop is Redis-wide anyway
        assert _tier(b).flush(5.0) and ta.sync(5.0)
        assert a.lookup(x, scope="s") is None
        with ta._lock:
            ta._queue.append(put)
            ta._wake.notify()
        assert ta.flush(5.0)
        assert b.lookup(x, scope="s") is None
        assert server.client().hlen(ta._part_key(a._part("s", "default"))) == 0
    finally:
        a.close()
        b.close()
