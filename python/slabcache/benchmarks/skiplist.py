"""``slabcache bench skiplist``: BSkipList against ``sortedcontainers.SortedDict``.

Cases (int keys, int values, random order, 1M keys; 100k with ``--quick``):

- building a map: ``update_many(arrays)``, ``BSkipList(dict)`` and
  ``BSkipList(pairs)`` vs ``SortedDict(dict)`` / ``SortedDict(pairs)``;
- point gets: ``get_many`` (one call) vs a loop of ``SortedDict[k]``;
- single-item calls, one Python call per key, against the same call on
  SortedDict: ``m[k]``, ``in``, ``get``, ``peekitem()``, ``peekitem(0)``,
  ``bisect_left``, ``m[k] = v`` (new keys) and ``del m[k]``, and an insert
  followed by a ``bisect_left`` (positions right after writes);
- 1000-item range scan: ``range_arrays`` vs ``list(SortedDict.irange)``,
  and the lazy ``irange`` vs ``irange``;
- memory per entry (RSS growth in a fresh subprocess, psutil).

    >>> from slabcache.benchmarks.report import BenchContext
    >>> results = run(BenchContext(quick=True))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from typing import Any

import numpy as np

from ..skiplist import BSkipList
from .report import BenchContext, Measurement, time_per_call

try:  # a peer: optional
    from sortedcontainers import SortedDict
except ImportError:  # pragma: no cover - depends on the environment
    SortedDict = None

PEER = "sortedcontainers.SortedDict"

_RSS_SCRIPT = textwrap.dedent(
    """
    import gc, json, sys
    import numpy as np, psutil
    n, which, kind = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    rng = np.random.default_rng(1)
    keys = rng.permutation(n * 4)[:n].astype(np.int64)
    values = rng.integers(0, 2**40, n, dtype=np.int64)
    # str values: made before the measurement and kept alive, for both maps
    # (what is measured is what the map adds, not the objects it refers to).
    strs = [str(v) for v in values.tolist()] if kind == "str" else None
    if which == "sorteddict":
        from sortedcontainers import SortedDict
        klist, vlist = keys.tolist(), strs if strs is not None else values.tolist()
    else:
        from slabcache import BSkipList
    gc.collect()
    try:  # free heap the inputs' temporaries left goes back to the OS first
        import ctypes
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
    proc = psutil.Process()
    before = proc.memory_info().rss
    # The inputs stay alive: the growth is what the map itself adds (for
    # SortedDict that excludes the int objects, which its input lists hold too).
    if which == "sorteddict":
        m = SortedDict(zip(klist, vlist))
    else:
        m = BSkipList("int")
        m.update_many(keys, values if strs is None else strs)
    gc.collect()
    after = proc.memory_info().rss
    assert len(m) == n
    print(json.dumps({"bytes_per_entry": (after - before) / n}))
    """
)


def _rss_per_entry(n: int, which: str, kind: str = "int") -> float | None:
    try:
        out = subprocess.run(
            [sys.executable, "-c", _RSS_SCRIPT, str(n), which, kind],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
    except (subprocess.SubprocessError, OSError):
        return None
    return float(json.loads(out.stdout.strip().splitlines()[-1])["bytes_per_entry"])


def _data(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    keys = rng.permutation(n * 4)[:n].astype(np.int64)
    values = rng.integers(0, 2**40, n, dtype=np.int64)
    return keys, values


def _pair(
    out: list[Measurement],
    case: str,
    ours: float,
    peer: float | None,
    unit: str,
    scale: float,
    note: str = "",
) -> None:
    out.append(
        Measurement(
            case,
            ours * scale,
            unit,
            PEER if peer is not None else None,
            None if peer is None else peer * scale,
            note=note,
        )
    )


def run(ctx: BenchContext) -> list[Measurement]:
    n = 100_000 if ctx.quick else 1_000_000
    n_get = 20_000 if ctx.quick else 200_000
    n_call = 20_000 if ctx.quick else 100_000
    repeat = 3 if ctx.quick else 5
    keys, values = _data(n)
    klist, vlist = keys.tolist(), values.tolist()
    as_dict = dict(zip(klist, vlist, strict=True))
    as_pairs = list(as_dict.items())
    have_peer = SortedDict is not None
    out: list[Measurement] = []
    missing = "" if have_peer else "sortedcontainers not installed"

    def timed(fn, number: int = 1) -> float:  # type: ignore[no-untyped-def]
        return time_per_call(fn, number=number, repeat=repeat)

    def peer_timed(fn, number: int = 1) -> float | None:  # type: ignore[no-untyped-def]
        return timed(fn, number) if have_peer else None

    with ctx.task("skiplist", total=7) as advance:
        # 1. Building a map: from numpy arrays, from a dict, from pairs.
        def ours_arrays() -> None:
            m = BSkipList("int")
            m.update_many(keys, values)

        _pair(
            out,
            f"build {n:,} int keys: update_many(arrays) vs SortedDict(dict)",
            timed(ours_arrays),
            peer_timed(lambda: SortedDict(as_dict)),
            "ms",
            1e3,
            missing,
        )
        _pair(
            out,
            f"build {n:,} int keys: BSkipList(dict) vs SortedDict(dict)",
            timed(lambda: BSkipList(as_dict)),
            peer_timed(lambda: SortedDict(as_dict)),
            "ms",
            1e3,
            missing,
        )
        _pair(
            out,
            f"build {n:,} int keys: from a list of pairs",
            timed(lambda: BSkipList(as_pairs)),
            peer_timed(lambda: SortedDict(as_pairs)),
            "ms",
            1e3,
            missing,
        )
        advance()

        m = BSkipList(as_dict)
        sd = SortedDict(as_dict) if have_peer else None
        rng = np.random.default_rng(3)
        probe = keys[rng.integers(0, n, n_get)]
        calls = probe[:n_call].tolist()
        fresh = (np.setdiff1d(np.arange(n * 4, dtype=np.int64), keys)[:n_call]).tolist()
        rng.shuffle(fresh)

        # 2. Batched point gets (one core: the parallel path is off below 4 threads).
        _pair(
            out,
            f"point gets x{n_get:,} (get_many vs a SortedDict[k] loop)",
            timed(lambda: m.get_many(probe)),
            None if sd is None else timed(lambda: [sd[k] for k in probe.tolist()]),
            "ns/key",
            1e9 / n_get,
            missing,
        )
        advance()

        # 3. Single-item calls, one Python call each.
        single = [
            ("m[k]", lambda: [m[k] for k in calls], lambda: [sd[k] for k in calls]),
            ("k in m", lambda: [k in m for k in calls], lambda: [k in sd for k in calls]),
            (
                "m.get(k)",
                lambda: [m.get(k) for k in calls],
                lambda: [sd.get(k) for k in calls],
            ),
            (
                "m.peekitem() (last)",
                lambda: [m.peekitem() for _ in calls],
                lambda: [sd.peekitem() for _ in calls],
            ),
            (
                "m.peekitem(0)",
                lambda: [m.peekitem(0) for _ in calls],
                lambda: [sd.peekitem(0) for _ in calls],
            ),
            (
                "m.bisect_left(k) (no writes between calls)",
                lambda: [m.bisect_left(k) for k in calls],
                lambda: [sd.bisect_left(k) for k in calls],
            ),
        ]
        for name, ours_fn, peer_fn in single:
            _pair(
                out,
                f"{name}, one call per key",
                timed(ours_fn),
                None if sd is None else timed(peer_fn),
                "ns/call",
                1e9 / len(calls),
                missing,
            )
        advance()

        # 4. Writes one at a time: insert new keys, then delete them again
        # (each pass restores the map, so repeats measure the same thing).
        def ours_set_del() -> tuple[float, float]:
            t0 = time.perf_counter_ns()
            for k in fresh:
                m[k] = 1
            t1 = time.perf_counter_ns()
            for k in fresh:
                del m[k]
            return (t1 - t0) / 1e9, (time.perf_counter_ns() - t1) / 1e9

        def peer_set_del() -> tuple[float, float]:
            t0 = time.perf_counter_ns()
            for k in fresh:
                sd[k] = 1
            t1 = time.perf_counter_ns()
            for k in fresh:
                del sd[k]
            return (t1 - t0) / 1e9, (time.perf_counter_ns() - t1) / 1e9

        o = [ours_set_del() for _ in range(repeat)]
        p = [peer_set_del() for _ in range(repeat)] if sd is not None else None
        for i, name in enumerate(("m[k] = v (new key)", "del m[k]")):
            _pair(
                out,
                f"{name}, one call per key",
                min(x[i] for x in o),
                None if p is None else min(x[i] for x in p),
                "ns/call",
                1e9 / len(fresh),
                missing,
            )

        # Positions between writes: each insert is followed by a bisect
        # (SortedDict keeps positions in its index; ours keeps a position
        # index current across single-key writes).
        def set_bisect(mm: Any) -> float:  # BSkipList or SortedDict
            t0 = time.perf_counter_ns()
            for k in fresh:
                mm[k] = 1
                mm.bisect_left(k)
            t = (time.perf_counter_ns() - t0) / 1e9
            for k in fresh:
                del mm[k]
            return t

        _pair(
            out,
            "m[k] = v then m.bisect_left(k), alternating (new keys)",
            min(set_bisect(m) for _ in range(repeat)),
            None if sd is None else min(set_bisect(sd) for _ in range(repeat)),
            "ns/pair",
            1e9 / len(fresh),
            missing,
        )
        advance()

        # 5. 1000-item range scans.
        sorted_keys = np.sort(keys)
        starts = rng.integers(0, n - 1001, 200)
        bounds = [(int(sorted_keys[s]), int(sorted_keys[s + 1000])) for s in starts]
        half_open = (True, False)
        t_peer = (
            timed(lambda: [list(sd.irange(lo, hi, inclusive=half_open)) for lo, hi in bounds])
            if sd is not None
            else None
        )
        _pair(
            out,
            "1000-item range scan (range_arrays vs list(irange))",
            timed(lambda: [m.range_arrays(lo, hi, inclusive=half_open) for lo, hi in bounds]),
            t_peer,
            "us/scan",
            1e6 / len(bounds),
            missing or "ours returns keys and values",
        )
        _pair(
            out,
            "1000-item range scan (lazy irange vs irange)",
            timed(lambda: [list(m.irange(lo, hi, inclusive=half_open)) for lo, hi in bounds]),
            t_peer,
            "us/scan",
            1e6 / len(bounds),
            missing,
        )
        advance()

        # 6. Memory per entry, each in a fresh process.
        n_mem = 200_000 if ctx.quick else 1_000_000
        for kind in ("int", "str"):
            ours_mem = _rss_per_entry(n_mem, "bskiplist", kind)
            peer_mem = _rss_per_entry(n_mem, "sorteddict", kind) if have_peer else None
            if ours_mem is not None:
                _pair(
                    out,
                    f"memory per int->{kind} entry ({n_mem:,} entries, RSS)",
                    ours_mem,
                    peer_mem,
                    "bytes",
                    1.0,
                    missing,
                )
        advance()
    return out
