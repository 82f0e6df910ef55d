"""Runs sortedcontainers' own SortedDict test modules against BSkipList.

The sortedcontainers sdist ships no tests, so take the modules from its
repository (``tests/test_coverage_sorteddict.py``,
``tests/test_stress_sorteddict.py`` of grantjenks/python-sortedcontainers)
into a directory, then::

    python tests/sortedcontainers_conformance/run_upstream.py DIR            # BSkipList
    python tests/sortedcontainers_conformance/run_upstream.py DIR --real     # SortedDict itself

The modules import ``SortedDict`` from ``sortedcontainers``; this script puts
a ``sortedcontainers`` package first on the path whose ``SortedDict`` is
``sorteddict_adapter.SortedDict`` (BSkipList renamed), plus a tiny ``nose``
stand-in (``nose.tools.raises``) for the older modules. Tests that need a
``key=`` function (and the one that reads a name-mangled private constant)
are set aside with ``--deselect``; everything else runs unchanged. The
result of the last run is recorded in docs/skiplist.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# key= functions (SortedDict(negate, ...), irange_key, bisect_key, ...) and a
# private constant; BSkipList orders keys natively and has neither.
SET_ASIDE = {
    "test_coverage_sorteddict.py": [
        "test_init_key",
        "test_iter_key",
        "test_reversed_key",
        "test_irange_key",
        "test_index_key",
        "test_bisect_key",
        "test_bisect_key2",
        "test_repr_recursion",  # builds SortedDict(Identity(), ...): a key function
        "test_pickle",  # builds SortedDict(negate, ...) and compares _key
        "test_notgiven",  # SortedDict._SortedDict__not_given
    ],
}

NOSE_TOOLS = """
import functools

def raises(*exceptions):
    def wrap(func):
        @functools.wraps(func)
        def run(*args, **kwargs):
            try:
                func(*args, **kwargs)
            except exceptions:
                return
            raise AssertionError(f"{func.__name__} did not raise {exceptions}")
        return run
    return wrap
"""


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        return 2
    upstream, real = Path(argv[0]), "--real" in argv[1:]
    extra = [a for a in argv[1:] if a != "--real"]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        shim = tmp / "shim"
        (shim / "nose").mkdir(parents=True)
        (shim / "nose" / "__init__.py").write_text("")
        (shim / "nose" / "tools.py").write_text(NOSE_TOOLS)
        if not real:
            (shim / "sortedcontainers").mkdir()
            (shim / "sortedcontainers" / "__init__.py").write_text(
                "from sorteddict_adapter import SortedDict\n"
            )
        pkg = tmp / "run" / "tests"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "context.py").write_text("import sortedcontainers\n")
        deselect: list[str] = []
        for f in sorted(upstream.glob("test_*sorteddict*.py")):
            shutil.copy(f, pkg / f.name)
            if not real:
                for name in SET_ASIDE.get(f.name, []):
                    deselect += ["--deselect", f"tests/{f.name}::{name}"]
        env_path = f"{shim}:{HERE}"
        cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider"]
        cmd += ["-p", "no:hypothesispytest"]
        cmd += ["--rootdir", str(tmp / "run"), "-o", "addopts=", *deselect, *extra, "tests"]
        env = dict(os.environ, PYTHONPATH=env_path + ":" + os.environ.get("PYTHONPATH", ""))
        return subprocess.call(cmd, cwd=tmp / "run", env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
