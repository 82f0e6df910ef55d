"""Single-item calls, BSkipList vs SortedDict, interleaved repeats (for a loaded machine).

``python bench/skiplist_single_calls.py [N] [REPEATS]``: builds both maps from the
same N random int keys (int values; a second pair with str values for the
"str values" row), then times 20k calls of each kind, alternating ours and
the peer's each repeat, and prints the best time per call of each and their
ratio (> 1: BSkipList faster). Alternating keeps a load spike from
landing on one side only.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from sortedcontainers import SortedDict

from slabcache import BSkipList


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    rng = np.random.default_rng(7)
    keys = rng.permutation(n * 4)[:n].astype(np.int64)
    d = dict(zip(keys.tolist(), rng.integers(0, 2**40, n).tolist(), strict=True))
    ours, peer = BSkipList(d), SortedDict(d)
    # Object values: a read returns a reference to a stored object (an int
    # value is stored unboxed and comes back as a new int).
    ds = {k: str(v) for k, v in d.items()}
    ours_s, peer_s = BSkipList(ds), SortedDict(ds)
    calls = keys[rng.integers(0, n, 20_000)].tolist()
    fresh = np.setdiff1d(np.arange(n * 4, dtype=np.int64), keys)[:20_000]
    fresh = rng.permutation(fresh).tolist()

    def set_del(m):  # type: ignore[no-untyped-def]
        for k in fresh:
            m[k] = 1
        for k in fresh:
            del m[k]

    cases = {
        "m[k]": lambda m: [m[k] for k in calls],
        "m[k], str values": None,
        "k in m": lambda m: [k in m for k in calls],
        "m.get(k)": lambda m: [m.get(k) for k in calls],
        "m.peekitem()": lambda m: [m.peekitem() for _ in calls],
        "m.peekitem(0)": lambda m: [m.peekitem(0) for _ in calls],
        "m.bisect_left(k)": lambda m: [m.bisect_left(k) for k in calls],
        "m[k] = v; del m[k] (new keys)": set_del,
    }
    print(f"{n:,} keys, 20k calls, best of {repeats} interleaved repeats")
    for name, fn in cases.items():
        best = {"ours": float("inf"), "peer": float("inf")}
        for _ in range(repeats):
            pair = (ours_s, peer_s) if fn is None else (ours, peer)
            for side, m in zip(("ours", "peer"), pair, strict=True):
                t0 = time.perf_counter_ns()
                (fn or cases["m[k]"])(m)
                best[side] = min(best[side], time.perf_counter_ns() - t0)
        per = 2 if name.startswith("m[k] =") else 1
        o, p = best["ours"] / 20_000 / per, best["peer"] / 20_000 / per
        print(f"{name:32s} BSkipList {o:8.0f} ns  SortedDict {p:8.0f} ns  ratio {p / o:5.2f}x")


if __name__ == "__main__":
    main()
