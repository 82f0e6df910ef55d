"""``slabcache bench allocator``: the slab allocator against glibc malloc,
``bytearray`` and ``numpy.empty``, all in the same run.

Cases:

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
import subprocess
import sys

import numpy as np

from .. import _native
from ..allocator import SlabAllocator
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
                    note="above 32 KiB: own mapping + guard page" if size > 32768 else "",
                )
            )
            step()
    return out


def core_trace(ctx: BenchContext) -> list[Measurement]:
    ops = 200_000 if ctx.quick else 2_000_000
    ours, glibc = _native.slab_bench_trace(ops, 10_000, 42, 3)
    return [
        Measurement(
            "core mixed trace (16 B-32 KiB, 10k live)", ours, "ns/op", "glibc malloc", glibc
        )
    ]


def trace_memory(ctx: BenchContext) -> list[Measurement]:
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


def run(ctx: BenchContext) -> list[Measurement]:
    """Every allocator case, ours vs peer in the same run."""
    results: list[Measurement] = []
    for case in (
        core_pairs,
        core_trace,
        trace_memory,
        python_pairs,
        python_batch,
        million_objects_rss,
    ):
        results.extend(case(ctx))
    return results
