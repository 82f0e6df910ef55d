"""Memory per entry, BSkipList vs SortedDict, int and str values (RSS, fresh processes).

``python bench/skiplist_memory.py [N]``: the memory rows of ``slabcache bench
skiplist`` (``_rss_per_entry``: each map built in its own subprocess from inputs
made beforehand and kept alive, RSS growth divided by N), for int -> int and
int -> str maps.
"""

from __future__ import annotations

import sys

from slabcache.benchmarks.skiplist import _rss_per_entry


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    for kind in ("int", "str"):
        o = _rss_per_entry(n, "bskiplist", kind)
        p = _rss_per_entry(n, "sorteddict", kind)
        if o is None or p is None:
            raise SystemExit("measurement failed (psutil and sortedcontainers installed?)")
        print(
            f"memory per int->{kind} entry ({n:,}, RSS): "
            f"BSkipList {o:.2f} B  SortedDict {p:.2f} B  ratio {p / o:.2f}x less"
        )


if __name__ == "__main__":
    main()
