"""``slabcache bench allocator``: the slab allocator against glibc malloc,
``bytearray`` and ``numpy.empty``, all in the same run.

Cases:

* the C workload suite under ``LD_PRELOAD`` (larson, xmalloc, mstress,
  glibc-thread, large-block churn, realloc growth, small pairs) against glibc,
  mimalloc, jemalloc and tcmalloc when installed, plus the hardened profile
  (``alloc_workloads``);

* core alloc+free pairs (16 B .. 64 KiB) and a mixed-size trace, timed inside
  Rust against glibc ``malloc``/``free`` (``_native.slab_bench_pairs`` /
  ``slab_bench_trace``);
* memory on the mixed trace: resident bytes per live requested byte, slab
  allocator vs glibc, each in its own subprocess;
* Python ``free(alloc(n))`` vs ``bytearray(n)`` and ``numpy.empty(n, uint8)``;
* batch (``alloc_many`` + ``free_many``) vs single calls, per object;
* resident memory of a million live 64-byte objects vs glibc (subprocesses).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .. import _native
from ..allocator import SlabAllocator
from . import alloc_workloads as aw
from .report import BenchContext, Measurement, time_per_call

PAIR_SIZES = (16, 64, 256, 4096, 65536)
PY_SIZES = (64, 256, 1024, 4096)

_TRACE_RSS = r"""
import json, sys, psutil
from slabcache import _native
ops, live, system = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
proc = psutil.Process()
peak, end, base, rss, stats = _native.slab_hold_trace(
    ops, live, 42, system, lambda: proc.memory_info().rss
)
print(json.dumps({"peak": peak, "end": end, "rss": rss - base,
                  "in_use": stats["bytes_in_use"] if stats else None}))
"""

_OBJECTS_RSS = r"""
import json, sys, psutil
from slabcache import _native
count, size, system = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
proc = psutil.Process()
base = proc.memory_info().rss
rss = _native.slab_hold_objects(count, size, system, lambda: proc.memory_info().rss)
print(json.dumps({"rss": rss - base}))
"""


# The Rust-level hooks (`slab_bench_*`, `slab_hold_*`) are built only with the extension's
# `bench` cargo feature; the shipped wheel leaves them out.
HAS_HOOKS = hasattr(_native, "slab_bench_pairs")
NO_HOOKS = 'needs the bench hooks: MATURIN_PEP517_ARGS="--features bench" pip install -e ".[bench]"'


def _no_hooks(case: str) -> list[Measurement]:
    return [Measurement(case, 0.0, "", None, note=NO_HOOKS)]


def _subprocess_json(script: str, *args: object) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def core_pairs(ctx: BenchContext) -> list[Measurement]:
    if not HAS_HOOKS:
        return _no_hooks("core alloc+free pairs")
    iters = 200_000 if ctx.quick else 2_000_000
    out = []
    with ctx.task("core alloc+free pairs", total=len(PAIR_SIZES)) as step:
        for size in PAIR_SIZES:
            ours, glibc = _native.slab_bench_pairs(size, iters, 5)
            out.append(
                Measurement(
                    f"core alloc+free {size} B",
                    ours,
                    "ns/pair",
                    "glibc malloc",
                    glibc,
                    note="above 32 KiB: page run in a medium chunk" if size > 32768 else "",
                )
            )
            step()
    return out


def core_trace(ctx: BenchContext) -> list[Measurement]:
    if not HAS_HOOKS:
        return _no_hooks("core mixed trace")
    ops = 200_000 if ctx.quick else 2_000_000
    ours, glibc = _native.slab_bench_trace(ops, 10_000, 42, 3)
    return [
        Measurement(
            "core mixed trace (16 B-32 KiB, 10k live)", ours, "ns/op", "glibc malloc", glibc
        )
    ]


def trace_memory(ctx: BenchContext) -> list[Measurement]:
    if not HAS_HOOKS:
        return _no_hooks("memory overhead, mixed trace")
    ops, live = (200_000, 20_000) if ctx.quick else (2_000_000, 100_000)
    try:
        ours = _subprocess_json(_TRACE_RSS, ops, live, 0)
        peer = _subprocess_json(_TRACE_RSS, ops, live, 1)
    except (subprocess.SubprocessError, OSError, ValueError) as exc:
        return [Measurement("memory overhead, mixed trace", 0.0, "%", None, note=str(exc))]
    # Peak resident bytes (what the process holds after the trace) per peak
    # live requested byte: the allocator's overhead, free of the trace's own
    # slack between its peak and its final live set.
    ours_x = ours["rss"] / ours["peak"]
    peer_x = peer["rss"] / peer["peak"]
    slot_pct = 100.0 * (ours["in_use"] / ours["end"] - 1.0)
    return [
        Measurement(
            "peak RSS / peak live bytes, mixed trace",
            ours_x,
            "x",
            "glibc malloc",
            peer_x,
            note=f"overhead {100 * (ours_x - 1):.1f}% vs {100 * (peer_x - 1):.1f}% "
            f"(target <= 10%); slot rounding alone {slot_pct:.1f}%",
            extra={"ours": ours, "glibc": peer},
        )
    ]


def python_pairs(ctx: BenchContext) -> list[Measurement]:
    a = SlabAllocator()
    number = 20_000 if ctx.quick else 200_000
    alloc, free = a.alloc, a.free
    empty, u8 = np.empty, np.uint8
    out = []
    with ctx.task("python alloc+free", total=len(PY_SIZES)) as step:
        for n in PY_SIZES:
            ours = time_per_call(lambda n=n: free(alloc(n)), number=number) * 1e9
            npy = time_per_call(lambda n=n: empty(n, u8), number=number) * 1e9
            ba = time_per_call(lambda n=n: bytearray(n), number=number) * 1e9
            out.append(
                Measurement(
                    f"python alloc+free {n} B",
                    ours,
                    "ns/pair",
                    "numpy.empty",
                    npy,
                    note=f"bytearray(n): {ba:.0f} ns; target: within 2x of numpy.empty",
                    extra={"bytearray_ns": ba},
                )
            )
            step()
    return out


def python_batch(ctx: BenchContext) -> list[Measurement]:
    a = SlabAllocator()
    count = 1000
    sizes = np.full(count, 64, dtype=np.int64)
    number = 200 if ctx.quick else 2000
    alloc, free = a.alloc, a.free

    def singles() -> None:
        for _ in range(count):
            free(alloc(64))

    batch = time_per_call(lambda: a.free_many(a.alloc_many(sizes)), number=number) / count * 1e9
    single = time_per_call(singles, number=max(1, number // 10)) / count * 1e9
    return [
        Measurement(
            "python batch alloc_many+free_many, 64 B",
            batch,
            "ns/object",
            "single alloc+free calls",
            single,
            note="1000 objects per batch; target: >= 5x",
        )
    ]


def million_objects_rss(ctx: BenchContext) -> list[Measurement]:
    if not HAS_HOOKS:
        return _no_hooks("RSS of live 64 B objects")
    count = 200_000 if ctx.quick else 1_000_000
    size = 64
    try:
        ours = _subprocess_json(_OBJECTS_RSS, count, size, 0)["rss"]
        peer = _subprocess_json(_OBJECTS_RSS, count, size, 1)["rss"]
    except (subprocess.SubprocessError, OSError, ValueError) as exc:
        return [
            Measurement(f"RSS, {count:,} live {size} B objects", 0.0, "MiB", None, note=str(exc))
        ]
    payload = count * size
    return [
        Measurement(
            f"RSS, {count:,} live {size} B objects",
            ours / 2**20,
            "MiB",
            "glibc malloc",
            peer / 2**20,
            note=f"payload {payload / 2**20:.1f} MiB "
            f"(+{count * 8 / 2**20:.1f} MiB pointer list in both)",
        )
    ]


def _repo_root() -> Path:
    """The clone the workload sources come from: the package's own (editable install), else
    the working directory when it is a clone (the README's main job runs ``pip install
    ".[bench]"`` there, so the package itself is in site-packages)."""
    own = Path(__file__).resolve().parents[3]
    for root in (own, Path.cwd()):
        if (root / "bench" / "alloc_workloads").is_dir():
            return root
    return own


def _preload_lib() -> Path | None:
    """libslabcache_malloc.so: $SLABCACHE_MALLOC_LIB, the wheel's bundled copy, else built
    with cargo in the clone."""
    env = os.environ.get("SLABCACHE_MALLOC_LIB")
    if env:
        return Path(env)
    from .. import bundled

    try:
        return bundled.preload_library()
    except bundled.NotBundledError:
        pass
    root = _repo_root()
    cargo = shutil.which("cargo")
    if cargo is None or not (root / "rust" / "malloc").exists():
        return None
    subprocess.run(
        [cargo, "build", "--release", "-p", "slabcache-malloc", "--features", "preload"],
        cwd=root,
        check=True,
        capture_output=True,
    )
    target = Path(os.environ.get("CARGO_TARGET_DIR", root / "target"))
    lib = target / "release" / "libslabcache_malloc.so"
    return lib if lib.exists() else None


def preload_workloads(ctx: BenchContext) -> list[Measurement]:
    """The C workload suite under LD_PRELOAD (see ``alloc_workloads``): time
    per workload vs glibc at 1 and min(16, cores) threads, peers alongside."""
    src = _repo_root() / "bench" / "alloc_workloads"
    if shutil.which("cc") is None or not src.exists():
        ctx.console.print("[yellow]allocator workloads skipped: needs cc and bench/alloc_workloads")
        return []
    lib = _preload_lib()
    if lib is None:
        ctx.console.print(
            "[yellow]allocator workloads skipped: needs cargo or SLABCACHE_MALLOC_LIB"
        )
        return []
    peers, missing = aw.find_peers()
    for m in missing:
        ctx.console.print(f"[yellow]peer missing, {m}")
    exes = aw.build(src, Path(tempfile.mkdtemp(prefix="slabcache_alloc_")))
    allocators: dict[str, str | None] = {"glibc": None, "slabcache": str(lib), **peers}
    profiles = {"slabcache-hardened": {"SLABCACHE_PROFILE": "hardened"}}
    threads = sorted({1, min(16, os.cpu_count() or 1)})
    scale, repeats = (0.1, 1) if ctx.quick else (1.0, 3)
    with ctx.task("LD_PRELOAD workloads", total=len(exes) * len(threads)) as step:
        rows = aw.run_suite(
            exes, allocators, threads, scale, repeats, profiles, progress=lambda _r: step()
        )
    out = []
    for t in threads:
        sel = [r for r in rows if r.threads == t]
        for r in sel:
            g = r.times["glibc"]
            out.append(
                Measurement(
                    f"LD_PRELOAD {r.workload}, {t} thread(s)",
                    r.times["slabcache"],
                    "s",
                    "glibc",
                    g,
                    note=" ".join(
                        f"{n} {v / g:.2f}x" for n, v in r.times.items() if n not in ("glibc",)
                    )
                    + f"; RSS {r.rss['slabcache'] / r.rss['glibc']:.2f}x glibc",
                    extra={"times": r.times, "rss_kib": r.rss},
                )
            )
        for name in [n for n in sel[0].times if n != "glibc"] if sel else []:
            gm = aw.geomean([r.times[name] / r.times["glibc"] for r in sel])
            rss = aw.geomean([r.rss[name] / r.rss["glibc"] for r in sel])
            out.append(
                Measurement(
                    f"LD_PRELOAD geomean time/glibc, {name}, {t} thread(s)",
                    gm,
                    "x glibc",
                    note=f"peak RSS geomean {rss:.2f}x glibc",
                )
            )
    return out


def run(ctx: BenchContext) -> list[Measurement]:
    """Every allocator case, ours vs peer in the same run."""
    results: list[Measurement] = []
    for case in (
        preload_workloads,
        core_pairs,
        core_trace,
        trace_memory,
        python_pairs,
        python_batch,
        million_objects_rss,
    ):
        results.extend(case(ctx))
    return results
