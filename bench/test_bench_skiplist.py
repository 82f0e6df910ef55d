"""pytest-benchmark: BSkipList against sortedcontainers.SortedDict (same run).

Run: ``python -m pytest bench/test_bench_skiplist.py --benchmark-group-by=group``.
Each group holds slabcache's call and the peer's; compare the two rows.
"""

from __future__ import annotations

import numpy as np
import pytest

from slabcache import BSkipList

sortedcontainers = pytest.importorskip("sortedcontainers")
SortedDict = sortedcontainers.SortedDict

N = 1_000_000


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, list[int], list[int]]:
    rng = np.random.default_rng(7)
    keys = rng.permutation(N * 4)[:N].astype(np.int64)
    values = rng.integers(0, 2**40, N, dtype=np.int64)
    return keys, values, keys.tolist(), values.tolist()


@pytest.fixture(scope="module")
def filled(data):  # type: ignore[no-untyped-def]
    keys, values, klist, vlist = data
    m = BSkipList("int")
    m.update_many(keys, values)
    return m, SortedDict(zip(klist, vlist, strict=False))


@pytest.mark.benchmark(group="skiplist: bulk insert 1M int keys")
def test_bulk_insert_bskiplist(benchmark, data) -> None:  # type: ignore[no-untyped-def]
    keys, values, _, _ = data

    def run() -> BSkipList:
        m = BSkipList("int")
        m.update_many(keys, values)
        return m

    m = benchmark.pedantic(run, rounds=3, iterations=1)
    assert len(m) == N


@pytest.mark.benchmark(group="skiplist: bulk insert 1M int keys")
def test_bulk_insert_sorteddict(benchmark, data) -> None:  # type: ignore[no-untyped-def]
    _, _, klist, vlist = data

    def run() -> SortedDict:
        sd = SortedDict()
        sd.update(zip(klist, vlist, strict=False))
        return sd

    sd = benchmark.pedantic(run, rounds=3, iterations=1)
    assert len(sd) == N


@pytest.mark.benchmark(group="skiplist: 100k point gets")
def test_get_many_bskiplist(benchmark, data, filled) -> None:  # type: ignore[no-untyped-def]
    keys = data[0]
    m, _ = filled
    probe = keys[np.random.default_rng(3).integers(0, N, 100_000)]
    values, found = benchmark(m.get_many, probe)
    assert found.all()


@pytest.mark.benchmark(group="skiplist: 100k point gets")
def test_get_loop_sorteddict(benchmark, data, filled) -> None:  # type: ignore[no-untyped-def]
    keys = data[0]
    _, sd = filled
    probe = keys[np.random.default_rng(3).integers(0, N, 100_000)].tolist()
    out = benchmark(lambda: [sd[k] for k in probe])
    assert len(out) == len(probe)


def _bounds(keys: np.ndarray) -> list[tuple[int, int]]:
    s = np.sort(keys)
    starts = np.random.default_rng(5).integers(0, N - 1001, 100)
    return [(int(s[i]), int(s[i + 1000])) for i in starts]


@pytest.mark.benchmark(group="skiplist: 100 range scans of 1000 items")
def test_range_arrays_bskiplist(benchmark, data, filled) -> None:  # type: ignore[no-untyped-def]
    m, _ = filled
    bounds = _bounds(data[0])
    out = benchmark(lambda: [m.range_arrays(lo, hi, inclusive=(True, False)) for lo, hi in bounds])
    assert all(len(k) == 1000 for k, _ in out)


@pytest.mark.benchmark(group="skiplist: 100 range scans of 1000 items")
def test_irange_bskiplist(benchmark, data, filled) -> None:  # type: ignore[no-untyped-def]
    m, _ = filled
    bounds = _bounds(data[0])
    out = benchmark(lambda: [list(m.irange(lo, hi, inclusive=(True, False))) for lo, hi in bounds])
    assert all(len(k) == 1000 for k in out)


@pytest.mark.benchmark(group="skiplist: 100 range scans of 1000 items")
def test_irange_sorteddict(benchmark, data, filled) -> None:  # type: ignore[no-untyped-def]
    _, sd = filled
    bounds = _bounds(data[0])
    out = benchmark(lambda: [list(sd.irange(lo, hi, inclusive=(True, False))) for lo, hi in bounds])
    assert all(len(k) == 1000 for k in out)


@pytest.fixture(scope="module")
def as_dict(data):  # type: ignore[no-untyped-def]
    _, _, klist, vlist = data
    return dict(zip(klist, vlist, strict=True))


@pytest.mark.benchmark(group="skiplist: build 1M from a dict")
def test_build_from_dict_bskiplist(benchmark, as_dict) -> None:  # type: ignore[no-untyped-def]
    m = benchmark.pedantic(lambda: BSkipList(as_dict), rounds=3, iterations=1)
    assert len(m) == N


@pytest.mark.benchmark(group="skiplist: build 1M from a dict")
def test_build_from_dict_sorteddict(benchmark, as_dict) -> None:  # type: ignore[no-untyped-def]
    sd = benchmark.pedantic(lambda: SortedDict(as_dict), rounds=3, iterations=1)
    assert len(sd) == N


def _calls(data) -> list[int]:  # type: ignore[no-untyped-def]
    return data[0][np.random.default_rng(9).integers(0, N, 20_000)].tolist()


SINGLE = {
    "getitem": lambda m, ks: [m[k] for k in ks],
    "contains": lambda m, ks: [k in m for k in ks],
    "peekitem_last": lambda m, ks: [m.peekitem() for _ in ks],
    "peekitem_first": lambda m, ks: [m.peekitem(0) for _ in ks],
    "bisect_left": lambda m, ks: [m.bisect_left(k) for k in ks],
}


@pytest.mark.parametrize("call", sorted(SINGLE))
@pytest.mark.parametrize("impl", ["bskiplist", "sorteddict"])
def test_single_item_calls(benchmark, data, filled, call, impl) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = f"skiplist: 20k single calls: {call}"
    m = filled[0] if impl == "bskiplist" else filled[1]
    ks = _calls(data)
    out = benchmark(SINGLE[call], m, ks)
    assert len(out) == len(ks)


@pytest.mark.parametrize("impl", ["bskiplist", "sorteddict"])
def test_insert_then_bisect(benchmark, data, filled, impl) -> None:  # type: ignore[no-untyped-def]
    # Positions right after writes: each new key is followed by a bisect_left.
    benchmark.group = "skiplist: 5k x (m[k] = v; m.bisect_left(k)), 1M keys"
    m = filled[0] if impl == "bskiplist" else filled[1]
    fresh = (np.setdiff1d(np.arange(N * 4, dtype=np.int64), data[0])[:5_000]).tolist()

    def run() -> None:
        for k in fresh:
            m[k] = 1
            m.bisect_left(k)
        for k in fresh:
            del m[k]

    benchmark.pedantic(run, rounds=3, iterations=1)
    assert len(m) == N
