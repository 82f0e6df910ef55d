"""pytest-benchmark: INT8 flat search against numpy FP32, FAISS and usearch.

Run: ``python -m pytest bench/test_bench_vectors.py --benchmark-group-by=group``
(``SLABCACHE_BENCH_N`` sets the store size, default 100000; d = 768).
Each group holds slabcache and its peers from the same run; compare within a
group. Peers come from the ``bench`` extra and are skipped when missing.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from slabcache import Int8Index

N = int(os.environ.get("SLABCACHE_BENCH_N", "100000"))
D = 768
K = 10
BATCH = 64


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((1000, D), dtype=np.float32)
    x = centres[rng.integers(0, 1000, N)] + rng.standard_normal((N, D), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.integers(0, N, BATCH)] + 0.02 * rng.standard_normal((BATCH, D), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q[:1].copy(), q


@pytest.fixture(scope="module")
def ours(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Int8Index:
    idx = Int8Index(D, metric="cosine")
    idx.add(data[0])
    return idx


def _numpy_search(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    s = q @ x.T
    return np.argpartition(-s, K, axis=1)[:, :K]


@pytest.mark.parametrize("which", ["one", "batch"])
def test_slabcache_int8(benchmark, data, ours, which) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = f"flat search {N}x{D} {which}"
    q = data[1] if which == "one" else data[2]
    scores, ids = benchmark(ours.search, q, K)
    assert ids.shape == (len(q), K)


@pytest.mark.parametrize("which", ["one", "batch"])
def test_numpy_fp32(benchmark, data, which) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = f"flat search {N}x{D} {which}"
    q = data[1] if which == "one" else data[2]
    benchmark(_numpy_search, data[0], q)


@pytest.mark.parametrize("which", ["one", "batch"])
def test_faiss_sq8(benchmark, data, which) -> None:  # type: ignore[no-untyped-def]
    faiss = pytest.importorskip("faiss")
    benchmark.group = f"flat search {N}x{D} {which}"
    index = faiss.IndexScalarQuantizer(D, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    index.train(data[0][: min(N, 100_000)])
    index.add(data[0])
    q = data[1] if which == "one" else data[2]
    benchmark(index.search, q, K)


@pytest.mark.parametrize("which", ["one", "batch"])
def test_faiss_flat_fp32(benchmark, data, which) -> None:  # type: ignore[no-untyped-def]
    faiss = pytest.importorskip("faiss")
    benchmark.group = f"flat search {N}x{D} {which}"
    index = faiss.IndexFlatIP(D)
    index.add(data[0])
    q = data[1] if which == "one" else data[2]
    benchmark(index.search, q, K)


@pytest.mark.parametrize("which", ["one", "batch"])
def test_usearch_exact_i8(benchmark, data, which) -> None:  # type: ignore[no-untyped-def]
    usearch_index = pytest.importorskip("usearch.index")
    from slabcache.vectors import quantize

    benchmark.group = f"flat search {N}x{D} {which}"
    codes, _ = quantize(data[0])
    q, _ = quantize(data[1] if which == "one" else data[2])
    benchmark(usearch_index.search, codes, q, K, usearch_index.MetricKind.Cos, exact=True)
