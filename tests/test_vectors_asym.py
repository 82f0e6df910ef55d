"""Int8Index: the asymmetric (offset + scale) code, chosen automatically for non-negative data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slabcache import Int8Index
from slabcache.errors import InvalidArgumentError
from slabcache.vectors import available_kernels


def _sift_like(n: int, d: int, seed: int) -> np.ndarray:
    """Non-negative, sparse-ish, clustered (the shape of SIFT descriptors)."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(0.6, 20.0, (40, d))
    x = centres[rng.integers(0, 40, n)] * rng.uniform(0.5, 1.5, (n, 1))
    x += rng.gamma(0.5, 4.0, (n, d))
    return np.minimum(x, 255).astype(np.float32)


def _exact_l2(data: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    d = (
        (q.astype(np.float64) ** 2).sum(1)[:, None]
        - 2 * q.astype(np.float64) @ data.astype(np.float64).T
        + (data.astype(np.float64) ** 2).sum(1)[None, :]
    )
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth, strict=True)]))


def test_auto_picks_asymmetric_for_non_negative_data_only() -> None:
    pos = Int8Index(4, "l2")
    assert pos.codes == "auto"
    pos.add(np.abs(np.random.default_rng(0).standard_normal((10, 4))).astype(np.float32))
    assert pos.codes == "asymmetric"
    neg = Int8Index(4, "l2")
    neg.add(np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32))
    assert neg.codes == "symmetric"
    forced = Int8Index(4, "cosine", codes="symmetric")
    forced.add(np.ones((3, 4), dtype=np.float32))
    assert forced.codes == "symmetric"
    assert pos.stats()["factor_bytes"] == neg.stats()["factor_bytes"] + 4 * 10
    with pytest.raises(InvalidArgumentError):
        Int8Index(4, codes="int4")  # type: ignore[arg-type]


def test_asymmetric_code_recovers_recall_on_non_negative_data() -> None:
    data = _sift_like(6000, 64, 1)
    q = _sift_like(200, 64, 2)
    truth = _exact_l2(data, q, 10)
    recalls = {}
    for codes in ("symmetric", "asymmetric"):
        idx = Int8Index(64, "l2", codes=codes)  # type: ignore[arg-type]
        idx.add(data)
        recalls[codes] = _recall(idx.search(q, k=10)[1], truth)
    assert recalls["asymmetric"] > recalls["symmetric"], recalls
    assert recalls["asymmetric"] >= 0.98, recalls


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_asymmetric_results_are_identical_on_every_kernel(metric: str) -> None:
    data = _sift_like(3000, 96, 3)
    q = _sift_like(40, 96, 4)
    results = []
    for kernel in available_kernels():
        idx = Int8Index(96, metric, codes="asymmetric", kernel=kernel)  # type: ignore[arg-type]
        idx.add(data)
        results.append((kernel, *idx.search(q, k=10)))
    for kernel, s, i in results[1:]:
        np.testing.assert_array_equal(i, results[0][2], err_msg=kernel)
        np.testing.assert_array_equal(s, results[0][1], err_msg=kernel)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 40),
    d=st.integers(1, 20),
    metric=st.sampled_from(["l2", "ip", "cosine"]),
    seed=st.integers(0, 2**32 - 1),
    shift=st.floats(-50, 50),
)
def test_asymmetric_scores_match_brute_force_over_dequantized_rows(
    n: int, d: int, metric: str, seed: int, shift: float
) -> None:
    rng = np.random.default_rng(seed)
    data = (rng.standard_normal((n, d)) + shift).astype(np.float32)
    q = rng.standard_normal((2, d)).astype(np.float32)
    idx = Int8Index(d, metric, codes="asymmetric")  # type: ignore[arg-type]
    idx.add(data)
    # k = n: every row is re-scored, so every score is exact against the dequantized rows.
    scores, found = idx.search(q, k=n)
    # Dequantize independently: x ≈ lo + s·(code + 128) per row, where the floor
    # lo is 0 for a non-negative row whose minimum is at most 1/4 of its range
    # (the zero-floor code, which needs no stored offset), else the row's minimum.
    lo = data.min(1, keepdims=True).astype(np.float64)
    hi = data.max(1, keepdims=True).astype(np.float64)
    lo = np.where((lo >= 0) & (lo <= 0.25 * (hi - lo)), 0.0, lo)
    s = (hi - lo) / 255.0
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(s > 0, np.floor((data - lo) / np.where(s > 0, s, 1) + 0.5), 0)
    xhat = np.where(s > 0, lo + s * np.clip(u, 0, 255), lo)
    qq = q.astype(np.float64)
    if metric == "ip":
        want = qq @ xhat.T
    elif metric == "cosine":
        nx = np.linalg.norm(xhat, axis=1)
        nq = np.linalg.norm(qq, axis=1)
        want = (qq @ xhat.T) / np.where(nq[:, None] * nx[None, :] > 0, nq[:, None] * nx[None, :], 1)
    else:
        want = ((qq[:, None, :] - xhat[None, :, :]) ** 2).sum(-1)
    for qi in range(2):
        got = scores[qi][found[qi] >= 0]
        w = want[qi, found[qi][found[qi] >= 0]]
        np.testing.assert_allclose(got, w, rtol=2e-4, atol=2e-4 * (1 + np.abs(w).max()))


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_asymmetric_index_survives_save_load(tmp_path, metric: str) -> None:  # type: ignore[no-untyped-def]
    data = _sift_like(800, 32, 5)
    for kind in ("flat", "clustered"):
        idx = Int8Index(32, metric, index_type=kind, nlist=8, nprobe=4)  # type: ignore[arg-type]
        idx.add(data)
        idx.remove(np.arange(0, 800, 3))
        idx.save(tmp_path / f"{kind}.sci8")
        back = Int8Index.load(tmp_path / f"{kind}.sci8")
        assert back.codes == "asymmetric" and len(back) == len(idx)
        for a, b in zip(idx.search(data[:30], k=5), back.search(data[:30], k=5), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
@pytest.mark.parametrize("codes", ["symmetric", "asymmetric"])
def test_clustered_batch_equals_one_query_at_a_time(metric: str, codes: str) -> None:
    # A batch scans lists shared by several queries together; a single query scans alone.
    data = _sift_like(3000, 24, 6) - (0 if codes == "asymmetric" else 20)
    q = data[:70] + np.float32(0.5)
    idx = Int8Index(24, metric, index_type="clustered", nlist=16, nprobe=5, codes=codes)  # type: ignore[arg-type]
    idx.add(data)
    idx.remove(np.arange(0, 3000, 7))  # tombstones are skipped on both paths
    s_b, i_b = idx.search(q, k=7)
    for j in range(len(q)):
        s_1, i_1 = idx.search(q[j], k=7)
        np.testing.assert_array_equal(i_1[0], i_b[j])
        np.testing.assert_array_equal(s_1[0], s_b[j])
