"""Memory per row of ``Int8Index`` on the real sets, with recall and speed (issue 13).

    python bench/vector_memory.py [--n 119000] [--out ids.npz] [--quick]

For each set (wordllama text 256-d cosine, OpenCV SIFT 128-d l2; the first 1,000
rows are the queries, as in ``slabcache.benchmarks.vectors_real``) and each index
(flat; flat ``keep_exact``; clustered ``nlist = 4·√n``; clustered ``keep_exact``)
it prints ``stats()`` split into bytes per live row (codes, ids, factors, exact,
id table, other), R@10 against an exact FP32 brute force, the median of single
1-query calls (µs) and batch-256 throughput (queries/s). ``--out`` saves every
result id and score array, so two builds can be compared rank for rank.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from slabcache.benchmarks import vector_data
from slabcache.vectors import Int8Index

NQ, K = 1000, 10


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def one_query_us(idx: Int8Index, q: np.ndarray, reps: int) -> float:
    times = []
    for i in range(reps):
        v = q[i % len(q)]
        t0 = time.perf_counter()
        idx.search(v, K)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def batch_qps(idx: Int8Index, q: np.ndarray, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        idx.search(q[:256], K)
        best = min(best, time.perf_counter() - t0)
    return 256 / best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=119_000)
    ap.add_argument("--out", default="")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--nprobe", type=int, default=64)
    a = ap.parse_args()
    reps = 200 if a.quick else 1000
    saved: dict[str, np.ndarray] = {}
    print(
        "| set | index | B/row | codes | ids | factors | exact | id table | other "
        "| over codes | R@10 | 1 query (µs) | batch 256 (q/s) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in ("text", "sift"):
        x = (
            vector_data.text_embeddings(a.n + NQ)
            if name == "text"
            else vector_data.sift_descriptors(a.n + NQ)
        )
        metric = "cosine" if name == "text" else "l2"
        q, data = np.ascontiguousarray(x[:NQ]), np.ascontiguousarray(x[NQ:])
        n, d = data.shape
        truth = vector_data.exact_topk(data, q, K, metric)
        nlist = int(4 * np.sqrt(n))
        for label, kw in (
            ("flat", {}),
            ("flat keep_exact", {"keep_exact": True}),
            (f"clustered nprobe {a.nprobe}", {"index_type": "clustered", "nlist": nlist}),
            (
                f"clustered keep_exact nprobe {a.nprobe}",
                {"index_type": "clustered", "nlist": nlist, "keep_exact": True},
            ),
        ):
            idx = Int8Index(d, metric, **kw)  # type: ignore[arg-type]
            idx.add(data)
            if "nlist" in kw:
                idx.nprobe = a.nprobe
            st = idx.stats()
            per = {
                k: st[k] / n  # type: ignore[operator]
                for k in (
                    "code_bytes",
                    "id_bytes",
                    "factor_bytes",
                    "exact_bytes",
                    "id_table_bytes",
                    "other_bytes",
                    "memory_bytes",
                )
            }
            dist, ids = idx.search(q, K)
            saved[f"{name}/{label}"] = ids
            saved[f"{name}/{label}/scores"] = dist
            r = recall(ids, truth)
            us = one_query_us(idx, q, reps)
            qps = batch_qps(idx, q, 20 if a.quick else 60)
            print(
                f"| {name} | {label} ({st['codes']}) | {per['memory_bytes']:.1f} "
                f"| {per['code_bytes']:.1f} | {per['id_bytes']:.2f} | {per['factor_bytes']:.2f} "
                f"| {per['exact_bytes']:.1f} | {per['id_table_bytes']:.2f} "
                f"| {per['other_bytes']:.2f} "
                f"| +{per['memory_bytes'] - d:.1f} | {r:.4f} | {us:.0f} | {qps:,.0f} |",
                flush=True,
            )
            del idx
    if a.out:
        np.savez(a.out, **saved)


if __name__ == "__main__":
    main()
