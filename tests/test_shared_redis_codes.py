"""The shared tier's INT8 codes: remote candidates are scored on them, so the cosine they
give must stay within the slack the tier allows below the threshold (no Redis needed)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from slabcache.shared import redis_semantic as rs


@settings(max_examples=200, deadline=None)
@given(
    dim=st.integers(8, 512),
    seed=st.integers(0, 2**32 - 1),
    noise=st.floats(0.0, 1.0),
    spread=st.floats(0.01, 100.0),
)
def test_int8_cosine_stays_within_the_fetch_slack(
    dim: int, seed: int, noise: float, spread: float
) -> None:
    rng = np.random.default_rng(seed)
    e = (rng.standard_normal(dim) * spread).astype(np.float32)
    q = (e + noise * spread * rng.standard_normal(dim)).astype(np.float32)
    codes, scale = rs._quantise(e)
    c = np.frombuffer(codes, dtype=np.int8).astype(np.float32)
    exact = float(e @ q / (np.linalg.norm(e) * np.linalg.norm(q)))
    approx = float(c @ q / (np.linalg.norm(c) * np.linalg.norm(q)))
    assert abs(approx - exact) <= rs._QUANT_SLACK
    # and the dequantised row a fill inserts locally is the same direction
    deq = c * np.float32(scale)
    assert np.max(np.abs(deq - e)) <= scale * 0.5 + 1e-6 * spread


def test_record_round_trip() -> None:
    dim = 16
    v = np.linspace(-1, 1, dim, dtype=np.float32)
    codes, scale = rs._quantise(v)
    nonce = b"12345678"
    text = "what is 6 × 7?"
    tb = text.encode()
    rec = nonce + rs._HEAD.pack(99.5, 1.0, 2.5, scale, dim, len(tb)) + codes + tb
    r = rs._Remote("g", rec, dim)
    assert (r.nonce, r.deadline, r.created, r.cost, r.text) == (nonce, 99.5, 1.0, 2.5, text)
    assert np.array_equal(r.codes, np.frombuffer(codes, dtype=np.int8))
    none = nonce + rs._HEAD.pack(1.0, 1.0, 0.0, scale, dim, -1) + codes
    assert rs._Remote("g", none, dim).text is None
    try:
        rs._Remote("g", rec, dim + 1)  # another dim is never read as a candidate
    except ValueError:
        pass
    else:
        raise AssertionError("a record of another dim was accepted")
