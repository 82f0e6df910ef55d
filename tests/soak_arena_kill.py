#!/usr/bin/env python3
"""Soak run of the arena kill -9 trials (not collected by pytest).

    python tests/soak_arena_kill.py --trials 1000 [--seed 1] [--path DIR]

Same loop as ``tests/test_arena_crash.py`` (child writes with sync="always",
acks on a pipe, SIGKILL at a random moment, reopen, check every acked key byte
for byte), for as many trials as asked; every fifth trial kills inside a large
compaction. Prints a summary; exits non-zero on the first lost or wrong value.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from arena_crash_harness import run_trials  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--max-delay", type=float, default=0.08, help="longest delay before the kill (s)"
    )
    ap.add_argument("--compact-every", type=int, default=5)
    ap.add_argument("--path", help="arena directory (default: a fresh temp dir)")
    args = ap.parse_args()
    path = args.path or str(Path(tempfile.mkdtemp(prefix="arena-soak-")) / "soak.arena")
    t0 = time.perf_counter()
    stats = run_trials(
        path, args.trials, args.seed, args.compact_every, args.max_delay, progress=True
    )
    dt = time.perf_counter() - t0
    print(
        f"{stats.trials} kill -9 trials in {dt:.0f} s: {stats.acked_ops} acknowledged ops, "
        f"{stats.kills_in_compaction} kills inside compaction, "
        f"{stats.checked_keys} key checks, nothing lost ({path})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
