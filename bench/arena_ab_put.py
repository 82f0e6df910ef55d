"""Per-put latency of one BlobArena build: ``python bench/arena_ab_put.py SIZE N MODE``
prints the median of N single puts (run it with two venvs for a before/after A/B)."""

import shutil
import statistics
import sys
import tempfile
import time

from slabcache import BlobArena

size, n, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
d = tempfile.mkdtemp()
v = b"x" * size
with BlobArena(d + "/a", sync=mode, auto_compact=False) as ar:
    for i in range(3):
        ar.put(f"w{i}", v)
    ts = []
    for i in range(n):
        t0 = time.perf_counter()
        ar.put(f"k{i}", v)
        ts.append(time.perf_counter() - t0)
print(statistics.median(ts) * 1e6)
shutil.rmtree(d)
