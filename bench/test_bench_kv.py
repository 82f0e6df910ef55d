"""pytest-benchmark: the KV tiers' CPU (numpy) data plane.

    pytest bench/test_bench_kv.py --benchmark-only

The GPU figures (bandwidth vs cudaMemcpyAsync, restore vs recompute, the
multi-turn trace) come from ``bench/kv_device.py`` on the device; these time
the same operations on the numpy path that CI tests: a 256-block swap-out as
one coalesced range vs one copy per block, and loading a 1k-token prefix
from the arena tier into the pool.
"""

from __future__ import annotations

import numpy as np
import pytest

from slabcache.blocks import block_hashes
from slabcache.kv import ArenaKVTier, HostKVTier, KVCachePool, KVLayout, KVTransfer

LAY = KVLayout(4, 16, 8, 64, "float16")  # 32 KiB per block per layer
NB = 512


@pytest.fixture(scope="module")
def tiers():
    pool = KVCachePool(LAY, NB)
    host = HostKVTier(LAY, NB, pin=False)
    for g in range(LAY.num_layers):
        pool.layer_bytes(g)[:] = 7
    yield pool, host
    host.close()


@pytest.mark.parametrize("coalesce", [True, False], ids=["coalesced", "per_block"])
def test_swap_out_256_blocks(benchmark, tiers, coalesce):
    pool, host = tiers
    xfer = KVTransfer(pool, host, short_bytes=0)
    rows = np.array([[0, 0, 256]], dtype=np.int32)
    benchmark(lambda: xfer.swap_out(rows, coalesce=coalesce))
    assert np.array_equal(host.block_view(0, 0, 0, 256), pool.layer_bytes(0)[:256])


def test_arena_load_1k_token_prefix(benchmark, tiers, tmp_path):
    pool, _ = tiers
    hashes = block_hashes(np.arange(1024), 16)
    with ArenaKVTier(tmp_path / "kv", LAY, model="bench") as disk:
        disk.put(hashes, pool.read_blocks(np.arange(64)))
        dst = np.arange(64, 128)

        def load():
            pool.write_blocks(dst, disk.get(hashes, out=pool.staging(64)))

        benchmark(load)
    assert np.array_equal(pool.read_blocks(dst), pool.read_blocks(np.arange(64)))
