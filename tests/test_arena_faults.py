"""Fault injection against the blob arena (issue 9): failed fsyncs, renames
and writes (an LD_PRELOAD shim, tests/arena_fault_shim.c, compiled here with
cc), a full disk, damaged and swapped files, fork, and the small API edges.

Each case asserts the store's promise, never a weaker one: nothing
acknowledged is lost, a write that raised is not visible, a poisoned arena
refuses every write, damage is reported (``CorruptionError`` with the offset)
instead of being cut away silently, and ``repair`` salvages the rest.
"""

from __future__ import annotations

import errno
import gc
import os
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from slabcache import BlobArena
from slabcache.errors import (
    ClosedError,
    CorruptionError,
    InvalidArgumentError,
    SlabcacheError,
    StorageError,
)

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler for the fault shim")
    out = tmp_path_factory.mktemp("shim") / "arena_fault_shim.so"
    r = subprocess.run(
        [cc, "-shared", "-fPIC", "-O1", "-o", str(out), str(HERE / "arena_fault_shim.c"), "-ldl"],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot build the fault shim: {r.stderr[:500]}")
    return out


PRELUDE = """
import ctypes, errno, os, sys, time
from pathlib import Path
from slabcache import BlobArena
from slabcache.errors import StorageError, CorruptionError, ClosedError
shim = ctypes.CDLL(None)
shim.sc_fault_arm.argtypes = [ctypes.c_char_p, ctypes.c_long, ctypes.c_int, ctypes.c_int]
shim.sc_fault_calls.argtypes = [ctypes.c_char_p]
shim.sc_fault_calls.restype = ctypes.c_long
shim.sc_fault_fired.restype = ctypes.c_long
def arm(op, skip=0, err=errno.EIO, sticky=False):
    shim.sc_fault_arm(op.encode(), skip, err, int(sticky))
def disarm():
    shim.sc_fault_disarm()
def calls(op):
    return shim.sc_fault_calls(op.encode())
def raises(fn, exc=StorageError):
    try:
        fn()
    except exc as e:
        return e
    raise SystemExit(f"{fn} did not raise {exc.__name__}")
path = Path(sys.argv[1])
"""


def run_shimmed(shim: Path, tmp_path: Path, body: str) -> None:
    env = dict(os.environ, LD_PRELOAD=str(shim), PYTHONDONTWRITEBYTECODE="1")
    r = subprocess.run(
        [sys.executable, "-c", PRELUDE + body + "\nprint('SHIM-OK')\n", str(tmp_path / "a")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and "SHIM-OK" in r.stdout, r.stdout + r.stderr


# ---- 1. a failed checkpoint or compaction commit loses nothing -------------------------


@pytest.mark.parametrize("mode", ["always", "batch", "none"])
@pytest.mark.parametrize(
    ("step", "op", "skip"),
    [
        ("checkpoint", "fsync_dir", 0),  # the dir sync after renaming the checkpoint
        ("checkpoint", "rename", 0),
        ("checkpoint", "fdatasync", 0),
        ("compact", "rename", 0),  # gen-N.blob.tmp -> gen-N.blob
        ("compact", "rename", 1),  # the checkpoint naming the new generation
        ("compact", "fsync_dir", 1),  # the dir sync after that checkpoint
        ("compact", "fdatasync", 0),
    ],
)
def test_failed_commit_step_poisons_and_loses_nothing(
    shim: Path, tmp_path: Path, mode: str, step: str, op: str, skip: int
) -> None:
    run_shimmed(
        shim,
        tmp_path,
        f"""
ar = BlobArena(path, sync={mode!r}, auto_compact=False, checkpoint_bytes=0)
for i in range(5):
    ar.put(f"k{{i}}", b"v%d" % i * 50)
ar.put("k0", b"overwritten" * 20)  # something for compaction to drop
ar.flush()
arm({op!r}, {skip})
e = raises(lambda: ar.{step}())
assert e.errno == errno.EIO, e.errno
assert ar.poisoned
for i in range(5, 10):  # old code acknowledged these, then lost them on reopen
    raises(lambda: ar.put(f"k{{i}}", b"late"))
    assert ar.get(f"k{{i}}") is None
raises(lambda: ar.delete("k1"))
raises(lambda: ar.flush())
assert bytes(ar.get("k1")) == b"v1" * 50
ar.close()
disarm()
ar = BlobArena(path, sync={mode!r})
assert len(ar) == 5, len(ar)
assert bytes(ar.get("k0")) == b"overwritten" * 20
for i in range(1, 5):
    assert bytes(ar.get(f"k{{i}}")) == b"v%d" % i * 50
ar.verify()
assert not list(path.glob("*.tmp")), list(path.iterdir())
""",
    )


# ---- 2. fsyncgate: after a failed fsync nothing more is acknowledged ------------------


def test_fsync_failure_always_mode(shim: Path, tmp_path: Path) -> None:
    run_shimmed(
        shim,
        tmp_path,
        """
ar = BlobArena(path, sync="always")
ar.put("k0", b"durable")
arm("fdatasync")
e = raises(lambda: ar.put("k0", b"failed write"))
assert e.errno == errno.EIO
assert bytes(ar.get("k0")) == b"durable"   # the write that raised is not visible
raises(lambda: ar.put("k1", b"x"))
assert ar.get("k1") is None and ar.poisoned and ar.stats()["poisoned"]
ar.close()
ar = BlobArena(path)
assert bytes(ar.get("k0")) in (b"durable", b"failed write")  # outcome of the failed one unknown
assert ar.get("k1") is None
""",
    )


def test_flusher_failure_poisons_batch_mode(shim: Path, tmp_path: Path) -> None:
    run_shimmed(
        shim,
        tmp_path,
        """
ar = BlobArena(path, sync="batch", batch_interval_ms=2)
ar.put("k0", b"a")
ar.flush()
arm("fdatasync", sticky=True)
ar.put("k1", b"b")           # acknowledged before the flusher's sync fails
deadline = time.time() + 10
while not ar.poisoned and time.time() < deadline:
    time.sleep(0.01)
assert ar.poisoned, "the flusher's failed fdatasync did not poison the arena"
e = raises(lambda: ar.put("k2", b"c"))
assert "reopen" in str(e)
assert ar.get("k2") is None
raises(lambda: ar.flush())
raises(lambda: ar.checkpoint())
raises(lambda: ar.compact())
ar.close()
disarm()
ar = BlobArena(path)
assert bytes(ar.get("k0")) == b"a" and ar.get("k2") is None
""",
    )


def test_flush_failure_poisons_none_mode(shim: Path, tmp_path: Path) -> None:
    run_shimmed(
        shim,
        tmp_path,
        """
ar = BlobArena(path, sync="none")
ar.put("k0", b"a")
arm("fdatasync")
raises(lambda: ar.flush())
assert ar.poisoned
raises(lambda: ar.put("k1", b"b"))
assert ar.get("k1") is None
""",
    )


# ---- 7. errno, full disk, parent dir fsync, tmp cleanup -------------------------------


def test_enospc_is_testable_through_errno(shim: Path, tmp_path: Path) -> None:
    run_shimmed(
        shim,
        tmp_path,
        """
ar = BlobArena(path, sync="always", auto_compact=False)
ar.put("k0", b"a" * 100)
arm("pwritev", err=errno.ENOSPC)
e = raises(lambda: ar.put("k1", b"b" * 100))
assert e.errno == errno.ENOSPC, e.errno
assert isinstance(e, OSError)
assert ar.get("k1") is None
assert not ar.poisoned      # a failed write that was rolled back changed nothing
ar.put("k2", b"c" * 100)    # so the arena keeps working once space is back
arm("pwritev", err=errno.ENOSPC)
e = raises(lambda: ar.checkpoint())
assert e.errno == errno.ENOSPC
assert not (path / "checkpoint.tmp").exists()
ar.close()
disarm()
ar = BlobArena(path, sync="always", auto_compact=False)
assert bytes(ar.get("k0")) == b"a" * 100 and bytes(ar.get("k2")) == b"c" * 100
ar.put("k0", b"z" * 100)
arm("pwritev", skip=0, err=errno.ENOSPC)
raises(lambda: ar.compact())
gens = sorted(p.name for p in path.glob("gen-*"))
assert len(gens) == 1, gens      # no orphan or tmp generation left behind
""",
    )


def test_new_arena_fsyncs_its_parent_directories(shim: Path, tmp_path: Path) -> None:
    run_shimmed(
        shim,
        tmp_path,
        """
before = calls("fsync_dir")
nested = path / "x" / "y"
ar = BlobArena(nested, sync="always")
ar.close()
# the parents of y, x and a (3), then the arena directory itself (>= 1)
assert calls("fsync_dir") - before >= 4, calls("fsync_dir") - before
""",
    )


def test_disk_full_on_a_tiny_tmpfs(tmp_path: Path) -> None:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        acked: dict[str, bytes] = {}
        with BlobArena(mnt / "a", sync="always", auto_compact=False) as ar:
            with pytest.raises(StorageError) as info:
                for i in range(10_000):
                    v = bytes([i % 251]) * 20_000
                    ar.put(f"k{i}", v)
                    acked[f"k{i}"] = v
            assert info.value.errno == errno.ENOSPC
        with BlobArena(mnt / "a", auto_compact=False) as ar:
            for k, v in acked.items():
                assert bytes(ar.get(k)) == v
        del ar  # drop the mappings so the mount is not busy
        gc.collect()
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# ---- 3. recovery never destroys data -------------------------------------------------


def make(path: Path, n: int, **kw: object) -> dict[str, bytes]:
    vals = {f"k{i:03d}": (f"value-{i}-".encode() * 30) for i in range(n)}
    with BlobArena(path, sync="always", auto_compact=False, checkpoint_bytes=0, **kw) as ar:
        for k, v in vals.items():
            ar.put(k, v)
    return vals


def snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.iterdir() if p.is_file() and p.name != "LOCK"}


def test_missing_checkpoint_is_refused_not_reinitialised(tmp_path: Path) -> None:
    path = tmp_path / "a"
    vals = make(path, 60)
    (path / "checkpoint").unlink()
    before = snapshot(path)
    with pytest.raises(CorruptionError, match="no checkpoint"):
        BlobArena(path)
    assert snapshot(path) == before
    report = BlobArena.repair(path)
    assert report["kept_keys"] == 60
    with BlobArena(path) as ar:
        assert {k: bytes(ar.get(k)) for k in vals} == vals


def wal_offset_of(path: Path, needle: bytes) -> int:
    (wal,) = path.glob("wal-*.log")
    data = wal.read_bytes()
    at = data.find(needle)
    assert at > 0
    return at


def test_mid_wal_damage_is_reported_and_repaired(tmp_path: Path) -> None:
    path = tmp_path / "a"
    vals = make(path, 40, inline_max=0)
    at = wal_offset_of(path, b"k020")
    (wal,) = path.glob("wal-*.log")
    data = bytearray(wal.read_bytes())
    data[at + 1] ^= 0x40
    wal.write_bytes(bytes(data))
    before = snapshot(path)
    with pytest.raises(CorruptionError, match=r"damaged at byte \d+") as info:
        BlobArena(path)
    assert "repair" in str(info.value)
    assert snapshot(path) == before  # nothing truncated, nothing deleted
    # The CLI salvages both sides of the damage and lists what it dropped.
    r = subprocess.run(
        [sys.executable, "-m", "slabcache", "arena", "repair", str(path)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1, r.stdout + r.stderr  # something was dropped
    assert "dropped" in r.stdout
    with BlobArena(path) as ar:
        got = {k: bytes(v) for k in vals if (v := ar.get(k)) is not None}
        assert got == {k: v for k, v in vals.items() if k != "k020"}
        ar.verify()
    assert list(path.glob("salvaged-*/wal-*.log"))  # the damaged originals are kept


def test_damaged_replayed_blob_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "a"
    vals = make(path, 30, inline_max=0)
    (gen,) = path.glob("gen-*.blob")
    data = bytearray(gen.read_bytes())
    at = data.find(vals["k010"])
    data[at + 5] ^= 1
    gen.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="damaged at byte"):
        BlobArena(path)
    report = BlobArena.repair(path)
    assert any("k010" in d for d in report["dropped"])
    with BlobArena(path) as ar:
        assert ar.get("k010") is None
        assert all(bytes(ar.get(k)) == v for k, v in vals.items() if k != "k010")


# ---- 4. files are bound to their store ------------------------------------------------


@pytest.mark.parametrize("name", ["gen-0000000001.blob", "checkpoint", "wal-0000000001.log"])
def test_file_swapped_in_from_another_store_is_refused(tmp_path: Path, name: str) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    make(a, 5)
    make(b, 5)
    shutil.copy(b / name, a / name)
    with pytest.raises(CorruptionError, match="another store"):
        with BlobArena(a) as ar:
            ar.verify()


# ---- 5. values mutated while put runs without the GIL ---------------------------------


def test_bytearray_mutated_during_put_stores_consistent_bytes(tmp_path: Path) -> None:
    buf = bytearray(8 << 20)
    stop = threading.Event()

    def mutate() -> None:
        i = 0
        while not stop.is_set():
            buf[(i * 4099) % len(buf)] = i & 0xFF
            i += 1

    t = threading.Thread(target=mutate)
    t.start()
    try:
        with BlobArena(tmp_path / "a", sync="none", auto_compact=False) as ar:
            for i in range(12):
                ar.put(f"k{i}", buf)
            ar.put_many([f"m{i}" for i in range(3)], [buf, memoryview(buf), buf])
            stop.set()
            ar.verify()  # every stored CRC matches the stored bytes
            assert ar.compact()["bad_blobs"] == 0
    finally:
        stop.set()
        t.join()


def test_rotten_blob_never_blocks_auto_compaction(tmp_path: Path) -> None:
    path = tmp_path / "a"
    with BlobArena(path, sync="none", auto_compact=False) as ar:
        ar.put("rotten", b"R" * 1000)
        ar.put("good", b"G" * 1000)
        ar.checkpoint()
    (gen,) = path.glob("gen-*.blob")
    data = bytearray(gen.read_bytes())
    data[data.find(b"R" * 1000) + 10] ^= 1
    gen.write_bytes(bytes(data))
    with BlobArena(path, sync="none", compact_min_dead_bytes=4096, compact_dead_ratio=0.3) as ar:
        for i in range(40):  # dead bytes pile up: auto-compaction runs inside puts
            ar.put("churn", bytes([i]) * 1000)
        assert ar.stats()["compactions"] >= 1
        assert bytes(ar.get("good")) == b"G" * 1000
        with pytest.raises(CorruptionError):
            ar.get("rotten")


# ---- 6. fork ------------------------------------------------------------------------


def _fork_child(body: object) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            code = 0 if body() else 1  # type: ignore[operator]
        finally:
            os._exit(code)
    return pid


def _wait(pid: int, timeout: float = 20.0) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError("forked child deadlocked")


def test_forked_child_refuses_every_call_and_never_deadlocks(tmp_path: Path) -> None:
    ar = BlobArena(tmp_path / "a", sync="batch", batch_interval_ms=1)
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            ar.put(f"p{i % 50}", b"x" * 200)
            i += 1

    t = threading.Thread(target=writer)
    t.start()

    def child() -> bool:
        calls = [
            lambda: ar.put("c", b"child"),
            lambda: ar.get("p1"),
            lambda: ar.delete("p1"),
            lambda: len(ar),
            lambda: ar.stats(),
            lambda: ar.flush(),
            lambda: ar.checkpoint(),
            lambda: ar.compact(),
            lambda: ar.keys(),
            lambda: "p1" in ar,
            lambda: ar.close(),
        ]
        for call in calls:
            try:
                call()
                return False
            except ClosedError as e:
                if "fork" not in str(e):
                    return False
        global _inherited
        _inherited = ar
        del _inherited
        gc.collect()  # dropping the inherited handle must not hang on the flusher
        return True

    try:
        pids = [_fork_child(child) for _ in range(20)]
        codes = [_wait(p) for p in pids]
    finally:
        stop.set()
        t.join()
    assert codes == [0] * 20
    ar.put("after", b"parent still writes")
    ar.close()
    with BlobArena(tmp_path / "a") as again:
        assert again.get("c") is None
        assert bytes(again.get("after")) == b"parent still writes"


def test_live_child_does_not_keep_the_lock(tmp_path: Path) -> None:
    ar = BlobArena(tmp_path / "a")
    ar.put("k", b"v")
    pid = _fork_child(lambda: time.sleep(3) or True)
    try:
        ar.close()
        with BlobArena(tmp_path / "a") as again:  # no LockedError from the live child
            assert bytes(again.get("k")) == b"v"
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


# ---- 7. the small API edges ---------------------------------------------------------


def test_stats_and_len_after_close_raise(tmp_path: Path) -> None:
    ar = BlobArena(tmp_path / "a")
    ar.close()
    with pytest.raises(ClosedError):
        ar.stats()
    with pytest.raises(ClosedError):
        len(ar)


def test_lone_surrogate_key_raises_from_the_family(tmp_path: Path) -> None:
    with BlobArena(tmp_path / "a") as ar:
        with pytest.raises(InvalidArgumentError):
            ar.put("\ud800", b"v")
        with pytest.raises(SlabcacheError):
            ar.get("\udfff")


@pytest.mark.parametrize(
    "opt", ["batch_bytes", "checkpoint_bytes", "compact_min_dead_bytes", "inline_max"]
)
def test_negative_size_options_raise_from_the_family(tmp_path: Path, opt: str) -> None:
    with pytest.raises(InvalidArgumentError):
        BlobArena(tmp_path / "a", **{opt: -1})  # type: ignore[arg-type]


def test_empty_path_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidArgumentError):
        BlobArena("")
    with pytest.raises(InvalidArgumentError):
        BlobArena.repair("")
    assert not (tmp_path / "LOCK").exists()
