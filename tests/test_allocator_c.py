"""Regression tests of the LD_PRELOAD malloc with small C programs
(tests/alloc_c/alloc_checks.c, compiled with cc; skipped where cc or cargo
is missing): the six defects of issue 11 and the hardened profile's checks.
Each case fails on the library before the fixes (hang, NULL, abort or a
silently obeyed bad free)."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "alloc_c" / "alloc_checks.c"


@pytest.fixture(scope="module")
def checks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("cc is not installed")
    exe = tmp_path_factory.mktemp("alloc_c") / "alloc_checks"
    # -fno-builtin: the compiler must not elide malloc/free pairs.
    subprocess.run(
        [cc, "-O1", "-fno-builtin", "-pthread", "-w", "-o", str(exe), str(SOURCE)],
        check=True,
        capture_output=True,
    )
    return exe


def _no_core() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_case(
    exe: Path, lib: Path, case: str, profile: str = "light", **env: str
) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("SLABCACHE_")}
    e.update(LD_PRELOAD=str(lib), SLABCACHE_PROFILE=profile, **env)
    return subprocess.run(
        [str(exe), case],
        env=e,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_no_core,
    )


PROFILES = ["light", "hardened"]


@pytest.mark.parametrize("profile", PROFILES)
def test_40k_live_medium_blocks_without_a_mapping_each(checks, libpath, profile) -> None:
    out = run_case(checks, libpath, "many_medium", profile)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.endswith("ok\n")


@pytest.mark.parametrize("profile", PROFILES)
def test_realloc_growth_to_32_mib_keeps_contents(checks, libpath, profile) -> None:
    out = run_case(checks, libpath, "realloc_growth", profile)
    assert out.returncode == 0, out.stdout + out.stderr
    # Was ~8 s (a copy per 64 KiB step); in place / mremap it is milliseconds.
    # A loose bound that only the copying version misses.
    seconds = float(out.stdout.split()[1])
    assert seconds < 3.0, seconds


@pytest.mark.parametrize("profile", PROFILES)
def test_sizes_that_would_wrap_return_null(checks, libpath, profile) -> None:
    if Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "1":
        pytest.skip("vm.overcommit_memory=1: the kernel grants any mapping")
    out = run_case(checks, libpath, "huge_sizes", profile)
    assert out.returncode == 0, f"case {out.returncode} failed: {out.stderr}"


@pytest.mark.parametrize("profile", PROFILES)
def test_fork_while_threads_getline_and_flush(checks, libpath, profile) -> None:
    out = run_case(checks, libpath, "fork_deadlock", profile)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("profile", PROFILES)
def test_fork_from_a_signal_handler_during_malloc(checks, libpath, profile) -> None:
    out = run_case(checks, libpath, "fork_in_signal", profile)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("case", ["double_free", "wild_free"])
def test_bad_free_aborts_by_default(checks, libpath, case) -> None:
    out = run_case(checks, libpath, case)
    assert out.returncode == -signal.SIGABRT
    assert "slabcache: refused free" in out.stderr and "aborting" in out.stderr
    assert "ok" not in out.stdout


def test_bad_free_only_logged_when_asked(checks, libpath) -> None:
    out = run_case(checks, libpath, "double_free", SLABCACHE_ON_INVALID_FREE="log")
    assert out.returncode == 0
    assert "refused free (double free)" in out.stderr


def test_usable_size_of_an_interior_pointer_is_refused(checks, libpath) -> None:
    out = run_case(checks, libpath, "usable_size_invalid")
    assert out.returncode == -signal.SIGABRT
    assert "refused malloc_usable_size" in out.stderr


def test_sized_free_with_the_wrong_size_is_refused(checks, libpath) -> None:
    out = run_case(checks, libpath, "sized_free_mismatch")
    assert out.returncode == -signal.SIGABRT
    assert "size does not match" in out.stderr


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("double_free_after_reuse", "double free"),
        ("overflow_canary", "canary"),
        ("write_after_free", "write after free"),
    ],
)
def test_hardened_checks_abort(checks, libpath, case, message) -> None:
    out = run_case(checks, libpath, case, "hardened")
    assert out.returncode == -signal.SIGABRT, out.stdout + out.stderr
    assert message in out.stderr


@pytest.mark.parametrize("case", ["zero_size_faults", "freed_huge_faults"])
def test_hardened_inaccessible_memory_faults(checks, libpath, case) -> None:
    out = run_case(checks, libpath, case, "hardened")
    assert out.returncode == -signal.SIGSEGV, out.stdout + out.stderr


def test_light_profile_reuses_at_once(checks, libpath) -> None:
    """The stated limit of the light profile: a double free after the slot
    was reused cannot be told from a free of the new owner (see
    docs/allocator.md); the hardened profile's quarantine catches it."""
    out = run_case(checks, libpath, "double_free_after_reuse", "light")
    assert out.returncode == 1 and "reused at once" in out.stdout


COMMANDS = [
    [sys.executable, "-c", "import json, re; print(len(json.dumps(list(range(10000)))))"],
    ["ls", "/"],
    ["perl", "-e", "my @a = map { 'x' x $_ } 1..2000; print scalar(@a), qq(\\n)"],
    ["git", "--version"],
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: Path(c[0]).name)
def test_programs_start_under_ulimit_v_1000000(libpath, cmd) -> None:
    if shutil.which(cmd[0]) is None:
        pytest.skip(f"{cmd[0]} is not installed")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1_000_000 * 1024, 1_000_000 * 1024))

    env = {k: v for k, v in os.environ.items() if not k.startswith("SLABCACHE_")}
    env["LD_PRELOAD"] = str(libpath)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, preexec_fn=limit)
    assert out.returncode == 0, out.stderr
