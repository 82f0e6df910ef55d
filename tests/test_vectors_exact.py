"""Int8Index: exact re-ranking (keep_exact / rerank), overflow-safe scores, id range, memory."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slabcache import Int8Index
from slabcache.errors import InvalidArgumentError, InvalidTypeError, SlabcacheError

F32_MAX = float(np.finfo(np.float32).max)


def _truth(data: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
    """Exact scores in float64, oriented so that higher is closer."""
    x, y = data.astype(np.float64), q.astype(np.float64)
    if metric == "ip":
        return y @ x.T
    if metric == "cosine":
        xn = np.linalg.norm(x, axis=1)
        yn = np.linalg.norm(y, axis=1)
        return (y @ x.T) / np.maximum(yn[:, None] * xn[None, :], 1e-300)
    return -((y[:, None, :] - x[None, :, :]) ** 2).sum(-1)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth, strict=True)]))


def test_l2_with_components_near_f32_max_is_inf_for_unrelated_rows_never_zero() -> None:
    big = np.float32(3e38)
    data = np.array(
        [[big, 0, 0, 0], [0, 1, 0, 0], [big, big, 0, 0], [0, 0, -big, 0], [0, 0, 0, 1]],
        dtype=np.float32,
    )
    true = -_truth(data, data, "l2")  # squared distances in float64
    for keep_exact in (False, True):
        idx = Int8Index(4, "l2", keep_exact=keep_exact)
        idx.add(data)
        dist, ids = idx.search(data, k=5)
        assert (ids >= 0).all()  # every row is found for every query: no NaN dropped them
        for qi in range(len(data)):
            for d, i in zip(dist[qi], ids[qi], strict=True):
                assert not np.isnan(d)
                if true[qi, i] > F32_MAX:
                    assert d == np.inf, (qi, i, d)  # FAISS gives inf; the bug gave 0.0
                elif keep_exact:
                    assert d == pytest.approx(true[qi, i], rel=1e-6, abs=1e-6)
        if keep_exact:
            np.testing.assert_array_equal(ids[:, 0], np.arange(len(data)))
            assert (dist[:, 0] == 0).all()


@pytest.mark.parametrize("metric", ["ip", "cosine"])
def test_huge_components_never_give_nan_scores(metric: str) -> None:
    data = np.array([[3e38, 0, 1], [0, 3e38, 1], [1, 1, 1]], dtype=np.float32)
    idx = Int8Index(3, metric, keep_exact=True)  # type: ignore[arg-type]
    idx.add(data)
    scores, ids = idx.search(data, k=3)
    assert not np.isnan(scores).any() and (ids >= 0).all()
    if metric == "cosine":
        np.testing.assert_array_equal(ids[:, 0], [0, 1, 2])
        np.testing.assert_allclose(scores[:, 0], 1.0, rtol=1e-6)


def test_ids_of_2_pow_63_or_more_are_refused_clearly() -> None:
    idx = Int8Index(2)
    v = np.ones((2, 2), dtype=np.float32)
    for ids in (
        np.array([1, 2**63], dtype=np.uint64),
        np.array([2**64 - 1, 3], dtype=np.uint64),
        [5, 2**63],
    ):
        with pytest.raises(InvalidArgumentError, match=r"2\*\*63-1|2\^63-1|int64") as e:
            idx.add(v, ids=ids)
        assert isinstance(e.value, SlabcacheError) and isinstance(e.value, ValueError)
        assert len(idx) == 0
    # The largest id is accepted and found.
    assert idx.add(v[:1], ids=np.array([2**63 - 1], dtype=np.uint64)).tolist() == [2**63 - 1]
    assert idx.search(v[0], k=1)[1].tolist() == [[2**63 - 1]]


def test_near_duplicates_find_themselves_at_rank_1_with_exact_rerank() -> None:
    # 200 pairs closer than one INT8 step: the codes cannot tell them apart.
    rng = np.random.default_rng(3)
    base = rng.standard_normal((200, 64)).astype(np.float32)
    twin = base + np.float32(1e-4) * rng.standard_normal((200, 64)).astype(np.float32)
    data = np.concatenate([base, twin])
    for metric in ("l2", "cosine", "ip"):
        idx = Int8Index(64, metric, keep_exact=True)  # type: ignore[arg-type]
        idx.add(data)
        _, ids = idx.search(data, k=1)
        if metric == "ip":  # the nearest by inner product need not be the vector itself
            want = np.argmax(_truth(data, data, "ip"), axis=1)
        else:
            want = np.arange(len(data))
        np.testing.assert_array_equal(ids[:, 0], want)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_exact_rerank_recall_at_10_against_brute_force(metric: str) -> None:
    rng = np.random.default_rng(11)
    centres = rng.standard_normal((30, 48))
    data = (centres[rng.integers(0, 30, 4000)] + 0.4 * rng.standard_normal((4000, 48))).astype(
        np.float32
    )
    q = (data[rng.integers(0, 4000, 100)] + 0.05 * rng.standard_normal((100, 48))).astype(
        np.float32
    )
    truth = np.argsort(-_truth(data, q, metric), axis=1, kind="stable")[:, :10]
    plain = Int8Index(48, metric)  # type: ignore[arg-type]
    plain.add(data)
    exact = Int8Index(48, metric, keep_exact=True)  # type: ignore[arg-type]
    exact.add(data)
    r_plain = _recall(plain.search(q, k=10)[1], truth)
    r_exact = _recall(exact.search(q, k=10)[1], truth)
    assert r_exact >= 0.999, (r_plain, r_exact)
    assert r_exact >= r_plain
    # A clustered index re-ranks the same way.
    cl = Int8Index(48, metric, index_type="clustered", nlist=16, nprobe=16, keep_exact=True)  # type: ignore[arg-type]
    cl.add(data)
    assert _recall(cl.search(q, k=10)[1], truth) >= 0.999


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 60),
    d=st.integers(1, 12),
    k=st.integers(1, 8),
    metric=st.sampled_from(["ip", "cosine", "l2"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_rerank_over_every_row_is_exact_search(
    n: int, d: int, k: int, metric: str, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((n, d)).astype(np.float32) * np.float32(rng.uniform(0.01, 100))
    q = rng.standard_normal((3, d)).astype(np.float32)
    idx = Int8Index(d, metric, keep_exact=True)  # type: ignore[arg-type]
    idx.add(data)
    rerank = -(-n // k)  # rerank·k ≥ n: every row is re-scored exactly
    scores, ids = idx.search(q, k=k, rerank=min(rerank, 1024))
    truth = _truth(data, q, metric)
    kk = min(k, n)
    for qi in range(3):
        got = ids[qi, :kk]
        assert (ids[qi, kk:] == -1).all()
        best = np.sort(truth[qi])[::-1][:kk]
        got_scores = truth[qi, got]
        # The same scores as the exact top-k (ids may differ only between exact ties).
        np.testing.assert_allclose(got_scores, best, rtol=1e-5, atol=1e-5)
        want = -got_scores if metric == "l2" else got_scores
        np.testing.assert_allclose(scores[qi, :kk], want, rtol=1e-5, atol=1e-5)


def test_rerank_argument_is_validated_and_works_without_exact_rows() -> None:
    idx = Int8Index(4)
    idx.add(np.eye(4, dtype=np.float32))
    for bad in (0, -1, 1025):
        with pytest.raises(InvalidArgumentError):
            idx.search(np.ones(4, dtype=np.float32), k=1, rerank=bad)
    with pytest.raises(InvalidTypeError):
        idx.search(np.ones(4, dtype=np.float32), k=1, rerank=True)
    assert idx.search(np.eye(4, dtype=np.float32)[1], k=1, rerank=1)[1].tolist() == [[1]]
    assert not idx.keep_exact and Int8Index(4, keep_exact=True).keep_exact


def test_keep_exact_survives_save_load_and_remove(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(5)
    data = rng.standard_normal((500, 16)).astype(np.float32)
    for kind in ("flat", "clustered"):
        idx = Int8Index(16, "l2", index_type=kind, nlist=8, nprobe=8, keep_exact=True)  # type: ignore[arg-type]
        idx.add(data, ids=np.arange(10, 510))
        idx.remove(np.arange(10, 200))  # compacts: exact rows must move with their codes
        path = tmp_path / f"{kind}.sci8"
        idx.save(path)
        back = Int8Index.load(path)
        assert back.keep_exact and len(back) == 310
        d, i = back.search(data[200:], k=1)
        np.testing.assert_array_equal(i[:, 0], np.arange(210, 510))
        assert (d[:, 0] == 0).all()
        for a, b in zip(idx.search(data[:50], k=5), back.search(data[:50], k=5), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("metric", "factors"), [("ip", 4), ("cosine", 4), ("l2", 8)])
def test_memory_per_vector_is_codes_plus_id_and_factors(metric: str, factors: int) -> None:
    n, d = 20_000, 32
    data = np.random.default_rng(1).standard_normal((n, d)).astype(np.float32)
    idx = Int8Index(d, metric)  # type: ignore[arg-type]
    for s in range(0, n, 5000):  # several adds: capacity growth is counted too
        idx.add(data[s : s + 5000])
    st_ = idx.stats()
    assert st_["code_bytes"] >= n * d and st_["id_table_bytes"] == 0
    assert st_["memory_bytes"] == idx.memory_bytes
    per = st_["overhead_bytes_per_vector"]
    # id (3: every id < 2**24) + factors; Vec growth may leave spare capacity: allow 30%.
    assert 3 + factors <= per <= (3 + factors) * 1.3 + 1, st_
    assert st_["id_bytes"] >= 3 * n and st_["id_bytes"] <= 3 * n * 1.3
    assert st_["code_bytes"] <= n * d * 1.3
    # Ids in random order need an id table: 5-11 B more per vector.
    shuffled = Int8Index(d, metric)  # type: ignore[arg-type]
    shuffled.add(data, ids=np.random.default_rng(2).permutation(n) + 7)
    s2 = shuffled.stats()
    assert 0 < s2["id_table_bytes"] <= 11 * n
    assert s2["overhead_bytes_per_vector"] <= 3 + factors + 11
    # keep_exact adds 4 bytes per component (+ the boxed column's own 24 B).
    ex = Int8Index(d, metric, keep_exact=True)  # type: ignore[arg-type]
    ex.add(data)
    assert ex.stats()["exact_bytes"] == 4 * n * d + 24


def test_clustered_ids_survive_removes_compactions_and_re_adds() -> None:
    rng = np.random.default_rng(21)
    data = rng.standard_normal((3000, 8)).astype(np.float32)
    ids = rng.permutation(10**6)[:3000].astype(np.int64)
    idx = Int8Index(8, "l2", index_type="clustered", nlist=8, nprobe=8, keep_exact=True)
    idx.add(data, ids=ids)
    live = dict(zip(ids.tolist(), range(3000), strict=True))
    for round_ in range(6):
        gone = rng.choice(list(live), size=len(live) // 3, replace=False)
        assert idx.remove(gone) == len(gone)  # compacts lists as tombstones pile up
        for g in gone.tolist():
            del live[g]
        if round_ % 2:
            back = gone[: len(gone) // 2]
            rows = rng.integers(0, 3000, len(back))
            idx.add(data[rows], ids=back)
            live.update(zip(back.tolist(), rows.tolist(), strict=True))
        assert len(idx) == len(live)
        probe = rng.choice(list(live), size=50, replace=False)
        assert all(int(p) in idx for p in probe) and not any(
            int(g) in idx for g in gone[-20:] if int(g) not in live
        )
        d, found = idx.search(data[[live[int(p)] for p in probe]], k=1)
        assert (d[:, 0] == 0).all()  # each probe's vector is stored (possibly under a twin id)
    s = idx.stats()
    assert s["id_table_bytes"] <= 8 * 4 * max(len(live), 8)
