"""Child of the semantic-cache crash test: inserts entries, printing each acknowledged key.

Usage: semantic_crash_child.py PATH SYNC SEED. Prints ``ack <key> <i>`` after
each insert returns; the parent SIGKILLs it at a random moment. Entry ``i``'s
vector and payload are a pure function of ``i``, so the parent can check them.
(Not a test module.)
"""

from __future__ import annotations

import sys

import numpy as np

from slabcache import SemanticCache

DIM = 24


def vector_for(i: int) -> np.ndarray:
    v = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def payload_for(i: int) -> bytes:
    return (f"answer-{i}-" * (1 + i % 7)).encode()


def scope_for(i: int) -> str:
    return f"model-{i % 3}"


def main() -> None:
    path, sync, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cache = SemanticCache(path, dim=DIM, sync=sync, trap_guard=False)
    start = len(cache) + seed * 100_000
    i = start
    print("ready", flush=True)
    while True:
        if i % 5 == 4:
            vs = np.stack([vector_for(j) for j in range(i, i + 4)])
            keys = cache.insert_many(
                vs,
                [payload_for(j) for j in range(i, i + 4)],
                scopes=[scope_for(j) for j in range(i, i + 4)],
            )
            for j, k in zip(range(i, i + 4), keys, strict=True):
                print(f"ack {k} {j}", flush=True)
            i += 4
        else:
            k = cache.insert(vector_for(i), payload_for(i), scope=scope_for(i), text=f"prompt {i}")
            print(f"ack {k} {i}", flush=True)
            i += 1


if __name__ == "__main__":
    main()
