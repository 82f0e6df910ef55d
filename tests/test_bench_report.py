"""The main job's face: compact tables, JSON round trip, --compare, --plot."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from slabcache.benchmarks.report import Measurement, compare, read_json, render, write_json


def _rows() -> list[Measurement]:
    long_case = "a case name long enough to need folding in an 80-column terminal window"
    return [
        Measurement("put 100 B sync=none", 4.7, "us/op", "lmdb", 6.8, suite="arena"),
        Measurement("get 4 KiB (zero-copy)", 1.4, "us/op", "rocksdb", 2.9, suite="arena"),
        Measurement(
            long_case,
            3326.0,
            "queries/s",
            "faiss IndexScalarQuantizer QT_8bit",
            428.0,
            higher_is_better=True,
            suite="vectors",
            note="recall@10 0.99",
            extra={"recall_ours": 0.99, "recall_peer": 1.0},
        ),
        Measurement(
            "batch",
            36.0,
            "ns/object",
            "single calls",
            168.0,
            suite="allocator",
            target=5.0,
            note="target: >= 5x",
        ),
        Measurement("recovery", 0.05, "s", suite="arena"),
    ]


def _render(rows: list[Measurement], width: int = 80, **kw: object) -> str:
    buf = io.StringIO()
    render(rows, Console(file=buf, width=width, force_terminal=False), **kw)  # type: ignore[arg-type]
    return buf.getvalue()


def test_compact_tables_fit_80_columns_and_mark_targets() -> None:
    out = _render(_rows())
    assert max(len(line) for line in out.splitlines()) <= 80
    # one table per suite, notes under it, a target that is not met is marked
    assert "arena" in out and "vectors" in out and "allocator" in out
    assert "[1] recall@10 0.99" in out
    assert "4.67x ✗" in out  # 168/36 = 4.67 < target 5
    assert "1.45x ✓" in out  # 6.8/4.7
    assert "3 of 4 rows reach their target." in out


def test_case_text_is_printed_as_written_not_as_markup() -> None:
    # "m[k]" must not be eaten as a rich markup tag
    rows = [
        Measurement(
            "m[k], one call per key",
            1.0,
            "ns",
            "SortedDict",
            2.0,
            suite="s",
            note="see [bold] docs",
        )
    ]
    out = _render(rows)
    assert "m[k], one call per key" in out and "see [bold] docs" in out
    wide = _render(rows, width=200, wide=True)
    assert "m[k], one call per key" in wide


def test_wide_table_keeps_every_column() -> None:
    out = _render(_rows(), width=200, wide=True)
    assert "peer value" in out and "target" in out


def test_passed_and_goal() -> None:
    m = Measurement("x", 2.0, "us", "peer", 3.0)
    assert m.goal == 1.0 and m.passed is True
    assert Measurement("x", 2.0, "us").passed is None
    assert Measurement("x", 2.0, "us", "p", 3.0, target=2.0).passed is False


def test_json_round_trip(tmp_path) -> None:
    path = str(tmp_path / "run.json")
    write_json(_rows(), path)
    back = read_json(path)
    assert [m.to_dict() for m in back] == [m.to_dict() for m in _rows()]
    assert json.load(open(path))[0]["passed"] is True


def test_read_json_refuses_other_shapes(tmp_path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"a": 1}')
    with pytest.raises(ValueError):
        read_json(str(path))


def test_compare_flags_a_ratio_that_fell() -> None:
    old = _rows()
    new = _rows()
    new[0].ours = 9.4  # twice as slow against the same lmdb figure: ratio 1.45 -> 0.72
    new[1].ours = 1.3  # a little faster: no regression
    buf = io.StringIO()
    assert compare(new, old, Console(file=buf, width=80)) == 1
    assert "1 regression(s)" in buf.getvalue()


def test_plot_writes_charts_and_report(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from slabcache.benchmarks.plot import plot_all, write_html

    images = plot_all(_rows(), str(tmp_path))
    names = sorted(p.rsplit("/", 1)[1] for p in images)
    assert "arena-ratios.png" in names and "arena-sizes.png" in names
    assert "vectors-recall.png" in names
    for p in images:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    write_html(_rows(), images, str(tmp_path / "report.html"))
    page = (tmp_path / "report.html").read_text()
    assert "<img src='arena-sizes.png'" in page and "put 100 B sync=none" in page
