"""Hypothesis: SemanticCache against a brute-force model (no guard, no buffer shortcuts).

The model keeps every live entry's FP32 vector and answers a lookup with the
best cosine in the query's partition when it reaches the threshold. The cache
scores with INT8 codes re-scored in FP32, so the two may disagree only when
two candidates or the threshold lie within the quantisation error (``TOL``);
such draws are skipped, everything else must match exactly.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slabcache import Policy, SemanticCache

DIM = 16
TOL = 0.03
THRESHOLD = 0.8

op = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 40), st.sampled_from(["a", "b"])),
    st.tuples(st.just("lookup"), st.integers(0, 40), st.sampled_from(["a", "b"])),
    st.tuples(st.just("delete"), st.integers(0, 30), st.just("")),
    st.tuples(st.just("expire"), st.integers(1, 5), st.just("")),
)


def vec(seed: int) -> np.ndarray:
    # Seeds close together give correlated vectors, so hits and near-misses happen.
    base = np.random.default_rng(seed // 4).standard_normal(DIM)
    jitter = np.random.default_rng(1000 + seed).standard_normal(DIM) * 0.35
    v = (base + jitter).astype(np.float32)
    return v / np.linalg.norm(v)


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=60))
def test_cache_matches_brute_force(ops):
    clock = Clock()
    cache = SemanticCache(
        None, dim=DIM, default=Policy(threshold=THRESHOLD, ttl_s=10), trap_guard=False,
        slb_per_scope=3, clock=clock,
    )  # fmt: skip
    model: dict[int, tuple[str, np.ndarray, bytes, float]] = {}
    keys: list[int] = []
    for kind, x, scope in ops:
        if kind == "insert":
            payload = f"{x}-{len(keys)}".encode()
            k = cache.insert(vec(x), payload, scope=scope)
            model[k] = (scope, vec(x), payload, clock.t + 10)
            keys.append(k)
        elif kind == "delete" and keys:
            k = keys[x % len(keys)]
            assert cache.delete(k) == (k in model)
            model.pop(k, None)
        elif kind == "expire":
            clock.t += x
            for k in [k for k, m in model.items() if m[3] <= clock.t]:
                del model[k]
        elif kind == "lookup":
            q = vec(x)
            cands = sorted(
                ((float(m[1] @ q), k) for k, m in model.items() if m[0] == scope), reverse=True
            )
            h = cache.lookup(q, scope=scope)
            ambiguous = bool(cands) and (
                abs(cands[0][0] - THRESHOLD) < TOL
                or (len(cands) > 1 and cands[0][0] - cands[1][0] < TOL)
            )
            if ambiguous:
                if h is not None:
                    assert h.key in model and model[h.key][0] == scope
                continue
            if cands and cands[0][0] >= THRESHOLD:
                assert h is not None, (cands[:2], scope)
                assert h.key == cands[0][1]
                assert bytes(h.value) == model[h.key][2]
            else:
                assert h is None
    cache.expire()
    assert len(cache) == len(model)
    assert sorted(cache._entries) == sorted(model)
