"""The ``slabcache`` command.

slabcache --version
slabcache info [--paths]
slabcache preload-path
slabcache bench [SUITE ...] [--quick] [--json PATH] [--wide] [--plot DIR] [--compare OLD.json]
slabcache arena verify|stats|repair PATH
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from . import __version__, _native, bundled
from .benchmarks import SUITE_NAMES, BenchContext, Measurement, load_suite, render
from .benchmarks.report import compare, make_progress, read_json, write_json
from .vectors import available_kernels, default_kernel


def _install_paths() -> list[tuple[str, str]]:
    """``(name, path or 'missing: why')`` for every file a user of the install may need."""
    pkg = bundled.package_dir()
    rows = [
        ("package", str(pkg)),
        ("extension", str(bundled.extension_module())),
        ("stubs", str(pkg / "_native.pyi")),
    ]
    for name, find in (
        ("preload-library", bundled.preload_library),
        ("c-header", bundled.c_header),
    ):
        try:
            rows.append((name, str(find())))
        except bundled.NotBundledError as e:
            rows.append((name, f"missing: {e}"))
    return rows


def _cmd_info(args: argparse.Namespace, console: Console) -> int:
    if args.paths:
        # Plain "name: path" lines (no table): meant for scripts and copy-paste.
        for name, path in _install_paths():
            print(f"{name}: {path}")
        return 0
    build = _native.build_info()
    table = Table(title=f"slabcache {__version__}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("version", build["version"])
    table.add_row("build profile", build["profile"])
    table.add_row("target", f"{build['target_arch']}-{build['target_os']}")
    table.add_row("python", f"{platform.python_implementation()} {platform.python_version()}")
    table.add_row("int8 kernel in use", default_kernel())
    table.add_row("int8 kernels available", ", ".join(available_kernels()))
    feats = _native.cpu_features()
    for name, present in feats.items():
        table.add_row(f"cpu: {name}", "[green]yes[/]" if present else "[dim]no[/]")
    console.print(table)
    return 0


def _cmd_preload_path(args: argparse.Namespace, console: Console) -> int:
    # Only the path on stdout, so `LD_PRELOAD=$(slabcache preload-path) prog` works;
    # when absent, stdout stays empty and stderr says how to get the library.
    try:
        print(bundled.preload_library())
    except bundled.NotBundledError as e:
        print(f"slabcache preload-path: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_bench(args: argparse.Namespace, console: Console) -> int:
    names = args.suites or list(SUITE_NAMES)
    unknown = [n for n in names if n not in SUITE_NAMES]
    if unknown:
        known = ", ".join(SUITE_NAMES)
        console.print(f"[red]unknown suite(s): {', '.join(unknown)}; known: {known}")
        return 2
    old = read_json(args.compare) if args.compare else None
    build = _native.build_info()
    if build["profile"] != "release":
        console.print("[yellow]warning: the native module is a debug build; figures mean little")
    results: list[Measurement] = []
    with make_progress(console) as progress:
        ctx = BenchContext(quick=args.quick, console=console, progress=progress)
        overall = progress.add_task("suites", total=len(names))
        for name in names:
            suite = load_suite(name)
            if suite is None:
                console.print(f"[dim]suite {name!r} is not part of this build; skipped")
            else:
                progress.update(overall, description=f"suite: {name}")
                for m in suite.run(ctx):
                    m.suite = m.suite or name
                    results.append(m)
            progress.advance(overall)
    render(results, console, wide=args.wide)
    if args.json:
        write_json(results, args.json)
        console.print(f"results written to {args.json}")
    if args.plot:
        from .benchmarks.plot import plot_all, write_html

        images = plot_all(results, args.plot)
        report = f"{args.plot.rstrip('/')}/report.html"
        write_html(results, images, report)
        console.print(f"{len(images)} chart(s) and {report} written")
    if old is not None:
        compare(results, old, console)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slabcache", description="slabcache: allocator and cache manager for LLM serving"
    )
    parser.add_argument("--version", action="version", version=f"slabcache {__version__}")
    sub = parser.add_subparsers(dest="command")

    p_info = sub.add_parser("info", help="version, build profile and CPU features")
    p_info.add_argument(
        "--paths",
        action="store_true",
        help="where the package, extension, LD_PRELOAD library and C header are",
    )
    p_info.set_defaults(func=_cmd_info)

    p_preload = sub.add_parser(
        "preload-path",
        help="path of the LD_PRELOAD allocator library: LD_PRELOAD=$(slabcache preload-path) prog",
    )
    p_preload.set_defaults(func=_cmd_preload_path)

    p_bench = sub.add_parser("bench", help="benchmarks against peers, in one run")
    p_bench.add_argument("suites", nargs="*", help=f"suites to run (default: all of {SUITE_NAMES})")
    p_bench.add_argument("--quick", action="store_true", help="small sizes, a minute or two")
    p_bench.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p_bench.add_argument("--wide", action="store_true", help="one wide table with every column")
    p_bench.add_argument(
        "--plot", metavar="DIR", help="also draw PNG charts and DIR/report.html (matplotlib)"
    )
    p_bench.add_argument(
        "--compare", metavar="OLD.json", help="ratios against an earlier run's --json file"
    )
    p_bench.set_defaults(func=_cmd_bench)

    from .arena_cli import register as register_arena

    register_arena(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console()
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args, console))


if __name__ == "__main__":
    sys.exit(main())
