"""kill -9 the writer; every acknowledged insert is found again by its own vector."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from slabcache import SemanticCache

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from semantic_crash_child import DIM, payload_for, scope_for, vector_for  # noqa: E402


def _run_child(path: Path, sync: str, seed: int, delay: float) -> dict[int, int]:
    child = subprocess.Popen(
        [sys.executable, str(HERE / "semantic_crash_child.py"), str(path), sync, str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.strip() == b"ready", (line, child.stderr.read() if child.stderr else b"")
    time.sleep(delay)
    os.kill(child.pid, signal.SIGKILL)
    out, _ = child.communicate(timeout=30)
    acked: dict[int, int] = {}
    for ln in out.decode().splitlines():
        parts = ln.split()
        if len(parts) == 3 and parts[0] == "ack":  # a torn last line is not an ack
            acked[int(parts[1])] = int(parts[2])
    return acked


@pytest.mark.parametrize("sync", ["always", "batch"])
def test_every_acknowledged_insert_survives_kill_9(tmp_path, sync):
    rng = random.Random(1234)
    path = tmp_path / "cache"
    acked: dict[int, int] = {}
    for trial in range(3):
        got = _run_child(path, sync, trial, rng.uniform(0.15, 0.6))
        assert got, "the child acknowledged nothing before the kill"
        acked.update(got)
        with SemanticCache(path, dim=DIM, trap_guard=False) as cache:
            # Index and payloads agree: every live entry's vector finds a payload.
            assert len(cache._index) == len(cache)
            for key, i in acked.items():
                h = cache.lookup(vector_for(i), scope=scope_for(i), threshold=0.999)
                assert h is not None, f"acknowledged entry {key} (item {i}) lost after kill -9"
                assert h.key == key and bytes(h.value) == payload_for(i)
            # Nothing else is there but entries the child may have written unacknowledged.
            assert len(cache) >= len(acked)
            vs = np.stack([vector_for(i) for i in list(acked.values())[:50]])
            hits = cache.lookup_many(vs, [scope_for(i) for i in list(acked.values())[:50]])
            assert all(h is not None for h in hits)
