"""The C ABI library: built with cargo, loaded with cffi (sc_free refuses
double frees) and used as LD_PRELOAD malloc for a whole Python process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_c_abi_refuses_double_and_invalid_frees(libpath: Path) -> None:
    cffi = pytest.importorskip("cffi")
    ffi = cffi.FFI()
    header = (ROOT / "rust/malloc/include/slabcache.h").read_text()
    decls = [
        line
        for line in header.splitlines()
        if line.startswith(("void", "int", "size_t", "uint64_t")) and line.endswith(";")
    ]
    ffi.cdef("\n".join(decls))
    lib = ffi.dlopen(str(libpath))
    p = lib.sc_malloc(100)
    assert p != ffi.NULL and int(ffi.cast("uintptr_t", p)) % 16 == 0
    assert lib.sc_usable_size(p) >= 100
    buf = ffi.buffer(p, 100)
    buf[:] = b"x" * 100
    assert lib.sc_free(p) == 0
    assert lib.sc_free(p) == -2  # SC_EDOUBLE_FREE
    q = lib.sc_malloc(64)
    assert lib.sc_free(ffi.cast("char *", q) + 16) == -1  # SC_EINVALID_FREE
    local = ffi.new("char[64]")
    assert lib.sc_free(local) == -1
    assert lib.sc_free(q) == 0
    assert lib.sc_refused_frees() >= 0
    a = lib.sc_aligned_alloc(4096, 10)
    assert int(ffi.cast("uintptr_t", a)) % 4096 == 0
    assert lib.sc_free(a) == 0


SCRIPT = r"""
import ctypes, json, threading
import numpy as np
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
sc = ctypes.CDLL(LIB)
sc.sc_usable_size.restype = ctypes.c_size_t
sc.sc_usable_size.argtypes = [ctypes.c_void_p]
sc.sc_refused_frees.restype = ctypes.c_uint64
# Python's own objects, numpy buffers and threads all run on the slab allocator.
data = [bytes(range(i % 256)) * 3 for i in range(20000)]
arr = np.arange(1_000_000, dtype=np.float64)
def work():
    x = [str(i) * 10 for i in range(20000)]
    assert len(x) == 20000
ts = [threading.Thread(target=work) for _ in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
p = libc.malloc(200)
owned = sc.sc_usable_size(p)
before = sc.sc_refused_frees()
libc.free(p)
libc.free(p)          # a double free: refused and reported, the process goes on
after = sc.sc_refused_frees()
print(json.dumps({"sum": float(arr.sum()), "owned": owned, "refused": after - before,
                  "n": len(data)}))
"""


def test_ld_preload_runs_python_on_the_slab_allocator(libpath: Path) -> None:
    # SLABCACHE_ON_INVALID_FREE=log: the script's deliberate double free is
    # only reported (the default aborts, see the next test).
    env = dict(os.environ, LD_PRELOAD=str(libpath), SLABCACHE_ON_INVALID_FREE="log")
    out = subprocess.run(
        [sys.executable, "-c", f"LIB = {str(libpath)!r}\n" + SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    import json

    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["sum"] == float(sum(range(1_000_000)))
    assert res["owned"] >= 200, "malloc did not come from the slab allocator"
    assert res["refused"] == 1
    assert "refused free (double free)" in out.stderr


def test_ld_preload_aborts_on_invalid_free_by_default(libpath: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLABCACHE_")}
    env["LD_PRELOAD"] = str(libpath)
    code = (
        "import ctypes; libc = ctypes.CDLL(None); libc.malloc.restype = ctypes.c_void_p;"
        "libc.free.argtypes = [ctypes.c_void_p]; p = libc.malloc(10); libc.free(p); libc.free(p)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    assert out.returncode == -6  # SIGABRT
    assert b"refused free (double free)" in out.stderr and b"aborting" in out.stderr


FORK_SCRIPT = r"""
import os, threading
stop = False
def churn():
    while not stop:
        x = [bytes(i % 300) for i in range(2000)]
        del x
threads = [threading.Thread(target=churn) for _ in range(3)]
for t in threads:
    t.start()
codes = []
for _ in range(20):
    pid = os.fork()
    if pid == 0:
        data = [str(i) * 20 for i in range(20000)]  # the child allocates at once
        os._exit(0 if len(data) == 20000 else 1)
    codes.append(os.waitpid(pid, 0)[1])
stop = True
for t in threads:
    t.join()
print("forks ok" if all(c == 0 for c in codes) else f"bad {codes}")
"""


def test_ld_preload_fork_while_other_threads_allocate(libpath: Path) -> None:
    """Smoke test: forked children allocate at once while the parent's other
    threads churn (the library's pthread_atfork handlers hold every allocator
    lock across fork(), so no child starts with a lock held by a thread it
    does not have)."""
    env = dict(os.environ, LD_PRELOAD=str(libpath))
    out = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "forks ok" in out.stdout
