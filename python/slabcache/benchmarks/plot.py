"""Charts and an HTML report of a ``slabcache bench`` run (``--plot DIR``).

Every suite gets a ratio chart (one bar a row, log scale, the row's target drawn as a tick);
suites whose rows carry the data get the chart their field reads:

- ``vectors``: recall against queries/s, ann-benchmarks style (rows with a recall in ``extra``);
- ``arena``: time per put and get against blob size, slabcache and each peer;
- ``allocator`` / ``skiplist``: throughput against threads (rows with ``extra["threads"]``);
- ``blocks`` (and any other suite): slabcache against its peer per case.

matplotlib is in the ``bench`` extra; it is imported only here.

    >>> from slabcache.benchmarks.report import Measurement
    >>> rows = [Measurement("get", 1.0, "us/op", "lmdb", 2.0, suite="arena")]
    >>> sorted(suite_rows(rows))
    ['arena']
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Iterable
from typing import Any

from .report import Measurement, _fmt

__all__ = ["plot_all", "suite_rows", "write_html"]


def suite_rows(results: Iterable[Measurement]) -> dict[str, list[Measurement]]:
    """Groups rows by suite, keeping the run's order."""
    out: dict[str, list[Measurement]] = {}
    for m in results:
        out.setdefault(m.suite or "-", []).append(m)
    return out


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "slabcache bench --plot needs matplotlib: pip install 'slabcache[bench]'"
        ) from exc
    return plt


def _label(m: Measurement) -> str:
    peer = f" vs {m.peer}" if m.peer else ""
    text = f"{m.case}{peer}"
    return text if len(text) <= 70 else text[:69] + "…"


def _ratio_chart(plt: Any, suite: str, rows: list[Measurement], path: str) -> bool:
    rows = [m for m in rows if m.speedup is not None]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(11, 0.32 * len(rows) + 1.4))
    ratios = [m.speedup for m in rows]
    colours = [
        "#2e7d32" if m.passed else "#c62828" if m.passed is False else "#757575" for m in rows
    ]
    y = range(len(rows))
    ax.barh(list(y), ratios, color=colours)
    for i, m in enumerate(rows):
        if m.goal is not None and m.goal != 1.0:
            ax.plot([m.goal, m.goal], [i - 0.4, i + 0.4], color="black", lw=1.5)
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(list(y), [_label(m) for m in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ratio vs peer (> 1: slabcache better; black tick: target when not 1)")
    ax.set_title(f"{suite}: slabcache against its peers, same run")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


_RECALL_KEYS = ("recall_ours", "recall")


def _recall_chart(plt: Any, rows: list[Measurement], path: str) -> bool:
    """Recall against queries/s: one point per row, ours and (where known) the peer's."""
    pts: dict[str, list[tuple[float, float]]] = {}
    for m in rows:
        if m.unit != "queries/s":
            continue
        recall = next((m.extra[k] for k in _RECALL_KEYS if k in m.extra), None)
        if recall is None:
            continue
        name = "slabcache " + re.sub(r"\s*,?\s*batch of \d+", "", m.case)
        pts.setdefault(name, []).append((float(recall), m.ours))
        if m.peer and m.peer_value and "recall_peer" in m.extra:
            pts.setdefault(m.peer, []).append((float(m.extra["recall_peer"]), m.peer_value))
    if not pts:
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, xy in sorted(pts.items()):
        xy = sorted(set(xy))
        ax.plot([p[0] for p in xy], [p[1] for p in xy], marker="o", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("recall@10")
    ax.set_ylabel("queries/s (log)")
    ax.set_title("vectors: recall vs throughput (up and right is better)")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


_SIZE = re.compile(r"(\d+)\s*(B|KiB|MiB|GiB)\b")
_UNIT = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def _size_of(case: str) -> int | None:
    m = _SIZE.search(case)
    return int(m.group(1)) * _UNIT[m.group(2)] if m else None


def _per_size_chart(plt: Any, rows: list[Measurement], path: str) -> bool:
    """Time per op against blob size: a panel per operation, a colour per store."""
    # (panel, store, mode) -> size -> us/op
    lines: dict[tuple[str, str, str], dict[int, float]] = {}
    for m in rows:
        size = _size_of(m.case)
        if m.unit != "us/op" or size is None:
            continue
        panel = "put" if m.case.startswith("put") else "get" if m.case.startswith("get") else ""
        if not panel:
            continue
        mode = next((w for w in m.case.split() if w.startswith("sync=")), "")
        lines.setdefault((panel, "slabcache", mode), {})[size] = m.ours
        if m.peer and m.peer_value is not None:
            lines.setdefault((panel, m.peer, mode), {})[size] = m.peer_value
    if not lines:
        return False
    stores = sorted({k[1] for k in lines}, key=lambda n: (n != "slabcache", n))
    colour = {n: f"C{i}" for i, n in enumerate(stores)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True)
    for ax, panel in zip(axes, ("put", "get"), strict=True):
        for (p, store, mode), by_size in sorted(lines.items()):
            if p != panel:
                continue
            xs = sorted(by_size)
            ax.plot(
                xs,
                [by_size[x] for x in xs],
                "--" if mode == "sync=always" else "-",
                color=colour[store],
                lw=2.5 if store == "slabcache" else 1.2,
                marker="o",
                label=f"{store} {mode}".strip(),
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("blob size (bytes)")
        ax.set_title(f"{panel}" + (" (dashed: sync=always)" if panel == "put" else ""))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    axes[0].set_ylabel("µs per op (log; lower is better)")
    fig.suptitle("arena: time per op and size, slabcache (thick) vs peers, same run")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def _threads_chart(plt: Any, suite: str, rows: list[Measurement], path: str) -> bool:
    """Throughput (or time) against threads for rows that say their thread count."""
    lines: dict[str, dict[int, float]] = {}
    unit = ""
    for m in rows:
        threads = m.extra.get("threads")
        if not isinstance(threads, int):
            continue
        unit = m.unit
        case = re.sub(r",?\s*\d+\s*threads?", "", m.case).strip()
        lines.setdefault(f"slabcache {case}", {})[threads] = m.ours
        if m.peer and m.peer_value is not None:
            lines.setdefault(f"{m.peer} {case}", {})[threads] = m.peer_value
    if not lines:
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, by_t in sorted(lines.items()):
        xs = sorted(by_t)
        style = "-" if name.startswith("slabcache") else "--"
        ax.plot(xs, [by_t[x] for x in xs], style, marker="o", label=name)
    ax.set_xlabel("threads")
    ax.set_ylabel(unit)
    ax.set_title(f"{suite}: against threads, slabcache (solid) vs peers (dashed)")
    ax.legend(fontsize=6)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def _pair_chart(plt: Any, suite: str, rows: list[Measurement], path: str) -> bool:
    """slabcache and its peer side by side per case (same unit within a chart)."""
    rows = [m for m in rows if m.peer_value is not None]
    by_unit: dict[str, list[Measurement]] = {}
    for m in rows:
        by_unit.setdefault(m.unit, []).append(m)
    if not by_unit:
        return False
    unit, rows = max(by_unit.items(), key=lambda kv: len(kv[1]))
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.5))
    y = list(range(len(rows)))
    ax.barh([i - 0.2 for i in y], [m.ours for m in rows], height=0.4, label="slabcache")
    ax.barh([i + 0.2 for i in y], [m.peer_value for m in rows], height=0.4, label="peer")
    ax.set_yticks(y, [_label(m) for m in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    ax.set_title(f"{suite}: slabcache and its peer, {unit}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def plot_all(results: list[Measurement], out_dir: str) -> list[str]:
    """Draws every chart that the rows allow into ``out_dir``; returns the PNG paths."""
    plt = _pyplot()
    os.makedirs(out_dir, exist_ok=True)
    made: list[str] = []

    def keep(ok: bool, path: str) -> None:
        if ok:
            made.append(path)

    for suite, rows in suite_rows(results).items():
        base = os.path.join(out_dir, re.sub(r"[^A-Za-z0-9_-]", "_", suite))
        keep(_ratio_chart(plt, suite, rows, f"{base}-ratios.png"), f"{base}-ratios.png")
        if suite == "vectors":
            keep(_recall_chart(plt, rows, f"{base}-recall.png"), f"{base}-recall.png")
        elif suite == "arena":
            keep(_per_size_chart(plt, rows, f"{base}-sizes.png"), f"{base}-sizes.png")
        else:
            ok = _threads_chart(plt, suite, rows, f"{base}-threads.png")
            keep(ok, f"{base}-threads.png")
            if not ok and suite not in ("allocator", "skiplist"):
                keep(_pair_chart(plt, suite, rows, f"{base}-pairs.png"), f"{base}-pairs.png")
    return made


def write_html(results: list[Measurement], images: list[str], path: str) -> None:
    """One self-contained page: a table per suite, then that suite's charts."""
    out_dir = os.path.dirname(os.path.abspath(path))
    parts = [
        "<!doctype html><meta charset='utf-8'><title>slabcache bench</title>",
        "<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;margin:.5em 0 1em}td,th{padding:2px 8px;"
        "border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child"
        "{text-align:left}.ok{color:#2e7d32}.bad{color:#c62828}img{max-width:100%}</style>",
        "<h1>slabcache bench</h1><p>Every row is slabcache against a peer measured in the same "
        "run; ratio &gt; 1 means slabcache is better. ✓/✗: against the row's target.</p>",
    ]
    for suite, rows in suite_rows(results).items():
        parts.append(
            f"<h2>{html.escape(suite)}</h2><table><tr><th>case</th><th>slabcache</th>"
            "<th>peer</th><th>peer value</th><th>ratio</th><th>note</th></tr>"
        )
        for m in rows:
            s = m.speedup
            cls = "ok" if m.passed else "bad" if m.passed is False else ""
            mark = {True: " ✓", False: " ✗", None: ""}[m.passed]
            ratio = "-" if s is None or math.isnan(s) else f"{s:.2f}x{mark}"
            parts.append(
                f"<tr><td>{html.escape(m.case)}</td><td>{_fmt(m.ours)} {html.escape(m.unit)}</td>"
                f"<td>{html.escape(m.peer or '-')}</td><td>{_fmt(m.peer_value)}</td>"
                f"<td class='{cls}'>{ratio}</td><td>{html.escape(m.note)}</td></tr>"
            )
        parts.append("</table>")
        prefix = re.sub(r"[^A-Za-z0-9_-]", "_", suite) + "-"
        for img in images:
            if os.path.basename(img).startswith(prefix):
                rel = os.path.relpath(img, out_dir)
                parts.append(f"<p><img src='{html.escape(rel)}' alt='{html.escape(rel)}'></p>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
