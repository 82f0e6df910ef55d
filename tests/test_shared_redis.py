"""The Redis shared tier against a real redis-server on 127.0.0.1 (started per test).

Two replicas are two processes: the test process and a child that runs the
worker script below and answers JSON commands on stdin/stdout.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

redis = pytest.importorskip("redis", reason="redis-py is not installed (test extra)")

from slabcache import SemanticCache  # noqa: E402
from slabcache.errors import SlabcacheError  # noqa: E402
from slabcache.shared import (  # noqa: E402
    NearFarKVTier,
    RedisKVTier,
    RedisSemanticTier,
    SharedAuthError,
)

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None,
    reason="redis-server is not on PATH (Debian: apt-get install -y redis-server)",
)
DIM = 16


class RedisServer:
    """A throwaway redis-server on a free loopback port, no persistence."""

    def __init__(self, tmp: Path, *extra: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.tmp = tmp
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
                *self.extra,
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        end = time.monotonic() + 5
        while time.monotonic() < end:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def client(self, **kw: object) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, **kw)  # type: ignore[arg-type]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path)
    yield srv
    srv.kill()


WORKER = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from slabcache import SemanticCache
    url, ns, dim = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cache = SemanticCache(None, dim=dim, shared=url, namespace=ns)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        v = np.array(cmd.get("vec", [0.0] * dim), dtype=np.float32)
        out = {}
        if op == "insert":
            out["key"] = cache.insert(v, cmd["value"].encode(), scope=cmd["scope"],
                                      text=cmd.get("text"), ttl_s=cmd.get("ttl"))
            out["flushed"] = cache.shared.flush(5.0)
        elif op == "lookup":
            h = cache.lookup(v, scope=cmd["scope"], text=cmd.get("text"))
            out["hit"] = None if h is None else bytes(h.value).decode()
            out["key"] = None if h is None else h.key
        elif op == "wait_miss":
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < cmd["timeout"]:
                if cache.lookup(v, scope=cmd["scope"]) is None:
                    break
                time.sleep(0.0002)
            out["miss"] = cache.lookup(v, scope=cmd["scope"]) is None
            out["waited_s"] = time.perf_counter() - t0
        elif op == "delete":
            out["deleted"] = cache.delete(cmd["key"])
            out["flushed"] = cache.shared.flush(5.0)
        elif op == "stats":
            out = {k: v for k, v in cache.shared.stats().items()}
        elif op == "quit":
            cache.close()
            print(json.dumps({"bye": True}), flush=True)
            break
        print(json.dumps(out), flush=True)
    """
)


class Replica:
    """A SemanticCache in a child process."""

    def __init__(self, tmp: Path, url: str, ns: str = "t") -> None:
        script = tmp / "replica.py"
        script.write_text(WORKER)
        self.proc = subprocess.Popen(
            [sys.executable, str(script), url, ns, str(DIM)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._read()["ready"]

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "replica process died"
        return json.loads(line)

    def __call__(self, op: str, **kw: object) -> dict:
        assert self.proc.stdin is not None
        kw["op"] = op
        if isinstance(kw.get("vec"), np.ndarray):
            kw["vec"] = kw["vec"].tolist()  # type: ignore[union-attr]
        self.proc.stdin.write(json.dumps(kw) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self("quit")
            self.proc.wait(timeout=10)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def _vec(rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(DIM).astype(np.float32)


def test_two_processes_share_insert_hit_and_delete_propagates(
    server: RedisServer, tmp_path: Path, rng: np.random.Generator
) -> None:
    a = Replica(tmp_path, server.url)
    b = SemanticCache(None, dim=DIM, shared=server.url, namespace="t")
    try:
        v = _vec(rng)
        r = a("insert", vec=v, value="forty-two", scope="gpt|t=0", text="what is 6 x 7")
        assert r["flushed"]
        # B has never seen it: a local miss consults Redis and fills the local tiers
        near = v + 0.01 * _vec(rng)
        hit = b.lookup(near, scope="gpt|t=0")
        assert hit is not None and bytes(hit.value) == b"forty-two"
        assert b.shared is not None and b.shared.stats()["remote_hits"] == 1
        # now a local hit in B (no Redis round trip)
        lookups = b.shared.stats()["remote_lookups"]
        assert bytes(b.lookup(near, scope="gpt|t=0").value) == b"forty-two"  # type: ignore[union-attr]
        assert b.shared.stats()["remote_lookups"] == lookups
        # another scope never sees it
        assert b.lookup(v, scope="claude|t=0") is None
        # delete in B: A's local copy stops hitting after propagation
        assert a("lookup", vec=v, scope="gpt|t=0")["hit"] == "forty-two"
        assert b.delete(hit.key)
        assert b.shared.flush(5.0)
        r = a("wait_miss", vec=v, scope="gpt|t=0", timeout=2.0)
        assert r["miss"], "the delete did not reach replica A"
        assert r["waited_s"] < 2.0
        assert a("stats")["invalidations_applied"] == 1
        # and Redis no longer holds it: a third replica misses too
        c = SemanticCache(None, dim=DIM, shared=server.url, namespace="t")
        assert c.lookup(v, scope="gpt|t=0") is None
        c.close()
    finally:
        a.close()
        b.close()


def test_insert_replacing_same_text_invalidates_old_copies(
    server: RedisServer, rng: np.random.Generator
) -> None:
    a = SemanticCache(None, dim=DIM, shared=server.url, namespace="t")
    b = SemanticCache(None, dim=DIM, shared=server.url, namespace="t")
    try:
        v = _vec(rng)
        a.insert(v, b"old", scope="s", text="the question")
        assert a.shared.flush()  # type: ignore[union-attr]
        assert bytes(b.lookup(v, scope="s").value) == b"old"  # type: ignore[union-attr]
        a.insert(v, b"new", scope="s", text="the question")
        assert a.shared.flush()  # type: ignore[union-attr]
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            h = b.lookup(v, scope="s")
            if h is not None and bytes(h.value) == b"new":
                break
            time.sleep(0.001)
        assert h is not None and bytes(h.value) == b"new"
    finally:
        a.close()
        b.close()


def test_ttl_expires_on_every_replica_and_in_redis(
    server: RedisServer, rng: np.random.Generator
) -> None:
    a = SemanticCache(None, dim=DIM, shared=server.url, namespace="t")
    b = SemanticCache(None, dim=DIM, shared=server.url, namespace="t")
    try:
        v, w = _vec(rng), _vec(rng)
        a.insert(v, b"short", scope="s", ttl_s=0.4)
        a.insert(w, b"long", scope="s")
        assert a.shared.flush()  # type: ignore[union-attr]
        assert bytes(b.lookup(v, scope="s").value) == b"short"  # type: ignore[union-attr]
        r = server.client()
        keys = [k for k in r.keys("slabcache:{t}:sem:v:*")]
        ttls = sorted(r.pttl(k) for k in keys)
        assert ttls[0] == -1 and 0 < ttls[1] <= 400  # the entry's TTL is the Redis TTL
        time.sleep(0.5)
        assert a.lookup(v, scope="s") is None
        assert b.lookup(v, scope="s") is None
        c = SemanticCache(None, dim=DIM, shared=server.url, namespace="t")
        assert c.lookup(v, scope="s") is None
        assert bytes(c.lookup(w, scope="s").value) == b"long"  # type: ignore[union-attr]
        c.close()
        assert len(r.keys("slabcache:{t}:sem:v:*")) == 1  # Redis expired the payload
    finally:
        a.close()
        b.close()


def test_redis_killed_and_restarted_degrades_then_resumes(
    server: RedisServer, tmp_path: Path, rng: np.random.Generator
) -> None:
    a = Replica(tmp_path, server.url)
    tier = RedisSemanticTier(server.url, "t", lookup_timeout_s=0.05, breaker_cooldown_s=0.2)
    b = SemanticCache(None, dim=DIM, shared=tier)
    try:
        v1, v2, v3, v4 = (_vec(rng) for _ in range(4))
        assert a("insert", vec=v1, value="one", scope="s")["flushed"]
        assert bytes(b.lookup(v1, scope="s").value) == b"one"  # type: ignore[union-attr]
        server.kill()
        # local hits continue, inserts and misses work, nothing raises, nothing blocks long
        t0 = time.perf_counter()
        for _ in range(50):
            assert bytes(b.lookup(v1, scope="s").value) == b"one"  # type: ignore[union-attr]
        slowest = 0.0
        for _ in range(20):
            t = time.perf_counter()
            assert b.lookup(v3, scope="s") is None
            slowest = max(slowest, time.perf_counter() - t)
        assert slowest < 0.5, f"a lookup blocked {slowest:.3f}s with Redis down"
        k2 = b.insert(v2, b"two", scope="s")
        assert bytes(b.lookup(v2, scope="s").value) == b"two"  # type: ignore[union-attr]
        assert a("lookup", vec=v1, scope="s")["hit"] == "one"
        assert time.perf_counter() - t0 < 5
        st = tier.stats()
        assert st["remote_errors"] + st["remote_skipped"] >= 1
        assert st["pending"] >= 1  # the insert waits for Redis
        # Redis back (empty: no persistence); the queued write reaches it without a restart
        server.start()
        assert tier.flush(10.0), tier.stats()
        assert a("lookup", vec=v2, scope="s")["hit"] == "two"
        # new inserts flow again both ways, and so do deletes (the listener reconnected)
        assert a("insert", vec=v4, value="four", scope="s")["flushed"]
        h4 = b.lookup(v4, scope="s")
        assert h4 is not None and bytes(h4.value) == b"four"
        assert b.delete(k2)
        assert tier.flush(5.0)
        r = a("wait_miss", vec=v2, scope="s", timeout=3.0)
        assert r["miss"]
    finally:
        a.close()
        b.close()


def test_wrong_password_fails_at_construction(tmp_path: Path) -> None:
    srv = RedisServer(tmp_path, "--requirepass", "s3cret")
    try:
        base = f"redis://127.0.0.1:{srv.port}/0"
        with pytest.raises(SharedAuthError) as ei:
            SemanticCache(None, dim=DIM, shared=base)
        assert isinstance(ei.value, SlabcacheError) and isinstance(ei.value, PermissionError)
        with pytest.raises(SharedAuthError, match="credentials|refused"):
            SemanticCache(None, dim=DIM, shared=f"redis://:wrong@127.0.0.1:{srv.port}/0")
        # a failed construction leaves the cache's directory free to reopen
        with pytest.raises(SharedAuthError):
            SemanticCache(tmp_path / "c", dim=DIM, shared=base)
        SemanticCache(tmp_path / "c", dim=DIM).close()
        with SemanticCache(None, dim=DIM, shared=base.replace("//", "//:s3cret@")) as ok:
            assert ok.shared is not None and ok.shared.stats()["server_version"].startswith("7")
        # an ACL user confined to its tenant's keys cannot open another tenant's namespace
        admin = srv.client(password="s3cret")
        admin.execute_command(
            "ACL", "SETUSER", "tenant-a", "on", ">pw-a", "~slabcache:{a}:*", "&*", "+@all"
        )
        with RedisSemanticTier(base, "a", username="tenant-a", password="pw-a") as t:
            assert t.namespace == "a"
        with pytest.raises(SharedAuthError, match="ACL|may not"):
            RedisSemanticTier(base, "b", username="tenant-a", password="pw-a")
    finally:
        srv.kill()


def test_unreachable_redis_fails_at_construction_with_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens here
    with pytest.raises(SlabcacheError, match="cannot reach Redis"):
        SemanticCache(None, dim=DIM, shared=f"redis://127.0.0.1:{port}/0")
    with pytest.raises(ValueError, match="redis://"):
        SemanticCache(None, dim=DIM, shared="http://127.0.0.1:1/")
    with pytest.raises(ValueError, match="namespace"):
        SemanticCache(None, dim=DIM, shared=f"redis://127.0.0.1:{port}/0", namespace="a b")


def test_namespaces_are_isolated(server: RedisServer, rng: np.random.Generator) -> None:
    a = SemanticCache(None, dim=DIM, shared=server.url, namespace="tenant-1")
    b = SemanticCache(None, dim=DIM, shared=redis.Redis.from_url(server.url), namespace="tenant-2")
    a2 = SemanticCache(None, dim=DIM, shared=server.url, namespace="tenant-1")
    try:
        v = _vec(rng)
        ka = a.insert(v, b"for tenant 1", scope="s", text="q")
        b.insert(v, b"for tenant 2", scope="s", text="q")
        assert a.shared.flush() and b.shared.flush()  # type: ignore[union-attr]
        assert bytes(a2.lookup(v, scope="s").value) == b"for tenant 1"  # type: ignore[union-attr]
        c = SemanticCache(None, dim=DIM, shared=server.url, namespace="tenant-2")
        assert bytes(c.lookup(v, scope="s").value) == b"for tenant 2"  # type: ignore[union-attr]
        # a delete in tenant 1 leaves tenant 2 alone
        assert a.delete(ka)
        assert a.shared.flush()  # type: ignore[union-attr]
        time.sleep(0.05)
        assert bytes(c.lookup(v, scope="s").value) == b"for tenant 2"  # type: ignore[union-attr]
        keys = server.client().keys("*")
        assert keys and all(k.startswith((b"slabcache:{tenant-1}:", b"slabcache:{tenant-2}:"))
                            for k in keys)  # fmt: skip
        c.close()
    finally:
        a.close()
        b.close()
        a2.close()


def test_drop_scope_propagates(server: RedisServer, rng: np.random.Generator) -> None:
    a = SemanticCache(None, dim=DIM, shared=server.url, namespace="t")
    b = SemanticCache(None, dim=DIM, shared=server.url, namespace="t")
    try:
        vs = [_vec(rng) for _ in range(3)]
        for i, v in enumerate(vs):
            a.insert(v, b"x%d" % i, scope="conv-1")
        a.insert(vs[0], b"other", scope="conv-2")
        assert a.shared.flush()  # type: ignore[union-attr]
        assert all(b.lookup(v, scope="conv-1") is not None for v in vs)
        assert b.drop_scope("conv-1") == 3
        assert b.shared.flush()  # type: ignore[union-attr]
        end = time.monotonic() + 2
        while time.monotonic() < end and any(a.lookup(v, scope="conv-1") for v in vs):
            time.sleep(0.001)
        assert not any(a.lookup(v, scope="conv-1") for v in vs)
        assert bytes(a.lookup(vs[0], scope="conv-2").value) == b"other"  # type: ignore[union-attr]
    finally:
        a.close()
        b.close()


def test_redis_kv_tier_round_trip_behind_the_arena_tier(
    server: RedisServer, tmp_path: Path, rng: np.random.Generator
) -> None:
    from slabcache.kv import ArenaKVTier, KVLayout

    lay = KVLayout(2, 4, 2, 8, "float32")
    n = 5
    hashes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    rows = rng.integers(0, 256, (n, lay.block_bytes_all_layers), dtype=np.uint8)
    far1 = RedisKVTier(server.url, lay, model="m", namespace="t")
    r1 = NearFarKVTier(ArenaKVTier(tmp_path / "r1", lay, model="m"), far1)
    far2 = RedisKVTier(server.url, lay, model="m", namespace="t")
    r2 = NearFarKVTier(ArenaKVTier(tmp_path / "r2", lay, model="m"), far2)
    try:
        assert r1.put(hashes[:4], rows[:4]) == 4
        assert far2.match_prefix(hashes) == 4
        assert bytes(hashes[0]) in far2 and bytes(hashes[4]) not in far2
        assert np.array_equal(far2.get(hashes[:4]), rows[:4])
        # replica 2's arena is empty: the prefix comes from Redis into its arena
        assert len(r2) == 0
        assert r2.match_prefix(hashes) == 4
        assert len(r2) == 4 and r2.stats["far_blocks_filled"] == 4
        assert np.array_equal(r2.get(hashes[:4]), rows[:4])
        # another model (fingerprint) never sees these blocks
        other = RedisKVTier(server.url, lay, model="other", namespace="t")
        assert other.match_prefix(hashes) == 0
        other.close()
        # Redis down: local blocks still count and load, puts keep the local copy
        server.kill()
        assert r2.match_prefix(hashes) == 4
        assert r2.put(hashes[4:], rows[4:]) == 1
        assert far2.stats["dropped_writes"] >= 1
        assert np.array_equal(r2.get(hashes), rows)
    finally:
        r1.close()
        r2.close()


def test_lookup_many_consults_redis_on_local_misses(
    server: RedisServer, rng: np.random.Generator
) -> None:
    a = SemanticCache(None, dim=DIM, shared=server.url, namespace="t")
    b = SemanticCache(None, dim=DIM, shared=server.url, namespace="t")
    try:
        vs = np.stack([_vec(rng) for _ in range(4)])
        a.insert_many(vs[:3], [b"a", b"b", b"c"], scopes="s")
        assert a.shared.flush()  # type: ignore[union-attr]
        b.insert(vs[3], b"d", scope="s")
        admin = server.client()

        def calls(cmd: str) -> int:
            return int(admin.info("commandstats").get(f"cmdstat_{cmd}", {}).get("calls", 0))

        before = calls("hgetall"), calls("mget")
        hits = b.lookup_many(vs, scopes="s")
        # three misses in one scope: one HGETALL and one MGET for all of them
        assert (calls("hgetall"), calls("mget")) == (before[0] + 1, before[1] + 1)
        assert [bytes(h.value) if h else None for h in hits] == [b"a", b"b", b"c", b"d"]
        assert b.shared.stats()["remote_hits"] == 3  # type: ignore[union-attr]
        assert b.lookup_many(vs[:1], scopes="other") == [None]
    finally:
        a.close()
        b.close()


def test_slow_redis_never_blocks_a_lookup_past_the_timeout(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    srv = RedisServer(tmp_path, "--enable-debug-command", "local")
    tier = RedisSemanticTier(srv.url, "t", lookup_timeout_s=0.05, breaker_cooldown_s=5.0)
    b = SemanticCache(None, dim=DIM, shared=tier)
    try:
        v, w = _vec(rng), _vec(rng)
        b.insert(v, b"local", scope="s")
        assert tier.flush()
        stall = threading.Thread(target=lambda: srv.client().execute_command("DEBUG", "SLEEP", 1.5))
        stall.start()
        time.sleep(0.1)  # the server is now stuck for 1.5 s
        times = []
        for _ in range(10):
            t = time.perf_counter()
            assert b.lookup(w, scope="s") is None  # a miss: would consult Redis
            assert bytes(b.lookup(v, scope="s").value) == b"local"  # type: ignore[union-attr]
            times.append(time.perf_counter() - t)
        assert max(times) < 0.4, times  # one 50 ms socket timeout per attempt, then the breaker
        st = tier.stats()
        assert st["remote_errors"] >= 1 and st["breaker_opened"] == 1
        b.insert(w, b"queued", scope="s")  # an insert while Redis is stuck returns at once
        stall.join()
        assert tier.flush(5.0)
        c = SemanticCache(None, dim=DIM, shared=srv.url, namespace="t")
        assert bytes(c.lookup(w, scope="s").value) == b"queued"  # type: ignore[union-attr]
        c.close()
    finally:
        b.close()
        srv.kill()


def test_tiered_kv_cache_admits_a_prefix_another_replica_left_in_redis(
    server: RedisServer, tmp_path: Path, rng: np.random.Generator
) -> None:
    from slabcache import BlockManager
    from slabcache.blocks import block_hashes
    from slabcache.kv import ArenaKVTier, KVCachePool, KVLayout, TieredKVCache

    lay = KVLayout(2, 4, 2, 8, "float32")
    prompt = list(range(100, 118))  # 18 tokens: 4 full blocks, at most 17 tokens may hit
    hashes = block_hashes(prompt, 4)
    rows = rng.integers(0, 256, (4, lay.block_bytes_all_layers), dtype=np.uint8)
    with RedisKVTier(server.url, lay, model="m", namespace="t") as replica1:
        assert replica1.put(hashes, rows) == 4
    disk = NearFarKVTier(
        ArenaKVTier(tmp_path / "r2", lay, model="m"),
        RedisKVTier(server.url, lay, model="m", namespace="t"),
    )
    try:
        tiers = TieredKVCache(BlockManager(num_blocks=16, block_size=4), KVCachePool(lay, 16),
                              disk=disk)  # fmt: skip
        adm = tiers.admit(1, prompt)
        assert adm is not None and adm.num_disk_tokens == 16 and adm.num_device_tokens == 0
        assert np.array_equal(tiers.pool.read_blocks(adm.block_table[:4]), rows)
    finally:
        disk.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not on PATH")
def test_tls_options_pass_through(tmp_path: Path, rng: np.random.Generator) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],  # fmt: skip
        check=True,
        capture_output=True,
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        tls_port = s.getsockname()[1]
    # TLS on tls_port; the plain port stays for the fixture's readiness check only
    srv = RedisServer(tmp_path, "--tls-port", str(tls_port), "--tls-cert-file", str(cert),
                      "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                      "--tls-auth-clients", "no")  # fmt: skip
    url = f"rediss://127.0.0.1:{tls_port}/0"
    try:
        # the self-signed certificate is not trusted without the CA option: a clear error
        with pytest.raises(SlabcacheError, match="cannot reach Redis|certificate|SSL"):
            RedisSemanticTier(url, "t", connect_timeout_s=2.0)
        tls = {"ssl_ca_certs": str(cert)}
        a = SemanticCache(None, dim=DIM, shared=RedisSemanticTier(url, "t", ssl=tls))
        b = SemanticCache(None, dim=DIM, shared=RedisSemanticTier(url, "t", ssl=tls))
        try:
            v = _vec(rng)
            a.insert(v, b"over tls", scope="s")
            assert a.shared.flush()  # type: ignore[union-attr]
            assert bytes(b.lookup(v, scope="s").value) == b"over tls"  # type: ignore[union-attr]
        finally:
            a.close()
            b.close()
    finally:
        srv.kill()


def test_a_replica_that_missed_trimmed_invalidations_reconciles(
    server: RedisServer, rng: np.random.Generator
) -> None:
    a = SemanticCache(None, dim=DIM, shared=server.url, namespace="t")
    b = SemanticCache(None, dim=DIM, shared=server.url, namespace="t")
    try:
        v, w = _vec(rng), _vec(rng)
        b.insert(v, b"gone", scope="s")
        b.insert(w, b"kept", scope="s")
        assert b.shared.sync()  # type: ignore[union-attr]
        assert a.lookup(v, scope="s") is not None and a.lookup(w, scope="s") is not None
        tier = a.shared
        assert tier is not None and tier.sync()
        # an entry disappears from Redis and its message is trimmed away before A reads it
        # (as if A had been disconnected while the stream overflowed): one transaction, so
        # A's blocked XREAD wakes only after the trim
        admin = server.client()
        pk = next(k for k in admin.keys("slabcache:{t}:sem:p:*"))
        nonce = b.shared._by_key[0][1]  # type: ignore[union-attr]
        gid = next(g for g, r in admin.hgetall(pk).items() if r[:8] == nonce)
        tx = admin.pipeline(transaction=True)
        tx.hdel(pk, gid)
        tx.xadd("slabcache:{t}:sem:inval", {"op": "d", "g": gid, "n": nonce})
        tx.xtrim("slabcache:{t}:sem:inval", maxlen=0)
        tx.execute()
        time.sleep(0.3)
        assert a.lookup(v, scope="s") is not None  # A still serves it: the message is lost
        tier._resync()  # what the listener runs after a reconnect
        assert a.lookup(v, scope="s") is None
        assert bytes(a.lookup(w, scope="s").value) == b"kept"  # type: ignore[union-attr]
        assert tier.stats()["resyncs"] == 1
    finally:
        a.close()
        b.close()
