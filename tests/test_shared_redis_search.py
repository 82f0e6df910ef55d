"""Detection of Redis's own vector search. Only the fallback (the per-scope scan) runs
here: no server available to this project has vector fields (Debian's RediSearch 1.2
loads as module ``ft`` but cannot create a VECTOR field), so the tier must say so and
keep working; an FT.SEARCH path waits for a server that can test it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

redis = pytest.importorskip("redis", reason="redis-py is not installed (test extra)")

from slabcache import SemanticCache  # noqa: E402
from slabcache.shared import RedisSemanticTier  # noqa: E402

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not on PATH (Debian: apt-get install -y redis-server)",
)
REDISEARCH = "/usr/lib/redis/modules/redisearch.so"  # Debian's redis-redisearch


def test_a_plain_server_reports_no_vector_search(tmp_path: Path) -> None:
    from test_shared_redis import RedisServer

    srv = RedisServer(tmp_path)
    try:
        with RedisSemanticTier(srv.url, "d") as t:
            st = t.stats()
            assert st["server_vector_search"] is False
            assert st["server_search_module"] is None
    finally:
        srv.kill()


@pytest.mark.skipif(
    not os.path.exists(REDISEARCH),
    reason="Debian's RediSearch module is absent (apt-get install -y redis-redisearch)",
)
def test_a_search_module_without_vector_fields_is_not_taken_for_vector_search(
    tmp_path: Path,
) -> None:
    from test_shared_redis import RedisServer

    srv = RedisServer(tmp_path, "--loadmodule", REDISEARCH)
    try:
        r = srv.client()
        # the ground truth the detection must agree with: no VECTOR field type
        with pytest.raises(redis.ResponseError):
            r.execute_command(
                "FT.CREATE", "slabcache-probe", "SCHEMA", "v", "VECTOR", "FLAT", "6",
                "TYPE", "FLOAT32", "DIM", "2", "DISTANCE_METRIC", "COSINE",
            )  # fmt: skip
        a = SemanticCache(None, dim=8, shared=srv.url, namespace="d")
        b = SemanticCache(None, dim=8, shared=srv.url, namespace="d")
        try:
            assert a.shared is not None and b.shared is not None
            st = a.shared.stats()
            assert st["server_search_module"].startswith("ft 1.")
            assert st["server_vector_search"] is False
            v = np.arange(1, 9, dtype=np.float32)
            a.insert(v, b"x", scope="s")
            assert a.shared.flush(5.0)
            h = b.lookup(v, scope="s")  # the scan fallback serves it
            assert h is not None and bytes(h.value) == b"x"
        finally:
            a.close()
            b.close()
    finally:
        srv.kill()
