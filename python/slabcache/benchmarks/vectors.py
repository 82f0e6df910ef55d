"""``slabcache bench vectors``: INT8 vector search against numpy, FAISS and usearch.

Every figure is taken against its peer in the same run:

* one INT8 dot product at d = 384 / 768 / 1536, per kernel (ns), against our
  portable scalar kernel;
* flat search over n vectors of d = 768 (100k; 1M too unless ``--quick``;
  20k only in ``--quick``), one query and a batch of queries, against numpy
  FP32 (``matmul`` + ``argpartition``), FAISS ``IndexFlatIP`` (FP32), FAISS
  ``IndexScalarQuantizer(QT_8bit)`` and usearch exact search over int8; each
  with its recall@10 against exact FP32 search;
* the single-query scan rate (GB/s of codes) against the machine's memory
  bandwidth measured in the same run (a large numpy copy, read + write bytes);
* the clustered index: recall and latency at a few ``nprobe`` against the flat
  index;
* real data (:mod:`.vectors_real`): wordllama text embeddings and OpenCV SIFT
  descriptors, ~120k each, against FAISS flat / SQ8 / IVF-SQ8 and hnswlib.

Data: unit-normalized vectors around 1000 gaussian centres (the shape of
real embeddings); queries are stored vectors plus noise, so each has real
neighbours. Peers missing (``pip install "slabcache[bench]"``) are reported
with ``peer=None`` and a note.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from slabcache.vectors import Int8Index, available_kernels, int8_dot, quantize

from .report import BenchContext, Measurement, time_per_call

K = 10


def _clustered(n: int, d: int, rng: np.random.Generator, centres: int = 1000) -> np.ndarray:
    """Unit vectors around gaussian centres, built in chunks to bound memory."""
    c = rng.standard_normal((centres, d), dtype=np.float32)
    out = np.empty((n, d), dtype=np.float32)
    step = 65536
    for s in range(0, n, step):
        e = min(n, s + step)
        x = c[rng.integers(0, centres, e - s)]
        x += rng.standard_normal((e - s, d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s:e] = x
    return out


def _queries(data: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    q = data[rng.integers(0, len(data), m)] + 0.02 * rng.standard_normal(
        (m, data.shape[1]), dtype=np.float32
    )
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def _numpy_search(data: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    s = q @ data.T
    part = np.argpartition(-s, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, part, 1), axis=1)
    return np.take_along_axis(part, order, 1)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    hits = sum(
        len(set(f[:k].tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True)
    )
    return hits / truth.size


def _timed(fn: Callable[[], object], budget_s: float) -> float:
    """Seconds per call: one warm-up, then best of a few repeats within ``budget_s``."""
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    number = max(1, int(budget_s / 3 / max(once, 1e-9)))
    repeat = 3 if once * number * 3 <= budget_s * 1.5 else 1
    return time_per_call(fn, number=number, repeat=repeat)


def _bandwidth_gbs(nbytes: int) -> tuple[float, float]:
    """Memory bandwidth measured now: ``(read GB/s, copy GB/s)``.

    Read: a numpy sum over ``nbytes`` (what a scan does). Copy: ``np.copyto``
    of ``nbytes``, counted as bytes copied per second (the memcpy convention).
    Each is the best of 3 runs, taking the better of one thread and every core
    (numpy releases the GIL in both), since the scan it is compared with uses
    every core.
    """
    src = np.ones(nbytes // 8, dtype=np.uint64)
    dst = np.empty_like(src)
    workers = os.cpu_count() or 1
    bounds = np.linspace(0, len(src), workers + 1).astype(np.int64)
    read = copy = float("inf")

    def part_copy(i: int) -> None:
        np.copyto(dst[bounds[i] : bounds[i + 1]], src[bounds[i] : bounds[i + 1]])

    def part_sum(i: int) -> None:
        src[bounds[i] : bounds[i + 1]].sum()

    with ThreadPoolExecutor(workers) as pool:
        for _ in range(3):
            for one, par in (
                (lambda: src.sum(), part_sum),
                (lambda: np.copyto(dst, src), part_copy),
            ):
                t0 = time.perf_counter()
                one()
                t1 = time.perf_counter()
                list(pool.map(par, range(workers)))
                best = min(t1 - t0, time.perf_counter() - t1)
                if par is part_sum:
                    read = min(read, best)
                else:
                    copy = min(copy, best)
    return nbytes / read / 1e9, nbytes / copy / 1e9


def _dot_measurements(ctx: BenchContext) -> list[Measurement]:
    out: list[Measurement] = []
    rng = np.random.default_rng(0)
    pairs = 256  # 256 pairs x 2 x 768 B = 384 KiB: L2-resident
    kernels = available_kernels()
    with ctx.task("vectors: dot kernels", total=3 * len(kernels)) as advance:
        for d in (384, 768, 1536):
            a = rng.integers(-127, 128, (pairs, d), dtype=np.int8)
            b = rng.integers(-127, 128, (pairs, d), dtype=np.int8)
            ns: dict[str, float] = {}
            for k in kernels:
                per_call = _timed(
                    lambda k=k, a=a, b=b: int8_dot(a, b, kernel=k), 0.3 if ctx.quick else 1.0
                )
                ns[k] = per_call / pairs * 1e9
                advance()
            for k in kernels:
                out.append(
                    Measurement(
                        f"int8 dot d={d} [{k}]",
                        ns[k],
                        "ns/dot",
                        peer="scalar kernel" if k != "scalar" else None,
                        peer_value=ns["scalar"] if k != "scalar" else None,
                        note=f"batch of {pairs} pairs per call (L2-resident)",
                    )
                )
    return out


def _search_measurements(ctx: BenchContext, n: int, d: int, m: int) -> list[Measurement]:
    out: list[Measurement] = []
    rng = np.random.default_rng(1)
    label = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"
    budget = 0.5 if ctx.quick else 2.0
    with ctx.task(f"vectors: flat search {label}x{d}", total=8) as advance:
        data = _clustered(n, d, rng)
        q1 = _queries(data, 1, rng)
        qb = _queries(data, m, rng)
        truth = _numpy_search(data, qb, K)
        idx = Int8Index(d, metric="cosine")
        idx.add(data)
        advance()
        ours_1 = _timed(lambda: idx.search(q1, K), budget)
        ours_b = _timed(lambda: idx.search(qb, K), budget)
        ours_recall = _recall(idx.search(qb, K)[1], truth)
        advance()

        peers: dict[str, tuple[float | None, float | None, float | None, str]] = {}
        np_1 = _timed(lambda: _numpy_search(data, q1, K), budget)
        np_b = _timed(lambda: _numpy_search(data, qb, K), budget)
        peers["numpy FP32 matmul+argpartition"] = (np_1, np_b, 1.0, "")
        advance()
        try:
            import faiss  # type: ignore[import-not-found]

            flat = faiss.IndexFlatIP(d)
            flat.add(data)
            peers["faiss IndexFlatIP (FP32)"] = (
                _timed(lambda: flat.search(q1, K), budget),
                _timed(lambda: flat.search(qb, K), budget),
                _recall(flat.search(qb, K)[1], truth),
                "",
            )
            advance()
            sq = faiss.IndexScalarQuantizer(
                d, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
            )
            sq.train(data[: min(n, 100_000)])
            sq.add(data)
            peers["faiss IndexScalarQuantizer QT_8bit"] = (
                _timed(lambda: sq.search(q1, K), budget),
                _timed(lambda: sq.search(qb, K), budget),
                _recall(sq.search(qb, K)[1], truth),
                "",
            )
            advance()
        except ImportError:
            peers["faiss (IndexFlatIP / IndexScalarQuantizer QT_8bit)"] = (
                None,
                None,
                None,
                "faiss-cpu not installed",
            )
            advance()
            advance()
        try:
            from usearch.index import MetricKind, search  # type: ignore[import-not-found]

            codes, _ = quantize(data)
            c1, _ = quantize(q1)
            cb, _ = quantize(qb)

            def us(q: np.ndarray) -> np.ndarray:
                return search(codes, q, K, MetricKind.Cos, exact=True).keys

            peers["usearch exact i8"] = (
                _timed(lambda: us(c1), budget),
                _timed(lambda: us(cb), budget),
                _recall(np.asarray(us(cb)).reshape(m, -1), truth),
                "",
            )
        except ImportError:
            peers["usearch exact i8"] = (None, None, None, "usearch not installed")
        advance()

        mb = idx.memory_bytes
        for peer, (p1, pb, precall, why) in peers.items():
            rec = f"recall@10 ours {ours_recall:.4f}" + (
                f", peer {precall:.4f}" if precall is not None else ""
            )
            out.append(
                Measurement(
                    f"flat search {label}x{d}, 1 query [{idx.kernel}]",
                    ours_1 * 1e3,
                    "ms",
                    peer=peer if p1 is not None else None,
                    peer_value=None if p1 is None else p1 * 1e3,
                    note=why or rec,
                    extra={"recall_ours": ours_recall, "recall_peer": precall},
                )
            )
            out.append(
                Measurement(
                    f"flat search {label}x{d}, batch of {m} [{idx.kernel}]",
                    m / ours_b,
                    "queries/s",
                    peer=peer if pb is not None else None,
                    peer_value=None if pb is None else m / pb,
                    higher_is_better=True,
                    note=why or rec,
                    extra={"recall_ours": ours_recall, "recall_peer": precall},
                )
            )
        # Single-query scan rate against memory bandwidth measured now.
        read_bw, copy_bw = _bandwidth_gbs(min(1 << 30, max(256 << 20, 2 * n * d)))
        bw = max(read_bw, copy_bw)
        scan = n * d / ours_1 / 1e9
        out.append(
            Measurement(
                f"1-query scan rate {label}x{d}",
                scan,
                "GB/s",
                peer="memory bandwidth (numpy sum / copy)",
                peer_value=bw,
                higher_is_better=True,
                note=("codes may be cache-resident; " if n * d < 64 << 20 else "")
                + f"{100 * scan / bw:.0f}% of bandwidth (read {read_bw:.1f}, "
                f"copy {copy_bw:.1f} GB/s); {mb / 1e6:.0f} MB vs FP32 {data.nbytes / 1e6:.0f} MB",
                extra={"read_gbs": read_bw, "copy_gbs": copy_bw},
            )
        )
        advance()
        if n <= 200_000:
            out.extend(_clustered_measurements(ctx, idx, data, qb, truth, ours_b, label))
    return out


def _clustered_measurements(
    ctx: BenchContext,
    flat: Int8Index,
    data: np.ndarray,
    qb: np.ndarray,
    truth: np.ndarray,
    flat_b: float,
    label: str,
) -> list[Measurement]:
    n, d = data.shape
    m = len(qb)
    nlist = max(16, int(4 * np.sqrt(n)))
    idx = Int8Index(d, metric="cosine", index_type="clustered", nlist=nlist)
    idx.add(data)
    out = []
    for nprobe in (1, 8, 32):
        idx.nprobe = nprobe
        t = _timed(lambda: idx.search(qb, K), 0.5 if ctx.quick else 1.5)
        r = _recall(idx.search(qb, K)[1], truth)
        out.append(
            Measurement(
                f"clustered {label}x{d} nlist={nlist} nprobe={nprobe}, batch of {m}",
                m / t,
                "queries/s",
                peer="our flat index",
                peer_value=m / flat_b,
                higher_is_better=True,
                note=f"recall@10 {r:.4f}",
                extra={"recall": r},
            )
        )
    return out


def _real_measurements(ctx: BenchContext) -> list[Measurement]:
    """Real data (wordllama text, OpenCV SIFT): see :mod:`.vectors_real`."""
    from . import vectors_real

    out: list[Measurement] = []
    n = 20_000 if ctx.quick else 119_000
    for name in ("text", "sift"):
        try:
            with ctx.task(f"vectors: real data ({name}, {n // 1000}k)", total=1) as advance:
                rows = vectors_real.run_dataset(name, n, ctx.quick, log=lambda _s: None)
                advance()
        except ImportError as e:  # wordllama / opencv / skimage missing
            out.append(Measurement(f"real data {name}", float("nan"), "", note=f"skipped: {e}"))
            continue
        ours = [r for r in rows if r.system.startswith("slabcache")]
        faiss_rows = {r.setting: r for r in rows if r.system == "FAISS"}

        def peer_of(
            r: vectors_real.Row, faiss_rows: dict[str, vectors_real.Row] = faiss_rows
        ) -> vectors_real.Row | None:
            # The FAISS index of the same kind: SQ8 for our flat, FP32 flat for exact
            # re-ranking, IVF-SQ8 at the same nprobe for clustered.
            if r.setting.startswith("flat +"):
                return faiss_rows.get("IndexFlat (FP32)")
            if r.setting.startswith("flat"):
                return faiss_rows.get("IndexScalarQuantizer QT_8bit")
            tail = r.setting.split("nlist=")[-1]
            return faiss_rows.get(f"IVF-SQ8 nlist={tail}")

        for r in ours:
            p = peer_of(r)
            for what, v, pv in (
                ("1 query", r.one_us, None if p is None else p.one_us),
                ("batch of 256", r.b256_qps, None if p is None else p.b256_qps),
            ):
                q_s = what != "1 query"
                out.append(
                    Measurement(
                        f"{name} {n // 1000}k: {r.setting}, {what}",
                        v,
                        "queries/s" if q_s else "us",
                        peer=None if p is None else f"FAISS {p.setting}",
                        peer_value=pv,
                        higher_is_better=q_s,
                        note=f"R@10 ours {r.r10:.4f}"
                        + ("" if p is None else f", FAISS {p.r10:.4f}")
                        + f"; R@1 {r.r1:.3f}; batch 32 {r.b32_qps:.0f} q/s",
                        extra={"r1": r.r1, "r10": r.r10, "bytes_per_vector": r.bytes_per_vector},
                    )
                )
        for r in rows:
            if r.system == "hnswlib":
                out.append(
                    Measurement(
                        f"{name} {n // 1000}k: hnswlib {r.setting} (graph reference), batch of 256",
                        r.b256_qps,
                        "queries/s",
                        higher_is_better=True,
                        note=f"R@10 {r.r10:.4f}, 1 query {r.one_us:.0f} us",
                    )
                )
    return out


def run(ctx: BenchContext) -> list[Measurement]:
    """The vectors suite (see the module docstring)."""
    results = _dot_measurements(ctx)
    if ctx.quick:
        results += _search_measurements(ctx, 20_000, 768, 32)
    else:
        results += _search_measurements(ctx, 100_000, 768, 64)
        results += _search_measurements(ctx, 1_000_000, 768, 64)
    results += _real_measurements(ctx)
    return results
