"""Torn and corrupt tails: truncate the WAL and blob files at every byte of
their last records, flip random bytes.

A cut WAL tail is exactly what a crash *during* the last put leaves behind
(under ``sync="always"`` a put returns only once its whole record is synced,
so a torn record is a put that never returned): every acknowledged key must be
there byte for byte, the in-flight one whole or absent. A cut blob under an
intact WAL is different: the WAL's sync mark proves that blob had been synced,
so the loss is corruption of acknowledged data and open must refuse (changing
nothing) rather than silently drop the key; ``BlobArena.repair`` then salvages
every other key. Never a crash, never a wrong value, never a silent loss."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from slabcache import BlobArena
from slabcache.errors import CorruptionError

N = 12


def value(i: int) -> bytes:
    return f"value-{i}-".encode() * (3 + i)


def build(
    path: Path, checkpoint_half: bool = False, inline_max: int = 16 << 10
) -> dict[str, tuple[int, int]]:
    """N puts (sync="always"); returns (before, after) sizes of the WAL and the blob
    file around the last put. With ``inline_max=0`` every put's blob must reach the
    disk; by default small values also travel inline in their WAL record."""
    with BlobArena(
        path, sync="always", auto_compact=False, checkpoint_bytes=0, inline_max=inline_max
    ) as ar:
        for i in range(N - 1):
            ar.put(f"k{i}", value(i))
            if checkpoint_half and i == N // 2:
                ar.checkpoint()
        before = ar.stats()
        ar.put(f"k{N - 1}", value(N - 1))
        after = ar.stats()
    return {
        "wal": (before["wal_bytes"], after["wal_bytes"]),
        "gen": (before["data_bytes"] + 32, after["data_bytes"] + 32),
    }


def only(path: Path, pattern: str) -> Path:
    (f,) = path.glob(pattern)
    return f


def check_prefix(path: Path, last_present: bool | None) -> None:
    """Keys 0..N-2 (acknowledged) exact; the in-flight last key per `last_present`
    (None: either, but exact)."""
    with BlobArena(path, verify_reads=True) as ar:
        for i in range(N - 1):
            assert bytes(ar.get(f"k{i}")) == value(i)
        got = ar.get(f"k{N - 1}")
        if last_present is not None:
            assert (got is not None) == last_present
        if got is not None:
            assert bytes(got) == value(N - 1)
        ar.verify()


@pytest.mark.parametrize(
    ("which", "inline_max"), [("wal", 0), ("wal", 16 << 10), ("gen", 0), ("gen", 16 << 10)]
)
def test_truncate_last_record_at_every_offset(tmp_path: Path, which: str, inline_max: int) -> None:
    src = tmp_path / "src"
    sizes = build(src, inline_max=inline_max)
    lo, hi = sizes[which]
    assert hi > lo
    pattern = "wal-*.log" if which == "wal" else "gen-*.blob"
    for cut in range(lo, hi + 1):
        dst = tmp_path / f"cut{cut}"
        shutil.copytree(src, dst)
        f = only(dst, pattern)
        with open(f, "r+b") as fh:
            fh.truncate(cut)
        if which == "gen" and inline_max == 0 and cut < hi:
            # The synced blob of an acknowledged put is gone: loud, not silent.
            before = {p.name: p.read_bytes() for p in dst.iterdir() if p.is_file()}
            with pytest.raises(CorruptionError, match="damaged at byte"):
                BlobArena(dst)
            after = {p.name: p.read_bytes() for p in dst.iterdir() if p.is_file()}
            assert after == before  # the refused open changed nothing
            report = BlobArena.repair(dst)
            assert report["kept_keys"] == N - 1 and report["dropped"]
            check_prefix(dst, last_present=False)
            shutil.rmtree(dst)
            continue
        # A cut blob is rewritten from its inline WAL record; a cut WAL is a
        # crash during the last put (which therefore was not acknowledged).
        repaired = which == "gen" and inline_max > 0
        check_prefix(dst, last_present=(cut == hi) or repaired)
        # Recovery cut the torn tail off for good: a second open is clean.
        with BlobArena(dst) as ar:
            assert ar.stats()["recovery"]["truncated_bytes"] == 0
        shutil.rmtree(dst)


def test_garbage_appended_to_wal_is_cut(tmp_path: Path) -> None:
    src = tmp_path / "a"
    build(src)
    f = only(src, "wal-*.log")
    with open(f, "ab") as fh:
        fh.write(b"\x00" * 7 + b"\xff" * 100)
    check_prefix(src, last_present=True)


@pytest.mark.parametrize("checkpoint_half", [False, True])
def test_random_byte_flips_never_give_wrong_values(tmp_path: Path, checkpoint_half: bool) -> None:
    src = tmp_path / "src"
    build(src, checkpoint_half=checkpoint_half)
    targets = ["wal-*.log", "gen-*.blob", "checkpoint"]
    rng = random.Random(99 + checkpoint_half)
    outcomes = {"open_error": 0, "read_error": 0, "clean": 0}
    for trial in range(120):
        dst = tmp_path / f"flip{trial}"
        shutil.copytree(src, dst)
        f = only(dst, rng.choice(targets))
        data = bytearray(f.read_bytes())
        for _ in range(rng.choice([1, 1, 2, 5])):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        f.write_bytes(bytes(data))
        try:
            ar = BlobArena(dst, verify_reads=True)
        except CorruptionError:
            outcomes["open_error"] += 1
            shutil.rmtree(dst)
            continue
        with ar:
            bad = False
            missing = []
            for i in range(N):
                try:
                    got = ar.get(f"k{i}")
                except CorruptionError:
                    bad = True
                    continue
                assert got is None or bytes(got) == value(i), f"trial {trial}: k{i} wrong"
                if got is None:
                    missing.append(i)
            try:
                ar.verify()
            except CorruptionError:
                bad = True
            # Every key was acknowledged (sync="always") and the arena closed cleanly: a
            # flip may be reported, never turn into a silently missing key.
            assert bad or not missing, f"trial {trial}: acknowledged keys {missing} lost silently"
            outcomes["read_error" if bad else "clean"] += 1
        shutil.rmtree(dst)
    assert sum(outcomes.values()) == 120
    assert outcomes["open_error"] + outcomes["read_error"] > 0, outcomes
