"""Memory per row of ``Int8Index`` (issue 13): 4-byte ids widened on demand, the
zero-floor asymmetric code without an offset column, a clustered index without
FP32 centroids and with a dense id -> list array; old files still load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slabcache import CorruptionError, Int8Index

DATA = Path(__file__).parent / "data" / "vectors_v2"


def _brute(data: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    d2 = ((q[:, None, :].astype(np.float64) - data[None, :, :]) ** 2).sum(-1)
    return np.argsort(d2, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("kind", ["flat", "clustered"])
def test_ids_widen_to_64_bits_transparently(kind: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    data = rng.standard_normal((600, 16)).astype(np.float32)
    idx = Int8Index(16, "l2", index_type=kind, nlist=8, nprobe=8)  # type: ignore[arg-type]
    idx.add(data[:300])
    assert idx.stats()["id_bytes"] <= 3 * 300 * 1.3  # every id < 2**24: 3 bytes
    big = np.array([2**32, 2**40, 2**63 - 1], dtype=np.uint64)
    idx.add(data[300:303], ids=big)
    # Widened to 8 bytes a row: the whole store (flat), or the lists holding a big id.
    widened = idx.stats()["id_bytes"]
    assert widened >= 8 * 303 if kind == "flat" else widened > 4 * 303
    idx.add(data[303:], ids=np.arange(1000, 1297))  # the next assigned id would be 2**63
    for i, b in enumerate(big.tolist()):
        assert b in idx
        dist, found = idx.search(data[300 + i], k=1)
        assert int(found[0, 0]) == b and dist[0, 0] < 0.05
    assert 5 in idx and idx.remove([5, 2**40]) == 2 and 5 not in idx and 2**40 not in idx
    path = tmp_path / "wide.sci8"
    idx.save(path)
    back = Int8Index.load(path)
    assert 2**63 - 1 in back and 2**32 in back and len(back) == len(idx)
    q = data[::7]
    for a, b in zip(idx.search(q, k=5), back.search(q, k=5), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["flat", "clustered"])
def test_ids_across_2_to_the_24_widen_from_3_to_4_bytes(kind: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    data = rng.standard_normal((400, 16)).astype(np.float32)
    idx = Int8Index(16, "l2", index_type=kind, nlist=4, nprobe=4)  # type: ignore[arg-type]
    low = np.arange(2**24 - 200, 2**24, dtype=np.uint64)  # the top of the 3-byte range
    idx.add(data[:200], ids=low)
    assert idx.stats()["id_bytes"] <= 3 * 200 * 1.3
    # 2**24 + i shares its low 3 bytes with i: a 3-byte compare must not match them.
    high = np.arange(2**24, 2**24 + 200, dtype=np.uint64)
    idx.add(data[200:], ids=high)
    st = idx.stats()
    assert 3 * 400 < st["id_bytes"] <= 4 * 400 * 1.3, st
    for i in (0, 199, 200, 399):
        want = int(low[i]) if i < 200 else int(high[i - 200])
        assert want in idx
        _, found = idx.search(data[i], k=1)
        assert int(found[0, 0]) == want
    assert 5 not in idx and 2**24 + 5 in idx
    assert idx.remove([2**24 - 1, 2**24]) == 2 and 2**24 - 1 not in idx and 2**24 not in idx
    path = tmp_path / "tri.sci8"
    idx.save(path)
    back = Int8Index.load(path)
    q = data[::9]
    for a, b in zip(idx.search(q, k=5), back.search(q, k=5), strict=True):
        np.testing.assert_array_equal(a, b)


def test_zero_floor_rows_keep_no_offset_column_and_mixed_rows_still_score_exactly() -> None:
    rng = np.random.default_rng(4)
    d, n = 32, 2000
    pos = np.abs(rng.standard_normal((n, d))).astype(np.float32)
    pos[:, 0] = 0.0  # SIFT-like: the minimum is 0
    flat = Int8Index(d, "l2")
    flat.add(pos)
    st = flat.stats()
    assert st["codes"] == "asymmetric"
    assert st["factor_bytes"] <= 8 * n * 1.3  # a_x and b_x; no offset column
    assert st["overhead_bytes_per_vector"] <= 16.0 * 1.3
    q = np.abs(rng.standard_normal((20, d))).astype(np.float32)
    _, before = flat.search(q, k=10)
    # A row far above 0 needs an offset of its own: the column appears, and the
    # earlier rows rank exactly as before (their offsets are 128·a_x).
    flat.add(pos[:1] + 100.0, ids=[10**6])
    assert flat.stats()["factor_bytes"] >= 12 * (n + 1)
    _, after = flat.search(q, k=10)
    np.testing.assert_array_equal(before, after)
    d0, f0 = flat.search(pos[0] + 100.0, k=1)
    assert int(f0[0, 0]) == 10**6 and d0[0, 0] < 1.0
    # Recall against brute force stays high with the zero floor.
    truth = _brute(pos, q, 10)
    hits = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(before, truth, strict=True)])
    assert hits >= 0.9


def test_clustered_memory_per_row_with_dense_ids() -> None:
    rng = np.random.default_rng(6)
    n, d = 20_000, 64
    centers = rng.standard_normal((50, d)).astype(np.float32) * 3
    data = (centers[rng.integers(0, 50, n)] + rng.standard_normal((n, d))).astype(np.float32)
    nlist = int(4 * np.sqrt(n))
    for metric, factors in (("cosine", 4), ("ip", 4), ("l2", 8)):
        idx = Int8Index(d, metric, index_type="clustered", nlist=nlist, nprobe=16)  # type: ignore[arg-type]
        idx.add(data)
        st = idx.stats()
        assert st["code_bytes"] == n * d, st  # one add: every list sized exactly
        # (Vec's smallest allocation holds 4-8 values: tiny lists round up.)
        assert 3 * n <= st["id_bytes"] <= 3 * n * 1.01, st  # every id < 2**24: 3 bytes
        assert factors * n <= st["factor_bytes"] <= factors * n * 1.01, st
        # ids 0..n-1: a list number each, in the fewest bits that hold nlist (10 here).
        bits = nlist.bit_length()
        assert st["id_table_bytes"] == -(-n * bits // 64) * 8, st
        # No FP32 centroids: the INT8 coarse index (codes + ~16 B a centroid) and
        # each list's header (under 200 B).
        assert st["other_bytes"] <= nlist * (d + 24 + 200), st


def test_clustered_dense_ids_switch_to_a_table_and_back_keeps_every_answer() -> None:
    rng = np.random.default_rng(7)
    data = rng.standard_normal((3000, 8)).astype(np.float32)
    a = Int8Index(8, "l2", index_type="clustered", nlist=16, nprobe=16)
    a.add(data[:2000])
    dense = a.stats()["id_table_bytes"]
    assert dense <= 2 * 2000 * 1.3
    a.add(data[2000:2010], ids=np.arange(10) + 10**12)  # far ids: a hash table now
    assert a.stats()["id_table_bytes"] > dense
    a.add(data[2010:])
    a.remove(np.arange(0, 2000, 3))
    live = sorted(set(range(2000)) - set(range(0, 2000, 3)))
    for i in live[::37]:
        assert i in a
        dist, found = a.search(data[i], k=1)
        assert dist[0, 0] < 0.05
    for i in range(0, 2000, 3):
        assert i not in a
    assert all(int(i) in a for i in np.arange(10) + 10**12)


@pytest.mark.parametrize("name", ["flat_l2", "clustered_l2", "clustered_cos"])
def test_version_2_files_still_load_and_answer_the_same(name: str, tmp_path: Path) -> None:
    """Files written by the session-11 build (format version 2, FP32 centroids)."""
    exp = np.load(DATA / "expected.npz")
    back = Int8Index.load(DATA / f"{name}.sci8")
    assert len(back) == 170
    scores, ids = back.search(exp[f"{name}/q"], k=5)
    np.testing.assert_array_equal(ids, exp[f"{name}/ids"])
    np.testing.assert_array_equal(scores, exp[f"{name}/scores"])
    # Saved again (version 3, INT8 centroids), it still answers the same.
    path = tmp_path / "again.sci8"
    back.save(path)
    assert path.read_bytes()[8] == 3
    again = Int8Index.load(path)
    s2, i2 = again.search(exp[f"{name}/q"], k=5)
    np.testing.assert_array_equal(i2, ids)
    np.testing.assert_array_equal(s2, scores)


def test_unknown_format_versions_and_bad_centroids_are_corruption_errors(tmp_path: Path) -> None:
    import struct

    raw = (DATA / "clustered_l2.sci8").read_bytes()
    bad = tmp_path / "v9.sci8"
    bad.write_bytes(raw[:8] + struct.pack("<I", 9) + raw[12:])
    with pytest.raises(CorruptionError, match="version 9"):
        Int8Index.load(bad)
    idx = Int8Index(8, "l2", index_type="clustered", nlist=4, nprobe=2)
    idx.add(np.abs(np.random.default_rng(1).standard_normal((100, 8))).astype(np.float32))
    good = tmp_path / "v3.sci8"
    idx.save(good)
    blob = bytearray(good.read_bytes())
    blob[40] ^= 0x01  # inside the centroid store: the checksum no longer matches
    good.write_bytes(bytes(blob))
    with pytest.raises(CorruptionError):
        Int8Index.load(good)
