"""The allocator workload suite: small C programs of the classic allocator
benchmark shapes (``bench/alloc_workloads/*.c``), compiled with ``cc`` at
bench time and run under ``LD_PRELOAD`` against glibc and, when their Debian
packages are installed, mimalloc, jemalloc and tcmalloc, all in the same run.

Reports wall time and peak RSS (``ru_maxrss`` of the child) per workload and
allocator, as ratios to glibc, with geometric means. Standard library only,
so it also runs as a script on a machine without slabcache installed::

    python3 alloc_workloads.py --lib libslabcache_malloc.so --src bench/alloc_workloads \\
        --threads 1 16 --repeats 3

    >>> sorted(WORKLOADS)[:2]
    ['glibc_thread', 'large_churn']
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Workload name -> what it models.
WORKLOADS: dict[str, str] = {
    "larson": "larson-like server: random replace, arrays handed to new threads",
    "xmalloc": "producer/consumer: every free is a cross-thread free",
    "mstress": "mstress/rptest-like random lifetimes, some cross-thread",
    "glibc_thread": "glibc bench-malloc-thread loop, sizes 4 B..32 KiB (1/size)",
    "large_churn": "64 KiB..4 MiB blocks replaced at random",
    "realloc_growth": "buffers grown by realloc in 1..16 KiB steps to 1..8 MiB",
    "small_pairs": "malloc+free pairs 16..256 B (the fast path)",
}

#: Peer allocator -> (shared object names, Debian package).
PEERS: dict[str, tuple[tuple[str, ...], str]] = {
    "mimalloc": (("libmimalloc.so.2", "libmimalloc.so"), "libmimalloc2.0"),
    "jemalloc": (("libjemalloc.so.2", "libjemalloc.so"), "libjemalloc2"),
    "tcmalloc": (("libtcmalloc_minimal.so.4", "libtcmalloc_minimal.so"), "libtcmalloc-minimal4"),
}

LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")


def find_peers(extra_dirs: list[str] | None = None) -> tuple[dict[str, str], list[str]]:
    """Installed peer libraries (name -> path) and install hints for the missing."""
    found: dict[str, str] = {}
    missing: list[str] = []
    dirs = [*(extra_dirs or []), *LIB_DIRS]
    for name, (files, pkg) in PEERS.items():
        path = next((str(Path(d) / f) for d in dirs for f in files if (Path(d) / f).exists()), None)
        if path:
            found[name] = path
        else:
            missing.append(f"{name}: apt-get install {pkg}")
    return found, missing


def build(src: Path, out: Path, cc: str = "cc") -> dict[str, Path]:
    """Compiles every workload and the launcher; returns name -> executable."""
    out.mkdir(parents=True, exist_ok=True)
    exes = {}
    for name in (*WORKLOADS, "launch"):
        exe = out / name
        subprocess.run(
            [
                cc,
                "-O2",
                "-pthread",
                "-fno-builtin-malloc",
                "-fno-builtin-free",
                "-o",
                str(exe),
                str(src / f"{name}.c"),
                "-lm",
            ],
            check=True,
            capture_output=True,
        )
        exes[name] = exe
    del exes["launch"]  # used by run_once, not a workload
    return exes


def run_once(
    exe: Path, threads: int, scale: float, preload: str | None, env: dict[str, str] | None = None
) -> tuple[float, int]:
    """One run through the launcher (``launch`` beside ``exe``): wall
    seconds and the workload's peak RSS in KiB."""
    e = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "WORKLOAD_PRELOAD")}
    if preload:
        e["WORKLOAD_PRELOAD"] = preload
    e.update(env or {})
    t0 = time.perf_counter()
    out = subprocess.run(
        [str(exe.parent / "launch"), str(exe), str(threads), str(scale)],
        env=e,
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(
            f"{exe.name} {threads} under {preload}: exit {out.returncode}: {out.stderr[-500:]}"
        )
    return wall, int(out.stdout.split()[-1])


@dataclass
class Row:
    workload: str
    threads: int
    times: dict[str, float] = field(default_factory=dict)
    rss: dict[str, int] = field(default_factory=dict)


def run_suite(
    exes: dict[str, Path],
    allocators: dict[str, str | None],
    threads: list[int],
    scale: float = 1.0,
    repeats: int = 3,
    profiles: dict[str, dict[str, str]] | None = None,
    progress=None,
) -> list[Row]:
    """Median time and RSS of every workload x allocator x thread count.

    ``allocators``: name -> LD_PRELOAD path (None: glibc). ``profiles``:
    extra name -> env for the slabcache library (e.g. the hardened profile),
    run with ``allocators['slabcache']``. Runs interleave allocators per
    repeat, so load drift hits all of them alike.
    """
    runs: dict[str, tuple[str | None, dict[str, str]]] = {n: (p, {}) for n, p in allocators.items()}
    for name, env in (profiles or {}).items():
        runs[name] = (allocators["slabcache"], env)
    rows = []
    for t in threads:
        for w, exe in exes.items():
            row = Row(w, t)
            samples: dict[str, list[tuple[float, int]]] = {n: [] for n in runs}
            for _ in range(repeats):
                for n, (lib, env) in runs.items():
                    samples[n].append(run_once(exe, t, scale, lib, env))
            for n, s in samples.items():
                row.times[n] = statistics.median(x[0] for x in s)
                row.rss[n] = int(statistics.median(x[1] for x in s))
            rows.append(row)
            if progress:
                progress(row)
    return rows


def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def table(rows: list[Row], threads: int) -> str:
    """Markdown table for one thread count: time and RSS ratios vs glibc."""
    sel = [r for r in rows if r.threads == threads]
    if not sel:
        return ""
    names = [n for n in sel[0].times if n != "glibc"]
    head = "| workload | glibc s | " + " | ".join(f"{n} time" for n in names)
    head += " | " + " | ".join(f"{n} RSS" for n in names) + " |"
    out = [head, "|" + "---|" * (2 + 2 * len(names))]
    ratios: dict[str, list[float]] = {n: [] for n in names}
    rss: dict[str, list[float]] = {n: [] for n in names}
    for r in sel:
        g, gr = r.times["glibc"], r.rss["glibc"]
        cells = [f"{r.times[n] / g:.2f}x" for n in names]
        cells += [f"{r.rss[n] / gr:.2f}x" for n in names]
        for n in names:
            ratios[n].append(r.times[n] / g)
            rss[n].append(r.rss[n] / gr)
        out.append(f"| {r.workload} | {g:.3f} | " + " | ".join(cells) + " |")
    out.append(
        "| **geomean** | | "
        + " | ".join(f"**{geomean(ratios[n]):.2f}x**" for n in names)
        + " | "
        + " | ".join(f"**{geomean(rss[n]):.2f}x**" for n in names)
        + " |"
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", required=True, help="libslabcache_malloc.so (--features preload)")
    here = Path(__file__).resolve()
    ap.add_argument("--src", default=str(here.parents[3] / "bench" / "alloc_workloads"))
    ap.add_argument("--bin", help="directory of prebuilt workload executables (skips cc)")
    ap.add_argument("--peers-dir", action="append", default=[], help="extra peer .so dir")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, min(16, os.cpu_count() or 1)])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="workloads to run")
    ap.add_argument("--no-hardened", action="store_true")
    ap.add_argument("--json", help="write raw results here")
    a = ap.parse_args(argv)
    if a.bin:
        exes = {w: Path(a.bin).resolve() / w for w in WORKLOADS}
    else:
        if shutil.which("cc") is None:
            print("cc is not installed (apt-get install gcc)", file=sys.stderr)
            return 2
        exes = build(Path(a.src), Path(tempfile.mkdtemp(prefix="alloc_workloads_")))
    if a.only:
        exes = {w: e for w, e in exes.items() if w in a.only}
    peers, missing = find_peers(a.peers_dir)
    for m in missing:
        print(f"peer missing, {m}", file=sys.stderr)
    allocators: dict[str, str | None] = {"glibc": None, "slabcache": str(Path(a.lib).resolve())}
    allocators.update(peers)
    profiles = {} if a.no_hardened else {"slabcache-hardened": {"SLABCACHE_PROFILE": "hardened"}}

    def show(r: Row) -> None:
        g = r.times["glibc"]
        print(
            f"{r.workload:15s} {r.threads:3d}T glibc {g:.3f}s "
            + " ".join(f"{n} {v / g:.2f}x" for n, v in r.times.items() if n != "glibc"),
            flush=True,
        )

    rows = run_suite(exes, allocators, a.threads, a.scale, a.repeats, profiles, show)
    for t in a.threads:
        print(f"\n### {t} thread(s)\n")
        print(table(rows, t))
    if a.json:
        Path(a.json).write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
