#!/usr/bin/env bash
# Tests the release wheel as a pip user gets it: for each CPython, a fresh venv with
# the wheel installed (no Rust on PATH), and the Python test suite run from a copy of
# tests/ outside the repository, so every `import slabcache` comes from site-packages.
# Then (unless --no-sdist) the sdist is installed from source and smoke-tested.
#
#   scripts/test_wheel.sh                   # every CPython 3.11-3.13 found, + sdist
#   scripts/test_wheel.sh --python 3.12     # one (a version, or a path to python)
#   scripts/test_wheel.sh --ci              # CI: python3 only, no sdist
#   options: --wheel PATH  --sdist PATH  --no-sdist  --keep (keep the temp dirs)
#
# Without --wheel it takes dist/slabcache-<version>-cp311-abi3-manylinux*.whl and
# builds it first (scripts/build_wheel.sh) when it is missing or older than the sources.
# Pythons are looked up in pyenv ($PYENV_ROOT/versions/3.X.*), then as python3.X on PATH.
# Exit status: non-zero if any Python's run failed; a summary line per Python at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PYTHONS=()
WHEEL=""
SDIST_PATH=""
DO_SDIST=1
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --python) PYTHONS+=("$2"); shift ;;
        --wheel) WHEEL=$(realpath "$2"); shift ;;
        --sdist) SDIST_PATH=$(realpath "$2"); shift ;;
        --no-sdist) DO_SDIST=0 ;;
        --ci) PYTHONS=(python3); DO_SDIST=0 ;;
        --keep) KEEP=1 ;;
        -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "test_wheel.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

find_python() { # a version like 3.12, or a command/path; prints a python that runs
    local want=$1 p cands=()
    if [[ "$want" =~ ^3\.[0-9]+$ ]]; then
        cands=("${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$want".*/bin/python"$want")
        p=$(command -v "python$want" 2>/dev/null) && cands+=("$p")
    else
        p=$(command -v "$want" 2>/dev/null) && cands+=("$p")
    fi
    for p in "${cands[@]}"; do # (pyenv shims exist for versions they cannot run)
        if [ -x "$p" ] && "$p" -c 'import venv' >/dev/null 2>&1; then echo "$p"; return; fi
    done
}
if [ ${#PYTHONS[@]} -eq 0 ]; then PYTHONS=(3.11 3.12 3.13); fi

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
if [ -z "$WHEEL" ]; then
    WHEEL=$(ls -t dist/slabcache-"$VERSION"-cp311-abi3-manylinux*.whl 2>/dev/null | head -1 || true)
    newer=""
    [ -n "$WHEEL" ] && newer=$(find rust python Cargo.toml Cargo.lock pyproject.toml -newer "$WHEEL" \
        -type f -not -path '*/__pycache__/*' -not -name '*.so' | head -1)
    if [ -z "$WHEEL" ] || [ -n "$newer" ]; then
        echo "== building the wheel (${newer:+sources changed: $newer})"
        if [ "$DO_SDIST" = 1 ] && [ -z "$SDIST_PATH" ]; then scripts/build_wheel.sh; else scripts/build_wheel.sh --no-sdist; fi
        WHEEL=$(ls -t dist/slabcache-"$VERSION"-cp311-abi3-manylinux*.whl | head -1)
    fi
    WHEEL=$(realpath "$WHEEL")
fi
if [ "$DO_SDIST" = 1 ] && [ -z "$SDIST_PATH" ]; then
    SDIST_PATH=$ROOT/dist/slabcache-$VERSION.tar.gz
    if [ ! -f "$SDIST_PATH" ] || [ "$SDIST_PATH" -ot "$WHEEL" ]; then
        # Same sources as the wheel; the build tools venv exists once a wheel was built.
        TOOLS=${RELEASE_TOOLS_VENV:-$ROOT/target/release-tools}
        if [ -x "$TOOLS/bin/maturin" ]; then
            "$TOOLS/bin/maturin" sdist --out dist >/dev/null
        else
            scripts/build_wheel.sh
        fi
    fi
fi
echo "== wheel: $WHEEL"

# PATH without Rust: only the venv and the system directories (cargo lives in ~/.cargo/bin).
NO_RUST_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
SUMMARY=()
FAILED=0

copy_tests() { # $1 = dir: tests/ and the documents tests read (README.md, docs/), nothing else
    cp -r "$ROOT/tests" "$1/tests"
    cp "$ROOT"/*.md "$1/"
    if [ -d "$ROOT/docs" ]; then cp -r "$ROOT/docs" "$1/docs"; fi
    find "$1/tests" -name __pycache__ -prune -exec rm -rf {} +
}

pytest_config() { # $1 = dir; run by the venv's python: writes $1/pytest.ini, prints test paths
    python - "$ROOT/pyproject.toml" "$1" <<'EOF'
import sys, tomllib
from pathlib import Path
import slabcache
pyproject, tmp = Path(sys.argv[1]), Path(sys.argv[2])
tool = tomllib.loads(pyproject.read_text()).get("tool", {})
opts = dict(tool.get("pytest", {}).get("ini_options", {}))
installed = Path(slabcache.__file__).parent
paths = []
for p in opts.pop("testpaths", ["tests"]):
    if p.rstrip("/") == "python/slabcache":
        paths.append(str(installed))
    elif (tmp / p).exists():
        paths.append(str(tmp / p))
lines = ["[pytest]"]
for key, value in opts.items():
    value = " ".join(map(str, value)) if isinstance(value, list) else str(value)
    lines.append(f"{key} = {value}")
(tmp / "pytest.ini").write_text("\n".join(lines) + "\n")
# The repository's root conftest.py (hooks, fixtures, collect_ignore), its paths under
# python/slabcache mapped to the installed package like the test paths above.
root_conftest = pyproject.parent / "conftest.py"
if root_conftest.is_file():
    (tmp / "_repo_conftest.py").write_text(root_conftest.read_text())
    (tmp / "conftest.py").write_text(f"""# written by scripts/test_wheel.sh
import runpy
from pathlib import Path

_here = Path(__file__).parent
_ns = runpy.run_path(str(_here / "_repo_conftest.py"), run_name="_repo_conftest")
globals().update({{k: v for k, v in _ns.items() if not k.startswith("__")}})
_installed = Path({str(installed)!r})
collect_ignore = [
    str(_installed / p[len("python/slabcache/"):]) if p.startswith("python/slabcache/") else str(_here / p)
    for p in _ns.get("collect_ignore", [])
]
""")
print("\n".join(paths or [str(tmp / "tests")]))
EOF
}

run_suite() { # $1 = python; installs the wheel into a fresh venv and runs the suite there
    local py=$1 tmp ver log rc
    ver=$("$py" -c 'import platform; print(platform.python_version())')
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/slabcache-wheel-$ver.XXXXXX")
    log=$tmp/pytest.log
    echo
    echo "== CPython $ver ($py) in $tmp"
    "$py" -m venv "$tmp/venv"
    "$tmp/venv/bin/python" -m pip install -q "$WHEEL[test]"
    copy_tests "$tmp"
    set +e # errexit works inside the subshell only outside an || list
    (
        set -e
        cd "$tmp"
        export PATH="$tmp/venv/bin:$NO_RUST_PATH" SLABCACHE_REQUIRE_BUNDLED=1
        unset PYTHONPATH PYTHONHOME VIRTUAL_ENV CARGO_TARGET_DIR SLABCACHE_SIMD
        if command -v cargo rustc >/dev/null 2>&1; then
            echo "test_wheel.sh: Rust is still on PATH ($(command -v cargo rustc))" >&2
            exit 1
        fi
        # Where the package comes from: site-packages of the venv, nothing from the clone.
        python - "$ROOT" <<'EOF'
import sys, sysconfig
from pathlib import Path
import slabcache, slabcache._native
root = Path(sys.argv[1]).resolve()
site = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
for f in (slabcache.__file__, slabcache._native.__file__):
    p = Path(f).resolve()
    assert any(s in p.parents for s in site), f"{p} is not in site-packages {site}"
    assert root not in p.parents, f"{p} is inside the source tree {root}"
print(f"slabcache {slabcache.__version__} from {Path(slabcache.__file__).parent}")
EOF
        slabcache --version
        slabcache info --paths
        # The repository's pytest settings, with its test paths mapped: tests/ -> the copy,
        # python/slabcache -> the installed package (its doctests run against site-packages).
        mapfile -t paths < <(pytest_config "$tmp")
        python -m pytest -c "$tmp/pytest.ini" --rootdir "$tmp" --import-mode=importlib \
            -p no:cacheprovider "${paths[@]}"
    ) 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    local last
    last=$(grep -E '^=+ .*(passed|failed|error).* in [0-9.]+s' "$log" | tail -1 | tr -d '=' | sed 's/^ *//; s/ *$//')
    if [ "$rc" -ne 0 ]; then FAILED=1; fi
    SUMMARY+=("CPython $ver: ${last:-no pytest summary} (rc $rc)")
    if [ "$KEEP" = 0 ]; then rm -rf "$tmp"; fi
}

for want in "${PYTHONS[@]}"; do
    py=$(find_python "$want" || true)
    if [ -z "$py" ]; then
        echo "== CPython $want: not found, skipped"
        SUMMARY+=("CPython $want: not found on this machine, skipped")
        continue
    fi
    run_suite "$py"
done

if [ "$DO_SDIST" = 1 ]; then
    # The sdist builds with Rust (pip's isolated build of maturin), then works as a
    # source install: the package and CLI run, and the preload library is reported
    # missing with the command that builds it.
    py=$(find_python "${PYTHONS[0]}" || command -v python3)
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/slabcache-sdist.XXXXXX")
    echo
    echo "== sdist $SDIST_PATH with $py in $tmp"
    set +e
    (
        set -e
        "$py" -m venv "$tmp/venv"
        "$tmp/venv/bin/python" -m pip install -q "$SDIST_PATH[test]"
        mkdir "$tmp/tests" && cp "$ROOT/tests/test_packaging.py" "$ROOT/tests/test_package.py" "$tmp/tests/"
        cd "$tmp"
        export PATH="$tmp/venv/bin:$NO_RUST_PATH"
        slabcache --version
        slabcache info --paths
        if slabcache preload-path; then
            echo "test_wheel.sh: a source install claims a bundled preload library" >&2
            exit 1
        fi
        python -m pytest -q -p no:cacheprovider --rootdir "$tmp" --import-mode=importlib "$tmp/tests"
    ) 2>&1 | tee "$tmp/log"
    rc=${PIPESTATUS[0]}
    set -e
    last=$(grep -E '(passed|failed).* in [0-9.]+s' "$tmp/log" | tail -1 | tr -d '=' | sed 's/^ *//; s/ *$//')
    if [ "$rc" -ne 0 ]; then FAILED=1; fi
    SUMMARY+=("sdist (built from source): ${last:-no pytest summary} (rc $rc)")
    if [ "$KEEP" = 0 ]; then rm -rf "$tmp"; fi
fi

if [ ${#SUMMARY[@]} -gt 1 ]; then # (one run: pytest's own closing line is the summary)
    echo
    echo "== summary ($(basename "$WHEEL"))"
    printf '  %s\n' "${SUMMARY[@]}"
fi
exit "$FAILED"
