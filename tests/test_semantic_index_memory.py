"""Int8Index gives memory back when rows are removed (a cache evicts constantly)."""

from __future__ import annotations

import numpy as np

from slabcache import Int8Index


def test_removing_most_rows_returns_memory():
    rng = np.random.default_rng(0)
    n, d = 200_000, 16
    x = rng.standard_normal((n, d)).astype(np.float32)
    idx = Int8Index(d)
    ids = idx.add(x)
    full = idx.memory_bytes
    # Per-row cost besides the codes: id, scale, norm, two metric factors,
    # a live flag and the 4-byte id table (was 50-70 B with a HashMap).
    per_row = (full - n * d) / n
    assert per_row <= 37, per_row
    idx.remove(ids[: int(n * 0.9)])
    fresh = Int8Index(d)
    fresh.add(x[int(n * 0.9) :])
    assert len(idx) == len(fresh)
    assert idx.memory_bytes <= 1.5 * fresh.memory_bytes, (idx.memory_bytes, fresh.memory_bytes)
    # Everything still searchable after the shrink.
    s, i = idx.search(x[-5:], k=1)
    assert i[:, 0].tolist() == ids[-5:].tolist()
    assert ids[0] not in idx and ids[-1] in idx
