"""The package as a user installs it: version metadata, the bundled LD_PRELOAD library and C
header, and run-time CPU dispatch (forced kernels agree; under CPU models without AVX-512 or
without any AVX, nothing above the baseline executes).

scripts/test_wheel.sh runs this file (with the whole suite) against the installed release wheel
with SLABCACHE_REQUIRE_BUNDLED=1, so a wheel without the preload library fails instead of
skipping. In a source install the library is absent and the tests check that the commands say
how to build it.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import slabcache
from slabcache import bundled
from slabcache.errors import NotBundledError, SlabcacheError

REQUIRE_BUNDLED = os.environ.get("SLABCACHE_REQUIRE_BUNDLED") == "1"
QEMU = shutil.which("qemu-x86_64")
# QEMU's qemu64 model less the extensions it adds to x86-64 v1: SSE/SSE2 only, the baseline a
# wheel for "x86_64" may assume.
BASELINE_CPU = "qemu64,-pni,-cx16,-lahf-lm,-popcnt,-sse4a,-abm"
needs_qemu = pytest.mark.skipif(
    platform.machine() != "x86_64" or QEMU is None,
    reason="needs qemu-x86_64 on x86_64 (Debian: apt-get install qemu-user)",
)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slabcache", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def _bundled_library() -> Path:
    try:
        return bundled.preload_library()
    except NotBundledError as e:
        if REQUIRE_BUNDLED:
            pytest.fail(f"SLABCACHE_REQUIRE_BUNDLED=1 but: {e}")
        pytest.skip(f"source install without the preload library: {e}")


# --- version and metadata ---------------------------------------------------------------


def test_version_is_the_installed_distributions() -> None:
    dist_version = importlib.metadata.version("slabcache")
    assert slabcache.__version__ == dist_version
    out = _cli("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["slabcache", dist_version]
    meta = importlib.metadata.metadata("slabcache")
    assert meta["Requires-Python"] == ">=3.11"
    major_minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"Programming Language :: Python :: {major_minor}" in meta.get_all("Classifier")


def test_typing_files_are_installed() -> None:
    pkg = bundled.package_dir()
    assert (pkg / "py.typed").is_file()
    assert (pkg / "_native.pyi").is_file()
    assert bundled.extension_module().is_file()
    assert bundled.extension_module().parent == pkg


# --- the preload library and the header ----------------------------------------------------


def test_info_paths_lists_every_file() -> None:
    out = _cli("info", "--paths")
    assert out.returncode == 0, out.stderr
    paths = dict(line.split(": ", 1) for line in out.stdout.splitlines())
    assert set(paths) == {"package", "extension", "stubs", "preload-library", "c-header"}
    for key in ("package", "extension", "stubs"):
        assert Path(paths[key]).exists(), (key, paths[key])
    assert Path(paths["package"]) == bundled.package_dir()
    lib = paths["preload-library"]
    if lib.startswith("missing: "):
        assert not REQUIRE_BUNDLED, lib
        assert bundled.BUILD_COMMAND in lib
    else:
        assert Path(lib) == bundled.package_dir() / "lib" / bundled.PRELOAD_LIBRARY_NAME
    header = paths["c-header"]
    if header.startswith("missing: "):  # a source install outside a clone (the sdist)
        assert not REQUIRE_BUNDLED and bundled.source_checkout() is None, header
        assert "--only-binary" in header
    else:
        assert Path(header).is_file() and Path(header).name == "slabcache.h"


def test_preload_path_prints_the_library_or_says_how_to_build_it() -> None:
    out = _cli("preload-path")
    try:
        lib = bundled.preload_library()
    except NotBundledError:
        assert not REQUIRE_BUNDLED
        assert out.returncode == 1
        assert out.stdout == ""  # LD_PRELOAD=$(slabcache preload-path) gets nothing
        assert bundled.BUILD_COMMAND in out.stderr
        with pytest.raises(FileNotFoundError):  # NotBundledError is one, and a SlabcacheError
            bundled.preload_library()
        assert issubclass(NotBundledError, SlabcacheError)
    else:
        assert out.returncode == 0, out.stderr
        assert out.stdout == f"{lib}\n"
        assert lib.is_file()


PRELOADED_CHILD = r"""
import ctypes, json, sys
lib = sys.argv[1]
sc = ctypes.CDLL(lib)
sc.sc_refused_frees.restype = ctypes.c_uint64
sc.sc_usable_size.restype = ctypes.c_size_t
sc.sc_usable_size.argtypes = [ctypes.c_void_p]
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.strdup.restype = ctypes.c_void_p
raw_malloc = ctypes.pythonapi.PyMem_RawMalloc
raw_malloc.restype = ctypes.c_void_p
raw_malloc.argtypes = [ctypes.c_size_t]
raw_free = ctypes.pythonapi.PyMem_RawFree
raw_free.argtypes = [ctypes.c_void_p]

class DlInfo(ctypes.Structure):
    _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p),
                ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]

def defined_in(f):  # which object the process's symbol lookup found (diagnostics only)
    try:
        dladdr = libc.dladdr
    except AttributeError:
        dladdr = ctypes.CDLL("libdl.so.2").dladdr
    info = DlInfo()
    ok = dladdr(ctypes.cast(f, ctypes.c_void_p), ctypes.byref(info))
    return info.fname.decode() if ok and info.fname else "?"

import numpy as np
import slabcache
x = np.arange(200_000, dtype=np.float64) * 2
m = slabcache.BSkipList(key_type="int")
m.update_many(np.arange(1000), np.arange(1000))
q = raw_malloc(100)                                   # the interpreter's own malloc
d = libc.strdup(b"slab")                              # malloc called from inside libc
p = libc.malloc(64)
owned = {"PyMem_RawMalloc": sc.sc_usable_size(q) >= 100,
         "strdup": sc.sc_usable_size(d) >= 5, "malloc": sc.sc_usable_size(p) >= 64}
raw_free(q)
libc.free(d)
libc.free(p)
before = sc.sc_refused_frees()
libc.free(p)                                          # double free: refused, counted
print(json.dumps({
    "owned": owned,
    "refused": sc.sc_refused_frees() - before,
    "sum": float(x.sum()), "len": len(m),
    "malloc_from": defined_in(libc.malloc), "free_from": defined_in(libc.free),
}))
"""


def test_bundled_preload_library_runs_a_python_process() -> None:
    lib = _bundled_library()
    path = _cli("preload-path").stdout.strip()
    assert path == str(lib)
    # By default a C program's bad free aborts with a clear line; with the switch it is only
    # logged (and still refused), which lets the child report what happened.
    aborted = subprocess.run(
        [sys.executable, "-c", PRELOADED_CHILD, path],
        capture_output=True,
        text=True,
        env={**os.environ, "LD_PRELOAD": path},
        timeout=120,
    )
    assert aborted.returncode == -signal.SIGABRT, aborted.stderr
    assert "refused free (double free)" in aborted.stderr
    out = subprocess.run(
        [sys.executable, "-c", PRELOADED_CHILD, path],
        capture_output=True,
        text=True,
        env={**os.environ, "LD_PRELOAD": path, "SLABCACHE_ON_INVALID_FREE": "log"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    where = f"malloc from {res['malloc_from']}, free from {res['free_from']}"
    # Memory that Python, libc and a plain malloc() hand out belongs to the slab allocator.
    assert res["owned"] == {"PyMem_RawMalloc": True, "strdup": True, "malloc": True}, where
    assert res["refused"] == 1, where
    assert (res["sum"], res["len"]) == (float(199_999 * 200_000), 1000)


def test_header_declares_what_the_library_exports() -> None:
    try:
        header = bundled.c_header().read_text()
    except NotBundledError as e:
        assert not REQUIRE_BUNDLED, e
        pytest.skip(f"source install outside a clone: {e}")
    declared = set(re.findall(r"\b(sc_\w+)\s*\(", header))
    assert {"sc_malloc", "sc_free", "sc_calloc", "sc_realloc"} <= declared
    lib = ctypes.CDLL(str(_bundled_library()))
    missing = [name for name in sorted(declared) if not hasattr(lib, name)]
    assert missing == []


# --- run-time CPU dispatch ------------------------------------------------------------------

# Every kernel must give the scalar kernel's exact results: same ids, same scores.
SEARCH_CHILD = r"""
import json
import numpy as np
import slabcache
from slabcache.vectors import default_kernel, int8_dot, quantize
rng = np.random.default_rng(7)
dim = 77                                   # not a multiple of any vector width: tails too
base = rng.standard_normal((700, dim)).astype(np.float32)
queries = rng.standard_normal((9, dim)).astype(np.float32)
out = {"kernel": default_kernel()}
for metric in ("ip", "cosine", "l2"):
    idx = slabcache.Int8Index(dim=dim, metric=metric)
    idx.add(base)
    assert idx.kernel == out["kernel"], (idx.kernel, out["kernel"])
    scores, ids = idx.search(queries, k=10)
    out[metric] = [scores.tolist(), ids.tolist()]
a, _ = quantize(base[:300])
b, _ = quantize(base[400:])
out["dot"] = int8_dot(a, b).tolist()
print(json.dumps(out))
"""


def _search(kernel: str | None, qemu_cpu: str | None = None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "SLABCACHE_SIMD"}
    if kernel is not None:
        env["SLABCACHE_SIMD"] = kernel
    cmd = [sys.executable, "-c", SEARCH_CHILD]
    if qemu_cpu is not None:
        assert QEMU is not None
        cmd = [QEMU, "-cpu", qemu_cpu, *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, f"{cmd[:3]}: rc {out.returncode}\n{out.stderr[-3000:]}"
    return json.loads(out.stdout)


def _results(res: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in res.items() if k != "kernel"}


@pytest.fixture(scope="module")
def scalar_results() -> dict[str, object]:
    res = _search("scalar")
    assert res["kernel"] == "scalar"
    return _results(res)


def test_every_forced_kernel_matches_scalar(scalar_results: dict[str, object]) -> None:
    kernels = slabcache.vectors.available_kernels()
    assert kernels[0] == "scalar"
    if platform.machine() == "x86_64" and slabcache._native.cpu_features()["avx2"]:
        assert "avx2" in kernels  # the AVX2 kernel (the no-AVX-512 path) is exercised
    for kernel in kernels[1:]:
        res = _search(kernel)
        assert res["kernel"] == kernel
        assert _results(res) == scalar_results, kernel
    auto = _search(None)
    assert auto["kernel"] == kernels[-1]  # available_kernels() ends with the fastest
    assert _results(auto) == scalar_results


def test_unsupported_forced_kernel_is_a_clear_error() -> None:
    other = "neon" if platform.machine() == "x86_64" else "avx2"
    env = {**os.environ, "SLABCACHE_SIMD": other}
    code = (
        "import slabcache\n"
        "try:\n"
        "    slabcache.Int8Index(dim=8)\n"
        "except slabcache.InvalidArgumentError as e:\n"
        "    print('refused:', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused:") and "SLABCACHE_SIMD" in out.stdout


# The extension loaded alone (numpy itself needs more than the x86-64 baseline), on a CPU
# model with nothing above SSE2: importing it and asking for kernels must run.
BASELINE_CHILD = r"""
import importlib.util, json, os, sys
sys.modules["numpy"] = None                      # prove numpy is not needed here
spec = importlib.util.spec_from_file_location("slabcache._native", sys.argv[1])
native = importlib.util.module_from_spec(spec)
spec.loader.exec_module(native)
feats = native.cpu_features()
os.environ["SLABCACHE_SIMD"] = "avx2"
try:
    native.int8_default_kernel()
    forced = "accepted"
except Exception as e:  # without the package, the bindings cannot name InvalidArgumentError
    forced = str(e)
print(json.dumps({"version": native.__version__, "kernels": native.int8_kernels(),
                  "present": sorted(k for k, v in feats.items() if v), "forced_avx2": forced}))
"""


@needs_qemu
def test_extension_imports_on_a_baseline_x86_64_cpu() -> None:
    assert QEMU is not None
    out = subprocess.run(
        [
            QEMU,
            "-cpu",
            BASELINE_CPU,
            sys.executable,
            "-c",
            BASELINE_CHILD,
            str(bundled.extension_module()),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "SLABCACHE_SIMD"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout)
    assert res["version"] == slabcache.__version__
    assert res["kernels"] == ["scalar"]
    assert res["present"] == ["sse2"]
    assert "not supported on this CPU" in res["forced_avx2"]  # refused, not executed


def _cpu_without_avx2() -> str:
    # Nehalem (SSE4.2, no AVX at all) where numpy runs there; numpy 2.4's wheels need AVX, so
    # then SandyBridge (AVX, no AVX2): either way below every SIMD kernel of ours. The
    # extension alone on a bare x86-64 CPU is test_extension_imports_on_a_baseline_x86_64_cpu.
    assert QEMU is not None
    for cpu in ("Nehalem", "SandyBridge"):
        probe = [QEMU, "-cpu", cpu, sys.executable, "-c", "import numpy"]
        if subprocess.run(probe, capture_output=True, timeout=300).returncode == 0:
            return cpu
    pytest.skip("numpy runs under neither QEMU's Nehalem nor its SandyBridge CPU model")


@needs_qemu
def test_without_avx2_the_scalar_kernel_runs_and_agrees(scalar_results: dict[str, object]) -> None:
    res = _search(None, qemu_cpu=_cpu_without_avx2())
    assert res["kernel"] == "scalar"
    assert _results(res) == scalar_results


@needs_qemu
def test_without_avx512_the_avx2_kernel_is_picked_and_agrees(
    scalar_results: dict[str, object],
) -> None:
    # Haswell: AVX2, no AVX-512 (QEMU's TCG cannot run AVX-512 at all, so any AVX-512
    # instruction reached would be SIGILL).
    res = _search(None, qemu_cpu="Haswell-noTSX")
    assert res["kernel"] == "avx2"
    assert _results(res) == scalar_results


@needs_qemu
def test_preload_library_runs_a_python_process_on_a_baseline_cpu() -> None:
    lib = _bundled_library()
    out = subprocess.run(
        [
            QEMU or "",
            "-cpu",
            BASELINE_CPU,
            "-E",
            f"LD_PRELOAD={lib}",
            sys.executable,
            "-c",
            "import ctypes, sys; sc = ctypes.CDLL(sys.argv[1]); libc = ctypes.CDLL(None);"
            "a = lambda f: ctypes.cast(f, ctypes.c_void_p).value;"
            "x = [str(i) * 20 for i in range(50000)];"
            "print(a(libc.malloc) == a(sc.malloc), len(x))",
            str(lib),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["True", "50000"]
