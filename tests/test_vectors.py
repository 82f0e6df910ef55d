"""Int8Index: search quality, API shapes, persistence and every bad input."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import slabcache
from slabcache import Int8Index
from slabcache.errors import (
    AlreadyExistsError,
    CorruptionError,
    InvalidArgumentError,
    InvalidTypeError,
    NotFoundError,
    StorageError,
)
from slabcache.vectors import available_kernels, default_kernel, int8_dot, quantize


def _normal(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _clustered(n: int, d: int, c: int, spread: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((c, d))
    labels = rng.integers(0, c, n)
    return (centers[labels] + spread * rng.standard_normal((n, d))).astype(np.float32)


def _exact(data: np.ndarray, q: np.ndarray, k: int, metric: str) -> np.ndarray:
    if metric == "cosine":
        s = _unit(q) @ _unit(data).T
    elif metric == "ip":
        s = q @ data.T
    else:
        s = -((q[:, None, :] - data[None, :, :]) ** 2).sum(-1)
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth, strict=True)]))


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("shape", ["random", "clustered"])
def test_recall_at_10_against_exact_fp32(metric: str, shape: str) -> None:
    # Synthetic data is full of near-ties among the 10th/11th neighbours: per-vector INT8
    # measures 0.985-0.995 here, the same as FAISS's 8-bit scalar quantizer (docs/vectors.md);
    # 0.98 is the floor we guarantee on such data, the 0.99 target is measured by the benchmark.
    d = 128
    data = _unit(_normal(3000, d)) if shape == "random" else _clustered(3000, d, 30, 1.0)
    queries = data[:60] + np.float32(0.05)
    idx = Int8Index(d, metric=metric)
    idx.add(data)
    scores, ids = idx.search(queries, k=10)
    assert scores.shape == ids.shape == (60, 10)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    assert _recall(ids, _exact(data, queries, 10, metric)) >= 0.98
    # Sorted best first.
    diffs = np.diff(scores, axis=1)
    assert (diffs <= 1e-6).all() if metric != "l2" else (diffs >= -1e-6).all()


def test_scores_match_the_metric() -> None:
    d = 64
    data = _normal(200, d, 1)
    q = _normal(1, d, 2)
    for metric in ("cosine", "ip", "l2"):
        idx = Int8Index(d, metric=metric)
        idx.add(data)
        scores, ids = idx.search(q, k=5)
        x = data[ids[0]]
        if metric == "cosine":
            want = (_unit(q) @ _unit(x).T)[0]
            np.testing.assert_allclose(scores[0], want, atol=0.01)
        elif metric == "ip":
            want = (q @ x.T)[0]
            np.testing.assert_allclose(scores[0], want, atol=0.02 * np.linalg.norm(q) * 9)
        else:
            want = ((q - x) ** 2).sum(1)
            np.testing.assert_allclose(scores[0], want, rtol=0.02)


def test_every_kernel_gives_identical_results() -> None:
    data = _normal(2000, 383, 3)
    queries = _normal(21, 383, 4)
    results = []
    for kernel in available_kernels():
        idx = Int8Index(383, kernel=kernel)
        assert idx.kernel == kernel
        idx.add(data)
        results.append(idx.search(queries, k=7))
    for scores, ids in results[1:]:
        np.testing.assert_array_equal(ids, results[0][1])
        np.testing.assert_array_equal(scores, results[0][0])
    assert Int8Index(8).kernel == default_kernel()


def test_unavailable_or_unknown_kernel_is_a_clear_error() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown SIMD kernel"):
        Int8Index(8, kernel="sse9")
    missing = [k for k in ("avx2", "avx512", "avx512vnni", "neon") if k not in available_kernels()]
    for k in missing:
        with pytest.raises(InvalidArgumentError, match="not supported"):
            Int8Index(8, kernel=k)


def test_simd_env_var_forces_a_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLABCACHE_SIMD", "scalar")
    assert Int8Index(8).kernel == "scalar"
    monkeypatch.setenv("SLABCACHE_SIMD", "bogus")
    with pytest.raises(InvalidArgumentError, match="SLABCACHE_SIMD"):
        Int8Index(8)


def test_k_beyond_the_store_pads_with_minus_one() -> None:
    idx = Int8Index(4, metric="l2")
    idx.add(np.eye(2, 4, dtype=np.float32), ids=[7, 3])
    scores, ids = idx.search(np.eye(1, 4, dtype=np.float32), k=4)
    assert ids.tolist() == [[7, 3, -1, -1]]
    assert np.isposinf(scores[0, 2:]).all()
    empty = Int8Index(4)
    scores, ids = empty.search(np.ones(4, dtype=np.float32), k=2)
    assert ids.tolist() == [[-1, -1]] and np.isneginf(scores).all()


def test_single_vector_and_non_contiguous_inputs() -> None:
    data = _normal(100, 32, 5)
    idx = Int8Index(32)
    idx.add(np.asfortranarray(data))
    strided = _normal(100, 64, 6)[:, ::2]  # non-contiguous view
    assert not strided.flags.c_contiguous
    idx.add(strided)
    assert len(idx) == 200
    _, a = idx.search(data[3], k=1)  # 1-D query
    assert a.tolist() == [[3]]
    _, b = idx.search(strided[::-1][:5], k=1)
    assert b[:, 0].tolist() == list(range(199, 194, -1))


def test_float64_is_converted_and_other_dtypes_refused() -> None:
    idx = Int8Index(8)
    ids = idx.add(_normal(10, 8).astype(np.float64))
    assert ids.tolist() == list(range(10))
    idx.add(_normal(2, 8).astype(np.float16))
    for bad in (
        np.ones((2, 8), dtype=np.int32),
        np.ones((2, 8), dtype=bool),
        np.ones((2, 8), dtype=np.complex64),
        np.array([["a"] * 8]),
        [[object()] * 8],
    ):
        with pytest.raises(InvalidTypeError):
            idx.add(bad)
        with pytest.raises(InvalidTypeError):
            idx.search(bad, k=1)
    assert len(idx) == 12


def test_bad_values_and_shapes_raise_and_change_nothing() -> None:
    idx = Int8Index(8)
    idx.add(_normal(5, 8), ids=[0, 1, 2, 3, 4])
    good = _normal(1, 8)
    for bad in (np.full((1, 8), np.nan, np.float32), np.full((1, 8), np.inf, np.float32)):
        with pytest.raises(InvalidArgumentError, match="non-finite"):
            idx.add(bad)
        with pytest.raises(InvalidArgumentError):
            idx.search(bad, k=1)
    with pytest.raises(InvalidArgumentError, match="dimension"):
        idx.add(_normal(2, 9))
    with pytest.raises(InvalidArgumentError):
        idx.add(np.ones((2, 2, 8), np.float32))
    with pytest.raises(InvalidArgumentError, match="dimension"):
        idx.search(_normal(1, 7), k=1)
    with pytest.raises(InvalidArgumentError):
        idx.search(good, k=0)
    with pytest.raises(InvalidTypeError):
        idx.search(good, k=1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="non-negative"):
        idx.add(good, ids=[-3])
    with pytest.raises(AlreadyExistsError):
        idx.add(good, ids=[2])
    with pytest.raises(AlreadyExistsError):
        idx.add(np.vstack([good, good]), ids=[9, 9])
    with pytest.raises(InvalidArgumentError, match="ids"):
        idx.add(np.vstack([good, good]), ids=[9])
    with pytest.raises(InvalidTypeError):
        idx.add(good, ids=[1.5])
    with pytest.raises(InvalidArgumentError):
        idx.add(np.full((1, 8), 1e39))  # float64 beyond float32 range -> inf
    with pytest.raises(NotFoundError):
        idx.remove([4, 99])
    assert len(idx) == 5 and 4 in idx
    with pytest.raises(InvalidArgumentError):
        Int8Index(0)
    with pytest.raises(InvalidArgumentError, match="metric"):
        Int8Index(8, metric="hamming")  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError):
        Int8Index("8")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="nlist"):
        Int8Index(8, index_type="clustered")


def test_remove_hides_ids_and_reuses_nothing() -> None:
    data = _normal(500, 16, 7)
    idx = Int8Index(16)
    idx.add(data)
    assert idx.remove(np.arange(0, 500, 2)) == 250
    assert len(idx) == 250 and 0 not in idx and 1 in idx
    _, ids = idx.search(data[:20], k=1)
    assert (ids[:, 0] % 2 == 1).all()
    assert idx.remove(1) == 1
    assert idx.add(data[:1]).tolist() == [500]


def test_save_load_round_trip_and_corruption(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = _normal(300, 24, 8)
    for kind in ("flat", "clustered"):
        idx = Int8Index(24, metric="l2", index_type=kind, nlist=8, nprobe=3)  # type: ignore[arg-type]
        idx.add(data, ids=np.arange(1000, 1300))
        idx.remove([1000, 1001])
        path = tmp_path / f"{kind}.sci8"
        idx.save(path)
        back = Int8Index.load(path)
        assert len(back) == 298 and back.metric == "l2" and back.index_type == kind
        assert back.nprobe == idx.nprobe
        q = data[10:20]
        for a, b in zip(idx.search(q, k=5), back.search(q, k=5), strict=True):
            np.testing.assert_array_equal(a, b)
    raw = (tmp_path / "flat.sci8").read_bytes()
    bad = tmp_path / "bad.sci8"
    for blob in (raw[: len(raw) // 2], raw[:-1], b"not an index", raw[:100] + b"\x00" + raw[101:]):
        bad.write_bytes(blob)
        with pytest.raises(CorruptionError):
            Int8Index.load(bad)
    with pytest.raises(StorageError):
        Int8Index.load(tmp_path / "missing.sci8")


def test_clustered_recall_grows_with_nprobe() -> None:
    data = _clustered(5000, 64, 40, 1.0, seed=9)
    queries = data[:50] + np.float32(0.05)
    truth = _exact(data, queries, 10, "cosine")
    idx = Int8Index(64, index_type="clustered", nlist=32, nprobe=1)
    idx.add(data)
    assert idx.is_trained and idx.nlist == 32
    recalls = []
    for nprobe in (1, 4, 32):
        idx.nprobe = nprobe
        recalls.append(_recall(idx.search(queries, k=10)[1], truth))
    assert recalls == sorted(recalls) and recalls[-1] >= 0.99, recalls


def test_concurrent_searches_agree() -> None:
    data = _normal(5000, 128, 10)
    idx = Int8Index(128)
    idx.add(data)
    want = idx.search(data[:32], k=5)[1]
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                np.testing.assert_array_equal(idx.search(data[:32], k=5)[1], want)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_quantize_error_bound_and_dot_kernels() -> None:
    x = _normal(50, 77, 11)
    codes, scales = quantize(x)
    assert codes.dtype == np.int8 and np.abs(codes).max() <= 127
    err = np.abs(x - codes * scales[:, None])
    assert (err <= scales[:, None] / 2 * (1 + 1e-5)).all()
    a, b = codes[:25], codes[25:]
    want = (a.astype(np.int32) * b.astype(np.int32)).sum(1)
    for k in available_kernels():
        np.testing.assert_array_equal(int8_dot(a, b, kernel=k), want)


@settings(max_examples=40, deadline=None)
@given(
    d=st.integers(1, 70),
    n=st.integers(1, 40),
    k=st.integers(1, 50),
    metric=st.sampled_from(["cosine", "ip", "l2"]),
    seed=st.integers(0, 2**16),
)
def test_search_matches_brute_force_over_dequantized_rows(
    d: int, n: int, k: int, metric: str, seed: int
) -> None:
    """The top hit is the exact best over the index's own reconstructed rows."""
    data = _normal(n, d, seed)
    idx = Int8Index(d, metric=metric)  # type: ignore[arg-type]
    idx.add(data)
    scores, ids = idx.search(data, k=k)
    kk = min(k, n)
    assert (ids[:, :kk] >= 0).all() and (ids[:, kk:] == -1).all()
    for row in ids[:, :kk]:
        assert len(set(row.tolist())) == kk
    if metric != "ip" and d >= 4:  # a vector is its own nearest neighbour (cosine, l2)
        hits = (ids[:, 0] == np.arange(n)).mean()
        assert hits >= 0.9


def test_package_exports() -> None:
    assert slabcache.Int8Index is Int8Index
    assert "Int8Index" in slabcache.__all__
    assert "scalar" in available_kernels()


@settings(max_examples=30, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["add", "remove"]), st.integers(1, 40), st.integers(0, 2**16)),
        min_size=1,
        max_size=25,
    ),
    index_type=st.sampled_from(["flat", "clustered"]),
)
def test_add_remove_sequences_match_a_model(
    ops: list[tuple[str, int, int]], index_type: str
) -> None:
    """Random adds/removes (with compaction along the way) keep exactly the live set."""
    d = 16
    idx = Int8Index(d, index_type=index_type, nlist=4, nprobe=4)  # type: ignore[arg-type]
    model: dict[int, np.ndarray] = {}
    for step, (op, n, seed) in enumerate(ops):
        rng = np.random.default_rng(seed)
        if op == "add" and (index_type == "flat" or idx.is_trained or n >= 4):
            vecs = _normal(n, d, seed * 100 + step)  # distinct across steps
            ids = idx.add(vecs)
            for i, v in zip(ids.tolist(), vecs, strict=True):
                model[i] = v
        elif op == "remove" and model:
            victims = rng.choice(sorted(model), size=min(n, len(model)), replace=False)
            assert idx.remove(victims) == len(victims)
            for i in victims.tolist():
                del model[i]
        assert len(idx) == len(model)
    live = sorted(model)
    assert all(i in idx for i in live)
    if live:
        q = np.stack([model[i] for i in live])
        _, found = idx.search(q, k=1)
        assert (found[:, 0] == np.array(live)).mean() >= 0.95


@pytest.mark.parametrize("nlist", [0, 16])
def test_one_query_in_a_forked_child_after_the_crew_started(nlist: int) -> None:
    """One query large enough to be split across the crew (vector::crew) runs in
    the parent (starting the helper threads), then in a forked child, which has
    no helpers: the child must answer, alone, exactly what the parent did."""
    import os

    rng = np.random.default_rng(7)
    x = rng.standard_normal((6000, 64)).astype(np.float32)  # 384k byte-products
    kw = {"index_type": "clustered", "nlist": nlist, "nprobe": nlist} if nlist else {}
    idx = Int8Index(64, metric="l2", **kw)  # type: ignore[arg-type]
    idx.add(x)
    q = x[:20] + 0.01
    want = [idx.search(q[i], 10) for i in range(len(q))]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        ok = all(np.array_equal(idx.search(q[i], 10)[1], want[i][1]) for i in range(len(q)))
        os.write(w, b"1" if ok else b"0")
        os._exit(0)
    os.close(w)
    got = os.read(r, 1)
    os.waitpid(pid, 0)
    assert got == b"1"
