"""Shared tier (Redis) figures: remote-hit vs local-hit latency, replica throughput,
delete propagation delay, and whether the Redis-backed peers run on this server.

    python bench/shared_redis_bench.py                 # starts redis-server on 127.0.0.1
    python bench/shared_redis_bench.py --url redis://127.0.0.1:6379/0 --json out.json

Every replica is a SemanticCache(None, dim, shared=url) in its own process
(multiprocessing, spawn) except in the latency part, which runs one writer and
one reader cache in this process (the reader's remote path touches only Redis).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from typing import Any

import numpy as np

REDISEARCH = "/usr/lib/redis/modules/redisearch.so"  # Debian's redis-redisearch (1.2)


def start_server(*extra: str) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server is not on PATH (apt-get install -y redis-server) and no --url given")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            *extra,
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
    )
    for _ in range(250):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.02)
    return proc, f"redis://127.0.0.1:{port}/0"


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs), q)) if xs else float("nan")


def dataset(n: int, dim: int, scope_size: int, seed: int = 1) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    scopes = [f"model-a|tenant-{i // scope_size}" for i in range(n)]
    return vecs, scopes


def queries(vecs: np.ndarray, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = vecs + 0.05 * rng.standard_normal(vecs.shape).astype(np.float32)
    return q.astype(np.float32)


def populate(url: str, ns: str, vecs: np.ndarray, scopes: list[str], payload: int) -> None:
    from slabcache import SemanticCache

    w = SemanticCache(None, dim=vecs.shape[1], shared=url, namespace=ns)
    body = b"x" * payload
    for i in range(len(vecs)):
        w.insert(vecs[i], body, scope=scopes[i])
    assert w.shared is not None and w.shared.flush(60.0)
    w.close()


def latency(url: str, args: argparse.Namespace) -> dict[str, Any]:
    import redis

    from slabcache import SemanticCache

    vecs, scopes = dataset(args.entries, args.dim, args.scope_size)
    populate(url, "lat", vecs, scopes, args.payload)
    q = queries(vecs)
    r = SemanticCache(None, dim=args.dim, shared=url, namespace="lat")
    remote, local, miss, local_only_miss = [], [], [], []
    for i in range(len(q)):
        t = time.perf_counter()
        h = r.lookup(q[i], scope=scopes[i])
        remote.append(time.perf_counter() - t)
        assert h is not None, "a populated entry must hit remotely"
    for i in range(len(q)):
        t = time.perf_counter()
        h = r.lookup(q[i], scope=scopes[i])
        local.append(time.perf_counter() - t)
        assert h is not None
    rng = np.random.default_rng(3)
    for i in range(min(2000, len(q))):
        x = rng.standard_normal(args.dim).astype(np.float32)
        t = time.perf_counter()
        assert r.lookup(x, scope=scopes[i]) is None
        miss.append(time.perf_counter() - t)
    st = r.shared.stats()  # type: ignore[union-attr]
    r.close()
    lo = SemanticCache(None, dim=args.dim)
    for i in range(len(vecs)):
        lo.insert(vecs[i], b"x" * args.payload, scope=scopes[i])
    for i in range(min(2000, len(q))):
        x = rng.standard_normal(args.dim).astype(np.float32)
        t = time.perf_counter()
        lo.lookup(x, scope=scopes[i])
        local_only_miss.append(time.perf_counter() - t)
    lo.close()
    c = redis.Redis.from_url(url)
    c.set("bench:get", b"x" * args.payload)
    get = []
    for _ in range(2000):
        t = time.perf_counter()
        c.get("bench:get")
        get.append(time.perf_counter() - t)
    us = 1e6
    return {
        "remote_hit_us": {"p50": pct(remote, 50) * us, "p99": pct(remote, 99) * us},
        "local_hit_us": {"p50": pct(local, 50) * us, "p99": pct(local, 99) * us},
        "remote_miss_us": {"p50": pct(miss, 50) * us, "p99": pct(miss, 99) * us},
        "local_only_miss_us": {
            "p50": pct(local_only_miss, 50) * us,
            "p99": pct(local_only_miss, 99) * us,
        },
        "redis_get_us": {"p50": pct(get, 50) * us, "p99": pct(get, 99) * us},
        "remote_hits_counted": st["remote_hits"],
        "n": len(q),
    }


def _replica(url: str, args: dict[str, Any], rank: int, barrier: Any, out: Any) -> None:
    from slabcache import SemanticCache

    vecs, scopes = dataset(args["entries"], args["dim"], args["scope_size"])
    q = queries(vecs, seed=10 + rank)
    c = SemanticCache(None, dim=args["dim"], shared=url, namespace="tp")
    res = {}
    for phase in ("remote", "local"):  # first pass: every lookup fills from Redis
        barrier.wait()
        t = time.perf_counter()
        hits = sum(c.lookup(q[i], scope=scopes[i]) is not None for i in range(len(q)))
        res[phase] = (time.perf_counter() - t, len(q), hits)
    c.close()
    out.put((rank, res))


def throughput(url: str, args: argparse.Namespace, replicas: int) -> dict[str, Any]:
    vecs, scopes = dataset(args.entries, args.dim, args.scope_size)
    populate(url, "tp", vecs, scopes, args.payload)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(replicas)
    out = ctx.Queue()
    a = {"entries": args.entries, "dim": args.dim, "scope_size": args.scope_size}
    procs = [ctx.Process(target=_replica, args=(url, a, r, barrier, out)) for r in range(replicas)]
    for p in procs:
        p.start()
    rows = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    import redis

    redis.Redis.from_url(url).delete(*redis.Redis.from_url(url).keys("slabcache:{tp}:*"))
    res: dict[str, Any] = {"replicas": replicas}
    for phase in ("remote", "local"):
        wall = max(r[1][phase][0] for r in rows)
        n = sum(r[1][phase][1] for r in rows)
        hits = sum(r[1][phase][2] for r in rows)
        res[phase] = {"lookups_per_s": n / wall, "hit_rate": hits / n}
    return res


def _poller(url: str, dim: int, conn: Any) -> None:
    from slabcache import SemanticCache

    c = SemanticCache(None, dim=dim, shared=url, namespace="prop")
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            break
        vec = np.array(msg[0], dtype=np.float32)
        scope = msg[1]
        assert c.lookup(vec, scope=scope) is not None  # filled from Redis, now local
        conn.send("warm")
        while c.lookup(vec, scope=scope) is not None:
            time.sleep(0.0001)  # a serving loop, not a spin that starves the listener thread
        conn.send(time.perf_counter())  # CLOCK_MONOTONIC: comparable across processes
    c.close()


def propagation(url: str, args: argparse.Namespace) -> dict[str, Any]:
    from slabcache import SemanticCache

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_poller, args=(url, args.dim, child))
    p.start()
    assert parent.recv() == "ready"
    a = SemanticCache(None, dim=args.dim, shared=url, namespace="prop")
    rng = np.random.default_rng(5)
    delays = []
    for i in range(args.deletes):
        v = rng.standard_normal(args.dim).astype(np.float32)
        k = a.insert(v, b"y" * args.payload, scope=f"s{i}")
        assert a.shared is not None and a.shared.flush(10.0)
        parent.send((v.tolist(), f"s{i}"))
        assert parent.recv() == "warm"
        time.sleep(0.002)
        t0 = time.perf_counter()
        a.delete(k)  # type: ignore[arg-type]
        delays.append(parent.recv() - t0)
    parent.send(None)
    p.join()
    a.close()
    ms = 1e3
    return {
        "deletes": len(delays),
        "delay_ms": {
            "p50": pct(delays, 50) * ms,
            "p99": pct(delays, 99) * ms,
            "max": max(delays) * ms,
        },
    }


def peers(url: str, dim: int) -> dict[str, str]:
    import redis

    out = {}
    try:
        from redisvl.extensions.cache.llm import SemanticCache as RVLCache

        try:
            from redisvl.utils.vectorize import CustomVectorizer
        except ImportError:  # older redisvl
            from redisvl.utils.vectorize import CustomTextVectorizer as CustomVectorizer

        vz = CustomVectorizer(embed=lambda s: [0.1] * dim)  # no model download
        c = RVLCache(name="rvl", redis_url=url, distance_threshold=0.1, vectorizer=vz)
        c.store(prompt="hi", response="there", vector=[0.1] * dim)
        out["redisvl"] = "ran"
    except Exception as exc:  # noqa: BLE001 - the error is the figure
        out["redisvl"] = f"cannot run: {type(exc).__name__}: {str(exc)[:200]}"
    # GPTCache's Redis vector store imports redis.commands.search.indexDefinition (gone in
    # redis-py 6+) and creates an FT index: it needs RediSearch as well. Not imported here:
    # its import hook pip-installs redis-om on the fly.
    import importlib.util

    if importlib.util.find_spec("redis.commands.search.indexDefinition") is None:
        out["gptcache_redis"] = (
            "cannot run: its Redis vector store imports redis.commands.search.indexDefinition "
            "(absent from this redis-py) and needs FT.CREATE/FT.SEARCH (RediSearch)"
        )
    else:  # pragma: no cover - old redis-py: it still needs the search module
        out["gptcache_redis"] = "not run: needs FT.CREATE/FT.SEARCH (RediSearch)"
    # "redis,faiss" (Redis scalar store + a local faiss index per replica): the scalar
    # store is redis_om JsonModels (JSON.SET: the RedisJSON module, which Debian does not
    # package) with indexed fields (FT.CREATE ON JSON: RediSearch >= 2.2); and a local
    # faiss index would not hold the other replicas' vectors, so it would not share hits.
    r = redis.Redis.from_url(url)
    try:
        r.execute_command("JSON.SET", "slabcache-bench-probe", "$", "{}")
        out["gptcache_redis_scalar"] = "JSON.SET works: not tried (see the bench source)"
    except redis.ResponseError as exc:
        out["gptcache_redis_scalar"] = (
            "cannot run: its Redis scalar store (redis_om JsonModel) needs RedisJSON: "
            f"JSON.SET -> {exc}"
        )
    finally:
        r.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=None)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--entries", type=int, default=2000)
    ap.add_argument("--scope-size", type=int, default=10)
    ap.add_argument("--payload", type=int, default=1024)
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--deletes", type=int, default=200)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    proc = None
    url = args.url
    if url is None:
        proc, url = start_server()
    try:
        import redis

        info = redis.Redis.from_url(url).info("server")
        res: dict[str, Any] = {
            "machine": f"{platform.node()} {os.cpu_count()} cpus, {platform.processor()}",
            "redis": info["redis_version"],
            "args": vars(args),
        }
        res["latency"] = latency(url, args)
        print(json.dumps(res["latency"], indent=1), flush=True)
        res["throughput"] = [throughput(url, args, 1), throughput(url, args, args.replicas)]
        print(json.dumps(res["throughput"], indent=1), flush=True)
        res["propagation"] = propagation(url, args)
        print(json.dumps(res["propagation"], indent=1), flush=True)
        res["peers"] = peers(url, args.dim)
        print(json.dumps(res["peers"], indent=1), flush=True)
        if os.path.exists(REDISEARCH):  # the only search module a Debian server can load
            sp, surl = start_server("--loadmodule", REDISEARCH)
            try:
                res["peers_with_debian_redisearch"] = peers(surl, args.dim)
            finally:
                sp.kill()
            print(json.dumps(res["peers_with_debian_redisearch"], indent=1), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=1)
    finally:
        if proc is not None:
            proc.kill()


if __name__ == "__main__":
    main()
