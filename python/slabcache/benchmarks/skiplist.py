"""``slabcache bench skiplist``: BSkipList against ``sortedcontainers.SortedDict``.

Cases (int keys, int values, random order):

- bulk insert of N keys: ``update_many(keys, values)`` vs ``SortedDict.update``
  (the peer gets ready-made Python lists, its best case);
- point gets: ``get_many`` (one call) vs a loop of ``SortedDict[k]``, and a
  loop of ``m[k]`` vs the same loop (per-call overhead, for honesty);
- 1000-item range scan: ``range_arrays(lo, hi)`` vs ``list(SortedDict.irange(lo, hi))``,
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
    n, which = int(sys.argv[1]), sys.argv[2]
    rng = np.random.default_rng(1)
    keys = rng.permutation(n * 4)[:n].astype(np.int64)
    values = rng.integers(0, 2**40, n, dtype=np.int64)
    if which == "sorteddict":
        from sortedcontainers import SortedDict
        klist, vlist = keys.tolist(), values.tolist()
        del keys, values
    else:
        from slabcache import BSkipList
    gc.collect()
    proc = psutil.Process()
    before = proc.memory_info().rss
    if which == "sorteddict":
        m = SortedDict(zip(klist, vlist))
        del klist, vlist  # the map holds its own references to every int
    else:
        m = BSkipList("int")
        m.update_many(keys, values)
        del keys, values
    gc.collect()
    after = proc.memory_info().rss
    assert len(m) == n
    print(json.dumps({"bytes_per_entry": (after - before) / n}))
    """
)


def _rss_per_entry(n: int, which: str) -> float | None:
    try:
        out = subprocess.run(
            [sys.executable, "-c", _RSS_SCRIPT, str(n), which],
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


def run(ctx: BenchContext) -> list[Measurement]:
    n = 100_000 if ctx.quick else 1_000_000
    n_get = 20_000 if ctx.quick else 200_000
    repeat = 3 if ctx.quick else 5
    keys, values = _data(n)
    klist, vlist = keys.tolist(), values.tolist()
    have_peer = SortedDict is not None
    out: list[Measurement] = []
    note_missing = "" if have_peer else "sortedcontainers not installed"

    with ctx.task("skiplist", total=6) as advance:
        # 1. Bulk insert.
        def ours_insert() -> None:
            m = BSkipList("int")
            m.update_many(keys, values)

        def peer_insert() -> None:
            sd = SortedDict()
            sd.update(zip(klist, vlist, strict=False))

        t_ours = time_per_call(ours_insert, number=1, repeat=repeat)
        t_peer = time_per_call(peer_insert, number=1, repeat=repeat) if have_peer else None
        out.append(
            Measurement(
                f"bulk insert {n:,} int keys (update_many)",
                t_ours * 1e3,
                "ms",
                PEER if have_peer else None,
                None if t_peer is None else t_peer * 1e3,
                note=note_missing,
            )
        )
        advance()

        m = BSkipList("int")
        m.update_many(keys, values)
        sd = SortedDict(zip(klist, vlist, strict=False)) if have_peer else None
        rng = np.random.default_rng(3)
        probe = keys[rng.integers(0, n, n_get)]
        probe_list = probe.tolist()

        # 2. Point gets, batched.
        t_ours = time_per_call(lambda: m.get_many(probe), number=1, repeat=repeat)
        t_peer = (
            time_per_call(lambda: [sd[k] for k in probe_list], number=1, repeat=repeat)
            if sd is not None
            else None
        )
        out.append(
            Measurement(
                f"point gets x{n_get:,} (get_many vs loop)",
                t_ours / n_get * 1e9,
                "ns/key",
                PEER if sd is not None else None,
                None if t_peer is None else t_peer / n_get * 1e9,
                note=note_missing,
            )
        )
        advance()

        # 3. Point gets, one Python call each (per-call overhead).
        few = probe_list[:20_000]
        t_ours = time_per_call(lambda: [m[k] for k in few], number=1, repeat=repeat)
        t_peer = (
            time_per_call(lambda: [sd[k] for k in few], number=1, repeat=repeat)
            if sd is not None
            else None
        )
        out.append(
            Measurement(
                "point get m[k], one call per key",
                t_ours / len(few) * 1e9,
                "ns/key",
                PEER if sd is not None else None,
                None if t_peer is None else t_peer / len(few) * 1e9,
                note=note_missing or "dict lookup vs a native call: per-call overhead",
            )
        )
        advance()

        # 4. 1000-item range scans.
        sorted_keys = np.sort(keys)
        starts = rng.integers(0, n - 1001, 200)
        bounds = [(int(sorted_keys[s]), int(sorted_keys[s + 1000])) for s in starts]

        def ours_scan() -> None:
            for lo, hi in bounds:
                m.range_arrays(lo, hi, inclusive=(True, False))

        def peer_scan() -> None:
            for lo, hi in bounds:
                list(sd.irange(lo, hi, inclusive=(True, False)))

        t_ours = time_per_call(ours_scan, number=1, repeat=repeat) / len(bounds)
        t_peer = (
            time_per_call(peer_scan, number=1, repeat=repeat) / len(bounds)
            if sd is not None
            else None
        )
        out.append(
            Measurement(
                "1000-item range scan (range_arrays vs list(irange))",
                t_ours * 1e6,
                "us/scan",
                PEER if sd is not None else None,
                None if t_peer is None else t_peer * 1e6,
                note=note_missing or "ours returns keys and values",
            )
        )

        def ours_iscan() -> None:
            for lo, hi in bounds:
                list(m.irange(lo, hi, inclusive=(True, False)))

        t_ours = time_per_call(ours_iscan, number=1, repeat=repeat) / len(bounds)
        out.append(
            Measurement(
                "1000-item range scan (lazy irange vs irange)",
                t_ours * 1e6,
                "us/scan",
                PEER if sd is not None else None,
                None if t_peer is None else t_peer * 1e6,
                note=note_missing,
            )
        )
        advance()

        # 5. Memory per entry, each in a fresh process.
        n_mem = 200_000 if ctx.quick else 1_000_000
        ours_mem = _rss_per_entry(n_mem, "bskiplist")
        peer_mem = _rss_per_entry(n_mem, "sorteddict") if have_peer else None
        if ours_mem is not None:
            out.append(
                Measurement(
                    f"memory per int->int entry ({n_mem:,} entries, RSS)",
                    ours_mem,
                    "bytes",
                    PEER if peer_mem is not None else None,
                    peer_mem,
                    note=note_missing,
                )
            )
        advance()
    return out
