"""Shared kill -9 trial loop of the crash test and the soak script (not a test module)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from arena_crash_child import parse_value, value_for  # noqa: E402


@dataclass
class Expectation:
    """What the parent knows from acknowledged operations."""

    acked: dict[str, int] = field(default_factory=dict)  # key -> last acked version
    attempted: dict[str, set[int]] = field(default_factory=dict)  # key -> versions tried
    deleted: set[str] = field(default_factory=set)  # delete acked (never re-put)
    deleting: set[str] = field(default_factory=set)  # delete sent, not (yet) acked
    next_version: int = 0
    acked_count: int = 0  # acknowledged operations seen


@dataclass
class TrialStats:
    trials: int = 0
    acked_ops: int = 0
    kills_in_compaction: int = 0
    checked_keys: int = 0


def run_trial(path: str, exp: Expectation, rng: random.Random, mode: str, max_delay: float) -> bool:
    """One trial: start the child, SIGKILL it at a random moment, then check.

    Returns True if the kill landed inside a compaction.
    """
    first = exp.next_version
    child = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "arena_crash_child.py"),
            path,
            str(first),
            mode,
            str(rng.getrandbits(32)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,  # raw pipe: readline must not read ahead of what communicate() sees
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if line.strip() != b"R":
        child.kill()
        err = child.communicate()[1].decode(errors="replace")
        raise AssertionError(f"child failed to open the arena: {line!r} {err}")
    if mode == "compact":
        # Wait for the compaction to start, then kill inside it.
        buf = b""
        while not buf.endswith(b"C\n"):
            chunk = child.stdout.readline()
            if not chunk:
                break
            buf += chunk
        time.sleep(rng.uniform(0, max_delay))
    else:
        time.sleep(rng.uniform(0, max_delay))
    child.send_signal(signal.SIGKILL)
    out, err = child.communicate()
    if mode == "compact":
        out = buf + out
    in_compaction = False
    for raw in out.decode().splitlines():
        parts = raw.split()
        if not parts:
            continue
        tag = parts[0]
        if tag == "P":
            exp.attempted.setdefault(parts[1], set()).add(int(parts[2]))
            exp.deleted.discard(parts[1])  # a re-put may or may not have landed
        elif tag == "A":
            k, v = parts[1], int(parts[2])
            exp.acked[k] = max(exp.acked.get(k, -1), v)
            exp.attempted.setdefault(k, set()).add(v)
            exp.deleted.discard(k)  # re-put after an acked delete
            exp.next_version = max(exp.next_version, v + 1)
            exp.acked_count += 1
        elif tag == "X":
            exp.deleting.add(parts[1])
        elif tag == "D":
            exp.deleting.discard(parts[1])
            exp.deleted.add(parts[1])
            exp.acked.pop(parts[1], None)
            exp.acked_count += 1
        elif tag == "C":
            in_compaction = True
        elif tag == "c":
            in_compaction = False
    exp.next_version += 1000  # versions of unacked writes are never reused
    if child.returncode not in (-signal.SIGKILL, 0):
        raise AssertionError(
            f"child exited with {child.returncode}: {err.decode(errors='replace')}"
        )
    return in_compaction


def check(path: str, exp: Expectation) -> int:
    """Reopens the arena and checks every acknowledged key; returns keys checked."""
    from slabcache import BlobArena

    with BlobArena(path, sync="none", verify_reads=True) as ar:
        for key, version in list(exp.acked.items()):
            got = ar.get(key)
            if got is None and key in exp.deleting:
                # The kill hit an unacknowledged delete that made it to disk.
                exp.acked.pop(key)
                exp.deleted.add(key)
                continue
            assert got is not None, f"acked key {key} (version {version}) lost"
            value = bytes(got)
            name, got_version, size = parse_value(value)
            ok_versions = {v for v in exp.attempted.get(key, set()) if v >= version}
            assert name == key and got_version in ok_versions, (
                f"key {key}: holds version {got_version}, acked version {version}"
            )
            assert value == value_for(key, got_version, size), f"key {key}: wrong bytes"
        for key in exp.deleted:
            assert ar.get(key) is None, f"acked delete of {key} undone"
        exp.deleting.clear()  # what recovery kept is final: the child never retries
        # Nothing returns garbage: every key present holds a well-formed value.
        for raw in ar.keys():
            key = raw.decode()
            value = bytes(ar[key])
            name, version, size = parse_value(value)
            assert name == key and value == value_for(key, version, size), key
        ar.verify()
        return len(exp.acked)


def run_trials(
    path: str,
    trials: int,
    seed: int,
    compact_every: int,
    max_delay: float,
    progress: bool = False,
) -> TrialStats:
    rng = random.Random(seed)
    exp = Expectation()
    stats = TrialStats()
    for i in range(trials):
        mode = "compact" if compact_every and i % compact_every == compact_every - 1 else "mixed"
        delay = 0.05 if mode == "compact" else max_delay
        if run_trial(path, exp, rng, mode, delay):
            stats.kills_in_compaction += 1
        stats.checked_keys += check(path, exp)
        stats.trials += 1
        if progress and stats.trials % 50 == 0:
            print(
                f"{stats.trials} trials, {exp.acked_count} acked ops, "
                f"{stats.kills_in_compaction} kills in compaction",
                flush=True,
            )
    stats.acked_ops = exp.acked_count
    assert os.path.isdir(path)
    return stats
