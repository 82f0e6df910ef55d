"""Shared pieces of the benchmark suites: timing, results, rich rendering.

Figures are always taken against a peer in the same run and reported as a
ratio, because absolute times drift on shared machines.

    >>> from slabcache.benchmarks.report import Measurement
    >>> m = Measurement("alloc+free 64 B", 50.0, "ns/op", "numpy.empty", 100.0)
    >>> m.speedup
    2.0
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table


@dataclass
class Measurement:
    """One benchmark figure: slabcache's value, and the peer's from the same run.

    ``speedup`` is > 1 when slabcache is better, whichever way the unit points.
    """

    case: str
    ours: float
    unit: str
    peer: str | None = None
    peer_value: float | None = None
    higher_is_better: bool = False
    suite: str = ""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def speedup(self) -> float | None:
        if self.peer_value is None or self.ours == 0 or self.peer_value == 0:
            return None
        if self.higher_is_better:
            return self.ours / self.peer_value
        return self.peer_value / self.ours

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["speedup"] = self.speedup
        return d


@dataclass
class BenchContext:
    """What a suite gets: the size switch, the console and a progress bar."""

    quick: bool = False
    console: Console = field(default_factory=Console)
    progress: Progress | None = None

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Callable[[], None]]:
        """A progress-bar task; the yielded function advances it by one."""
        if self.progress is None:
            yield lambda: None
            return
        tid = self.progress.add_task(description, total=total)
        try:
            yield lambda: self.progress.advance(tid)  # type: ignore[union-attr]
        finally:
            self.progress.remove_task(tid)


def make_progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def time_per_call(fn: Callable[[], object], *, number: int, repeat: int = 5) -> float:
    """Best-of-``repeat`` mean seconds per call of ``fn`` over ``number`` calls.

    The minimum of repeats is the least noisy estimate on a shared machine.
    """
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter_ns() - t0) / number)
    return best / 1e9


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def render(results: list[Measurement], console: Console, title: str = "slabcache bench") -> None:
    """Prints results as a rich table, one row a measurement."""
    table = Table(title=title, show_lines=False)
    for col, justify in (
        ("suite", "left"),
        ("case", "left"),
        ("slabcache", "right"),
        ("peer", "left"),
        ("peer value", "right"),
        ("unit", "left"),
        ("ratio", "right"),
        ("note", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for m in results:
        s = m.speedup
        ratio = "-" if s is None else f"[{'green' if s >= 1 else 'red'}]{s:.2f}x[/]"
        table.add_row(
            m.suite, m.case, _fmt(m.ours), m.peer or "-", _fmt(m.peer_value), m.unit, ratio, m.note
        )
    console.print(table)
    console.print("ratio > 1 means slabcache is better than the peer in this run.")


def write_json(results: list[Measurement], path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump([m.to_dict() for m in results], f, indent=2)
