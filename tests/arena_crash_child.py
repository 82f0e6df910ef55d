"""Child process of the kill -9 crash tests (not a test module).

Writes to an arena with ``sync="always"`` and reports on stdout, one line each:

- ``R`` once open (ready),
- ``P key version`` before a put, ``A key version`` once the put returned (acked),
- ``X key`` before a delete, ``D key`` once it returned (acked),
- ``C`` before a compaction, ``c`` after it.

Values are ``value_for(key, version)``, so the parent can check exact bytes.
Usage: ``python arena_crash_child.py PATH FIRST_VERSION MODE SEED`` where MODE is
``mixed`` (puts, overwrites, deletes, frequent auto-compaction and checkpoints) or
``compact`` (fill, then one large compaction the parent kills).
"""

from __future__ import annotations

import os
import random
import sys


def value_for(key: str, version: int, size: int | None = None) -> bytes:
    """Deterministic, self-describing value of ``key`` at ``version``: ``key:version:size:...``."""
    if size is None:
        size = 16 + (version * 2654435761 + len(key)) % 700
    head = f"{key}:{version}:{size}:".encode()
    body = (head * (size // len(head) + 1))[:size]
    return head + body


def parse_value(value: bytes) -> tuple[str, int, int]:
    """``(key, version, size)`` of a value made by :func:`value_for`."""
    key, version, size, _ = value.split(b":", 3)
    return key.decode(), int(version), int(size)


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def main() -> None:
    path, first_version, mode, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    from slabcache import BlobArena

    rng = random.Random(seed)
    version = first_version
    if mode == "compact":
        ar = BlobArena(path, sync="always", auto_compact=False)
        say("R")
        # The same 48 names every time: live data stays small, dead bytes pile up.
        keys = [f"big{i}" for i in range(48)]
        for k in keys:
            say(f"P {k} {version}")
        ar.put_many(keys, [value_for(k, version, 256 * 1024) for k in keys])
        for k in keys:
            say(f"A {k} {version}")
        for k in keys[::2]:
            say(f"X {k}")
            ar.delete(k)
            say(f"D {k}")
        key = f"k{rng.randrange(64)}"
        ar.put(key, value_for(key, version))
        say(f"A {key} {version}")
        say("C")
        ar.compact()
        say("c")
        ar.close()
        return
    ar = BlobArena(
        path,
        sync="always",
        checkpoint_bytes=16 * 1024,
        compact_min_dead_bytes=32 * 1024,
        compact_dead_ratio=0.3,
    )
    say("R")
    dkey = 0
    while True:
        version += 1
        r = rng.random()
        if r < 0.1:
            name = f"d{version}"
            ar.put(name, value_for(name, version))
            say(f"A {name} {version}")
            say(f"X {name}")
            ar.delete(name)
            say(f"D {name}")
            dkey += 1
        elif r < 0.15:
            say("C")
            ar.compact()
            say("c")
        elif r < 0.3:
            keys = [f"k{rng.randrange(64)}" for _ in range(4)]
            keys = list(dict.fromkeys(keys))
            for k in keys:
                say(f"P {k} {version}")
            ar.put_many(keys, [value_for(k, version) for k in keys])
            for k in keys:
                say(f"A {k} {version}")
        else:
            key = f"k{rng.randrange(64)}"
            say(f"P {key} {version}")
            ar.put(key, value_for(key, version))
            say(f"A {key} {version}")


if __name__ == "__main__":
    main()
