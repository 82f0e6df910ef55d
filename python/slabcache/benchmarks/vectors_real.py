"""Real-data vector search: ``slabcache bench vectors`` (the "real data" part).

Two data sets made offline (see :mod:`.vector_data`): ``text`` (wordllama
256-d embeddings of real sentences, cosine) and ``sift`` (OpenCV SIFT 128-d
descriptors of the photos shipped in scikit-image / scikit-learn, l2). The
first 1,000 vectors are the queries, the rest the index; the truth is exact
brute force in float64.

Systems, all on the same vectors and queries:

* slabcache ``Int8Index`` flat; flat with ``keep_exact=True`` (FP32
  re-rank of 4k candidates); clustered (``nlist = 4·√n``) at several
  ``nprobe``;
* FAISS ``IndexFlat`` (FP32), ``IndexScalarQuantizer(QT_8bit)`` and
  ``IndexIVFScalarQuantizer(QT_8bit)`` with the same ``nlist`` and ``nprobe``;
* hnswlib HNSW (M = 16, ef_construction = 200) at ef 64 and 256.

For each: recall@1 and @10, one query (µs, median of single calls), batches of
32 and 256 (queries/s), and bytes per vector. Peers that are not installed
are skipped with a note.

Run alone: ``python -m slabcache.benchmarks.vectors_real [--n 120000]
[--data text,sift] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from slabcache.vectors import Int8Index

from . import vector_data

K = 10
NQ = 1000


@dataclass
class Row:
    data: str
    system: str
    setting: str
    r1: float
    r10: float
    one_us: float
    b32_qps: float
    b256_qps: float
    bytes_per_vector: float | None
    build_s: float
    extra: dict[str, float] = field(default_factory=dict)


def _recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    pairs = zip(found, truth, strict=True)
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in pairs]))


def _best_time(fn: Callable[[], object], budget: float) -> float:
    fn()
    best = float("inf")
    t_end = time.perf_counter() + budget
    reps = 0
    while reps < 3 or (time.perf_counter() < t_end and reps < 50):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return best


def _one_query_us(search1: Callable[[np.ndarray], object], q: np.ndarray, budget: float) -> float:
    """Median µs of single-query calls over distinct queries."""
    ts = []
    t_end = time.perf_counter() + budget
    for i in range(len(q)):
        t0 = time.perf_counter()
        search1(q[i : i + 1])
        ts.append(time.perf_counter() - t0)
        if i >= 30 and time.perf_counter() > t_end:
            break
    return float(np.median(ts) * 1e6)


def _measure(
    data_name: str,
    system: str,
    setting: str,
    search: Callable[[np.ndarray], np.ndarray],
    q: np.ndarray,
    truth: np.ndarray,
    bytes_per_vector: float | None,
    build_s: float,
    budget: float,
) -> Row:
    ids = search(q)
    return Row(
        data_name,
        system,
        setting,
        _recall(ids, truth, 1),
        _recall(ids, truth, K),
        _one_query_us(search, q, budget),
        32 / _best_time(lambda: search(q[:32]), budget),
        256 / _best_time(lambda: search(q[:256]), budget),
        bytes_per_vector,
        build_s,
    )


def run_dataset(
    name: str, n: int, quick: bool = False, log: Callable[[str], None] = print
) -> list[Row]:
    q, data, metric, truth = vector_data.query_split(name, n, NQ, K)
    n, d = data.shape
    budget = float(os.environ.get("SLABCACHE_BENCH_BUDGET", 0.3 if quick else 1.0))
    rows: list[Row] = []
    nlist = int(4 * np.sqrt(n))
    probes = (8, 16, 32, 64, 80, 96, 128, 256, 512) if not quick else (16, 64)

    def ours(idx: Int8Index, setting: str, build: float, **kw: int) -> Row:
        st = idx.stats()
        r = _measure(
            name,
            "slabcache Int8Index",
            setting,
            lambda qq: idx.search(qq, K, **kw)[1],
            q,
            truth,
            st["memory_bytes"] / n,
            build,
            budget,
        )
        log(f"  {r}")
        return r

    t0 = time.perf_counter()
    flat = Int8Index(d, metric)  # type: ignore[arg-type]
    flat.add(data)
    rows.append(ours(flat, f"flat ({flat.codes}, {flat.kernel})", time.perf_counter() - t0))
    t0 = time.perf_counter()
    ex = Int8Index(d, metric, keep_exact=True)  # type: ignore[arg-type]
    ex.add(data)
    bex = time.perf_counter() - t0
    rows.append(ours(ex, "flat + keep_exact, rerank 4 (k'=40)", bex))
    rows.append(ours(ex, "flat + keep_exact, rerank 2 (k'=20)", bex, rerank=2))
    if name == "sift":
        t0 = time.perf_counter()
        sym = Int8Index(d, metric, codes="symmetric")  # type: ignore[arg-type]
        sym.add(data)
        rows.append(ours(sym, "flat (symmetric, forced)", time.perf_counter() - t0))
        del sym
    t0 = time.perf_counter()
    cl = Int8Index(d, metric, index_type="clustered", nlist=nlist, nprobe=8)  # type: ignore[arg-type]
    cl.add(data)
    bcl = time.perf_counter() - t0
    for p in probes:
        cl.nprobe = p
        rows.append(ours(cl, f"clustered nlist={nlist} nprobe={p}", bcl))
    del cl
    t0 = time.perf_counter()
    clx = Int8Index(d, metric, index_type="clustered", nlist=nlist, nprobe=8, keep_exact=True)  # type: ignore[arg-type]
    clx.add(data)
    bclx = time.perf_counter() - t0
    for p in probes[-5:] if not quick else probes[-2:]:
        clx.nprobe = p
        rows.append(ours(clx, f"clustered + keep_exact nlist={nlist} nprobe={p}", bclx))
    del clx, ex
    # Finer lists (8·√n): more centroids to rank, fewer rows a probed list.
    fine = 2 * nlist
    t0 = time.perf_counter()
    clf = Int8Index(d, metric, index_type="clustered", nlist=fine, nprobe=8)  # type: ignore[arg-type]
    clf.add(data)
    bclf = time.perf_counter() - t0
    for p in ((64, 96, 128) if name == "sift" else (256, 512)) if not quick else (64,):
        clf.nprobe = p
        rows.append(ours(clf, f"clustered nlist={fine} nprobe={p}", bclf))
    del clf

    try:
        import faiss  # type: ignore[import-not-found]

        fm = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2

        def fa(index: object, setting: str, build: float, bpv: float | None) -> Row:
            r = _measure(
                name,
                "FAISS",
                setting,
                lambda qq: index.search(qq, K)[1],  # type: ignore[attr-defined]
                q,
                truth,
                bpv,
                build,
                budget,
            )
            log(f"  {r}")
            return r

        t0 = time.perf_counter()
        ff = faiss.IndexFlatIP(d) if metric == "cosine" else faiss.IndexFlatL2(d)
        ff.add(data)
        rows.append(fa(ff, "IndexFlat (FP32)", time.perf_counter() - t0, 4.0 * d))
        del ff
        t0 = time.perf_counter()
        sq = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, fm)
        sq.train(data)
        sq.add(data)
        rows.append(fa(sq, "IndexScalarQuantizer QT_8bit", time.perf_counter() - t0, float(d)))
        del sq
        t0 = time.perf_counter()
        quant = faiss.IndexFlatIP(d) if metric == "cosine" else faiss.IndexFlatL2(d)
        ivf = faiss.IndexIVFScalarQuantizer(quant, d, nlist, faiss.ScalarQuantizer.QT_8bit, fm)
        ivf.train(data)
        ivf.add(data)
        bivf = time.perf_counter() - t0
        for p in probes:
            ivf.nprobe = p
            # IVF lists hold codes + an 8-byte id per vector.
            rows.append(fa(ivf, f"IVF-SQ8 nlist={nlist} nprobe={p}", bivf, d + 8.0))
        del ivf
    except ImportError:
        log("  faiss-cpu not installed: FAISS rows skipped")

    try:
        import hnswlib  # type: ignore[import-not-found]

        t0 = time.perf_counter()
        hn = hnswlib.Index(space="cosine" if metric == "cosine" else "l2", dim=d)
        hn.init_index(max_elements=n, M=16, ef_construction=200, random_seed=1)
        hn.set_num_threads(os.cpu_count() or 1)
        hn.add_items(data, np.arange(n))
        bh = time.perf_counter() - t0
        for ef in (64, 256):
            hn.set_ef(ef)
            r = _measure(
                name,
                "hnswlib",
                f"HNSW M=16 efC=200 ef={ef}",
                lambda qq: hn.knn_query(qq, k=K)[0],
                q,
                truth,
                4.0 * d + 16 * 2 * 4 + 8,  # FP32 vector + level-0 links (2M) + label
                bh,
                budget,
            )
            log(f"  {r}")
            rows.append(r)
    except ImportError:
        log("  hnswlib not installed: hnswlib rows skipped")
    return rows


def markdown(rows: list[Row]) -> str:
    out = [
        "| data | system | setting | R@1 | R@10 | 1 query (µs) | batch 32 (q/s) "
        "| batch 256 (q/s) | bytes/vector | build (s) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        bpv = "" if r.bytes_per_vector is None else f"{r.bytes_per_vector:.1f}"
        out.append(
            f"| {r.data} | {r.system} | {r.setting} | {r.r1:.3f} | {r.r10:.4f} | {r.one_us:,.0f} "
            f"| {r.b32_qps:,.0f} | {r.b256_qps:,.0f} | {bpv} | {r.build_s:.1f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--n", type=int, default=120_000)
    ap.add_argument("--data", default="text,sift")
    ap.add_argument("--json", default=None)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    rows: list[Row] = []
    for name in a.data.split(","):
        print(f"{name}:", flush=True)
        rows += run_dataset(name, a.n, a.quick, log=lambda s: print(s, flush=True))
    print(markdown(rows))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump([asdict(r) for r in rows], fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
