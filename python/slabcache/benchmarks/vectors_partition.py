"""How good can an IVF partition of the real data sets get? (issue 13, item 3)

For a partition (k-means centroids, each vector in its nearest list, or also
in its second list: "spilled"), every query's ``nprobe`` nearest lists are
taken and the **candidate recall** measured: the share of its exact top-10
that lies in those lists. That is the recall of an IVF search that re-ranks
its candidates exactly (the INT8 codes lose ~0.005 more, see RESULTS.md),
so it bounds what any scan of those lists can reach. The cost is counted as
the share of the rows scanned (spilled rows count twice) plus the probe
(``nlist`` centroids, each a row).

    python -m slabcache.benchmarks.vectors_partition --data text --n 119000

Partitions tried: FAISS k-means (spherical for cosine) with ``niter`` rounds
at several ``nlist``; our own training is the same algorithm (Lloyd, 10
rounds). Needs faiss-cpu (bench extra) and the cached data of
``vector_data``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from slabcache.benchmarks import vector_data

NQ = 1000
K = 10


def _lists_of(x: np.ndarray, cent: np.ndarray, metric: str, top: int) -> np.ndarray:
    """Each row's ``top`` nearest centroids (``[n, top]``)."""
    import faiss  # type: ignore[import-not-found]

    idx = (
        faiss.IndexFlatIP(cent.shape[1]) if metric == "cosine" else faiss.IndexFlatL2(cent.shape[1])
    )
    idx.add(cent)
    return np.asarray(idx.search(x, top)[1])


def study(
    name: str, n: int, nlists: list[int], niters: list[int], probes: list[int]
) -> list[dict[str, object]]:
    import faiss  # type: ignore[import-not-found]

    q, data, metric, truth = vector_data.query_split(name, n, NQ, K)
    out: list[dict[str, object]] = []
    for nlist in nlists:
        for niter in niters:
            t0 = time.perf_counter()
            km = faiss.Kmeans(
                data.shape[1],
                nlist,
                niter=niter,
                spherical=metric == "cosine",
                seed=1,
                max_points_per_centroid=256,
            )
            km.train(data)
            train_s = time.perf_counter() - t0
            cent = np.asarray(km.centroids, dtype=np.float32)
            assign = _lists_of(data, cent, metric, 2)
            qlists = _lists_of(q, cent, metric, max(probes))
            for spill in (False, True):
                rows_in = np.bincount(assign[:, 0], minlength=nlist).astype(np.int64)
                if spill:
                    rows_in += np.bincount(assign[:, 1], minlength=nlist)
                for p in probes:
                    if p > nlist:
                        continue
                    hit = 0
                    scanned = 0
                    for qi in range(NQ):
                        probe = qlists[qi, :p]
                        inl = np.isin(assign[truth[qi], 0], probe)
                        if spill:
                            inl |= np.isin(assign[truth[qi], 1], probe)
                        hit += int(inl.sum())
                        scanned += int(rows_in[probe].sum())
                    frac = (scanned / NQ + nlist) / len(data)
                    r: dict[str, object] = {
                        "data": name,
                        "nlist": nlist,
                        "niter": niter,
                        "spill": spill,
                        "nprobe": p,
                        "cand_recall10": hit / (NQ * K),
                        "scanned_frac": frac,
                        "rows_per_vector": 2.0 if spill else 1.0,
                        "train_s": train_s,
                    }
                    out.append(r)
                    print(
                        f"{name} nlist={nlist} niter={niter} spill={int(spill)} nprobe={p}: "
                        f"candidate R@10 {r['cand_recall10']:.4f}, scans {100 * frac:.1f}% "
                        f"of the rows (1/{1 / frac:.1f})",
                        flush=True,
                    )
    return out


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--data", default="text")
    ap.add_argument("--n", type=int, default=119_000)
    ap.add_argument("--nlist", default="345,690,1379,2758")
    ap.add_argument("--niter", default="10,30")
    ap.add_argument("--nprobe", default="8,16,32,64,128,256,512")
    a = ap.parse_args(argv)
    for name in a.data.split(","):
        study(name, a.n, _ints(a.nlist), _ints(a.niter), _ints(a.nprobe))
    return 0


if __name__ == "__main__":
    sys.exit(main())
