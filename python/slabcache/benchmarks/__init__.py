"""Benchmark suites behind ``slabcache bench``.

Each suite is a module here with a ``run(ctx: BenchContext) -> list[Measurement]``
function that times slabcache's real calls against a peer in the same run.
Suites are found by name, so a suite module is the only file a new one needs.

    >>> from slabcache.benchmarks import SUITE_NAMES
    >>> "allocator" in SUITE_NAMES
    True
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .report import BenchContext, Measurement, render, time_per_call

__all__ = [
    "SUITE_NAMES",
    "BenchContext",
    "Measurement",
    "load_suite",
    "render",
    "time_per_call",
]

#: Every suite ``slabcache bench`` knows, in the order it runs them.
SUITE_NAMES: tuple[str, ...] = ("allocator", "skiplist", "vectors", "arena", "blocks", "semantic")


def load_suite(name: str) -> ModuleType | None:
    """Imports suite ``name``; ``None`` if this build does not ship it yet."""
    if name not in SUITE_NAMES:
        raise ValueError(f"unknown benchmark suite {name!r}; known: {', '.join(SUITE_NAMES)}")
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__name__}.{name}":
            return None
        raise
