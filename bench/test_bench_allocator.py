"""pytest-benchmark suite of the slab allocator, each case beside its peer.

Run: ``python -m pytest bench/test_bench_allocator.py --benchmark-group-by=group``.
The core (Rust) figures come from ``_native.slab_bench_*``, which time the
core and glibc ``malloc`` in the same call; they are recorded in
``extra_info`` (ns per pair and the ratio).
"""

from __future__ import annotations

import numpy as np
import pytest

from slabcache import SlabAllocator, _native

SIZES = [64, 256, 1024, 4096]

# The Rust-level hooks exist only in an extension built with the `bench` cargo feature.
needs_hooks = pytest.mark.skipif(
    not hasattr(_native, "slab_bench_pairs"),
    reason='build with MATURIN_PEP517_ARGS="--features bench" pip install -e ".[bench]"',
)


@pytest.fixture(scope="module")
def allocator() -> SlabAllocator:
    return SlabAllocator()


@pytest.mark.parametrize("n", SIZES)
def test_slab_alloc_free(benchmark, allocator: SlabAllocator, n: int) -> None:
    benchmark.group = f"python alloc+free {n} B"
    alloc, free = allocator.alloc, allocator.free
    benchmark(lambda: free(alloc(n)))


@pytest.mark.parametrize("n", SIZES)
def test_numpy_empty(benchmark, n: int) -> None:
    benchmark.group = f"python alloc+free {n} B"
    benchmark(lambda: np.empty(n, np.uint8))


@pytest.mark.parametrize("n", SIZES)
def test_bytearray(benchmark, n: int) -> None:
    benchmark.group = f"python alloc+free {n} B"
    benchmark(lambda: bytearray(n))


def test_batch_1000(benchmark, allocator: SlabAllocator) -> None:
    benchmark.group = "1000 x 64 B objects"
    sizes = np.full(1000, 64, dtype=np.int64)
    benchmark(lambda: allocator.free_many(allocator.alloc_many(sizes)))


def test_single_calls_1000(benchmark, allocator: SlabAllocator) -> None:
    benchmark.group = "1000 x 64 B objects"
    alloc, free = allocator.alloc, allocator.free

    def run() -> None:
        for _ in range(1000):
            free(alloc(64))

    benchmark(run)


@needs_hooks
@pytest.mark.parametrize("n", [16, 64, 256, 4096, 65536])
def test_core_pairs_vs_glibc(benchmark, n: int) -> None:
    benchmark.group = "core alloc+free vs glibc (timed in Rust)"
    ours, glibc = benchmark.pedantic(
        _native.slab_bench_pairs, args=(n, 200_000, 3), rounds=3, iterations=1
    )
    benchmark.extra_info.update(ours_ns=ours, glibc_ns=glibc, ratio=glibc / ours)


@needs_hooks
def test_core_mixed_trace_vs_glibc(benchmark) -> None:
    benchmark.group = "core alloc+free vs glibc (timed in Rust)"
    ours, glibc = benchmark.pedantic(
        _native.slab_bench_trace, args=(200_000, 10_000, 42, 2), rounds=3, iterations=1
    )
    benchmark.extra_info.update(ours_ns=ours, glibc_ns=glibc, ratio=glibc / ours)
