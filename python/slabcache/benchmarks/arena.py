"""``slabcache bench arena``: the blob arena against LMDB, SQLite (WAL mode) and
RocksDB at equal durability, WAL overhead against a raw append, recovery time
and compaction.

Durability levels compared:

- ``none``: survives a process crash, not a power loss (ours ``sync="none"``,
  LMDB ``sync=False``, SQLite WAL ``synchronous=OFF``, RocksDB ``sync=False``);
- ``always``: fsync before each put returns (ours ``sync="always"``, LMDB
  ``sync=True``, SQLite WAL ``synchronous=FULL``, RocksDB ``sync=True``).

Each put is one call and one commit on every side; gets read back existing
keys (ours: zero-copy memoryview; LMDB: ``buffers=True`` inside one read
transaction, its fastest path). Peers that are not installed are reported
with ``peer=None``.

    >>> from slabcache.benchmarks import arena
    >>> callable(arena.run)
    True
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from typing import Any

from ..arena import BlobArena
from .report import BenchContext, Measurement

SUITE = "arena"


def _peer_lmdb(path: str, sync: bool, big: bool) -> Any | None:
    try:
        import lmdb
    except ImportError:
        return None
    env = lmdb.open(path, map_size=(8 << 30) if big else (2 << 30), sync=sync, metasync=sync)
    return env


def _peer_rocks(path: str, sync: bool) -> Any | None:
    try:
        from rocksdict import Options, Rdict, WriteOptions
    except ImportError:
        return None
    db = Rdict(path, Options(raw_mode=True))
    wo = WriteOptions()
    wo.sync = sync
    db.set_write_options(wo)
    return db


class _Sqlite:
    def __init__(self, path: str, sync: bool) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={'FULL' if sync else 'OFF'}")
        self.conn.execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB)")

    def put(self, k: bytes, v: bytes) -> None:
        self.conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (k, v))

    def get(self, k: bytes) -> Any:
        return self.conn.execute("SELECT v FROM kv WHERE k = ?", (k,)).fetchone()[0]

    def close(self) -> None:
        self.conn.close()


def _per_op(fn: Callable[[int], object], n: int, repeat: int = 3) -> float:
    """Best-of-``repeat`` microseconds per op of ``fn(i)`` for i in range(n)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def _label(size: int) -> str:
    return (
        f"{size // (1 << 20)} MiB"
        if size >= 1 << 20
        else f"{size // 1024} KiB"
        if size >= 1024
        else f"{size} B"
    )


def _one_size(root: str, level: str, size: int, n: int, out: list[Measurement]) -> None:
    sync = level == "always"
    value = os.urandom(size)
    keys = [f"key{i:08}".encode() for i in range(n)]
    case = f"put {_label(size)} sync={level}"
    results: dict[str, float] = {}
    d = tempfile.mkdtemp(dir=root)
    ar = BlobArena(os.path.join(d, "ours"), sync=level, auto_compact=False)  # type: ignore[arg-type]
    results["ours"] = _per_op(lambda i: ar.put(keys[i], value), n)
    get_us = _per_op(lambda i: ar.get(keys[i]), n) if not sync else None
    ar.close()
    gets: dict[str, float | None] = {"lmdb": None, "sqlite-wal": None, "rocksdb": None}
    env = _peer_lmdb(os.path.join(d, "lmdb"), sync, size >= 1 << 20)
    if env is not None:

        def lmdb_put(i: int) -> None:
            with env.begin(write=True) as txn:
                txn.put(keys[i], value)

        results["lmdb"] = _per_op(lmdb_put, n)
        if not sync:
            with env.begin(buffers=True) as txn:
                gets["lmdb"] = _per_op(lambda i: txn.get(keys[i]), n)
        env.close()
    sq = _Sqlite(os.path.join(d, "sqlite.db"), sync)
    results["sqlite-wal"] = _per_op(lambda i: sq.put(keys[i], value), n)
    if not sync:
        gets["sqlite-wal"] = _per_op(lambda i: sq.get(keys[i]), n)
    sq.close()
    db = _peer_rocks(os.path.join(d, "rocks"), sync)
    if db is not None:
        results["rocksdb"] = _per_op(lambda i: db.put(keys[i], value), n)
        if not sync:
            gets["rocksdb"] = _per_op(lambda i: db.get(keys[i]), n)
        db.close()
    shutil.rmtree(d, ignore_errors=True)
    for peer in ("lmdb", "sqlite-wal", "rocksdb"):
        out.append(
            Measurement(
                case,
                results["ours"],
                "us/op",
                peer,
                results.get(peer),
                note="" if peer in results else f"{peer} not installed",
                extra={"n": n},
            )
        )
    if get_us is not None:
        for peer, val in gets.items():
            out.append(
                Measurement(
                    f"get {_label(size)} (zero-copy)",
                    get_us,
                    "us/op",
                    peer,
                    val,
                    note="" if val is not None else f"{peer} not installed",
                    extra={"n": n},
                )
            )


def _put_get(ctx: BenchContext, root: str, out: list[Measurement]) -> None:
    sizes = [100, 4096, 1 << 20]
    if ctx.quick:
        counts = {
            "none": {100: 3000, 4096: 2000, 1 << 20: 40},
            "always": {100: 60, 4096: 60, 1 << 20: 10},
        }
    else:
        counts = {
            "none": {100: 50000, 4096: 20000, 1 << 20: 500},
            "always": {100: 500, 4096: 500, 1 << 20: 50},
        }
    with ctx.task("arena put/get vs peers", total=len(sizes) * 2) as step:
        for level in ("none", "always"):
            for size in sizes:
                _one_size(root, level, size, counts[level][size], out)
                step()


def _put_many(ctx: BenchContext, root: str, out: list[Measurement]) -> None:
    """Batched puts (one crossing, one fsync) vs LMDB with one txn per batch."""
    n, size = (2000, 4096) if ctx.quick else (20000, 4096)
    value = os.urandom(size)
    keys = [f"key{i:08}".encode() for i in range(n)]
    for level in ("none", "always"):
        d = tempfile.mkdtemp(dir=root)
        ar = BlobArena(os.path.join(d, "ours"), sync=level, auto_compact=False)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        for b in range(0, n, 100):
            ar.put_many(keys[b : b + 100], [value] * len(keys[b : b + 100]))
        ours = (time.perf_counter() - t0) / n * 1e6
        ar.close()
        env = _peer_lmdb(os.path.join(d, "lmdb"), level == "always", False)
        peer = None
        if env is not None:
            t0 = time.perf_counter()
            for b in range(0, n, 100):
                with env.begin(write=True) as txn:
                    for k in keys[b : b + 100]:
                        txn.put(k, value)
            peer = (time.perf_counter() - t0) / n * 1e6
            env.close()
        out.append(
            Measurement(
                f"put_many 100 x 4 KiB sync={level}",
                ours,
                "us/item",
                "lmdb (1 txn/batch)",
                peer,
                note="" if env is not None else "lmdb not installed",
            )
        )
        shutil.rmtree(d, ignore_errors=True)


def _wal_overhead(ctx: BenchContext, root: str, out: list[Measurement]) -> None:
    """Our put_many (blob + checksummed WAL record) vs os.writev of the same values."""
    for size, n in ((4096, 4096 if ctx.quick else 32768), (1 << 20, 32 if ctx.quick else 256)):
        value = os.urandom(size)
        keys = [f"key{i:08}".encode() for i in range(n)]
        batch = 64 if size < 1 << 20 else 4
        for level in ("none", "always"):
            best_ours = best_raw = float("inf")
            for _ in range(3):
                d = tempfile.mkdtemp(dir=root)
                ar = BlobArena(os.path.join(d, "ours"), sync=level, auto_compact=False)  # type: ignore[arg-type]
                t0 = time.perf_counter()
                for b in range(0, n, batch):
                    ar.put_many(keys[b : b + batch], [value] * batch)
                best_ours = min(best_ours, time.perf_counter() - t0)
                ar.close()
                fd = os.open(os.path.join(d, "raw"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
                t0 = time.perf_counter()
                for _b in range(0, n, batch):
                    os.writev(fd, [value] * batch)
                    if level == "always":
                        os.fdatasync(fd)
                best_raw = min(best_raw, time.perf_counter() - t0)
                os.close(fd)
                shutil.rmtree(d, ignore_errors=True)
            mb = n * size / 1e6
            out.append(
                Measurement(
                    f"append {_label(size)} x{batch}/batch sync={level}",
                    mb / best_ours,
                    "MB/s",
                    "raw os.writev" + (" + fdatasync" if level == "always" else ""),
                    mb / best_raw,
                    higher_is_better=True,
                    note=f"WAL overhead {100 * (best_ours / best_raw - 1):+.1f}%",
                )
            )


def _recovery(ctx: BenchContext, root: str, out: list[Measurement]) -> None:
    n, size = (100_000, 1024) if ctx.quick else (1_000_000, 1024)
    scale = (
        "quick: 100k records / 100 MiB (full run: 1M / 1 GiB)"
        if ctx.quick
        else "1M records / 1 GiB"
    )
    d = tempfile.mkdtemp(dir=root)
    path = os.path.join(d, "big")
    value = os.urandom(size)
    with ctx.task("arena recovery: building store", total=None):
        ar = BlobArena(path, sync="none", auto_compact=False, checkpoint_bytes=0)
        for b in range(0, n, 10_000):
            keys = [f"key{i:09}" for i in range(b, min(n, b + 10_000))]
            ar.put_many(keys, [value] * len(keys))
        ar.close()  # no checkpoint: the next open replays the whole WAL
    for label, kwargs in (
        ("full WAL replay, blob CRCs checked", {}),
        ("full WAL replay, no blob CRCs", {"verify_replay": False}),
    ):
        t0 = time.perf_counter()
        ar = BlobArena(path, **kwargs)  # type: ignore[arg-type]
        dt = time.perf_counter() - t0
        assert len(ar) == n
        ar.close()
        out.append(Measurement(f"recovery ({label})", dt, "s", note=scale, extra={"records": n}))
    ar = BlobArena(path)
    ar.checkpoint()
    ar.close()
    t0 = time.perf_counter()
    ar = BlobArena(path)
    dt = time.perf_counter() - t0
    ar.close()
    out.append(Measurement("recovery (from checkpoint)", dt, "s", note=scale, extra={"records": n}))
    shutil.rmtree(d, ignore_errors=True)


def _compaction(ctx: BenchContext, root: str, out: list[Measurement]) -> None:
    n, size = (20_000, 4096) if ctx.quick else (100_000, 4096)
    d = tempfile.mkdtemp(dir=root)
    ar = BlobArena(os.path.join(d, "c"), sync="none", auto_compact=False)
    value = os.urandom(size)
    keys = [f"key{i:08}" for i in range(n)]
    for b in range(0, n, 1000):
        ar.put_many(keys[b : b + 1000], [value] * 1000)
    for k in keys[::2]:
        ar.delete(k)
    before = ar.stats()
    t0 = time.perf_counter()
    rep = ar.compact()
    dt = time.perf_counter() - t0
    after = ar.stats()
    ar.close()
    shutil.rmtree(d, ignore_errors=True)
    dead = before["dead_bytes"]
    reclaimed = (rep["bytes_before"] - rep["bytes_after"]) / dead * 100 if dead else 0.0
    out.append(
        Measurement(
            "compaction throughput (live bytes copied)",
            after["live_bytes"] / dt / 1e6,
            "MB/s",
            higher_is_better=True,
            note=f"{n} x 4 KiB, half deleted",
        )
    )
    out.append(
        Measurement(
            "compaction: dead bytes reclaimed",
            reclaimed,
            "%",
            higher_is_better=True,
            note=f"{dead / 1e6:.1f} MB dead before, {after['dead_bytes']} B after",
        )
    )


def run(ctx: BenchContext) -> list[Measurement]:
    """All arena measurements (quick mode: small counts, recovery scaled to 100 MiB)."""
    out: list[Measurement] = []
    root = tempfile.mkdtemp(prefix="slabcache-bench-arena-")
    try:
        _put_get(ctx, root, out)
        _put_many(ctx, root, out)
        with ctx.task("arena WAL overhead", total=None):
            _wal_overhead(ctx, root, out)
        _recovery(ctx, root, out)
        with ctx.task("arena compaction", total=None):
            _compaction(ctx, root, out)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for m in out:
        m.suite = SUITE
    return out
