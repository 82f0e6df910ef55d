"""Fixtures shared by several test modules."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def libpath() -> Path:
    """The C ABI / LD_PRELOAD library, built once per session with cargo (skipped without)."""
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("cargo is not installed")
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    subprocess.run(
        [cargo, "build", "--release", "-p", "slabcache-malloc", "--features", "preload"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    lib = target / "release" / "libslabcache_malloc.so"
    assert lib.exists()
    return lib
