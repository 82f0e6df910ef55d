"""Single-item calls, BSkipList vs SortedDict, interleaved repeats (for a loaded machine).

``python bench/skiplist_single_calls.py [N] [REPEATS] [VALUES]``: builds both maps
from the same N random int keys, once per value kind in ``VALUES`` (comma
separated, default ``int,str,tuple``: ints, ``str`` objects, 2-tuples of an int
and a str; ``samestr``: one ``str`` object as every value, so a read never
misses the cache on the value object itself), then times 20k calls of each
kind, alternating ours and the peer's each repeat, and prints the best time
per call of each and their ratio (> 1: BSkipList faster). Alternating keeps a
load spike from landing on one side only.

An int value is stored unboxed and comes back as a new int; a str or tuple
value is a stored object, and a read returns a reference to it (as SortedDict's
dict does). Writes store a value of the same kind.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from sortedcontainers import SortedDict

from slabcache import BSkipList

CALLS = 20_000


def _values(kind: str, raw: list[int]) -> list[Any]:
    if kind == "int":
        return raw
    if kind == "str":
        return [str(v) for v in raw]
    if kind == "tuple":
        return [(v, str(v)) for v in raw]
    if kind == "samestr":
        return ["one shared value"] * len(raw)
    raise SystemExit(f"unknown value kind {kind!r} (int, str, tuple, samestr)")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    kinds = sys.argv[3].split(",") if len(sys.argv) > 3 else ["int", "str", "tuple"]
    rng = np.random.default_rng(7)
    keys = rng.permutation(n * 4)[:n].astype(np.int64)
    klist = keys.tolist()
    raw = rng.integers(0, 2**40, n).tolist()
    calls = keys[rng.integers(0, n, CALLS)].tolist()
    fresh = np.setdiff1d(np.arange(n * 4, dtype=np.int64), keys)[:CALLS]
    fresh = rng.permutation(fresh).tolist()
    print(f"{n:,} keys, {CALLS // 1000}k calls, best of {repeats} interleaved repeats")
    for kind in kinds:
        d = dict(zip(klist, _values(kind, raw), strict=True))
        ours, peer = BSkipList(d), SortedDict(d)
        new_vals = _values(kind, list(range(CALLS)))

        def set_del(m: Any, new_vals: list[Any] = new_vals) -> None:
            for k, v in zip(fresh, new_vals, strict=True):
                m[k] = v
            for k in fresh:
                del m[k]

        def replace(m: Any, new_vals: list[Any] = new_vals) -> None:
            for k, v in zip(calls, new_vals, strict=True):
                m[k] = v

        cases: dict[str, tuple[Callable[[Any], object], int]] = {
            "m[k]": (lambda m: [m[k] for k in calls], 1),
            "k in m": (lambda m: [k in m for k in calls], 1),
            "m.get(k)": (lambda m: [m.get(k) for k in calls], 1),
            "m.peekitem()": (lambda m: [m.peekitem() for _ in calls], 1),
            "m.peekitem(0)": (lambda m: [m.peekitem(0) for _ in calls], 1),
            "m.bisect_left(k)": (lambda m: [m.bisect_left(k) for k in calls], 1),
            "m[k] = v (replace)": (replace, 1),
            "m[k] = v; del m[k] (new keys)": (set_del, 2),
        }
        print(f"-- {kind} values")
        for name, (fn, per) in cases.items():
            best = {"ours": float("inf"), "peer": float("inf")}
            for _ in range(repeats):
                for side, m in (("ours", ours), ("peer", peer)):
                    t0 = time.perf_counter_ns()
                    fn(m)
                    best[side] = min(best[side], time.perf_counter_ns() - t0)
            o, p = best["ours"] / CALLS / per, best["peer"] / CALLS / per
            label = f"{name}, {kind} values"
            print(f"{label:44s} BSkipList {o:8.0f} ns  SortedDict {p:8.0f} ns  ratio {p / o:5.2f}x")
        del ours, peer, d


if __name__ == "__main__":
    main()
