"""``slabcache arena verify|stats|repair PATH``.

``verify`` and ``stats`` open the arena (which runs recovery: a torn WAL tail
is cut off; damage inside synced data makes the open fail, changing nothing)
with the writer lock, so they fail with a clear error while another process
writes it. ``repair`` salvages every record that still checks out into a new
generation, keeps the old files under ``salvaged-*/`` and lists what it dropped
(exit status 1 when something was dropped).

    >>> from slabcache.cli import build_parser
    >>> build_parser().parse_args(["arena", "stats", "x.arena"]).arena_command
    'stats'
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from .errors import SlabcacheError


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _table(title: str, rows: Mapping[str, Any]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    for k, v in rows.items():
        if isinstance(v, int) and ("bytes" in k):
            v = f"{_fmt_bytes(v)} ({v:,})"
        table.add_row(k, str(v))
    return table


def _cmd_arena(args: argparse.Namespace, console: Console) -> int:
    from .arena import BlobArena

    try:
        ar = BlobArena(args.path, sync="none", create=False, auto_compact=False)
    except SlabcacheError as exc:
        console.print(f"[red]{type(exc).__name__}: {exc}")
        return 1
    with ar:
        stats = ar.stats()
        rec = stats["recovery"]
        if args.arena_command == "stats":
            rows = {k: v for k, v in stats.items() if k != "recovery"}
            console.print(_table(f"arena {args.path}", rows))
            console.print(_table("recovery on open", rec))
            return 0
        try:
            report = ar.verify()
        except SlabcacheError as exc:
            console.print(f"[red]{type(exc).__name__}: {exc}")
            return 1
        console.print(_table(f"verify {args.path}", report))
        if rec["truncated_bytes"]:
            console.print(
                f"[yellow]recovery cut {rec['truncated_bytes']} bytes of torn WAL tail "
                f"({rec['stop_reason']})"
            )
        console.print("[green]ok: every checksum matches")
        return 0


def _cmd_repair(args: argparse.Namespace, console: Console) -> int:
    from .arena import BlobArena

    try:
        report = BlobArena.repair(args.path)
    except SlabcacheError as exc:
        console.print(f"[red]{type(exc).__name__}: {exc}")
        return 1
    dropped = report["dropped"]
    console.print(
        _table(f"repair {args.path}", {k: v for k, v in report.items() if k != "dropped"})
    )
    for line in dropped:
        console.print(f"[yellow]dropped: {line}")
    console.print(
        "[green]repaired: every record that checks out was kept"
        + (f"; {len(dropped)} dropped" if dropped else "")
    )
    return 1 if dropped else 0


def register(sub: Any) -> None:
    """Adds the ``arena`` subcommand to the CLI's subparsers."""
    p = sub.add_parser("arena", help="inspect or repair a blob arena: verify, stats, repair")
    asub = p.add_subparsers(dest="arena_command", required=True)
    for name, help_ in (
        ("verify", "check every checksum (blobs, WAL, checkpoint); exit 1 on corruption"),
        ("stats", "sizes, dead bytes, generations, WAL and recovery figures"),
    ):
        q = asub.add_parser(name, help=help_)
        q.add_argument("path", help="arena directory")
        q.set_defaults(func=_cmd_arena)
    q = asub.add_parser(
        "repair",
        help="salvage every record that checks out into a new generation; report what was dropped",
    )
    q.add_argument("path", help="arena directory (must not be open)")
    q.set_defaults(func=_cmd_repair)
