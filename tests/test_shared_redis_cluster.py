"""The shared tiers on a real 3-node Redis Cluster (``redis+cluster://`` URLs): every key of
a namespace shares one hash tag, so the namespace's slot lives on one primary, which the
tier finds and talks to directly; a resharding that moves the slot is followed."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

redis = pytest.importorskip("redis", reason="redis-py is not installed (test extra)")

from slabcache import SemanticCache  # noqa: E402
from slabcache.shared import RedisSemanticTier  # noqa: E402

REDIS_SERVER, REDIS_CLI = shutil.which("redis-server"), shutil.which("redis-cli")
pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None or REDIS_CLI is None,
    reason="redis-server / redis-cli are not on PATH (Debian: apt-get install -y redis-server)",
)
DIM = 16


def _free_port() -> int:
    while True:  # the cluster bus listens on port + 10000
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 < 65536:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


class Cluster:
    def __init__(self, tmp: Path, n: int = 3) -> None:
        assert REDIS_SERVER is not None and REDIS_CLI is not None
        self.ports = [_free_port() for _ in range(n)]
        self.procs = []
        for p in self.ports:
            d = tmp / str(p)
            d.mkdir()
            self.procs.append(subprocess.Popen(
                [REDIS_SERVER, "--port", str(p), "--bind", "127.0.0.1", "--cluster-enabled",
                 "yes", "--cluster-config-file", "nodes.conf", "--save", "", "--appendonly",
                 "no", "--dir", str(d)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        for p in self.ports:
            self._wait_port(p)
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
             "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
        )  # fmt: skip
        end = time.monotonic() + 20
        while time.monotonic() < end:
            if all(b"cluster_state:ok" in self.node(p).execute_command("CLUSTER", "INFO")
                   for p in self.ports):  # fmt: skip
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the cluster did not become ready")

    @staticmethod
    def _wait_port(port: int) -> None:
        end = time.monotonic() + 5
        while time.monotonic() < end:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2]) + "/0"

    def node(self, port: int) -> Any:
        return redis.Redis(host="127.0.0.1", port=port)

    def owner(self, key: str) -> int:
        slot = int(self.node(self.ports[0]).execute_command("CLUSTER", "KEYSLOT", key))
        for start, end, primary, *_ in self.node(self.ports[0]).execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(primary[1])
        raise AssertionError("slot not served")

    def move_slot(self, key: str, dst: int) -> None:
        """Reshards ``key``'s slot (and every key in it) to the primary on port ``dst``."""
        src = self.owner(key)
        s, d = self.node(src), self.node(dst)
        slot = int(s.execute_command("CLUSTER", "KEYSLOT", key))
        sid, did = s.execute_command("CLUSTER", "MYID"), d.execute_command("CLUSTER", "MYID")
        d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", sid)
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", did)
        while keys := s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            s.execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys)
        for n in [d, s] + [self.node(p) for p in self.ports if p not in (src, dst)]:
            n.execute_command("CLUSTER", "SETSLOT", slot, "NODE", did)

    def kill(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.kill()


def _replica(url: str, ns: str) -> SemanticCache:
    return SemanticCache(None, dim=DIM, shared=RedisSemanticTier(url, ns, lookup_timeout_s=2))


def _ns_on(cluster: Cluster, port: int) -> str:
    for i in range(1000):
        ns = f"tenant{i}"
        if cluster.owner(f"{{{ns}}}") == port:
            return ns
    raise AssertionError("no namespace maps to that node")


def _value(h: object) -> bytes | None:
    return None if h is None else bytes(h.value)  # type: ignore[attr-defined]


def test_two_replicas_share_through_a_cluster_and_tenants_spread_over_nodes(
    cluster: Cluster,
) -> None:
    rng = np.random.default_rng(11)
    nss = [_ns_on(cluster, cluster.ports[0]), _ns_on(cluster, cluster.ports[2])]
    for ns in nss:
        a, b = _replica(cluster.url, ns), _replica(cluster.url, ns)
        try:
            v = rng.standard_normal(DIM).astype(np.float32)
            a.insert(v, ns.encode(), scope="s", text="q")
            assert a.shared is not None and a.shared.flush(5.0)
            h = b.lookup(v, scope="s", text="q")
            assert _value(h) == ns.encode() and h is not None
            assert b.delete(h.key)
            assert b.shared is not None and b.shared.flush(5.0) and a.shared.sync(5.0)
            assert a.lookup(v, scope="s", text="q") is None
        finally:
            a.close()
            b.close()
    # each tenant's keys are on the node that owns its hash tag, and only there
    for ns in nss:
        home = cluster.owner(f"{{{ns}}}")
        for p in cluster.ports:
            found = list(cluster.node(p).scan_iter(match=f"slabcache:{{{ns}}}:*"))
            assert bool(found) == (p == home), (ns, p, home)


def test_kv_tier_on_a_cluster(cluster: Cluster) -> None:
    from slabcache.kv import KVLayout
    from slabcache.shared import RedisKVTier

    lay = KVLayout(2, 4, 2, 8, "float32")
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 256, (3, 32), dtype=np.uint8)
    rows = rng.integers(0, 256, (3, lay.block_bytes_all_layers), dtype=np.uint8)
    t = RedisKVTier(cluster.url, lay, model="m", namespace="kvc")
    t2 = RedisKVTier(cluster.url, lay, model="m", namespace="kvc")
    try:
        assert t.put(hashes, rows) == 3
        assert t2.match_prefix(hashes) == 3
        assert np.array_equal(t2.get(hashes), rows)
    finally:
        t.close()
        t2.close()


def test_a_resharded_namespace_is_followed_to_its_new_node(cluster: Cluster) -> None:
    rng = np.random.default_rng(12)
    ns = _ns_on(cluster, cluster.ports[1])
    a, b = _replica(cluster.url, ns), _replica(cluster.url, ns)
    try:
        v1, v2 = (rng.standard_normal(DIM).astype(np.float32) for _ in range(2))
        a.insert(v1, b"before", scope="s", text="q1")
        assert a.shared is not None and b.shared is not None and a.shared.flush(5.0)
        assert _value(b.lookup(v1, scope="s", text="q1")) == b"before"
        cluster.move_slot(f"{{{ns}}}", cluster.ports[0])
        assert cluster.owner(f"{{{ns}}}") == cluster.ports[0]
        # writes after the move land on the new node, reads find them, deletes propagate
        a.insert(v2, b"after", scope="s", text="q2")
        end = time.monotonic() + 10
        while not (a.shared.flush(1.0) and a.shared.stats()["pending"] == 0):
            assert time.monotonic() < end
        while _value(h := b.lookup(v2, scope="s", text="q2")) != b"after":
            assert time.monotonic() < end, b.shared.stats()
            time.sleep(0.05)
        hb = b.lookup(v1, scope="s", text="q1")  # B's local copy from before the move
        assert hb is not None and b.delete(hb.key)
        while not (b.shared.flush(1.0) and a.shared.sync(1.0)):
            assert time.monotonic() < end
        assert a.lookup(v1, scope="s", text="q1") is None
        assert h is not None
        assert a.shared.stats()["reroutes"] >= 1
        home = cluster.node(cluster.ports[0])
        assert list(home.scan_iter(match=f"slabcache:{{{ns}}}:*"))
    finally:
        a.close()
        b.close()
