"""First get vs later gets after a reopen (the cost of the first-read CRC check):
``python bench/arena_first_read.py``."""

import shutil
import tempfile
import time

from slabcache import BlobArena

d = tempfile.mkdtemp()
rows = []
for size, n in [(100, 100_000), (4096, 20_000), (1 << 20, 64)]:
    p = f"{d}/a{size}"
    keys = [f"k{i:08d}".encode() for i in range(n)]
    with BlobArena(p, sync="none", auto_compact=False) as ar:
        for i in range(0, n, 1000):
            ar.put_many(keys[i : i + 1000], [bytes([i % 251]) * size] * len(keys[i : i + 1000]))
    for verify_reads in (False, True):
        with BlobArena(p, sync="none", verify_reads=verify_reads) as ar:
            ar.get_many(keys[:1])
            t0 = time.perf_counter()
            ar.get_many(keys)
            t1 = time.perf_counter()
            ar.get_many(keys)
            t2 = time.perf_counter()
            ar.get_many(keys)
            t3 = time.perf_counter()
        rows.append((size, verify_reads, (t1 - t0) / n * 1e9, min(t2 - t1, t3 - t2) / n * 1e9))
for size, vr, first, later in rows:
    print(
        f"value {size:>8} B verify_reads={vr!s:5}: "
        f"first get {first:10.0f} ns/key, later gets {later:8.0f} ns/key"
    )
shutil.rmtree(d)
