"""A replica with a local arena is killed (SIGKILL), the others change the shared cache
while it is down, and it restarts from its arena: what it recovered is checked against
Redis before it serves anything (docs/shared_tier.md, "Restart")."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
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

CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from slabcache import SemanticCache
    url, path = sys.argv[1], sys.argv[2]
    vecs = np.random.default_rng(5).standard_normal((5, 16)).astype(np.float32)
    local = SemanticCache(path + "-local", dim=16)  # never shared
    local.insert(vecs[4], b"local only", scope="s", text="q4")
    local.close()
    c = SemanticCache(path, dim=16, shared=url, namespace="r")
    c.insert(vecs[0], b"deleted while down", scope="s", text="q0")
    c.insert(vecs[1], b"replaced while down", scope="s", text="q1")
    c.insert(vecs[2], b"kept, no text", scope="s")
    c.insert(vecs[3], b"kept", scope="s", text="q3")
    assert c.shared.flush(5.0)
    print("ready", flush=True)
    time.sleep(60)
    """
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    from test_shared_redis import RedisServer

    srv = RedisServer(tmp_path)
    yield srv
    srv.kill()


def _value(h: object) -> bytes | None:
    return None if h is None else bytes(h.value)  # type: ignore[attr-defined]


def test_a_restarted_replica_drops_what_changed_while_it_was_down_and_keeps_sharing(
    server: Any, tmp_path: Path
) -> None:
    vecs = np.random.default_rng(5).standard_normal((5, DIM)).astype(np.float32)
    path = str(tmp_path / "arena")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), server.url, path], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    finally:
        child.kill()  # SIGKILL: no close(), no flush
        child.wait()
    b = SemanticCache(None, dim=DIM, shared=RedisSemanticTier(server.url, "r", lookup_timeout_s=2))
    try:
        # while A is down: delete q0, replace q1 (both through B)
        h = b.lookup(vecs[0], scope="s", text="q0")
        assert _value(h) == b"deleted while down" and h is not None and b.delete(h.key)
        b.insert(vecs[1], b"new value", scope="s", text="q1")
        assert b.shared is not None and b.shared.flush(5.0)

        a = SemanticCache(path, dim=DIM, shared=RedisSemanticTier(server.url, "r",
                                                                  lookup_timeout_s=2))  # fmt: skip
        try:
            assert a.shared is not None
            st = a.shared.stats()
            assert st["relinked"] == 2 and st["unlinked_at_start"] == 2, st
            assert a.lookup(vecs[0], scope="s", text="q0") is None
            assert _value(a.lookup(vecs[1], scope="s", text="q1")) == b"new value"
            lookups = a.shared.stats()["remote_lookups"]
            assert _value(a.lookup(vecs[2], scope="s")) == b"kept, no text"
            assert _value(a.lookup(vecs[3], scope="s", text="q3")) == b"kept"
            assert a.shared.stats()["remote_lookups"] == lookups  # local hits from the arena
            # still shared: a delete in B reaches A's recovered copy ...
            hb = b.lookup(vecs[2], scope="s")
            assert _value(hb) == b"kept, no text" and hb is not None and b.delete(hb.key)
            assert b.shared.flush(5.0) and a.shared.sync(5.0)
            assert a.lookup(vecs[2], scope="s") is None
            # ... and a delete in A of a recovered entry reaches B
            ha = a.lookup(vecs[3], scope="s", text="q3")
            assert ha is not None and a.delete(ha.key)
            assert a.shared.flush(5.0) and b.shared.sync(5.0)
            assert b.lookup(vecs[3], scope="s", text="q3") is None
        finally:
            a.close()
        # an arena written without a shared tier stays local: its entries are served,
        # never published, and gaining shared= does not drop them
        c = SemanticCache(path + "-local", dim=DIM, shared=server.url, namespace="r")
        try:
            assert _value(c.lookup(vecs[4], scope="s", text="q4")) == b"local only"
            assert c.shared is not None and c.shared.stats()["relinked"] == 0
            assert b.lookup(vecs[4], scope="s", text="q4") is None
        finally:
            c.close()
    finally:
        b.close()
