#!/usr/bin/env bash
# Static checks that keep the code honest; part of the README's test command (and so of CI).
# Each line is one check; the first that fails stops the run with its own message.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings, all features (workspace lints: unsafe rules, missing docs)"
cargo clippy --release --workspace --all-targets --all-features --quiet -- -D warnings
echo "== ruff check / ruff format --check"
"$PY" -m ruff check python tests bench conftest.py
"$PY" -m ruff format --check python tests bench conftest.py
echo "== mypy --strict (the library; config in pyproject.toml)"
"$PY" -m mypy
echo "== stubtest: _native.pyi against the built extension"
allow=(--allowlist tests/stubtest_allowlist.txt)
# The bench hooks exist only in a build with the `bench` feature (see rust/python/Cargo.toml).
if ! "$PY" -c "import sys, slabcache._native as n; sys.exit(not hasattr(n, 'slab_bench_pairs'))"; then
    allow+=(--allowlist tests/stubtest_allowlist_bench.txt)
fi
"$PY" -m mypy.stubtest slabcache._native --ignore-disjoint-bases "${allow[@]}"
echo "== static checks passed"
