#!/usr/bin/env bash
# Release build: a manylinux2014 (glibc >= 2.17) abi3 wheel for CPython >= 3.11 and
# an sdist, in dist/ (or $DIST_DIR), checked before the script says it is done.
#
#   scripts/build_wheel.sh            # wheel + sdist
#   scripts/build_wheel.sh --no-sdist # wheel only
#
# Needs Rust (cargo/rustc) and a Python >= 3.11 with venv; the release tools
# (maturin, ziglang, auditwheel: scripts/release-tools.txt) are installed into
# target/release-tools (or $RELEASE_TOOLS_VENV) from PyPI on first use.
#
# Steps:
#  1. the LD_PRELOAD library (rust/malloc, feature `preload`) is built with zig
#     as the linker, targeting glibc 2.17 like the extension, and staged with the
#     C header into python/slabcache/{lib,include}/ (ignored by git, removed again
#     when the script exits): maturin builds one crate, so this one is built here
#     and shipped as package data;
#  2. `maturin build --zig --compatibility manylinux2014` builds the extension
#     and the wheel for the baseline CPU of the target (no target-cpu=native:
#     SIMD kernels are picked at run time, see rust/core/src/cpu.rs);
#  3. scripts/check_wheel.py checks the wheel's files, tags and metadata, and
#     `auditwheel show` that every ELF file in it (the extension and the
#     preload library) needs nothing newer than manylinux_2_17;
#  4. `maturin sdist` makes the source distribution (scripts/test_wheel.sh
#     installs from it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SDIST=1
for arg in "$@"; do
    case "$arg" in
        --no-sdist) SDIST=0 ;;
        -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "build_wheel.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

DIST=${DIST_DIR:-$ROOT/dist}
TOOLS=${RELEASE_TOOLS_VENV:-$ROOT/target/release-tools}
PYTHON=${PYTHON:-python3}
# The policy the wheel is built for and checked against (glibc 2.17: what
# Rust's x86_64/aarch64 linux-gnu targets need at least).
GLIBC=2.17
POLICY=manylinux_2_17

say() { printf '\n== %s\n' "$*"; }

# --- release tools -----------------------------------------------------------
if [ ! -x "$TOOLS/bin/python" ]; then
    say "creating the release-tools venv in $TOOLS"
    "$PYTHON" -m venv "$TOOLS"
fi
"$TOOLS/bin/python" -m pip install -q -r scripts/release-tools.txt
export PATH="$TOOLS/bin:$PATH" # maturin finds zig as `python -m ziglang` here

# --- the target: the host's, built for its baseline CPU ------------------------
HOST=$(rustc -vV | sed -n 's/^host: //p')
case "$HOST" in
    x86_64-unknown-linux-gnu | aarch64-unknown-linux-gnu) ;;
    *) echo "build_wheel.sh: only x86_64/aarch64 Linux (glibc) wheels are built here, not $HOST" >&2; exit 1 ;;
esac
ARCH=${HOST%%-*}
# A flag like -C target-cpu=native would let the compiler use the build machine's
# instructions anywhere, breaking run-time dispatch: refuse it.
for f in "${RUSTFLAGS:-}" "${CARGO_ENCODED_RUSTFLAGS:-}" \
    "$(cat .cargo/config.toml .cargo/config "${CARGO_HOME:-$HOME/.cargo}/config.toml" \
        "${CARGO_HOME:-$HOME/.cargo}/config" 2>/dev/null || true)"; do
    if printf '%s' "$f" | grep -Eq 'target-cpu|target-feature'; then
        echo "build_wheel.sh: RUSTFLAGS or a cargo config sets target-cpu/target-feature;" \
            "a release wheel must be built for the baseline CPU (unset it)" >&2
        exit 1
    fi
done
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS

VERSION=$(cargo metadata --no-deps --format-version 1 |
    "$TOOLS/bin/python" -c 'import json,sys; print({p["name"]: p["version"] for p in json.load(sys.stdin)["packages"]}["slabcache-python"])')
say "slabcache $VERSION for $HOST ($POLICY, abi3 cp311+)"

# --- 1. the LD_PRELOAD library -------------------------------------------------
STAGE_LIB=python/slabcache/lib
STAGE_INC=python/slabcache/include
cleanup() { rm -rf "$ROOT/$STAGE_LIB" "$ROOT/$STAGE_INC" "${WORK:-}"; }
trap cleanup EXIT
WORK=$(mktemp -d)
ZIGCC=$WORK/zigcc
cat >"$ZIGCC" <<EOF
#!/bin/sh
exec "$TOOLS/bin/maturin" zig cc -- -fno-sanitize=all -target $ARCH-linux-gnu.$GLIBC "\$@"
EOF
chmod +x "$ZIGCC"
TRIPLE_ENV=$(echo "$HOST" | tr 'a-z-' 'A-Z_')

say "building libslabcache_malloc.so (feature preload, linked by zig for glibc $GLIBC)"
env "CARGO_TARGET_${TRIPLE_ENV}_LINKER=$ZIGCC" \
    cargo build --release --locked -p slabcache-malloc --features preload --target "$HOST"
TARGET_DIR=$(cargo metadata --no-deps --format-version 1 |
    "$TOOLS/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
rm -rf "$STAGE_LIB" "$STAGE_INC"
mkdir -p "$STAGE_LIB" "$STAGE_INC"
cp "$TARGET_DIR/$HOST/release/libslabcache_malloc.so" "$STAGE_LIB/"
strip --strip-unneeded "$STAGE_LIB/libslabcache_malloc.so" 2>/dev/null || true
cp rust/malloc/include/slabcache.h "$STAGE_INC/"

# --- 2. the wheel ----------------------------------------------------------------
say "building the wheel"
mkdir -p "$DIST"
rm -f "$DIST"/slabcache-"$VERSION"-*.whl
maturin build --release --locked --strip --zig --target "$HOST" \
    --compatibility manylinux2014 --out "$DIST"
WHEEL=$(ls "$DIST"/slabcache-"$VERSION"-cp311-abi3-*.whl)

# --- 3. checks ---------------------------------------------------------------------
say "checking $WHEEL"
"$TOOLS/bin/python" scripts/check_wheel.py "$WHEEL" --version "$VERSION" --policy "${POLICY}_$ARCH"
AUDIT=$("$TOOLS/bin/auditwheel" show "$WHEEL")
printf '%s\n' "$AUDIT"
if ! printf '%s' "$AUDIT" | tr -s ' \n' ' ' | grep -q "consistent with the following platform tag: \"${POLICY}_$ARCH\""; then
    echo "build_wheel.sh: auditwheel does not find the wheel ${POLICY}_$ARCH-compatible" >&2
    exit 1
fi

# --- 4. the sdist --------------------------------------------------------------------
if [ "$SDIST" = 1 ]; then
    say "building the sdist"
    rm -f "$DIST/slabcache-$VERSION.tar.gz"
    maturin sdist --out "$DIST"
    "$TOOLS/bin/python" scripts/check_wheel.py --sdist "$DIST/slabcache-$VERSION.tar.gz"
fi

say "done"
ls -l "$DIST"
