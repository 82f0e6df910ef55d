"""SemanticLookasideBuffer: the standalone class."""

from __future__ import annotations

import numpy as np
import pytest

from slabcache import InvalidArgumentError, InvalidTypeError, SemanticLookasideBuffer


def unit(rng, n, d):
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_matches_brute_force_cosine():
    rng = np.random.default_rng(3)
    d = 256
    slb = SemanticLookasideBuffer(d, per_scope_capacity=100, capacity=1000)
    rows = unit(rng, 60, d) * rng.uniform(0.5, 3.0, (60, 1)).astype(np.float32)
    for k, r in enumerate(rows):
        slb.insert(r, key=k, scope="s")
    normed = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    for q in unit(rng, 20, d) * 2:
        cos = normed @ (q / np.linalg.norm(q))
        best = int(np.argmax(cos))
        got = slb.find_nearest(q.astype(np.float32), -1.0, scope="s")
        assert got is not None and got[0] == best
        assert abs(got[1] - cos[best]) < 1e-5
        t = float(cos[best]) + 1e-3
        assert slb.find_nearest(q.astype(np.float32), min(t, 1.0), scope="s") is None or t > 1


def test_lru_per_scope_and_global_and_drop_scope():
    slb = SemanticLookasideBuffer(2, per_scope_capacity=2, capacity=3)
    e = np.eye(2, dtype=np.float32)
    assert slb.insert(e[0], 1, "a") == []
    assert slb.insert(e[1], 2, "a") == []
    assert slb.find_nearest(e[0], 0.9, "a")[0] == 1  # 2 is now the LRU of a
    assert slb.insert(e[1], 3, "a") == [2]
    assert slb.insert(e[0], 4, "b") == []
    assert slb.insert(e[1], 5, "c") == [1]  # global LRU across scopes
    assert sorted(slb.scopes()) == ["a", "b", "c"]
    assert slb.drop_scope("a") == [3]
    assert len(slb) == 2 and slb.scope_len("a") == 0
    assert slb.remove(4) and not slb.remove(4)
    slb.clear()
    assert len(slb) == 0


def test_batch_and_errors():
    rng = np.random.default_rng(0)
    slb = SemanticLookasideBuffer(8)
    vs = unit(rng, 5, 8)
    for k, v in enumerate(vs):
        slb.insert(v, k, scope=f"s{k % 2}")
    keys, scores = slb.find_many(vs, 0.99, [f"s{k % 2}" for k in range(5)])
    assert keys.tolist() == list(range(5)) and np.all(scores > 0.99)
    keys, _ = slb.find_many(vs, 0.99, "nope")
    assert keys.tolist() == [-1] * 5
    with pytest.raises(InvalidTypeError):
        slb.find_nearest(vs[0].astype(np.float64), 0.5)
    with pytest.raises(InvalidTypeError):
        slb.find_nearest([0.0] * 8, 0.5)
    with pytest.raises(InvalidArgumentError):
        slb.find_nearest(vs[0], 1.5)
    with pytest.raises(InvalidArgumentError):
        slb.find_nearest(np.zeros(7, np.float32), 0.5)
    with pytest.raises(InvalidArgumentError):
        slb.insert(np.full(8, np.nan, np.float32), 1)
    with pytest.raises(InvalidArgumentError):
        slb.insert(vs[0], -1)
    with pytest.raises(InvalidArgumentError):
        SemanticLookasideBuffer(8, per_scope_capacity=0)
    # float64 input to insert is converted
    slb.insert(vs[0].astype(np.float64), 99, "x")
    assert 99 in slb and np.allclose(slb.vector(99), vs[0], atol=1e-6)
