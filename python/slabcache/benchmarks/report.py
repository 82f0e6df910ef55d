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
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape as esc
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
    #: The ``speedup`` this row must reach to pass (✓/✗ in the table); ``None`` means 1.0
    #: when the row has a peer, and no mark when it has none.
    target: float | None = None

    @property
    def goal(self) -> float | None:
        """The target actually applied: ``target``, else 1.0 if there is a peer value."""
        if self.target is not None:
            return self.target
        return 1.0 if self.peer_value is not None else None

    @property
    def passed(self) -> bool | None:
        """Whether ``speedup`` reaches ``goal``; ``None`` when either is unknown."""
        s, g = self.speedup, self.goal
        if s is None or g is None:
            return None
        return s >= g

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
        d["passed"] = self.passed
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        """The inverse of :meth:`to_dict` (derived keys are dropped), for ``--compare``."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def key(self) -> tuple[str, str, str]:
        """What identifies the row across runs: suite, case and peer."""
        return (self.suite, self.case, self.peer or "")


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


def _ratio_cell(m: Measurement) -> str:
    s = m.speedup
    if s is None:
        return "-"
    mark = {True: " [green]✓[/]", False: " [red]✗[/]", None: ""}[m.passed]
    colour = "green" if m.passed or (m.passed is None and s >= 1) else "red"
    goal = m.goal
    need = f"[dim]≥{goal:g}[/] " if goal is not None and goal != 1.0 else ""
    return f"{need}[{colour}]{s:.2f}x[/]{mark}"


def _by_suite(results: list[Measurement]) -> dict[str, list[Measurement]]:
    suites: dict[str, list[Measurement]] = {}
    for m in results:
        suites.setdefault(m.suite or "-", []).append(m)
    return suites


def render(
    results: list[Measurement],
    console: Console,
    title: str = "slabcache bench",
    *,
    wide: bool = False,
) -> None:
    """Prints results: one compact table per suite (fits 80 columns), notes under it.

    ``wide=True`` prints the single wide table of every column instead.
    """
    if wide:
        _render_wide(results, console, title)
        return
    console.print(f"[bold]{title}[/]  ratio > 1: slabcache better; ✓/✗ against the row's target")
    for suite, rows in _by_suite(results).items():
        peers = sorted({m.peer for m in rows if m.peer})
        one_peer = len(peers) == 1
        heading = f"[bold]{esc(suite)}[/]" + (f" vs {esc(peers[0])}" if one_peer else "")
        table = Table(
            title=heading, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, expand=True
        )
        table.add_column("case", overflow="fold", ratio=1)
        table.add_column("slabcache", justify="right", no_wrap=True)
        if not one_peer:
            table.add_column("peer", no_wrap=True, max_width=12, overflow="ellipsis")
        table.add_column("peer", justify="right", no_wrap=True)
        table.add_column("ratio", justify="right", no_wrap=True)
        notes: list[str] = []
        for m in rows:
            case = esc(m.case)
            if m.note:
                if m.note not in notes:
                    notes.append(m.note)
                case += f" [dim]\\[{notes.index(m.note) + 1}][/]"
            cells = [case, f"{_fmt(m.ours)} [dim]{esc(m.unit)}[/]"]
            if not one_peer:
                cells.append(esc(m.peer or "-"))
            cells += [_fmt(m.peer_value), _ratio_cell(m)]
            table.add_row(*cells)
        console.print(table)
        for i, note in enumerate(notes, 1):
            console.print(f"[dim]\\[{i}][/] {esc(note)}", highlight=False)
        cut = [p for p in peers if len(p) > 12 and not one_peer]
        if cut:
            console.print(f"[dim]peers: {esc('; '.join(cut))}[/]", highlight=False)
        console.print()
    passed = [m.passed for m in results if m.passed is not None]
    if passed:
        console.print(f"{sum(passed)} of {len(passed)} rows reach their target.")


def _render_wide(results: list[Measurement], console: Console, title: str) -> None:
    table = Table(title=title, show_lines=False)
    for col, justify in (
        ("suite", "left"),
        ("case", "left"),
        ("slabcache", "right"),
        ("peer", "left"),
        ("peer value", "right"),
        ("unit", "left"),
        ("ratio", "right"),
        ("target", "right"),
        ("note", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for m in results:
        goal = m.goal
        table.add_row(
            esc(m.suite),
            esc(m.case),
            _fmt(m.ours),
            esc(m.peer or "-"),
            _fmt(m.peer_value),
            esc(m.unit),
            _ratio_cell(m),
            "-" if goal is None else f"{goal:g}x",
            esc(m.note),
        )
    console.print(table)
    console.print("ratio > 1 means slabcache is better than the peer in this run.")


def write_json(results: list[Measurement], path: str) -> None:
    """Writes ``results`` as a JSON list of :meth:`Measurement.to_dict` rows."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump([m.to_dict() for m in results], f, indent=2)


def read_json(path: str) -> list[Measurement]:
    """Reads a file written by :func:`write_json` (``slabcache bench --json``)."""
    with open(path, encoding="utf-8") as f:
        rows = json.load(f)
    if not isinstance(rows, list):
        raise ValueError(f"{path}: not a list of benchmark rows")
    return [Measurement.from_dict(r) for r in rows]


def _change(new: Measurement, old: Measurement) -> float | None:
    """How much better ``new`` is than ``old`` (> 1: better), by the row's own direction."""
    if new.ours == 0 or old.ours == 0:
        return None
    return new.ours / old.ours if new.higher_is_better else old.ours / new.ours


def compare(
    results: list[Measurement],
    old: list[Measurement],
    console: Console,
    *,
    tolerance: float = 0.10,
) -> int:
    """Prints each row against the same row of an earlier run; returns the regressions.

    A row regressed when its ratio against the peer (or, without a peer, its own value) got
    worse by more than ``tolerance``. The ratio against the same-run peer is the figure
    compared first, since it survives a change of machine or load; the raw change is shown too.

        >>> from io import StringIO
        >>> a = [Measurement("get", 2.0, "us", "lmdb", 2.0, suite="arena")]
        >>> b = [Measurement("get", 1.0, "us", "lmdb", 2.0, suite="arena")]
        >>> compare(a, b, Console(file=StringIO()))
        1
    """
    before = {m.key: m for m in old}
    table = Table(title="against the earlier run", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("suite / case", overflow="fold", ratio=1)
    table.add_column("ratio then", justify="right", no_wrap=True)
    table.add_column("now", justify="right", no_wrap=True)
    table.add_column("own value", justify="right", no_wrap=True)
    regressions = 0
    missing = 0
    for m in results:
        o = before.get(m.key)
        if o is None:
            missing += 1
            continue
        raw = _change(m, o)
        then, now = o.speedup, m.speedup
        if then is not None and now is not None:
            worse = now < then * (1 - tolerance)
        else:
            worse = raw is not None and raw < 1 - tolerance
        regressions += worse
        colour = "red" if worse else "green"
        table.add_row(
            esc(f"{m.suite}: {m.case}") + (f" [dim]vs {esc(m.peer)}[/]" if m.peer else ""),
            "-" if then is None else f"{then:.2f}x",
            "-" if now is None else f"[{colour}]{now:.2f}x[/]",
            "-" if raw is None else f"[{colour}]{raw:.2f}x[/]",
        )
    console.print(table)
    console.print(
        f"{regressions} regression(s) beyond {tolerance:.0%}; {missing} row(s) new in this run. "
        "'own value' > 1: faster (or better) than the earlier run, on that run's machine."
    )
    return regressions
