"""pytest-benchmark suites of the blob arena against LMDB, SQLite (WAL) and RocksDB.

    pytest bench/test_bench_arena.py --benchmark-group-by=group

Each benchmark times the real call (one put = one commit on every side) at the
same durability level: ``none`` (survives a process crash; ours
``sync="none"``, LMDB ``sync=False``, SQLite ``synchronous=OFF``, RocksDB
``sync=False``). Peers that are not installed are skipped.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
from pathlib import Path

import pytest

from slabcache import BlobArena

SIZES = [100, 4096, 1 << 20]


def _ids(size: int) -> str:
    return {100: "100B", 4096: "4KiB", 1 << 20: "1MiB"}[size]


@pytest.mark.parametrize("size", SIZES, ids=_ids)
def test_put_ours(benchmark, tmp_path: Path, size: int) -> None:
    benchmark.group = f"put {_ids(size)} sync=none"
    value = os.urandom(size)
    counter = itertools.count()
    with BlobArena(tmp_path / "a", sync="none", auto_compact=False) as ar:
        benchmark(lambda: ar.put(b"k%d" % (next(counter) % 1000), value))


@pytest.mark.parametrize("size", SIZES, ids=_ids)
def test_put_lmdb(benchmark, tmp_path: Path, size: int) -> None:
    lmdb = pytest.importorskip("lmdb")
    benchmark.group = f"put {_ids(size)} sync=none"
    value = os.urandom(size)
    counter = itertools.count()
    env = lmdb.open(str(tmp_path / "l"), map_size=4 << 30, sync=False, metasync=False)

    def put() -> None:
        with env.begin(write=True) as txn:
            txn.put(b"k%d" % (next(counter) % 1000), value)

    benchmark(put)
    env.close()


@pytest.mark.parametrize("size", SIZES, ids=_ids)
def test_put_sqlite_wal(benchmark, tmp_path: Path, size: int) -> None:
    benchmark.group = f"put {_ids(size)} sync=none"
    value = os.urandom(size)
    counter = itertools.count()
    conn = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB)")
    benchmark(
        lambda: conn.execute(
            "INSERT OR REPLACE INTO kv VALUES (?, ?)", (b"k%d" % (next(counter) % 1000), value)
        )
    )
    conn.close()


@pytest.mark.parametrize("size", SIZES, ids=_ids)
def test_put_rocksdb(benchmark, tmp_path: Path, size: int) -> None:
    rocksdict = pytest.importorskip("rocksdict")
    benchmark.group = f"put {_ids(size)} sync=none"
    value = os.urandom(size)
    counter = itertools.count()
    db = rocksdict.Rdict(str(tmp_path / "r"), rocksdict.Options(raw_mode=True))
    wo = rocksdict.WriteOptions()
    wo.sync = False
    db.set_write_options(wo)
    benchmark(lambda: db.put(b"k%d" % (next(counter) % 1000), value))
    db.close()


@pytest.mark.parametrize("size", SIZES, ids=_ids)
def test_get_ours_zero_copy(benchmark, tmp_path: Path, size: int) -> None:
    benchmark.group = f"get {_ids(size)}"
    with BlobArena(tmp_path / "a", sync="none") as ar:
        ar.put_many([b"k%d" % i for i in range(100)], [os.urandom(size)] * 100)
        counter = itertools.count()
        benchmark(lambda: ar.get(b"k%d" % (next(counter) % 100)))


@pytest.mark.parametrize("size", SIZES, ids=_ids)
def test_get_lmdb_buffers(benchmark, tmp_path: Path, size: int) -> None:
    lmdb = pytest.importorskip("lmdb")
    benchmark.group = f"get {_ids(size)}"
    env = lmdb.open(str(tmp_path / "l"), map_size=1 << 30, sync=False)
    with env.begin(write=True) as txn:
        for i in range(100):
            txn.put(b"k%d" % i, os.urandom(size))
    counter = itertools.count()
    with env.begin(buffers=True) as txn:
        benchmark(lambda: txn.get(b"k%d" % (next(counter) % 100)))
    env.close()


def test_put_many_ours(benchmark, tmp_path: Path) -> None:
    benchmark.group = "put_many 100 x 4KiB sync=none"
    value = os.urandom(4096)
    keys = [b"k%d" % i for i in range(100)]
    with BlobArena(tmp_path / "a", sync="none", auto_compact=False) as ar:
        benchmark(lambda: ar.put_many(keys, [value] * 100))


def test_put_many_lmdb(benchmark, tmp_path: Path) -> None:
    lmdb = pytest.importorskip("lmdb")
    benchmark.group = "put_many 100 x 4KiB sync=none"
    value = os.urandom(4096)
    keys = [b"k%d" % i for i in range(100)]
    env = lmdb.open(str(tmp_path / "l"), map_size=1 << 30, sync=False, metasync=False)

    def put_many() -> None:
        with env.begin(write=True) as txn:
            for k in keys:
                txn.put(k, value)

    benchmark(put_many)
    env.close()
