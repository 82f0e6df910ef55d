"""BlobArena: the Python API, errors, durability modes, zero-copy views, compaction."""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slabcache import BlobArena
from slabcache.errors import (
    ClosedError,
    CorruptionError,
    InvalidArgumentError,
    InvalidTypeError,
    LockedError,
    NotFoundError,
    StorageError,
)


def files(path: Path, pattern: str) -> list[Path]:
    return sorted(path.glob(pattern))


def test_put_get_delete_contains_len(tmp_path: Path) -> None:
    with BlobArena(tmp_path / "a") as ar:
        ar.put(b"key", b"value")
        mv = ar.get(b"key")
        assert isinstance(mv, memoryview) and mv.readonly and bytes(mv) == b"value"
        assert b"key" in ar and b"nope" not in ar and len(ar) == 1
        assert ar.get(b"nope") is None
        assert ar.delete(b"key") is True and ar.delete(b"key") is False
        assert len(ar) == 0 and ar.get(b"key") is None


def test_str_keys_are_utf8_and_wrong_key_types_raise(tmp_path: Path) -> None:
    with BlobArena(tmp_path / "a") as ar:
        ar.put("héllo", b"1")
        assert bytes(ar.get("héllo".encode())) == b"1"
        assert ar.keys() == ["héllo".encode()]
        for bad in (1, 1.5, None, ["k"], bytearray(b"k")):
            with pytest.raises(InvalidTypeError):
                ar.put(bad, b"v")  # type: ignore[arg-type]
            with pytest.raises(TypeError):  # InvalidTypeError is a TypeError
                ar.get(bad)  # type: ignore[arg-type]
        assert len(ar) == 1  # failed calls changed nothing


def test_values_any_bytes_like_and_bad_values(tmp_path: Path) -> None:
    with BlobArena(tmp_path / "a") as ar:
        arr = np.arange(1000, dtype=np.float32)
        ar.put(b"np", arr)
        ar.put(b"ba", bytearray(b"xyz"))
        ar.put(b"mv", memoryview(b"abcdef")[1:4])
        ar.put(b"empty", b"")
        np.testing.assert_array_equal(np.frombuffer(ar.get(b"np"), dtype=np.float32), arr)
        assert bytes(ar.get(b"ba")) == b"xyz" and bytes(ar.get(b"mv")) == b"bcd"
        assert bytes(ar.get(b"empty")) == b""
        with pytest.raises(InvalidTypeError):
            ar.put(b"k", "a str is not bytes-like")
        with pytest.raises(InvalidTypeError):
            ar.put(b"k", np.arange(10)[::2])  # not contiguous
        with pytest.raises(InvalidTypeError):
            ar.put(b"k", 12)
        assert b"k" not in ar


def test_views_are_read_only_and_zero_copy(tmp_path: Path) -> None:
    with BlobArena(tmp_path / "a") as ar:
        ar.put(b"k", b"0123456789")
        mv = ar.get(b"k")
        with pytest.raises(TypeError):
            mv[0] = 1  # type: ignore[index]
        with pytest.raises(ValueError):
            np.frombuffer(mv, dtype=np.uint8).setflags(write=True)
        # Two gets of the same key share the same mapped address.
        a = np.frombuffer(ar.get(b"k"), dtype=np.uint8)
        b = np.frombuffer(ar.get(b"k"), dtype=np.uint8)
        assert a.__array_interface__["data"][0] == b.__array_interface__["data"][0]


def test_views_survive_overwrite_delete_compaction_and_close(tmp_path: Path) -> None:
    path = tmp_path / "a"
    ar = BlobArena(path, auto_compact=False)
    ar.put(b"k", b"old" * 1000)
    view = ar.get(b"k")
    old_gen = files(path, "gen-*.blob")
    ar.put(b"k", b"new")
    ar.delete(b"k")
    report = ar.compact()
    assert report["bytes_after"] == 0 and report["bytes_before"] == 3003
    # The retired generation stays on disk while the view maps it.
    assert all(p.exists() for p in old_gen)
    ar.close()
    assert bytes(view) == b"old" * 1000
    del view
    gc.collect()
    assert not any(p.exists() for p in old_gen)


def test_keys_range_and_limit(tmp_path: Path) -> None:
    with BlobArena(tmp_path / "a") as ar:
        for k in [b"b", b"a", b"c", b"ab", b"d"]:
            ar.put(k, k)
        assert ar.keys() == [b"a", b"ab", b"b", b"c", b"d"]
        assert ar.keys(start=b"a", end=b"b") == [b"a", b"ab"]
        assert ar.keys(start="b") == [b"b", b"c", b"d"]
        assert ar.keys(end=b"b", limit=1) == [b"a"]
        assert ar.keys(start=b"z") == [] and ar.keys(start=b"c", end=b"a") == []


def test_put_many_get_many(tmp_path: Path) -> None:
    with BlobArena(tmp_path / "a", sync="always") as ar:
        keys = [f"k{i:04}" for i in range(500)]
        vals = [os.urandom(i % 97) for i in range(500)]
        ar.put_many(keys, vals)
        assert ar.stats()["syncs"] <= 2  # one batch, one fsync round
        got = ar.get_many(keys + ["missing"])
        assert [bytes(g) for g in got[:-1]] == vals and got[-1] is None
        with pytest.raises(InvalidArgumentError):
            ar.put_many([b"a", b"b"], [b"1"])
        with pytest.raises(InvalidTypeError):
            ar.put_many([b"ok", 3], [b"1", b"2"])
        assert b"ok" not in ar  # a rejected batch writes nothing


def test_put_many_rows_of_a_numpy_array(tmp_path: Path) -> None:
    with BlobArena(tmp_path / "a") as ar:
        rows = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
        ar.put_many([f"row{i}" for i in range(64)], rows)  # each row: a contiguous view
        got = np.stack(
            [
                np.frombuffer(v, dtype=np.float32)
                for v in ar.get_many([f"row{i}" for i in range(64)])
            ]
        )
        np.testing.assert_array_equal(got, rows)


def test_mapping_protocol(tmp_path: Path) -> None:
    with BlobArena(tmp_path / "a") as ar:
        ar[b"x"] = b"1"
        assert bytes(ar[b"x"]) == b"1"
        del ar[b"x"]
        with pytest.raises(NotFoundError):
            ar[b"x"]
        with pytest.raises(KeyError):
            del ar[b"x"]
        assert "BlobArena(" in repr(ar)


def test_closed_arena_raises_closed_error(tmp_path: Path) -> None:
    ar = BlobArena(tmp_path / "a")
    ar.put(b"k", b"v")
    ar.close()
    ar.close()  # idempotent
    assert ar.closed
    for call in (
        lambda: ar.put(b"k", b"v"),
        lambda: ar.get(b"k"),
        lambda: ar.delete(b"k"),
        lambda: b"k" in ar,
        lambda: ar.keys(),
        lambda: ar.flush(),
        lambda: ar.compact(),
        lambda: ar.verify(),
    ):
        with pytest.raises(ClosedError):
            call()


def test_second_writer_gets_locked_error(tmp_path: Path) -> None:
    path = tmp_path / "a"
    ar = BlobArena(path)
    with pytest.raises(LockedError) as info:
        BlobArena(path)
    assert isinstance(info.value, OSError) and isinstance(info.value, StorageError)
    ar.close()
    BlobArena(path).close()  # the lock is released on close


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError):
        BlobArena(tmp_path / "a", sync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        BlobArena(tmp_path / "b", batch_interval_ms=0)
    with pytest.raises(InvalidArgumentError):
        BlobArena(tmp_path / "c", compact_dead_ratio=1.5)
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(InvalidArgumentError):
        BlobArena(tmp_path / "file")
    with pytest.raises(NotFoundError):
        BlobArena(tmp_path / "missing", create=False)
    with BlobArena(tmp_path / "d") as ar:
        with pytest.raises(InvalidArgumentError):
            ar.put(b"k" * (64 * 1024 + 1), b"v")


@pytest.mark.parametrize("sync", ["always", "batch", "none"])
def test_reopen_keeps_everything_in_each_mode(tmp_path: Path, sync: str) -> None:
    path = tmp_path / "a"
    with BlobArena(path, sync=sync) as ar:  # type: ignore[arg-type]
        for i in range(200):
            ar.put(f"k{i}", f"v{i}".encode() * (i + 1))
        for i in range(0, 200, 3):
            ar.delete(f"k{i}")
        ar.flush()
    with BlobArena(path) as ar:
        assert len(ar) == 200 - 67
        for i in range(200):
            got = ar.get(f"k{i}")
            assert (got is None) if i % 3 == 0 else bytes(got) == f"v{i}".encode() * (i + 1)
        ar.verify()


def test_checkpoint_bounds_replay(tmp_path: Path) -> None:
    path = tmp_path / "a"
    with BlobArena(path, checkpoint_bytes=4096) as ar:
        for i in range(500):
            ar.put(f"k{i}", b"x" * 10)
        assert ar.stats()["checkpoints"] > 0
    with BlobArena(path) as ar:
        rec = ar.stats()["recovery"]
        assert rec["checkpoint_entries"] > 0
        assert rec["replayed_records"] < 500 - rec["checkpoint_entries"] + 1
        assert len(ar) == 500
        assert len(files(path, "wal-*.log")) == 1


def test_auto_compaction_reclaims_dead_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a"
    with BlobArena(path, compact_min_dead_bytes=64 * 1024, compact_dead_ratio=0.5) as ar:
        for rnd in range(20):
            ar.put_many([f"k{i}" for i in range(16)], [bytes([rnd]) * 4096] * 16)
        st = ar.stats()
        assert st["compactions"] > 0
        assert st["data_bytes"] < 4 * st["live_bytes"]
        assert all(bytes(ar.get(f"k{i}")) == bytes([19]) * 4096 for i in range(16))
        ar.compact()
        st = ar.stats()
        assert st["dead_bytes"] == 0 and st["data_bytes"] == st["live_bytes"] == 16 * 4096
        assert len(files(path, "gen-*.blob")) == 1


@pytest.mark.parametrize("verify_reads", [True, False])
def test_flipped_blob_is_never_returned(tmp_path: Path, verify_reads: bool) -> None:
    path = tmp_path / "a"
    with BlobArena(path, sync="always") as ar:
        ar.put(b"k", b"A" * 100)
        ar.put(b"ok", b"B" * 100)
        ar.checkpoint()  # the record is now covered by the checkpoint, not replayed
    gen = files(path, "gen-*.blob")[0]
    data = bytearray(gen.read_bytes())
    data[32 + 50] ^= 0xFF  # inside k's value (after the 32-byte header)
    gen.write_bytes(bytes(data))
    # Default options too: the first read of a blob since open checks its CRC.
    with BlobArena(path, verify_reads=verify_reads) as ar:
        with pytest.raises(CorruptionError):
            ar.get(b"k")
        with pytest.raises(CorruptionError):
            ar.get(b"k")  # and again: a failed check is not remembered as verified
        assert bytes(ar.get(b"ok")) == b"B" * 100
        with pytest.raises(CorruptionError):
            ar.verify()
        # One bad blob never blocks compaction of the others: it is copied as
        # it is (still unreadable), the rest moves on.
        report = ar.compact()
        assert report["bad_blobs"] == 1
        assert bytes(ar.get(b"ok")) == b"B" * 100
        with pytest.raises(CorruptionError):
            ar.get(b"k")
        assert b"k" in ar
        ar.put(b"new", b"C" * 10)  # writes keep working


def test_concurrent_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    with BlobArena(tmp_path / "a", sync="always") as ar:
        n_threads, per = 8, 25

        def writer(t: int) -> None:
            for i in range(per):
                ar.put(f"t{t}-{i}", b"v" * 32)

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(ar) == n_threads * per
        # Every put was durable before it returned, yet fsync rounds were shared.
        assert ar.stats()["syncs"] <= n_threads * per


def test_readers_during_writes_and_compaction(tmp_path: Path) -> None:
    ar = BlobArena(tmp_path / "a", compact_min_dead_bytes=16 * 1024, compact_dead_ratio=0.3)
    n_keys = 64

    def value(k: int, v: int) -> bytes:
        return f"{k}:{v}:".encode() * (8 + (v % 50))

    ar.put_many([f"k{k}" for k in range(n_keys)], [value(k, 0) for k in range(n_keys)])
    stop = threading.Event()
    errors: list[str] = []
    reads = [0]

    def reader(seed: int) -> None:
        import random

        rng = random.Random(seed)
        while not stop.is_set():
            k = rng.randrange(n_keys)
            mv = ar.get(f"k{k}")
            if mv is None:
                errors.append(f"k{k} vanished")
                continue
            data = bytes(mv)
            head = data.split(b":")
            if int(head[0]) != k or data != value(k, int(head[1])):
                errors.append(f"k{k}: garbage {data[:30]!r}")
            reads[0] += 1

    readers = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    for t in readers:
        t.start()
    try:
        for v in range(1, 150):
            ar.put(f"k{v % n_keys}", value(v % n_keys, v))
            if v % 40 == 0:
                ar.compact()
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors, errors[:5]
    assert reads[0] > 0 and ar.stats()["compactions"] >= 3
    ar.verify()
    ar.close()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["put", "delete", "compact", "reopen", "checkpoint"]),
            st.integers(0, 15),
            st.binary(max_size=300),
        ),
        max_size=60,
    )
)
def test_matches_a_dict_model(tmp_path_factory: pytest.TempPathFactory, ops: list) -> None:
    path = tmp_path_factory.mktemp("model") / "a"
    model: dict[bytes, bytes] = {}
    ar = BlobArena(path, sync="none", compact_min_dead_bytes=512, compact_dead_ratio=0.5)
    try:
        for op, k, v in ops:
            key = f"k{k}".encode()
            if op == "put":
                ar.put(key, v)
                model[key] = v
            elif op == "delete":
                assert ar.delete(key) == (key in model)
                model.pop(key, None)
            elif op == "compact":
                ar.compact()
            elif op == "checkpoint":
                ar.checkpoint()
            else:
                ar.close()
                ar = BlobArena(path, sync="none")
            assert len(ar) == len(model)
        assert ar.keys() == sorted(model)
        assert {k: bytes(ar.get(k)) for k in model} == model
        ar.verify()
    finally:
        ar.close()
