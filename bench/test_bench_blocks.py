"""pytest-benchmark: one scheduler step of the BlockManager, and the trace replay.

    pytest bench/test_bench_blocks.py --benchmark-only

The step benchmark times ``BlockManager.step`` for a decode step of 512
running requests (the hot path of every engine iteration) sharing a system
prompt. The replay compares against vLLM's KVCacheManager when its
environment is there (``SLABCACHE_VLLM_PYTHON``), see
``python/slabcache/benchmarks/blocks.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from slabcache import BlockManager, ScheduleConfig, StepBatch

N = 512
BS = 16


@pytest.fixture
def running_manager():
    bm = BlockManager(num_blocks=N * 40, block_size=BS)
    rng = np.random.default_rng(0)
    system = rng.integers(0, 32000, size=600, dtype=np.int32)
    prompts = [
        np.concatenate([system, rng.integers(0, 32000, size=100, dtype=np.int32)]) for _ in range(N)
    ]
    bm.step(StepBatch.from_lists(list(range(N)), [10_000] * N, prompts))
    return bm


def test_decode_step_512_requests(benchmark, running_manager):
    bm = running_manager
    ids = np.arange(N, dtype=np.int64)
    budgets = np.ones(N, dtype=np.int64)
    offsets = np.arange(N + 1, dtype=np.int64)
    state = {"tok": 0}

    def one_step():
        state["tok"] += 1
        toks = np.full(N, state["tok"] % 32000, dtype=np.int32)
        res = bm.step(StepBatch(ids, budgets, toks, offsets))
        assert (res.num_scheduled == 1).all()

    benchmark.pedantic(one_step, rounds=200, iterations=1)
    bm.check_invariants()


def test_schedule_decode_step_512_requests(benchmark):
    """``BlockManager.schedule``: vLLM's whole scheduler step (running pass
    with the shared budget, waiting pass) for 512 decoding requests."""
    bm = BlockManager(num_blocks=N * 40, block_size=BS)
    cfg = ScheduleConfig(max_num_batched_tokens=N * 800, max_model_len=8192, max_num_seqs=N)
    rng = np.random.default_rng(0)
    system = rng.integers(0, 32000, size=600, dtype=np.int32)
    prompts = [
        np.concatenate([system, rng.integers(0, 32000, size=100, dtype=np.int32)]) for _ in range(N)
    ]
    bm.schedule(cfg, arrivals=list(enumerate(prompts)))
    e64 = np.zeros(0, dtype=np.int64)
    ids = np.arange(N, dtype=np.int64)
    offsets = np.arange(N + 1, dtype=np.int64)
    state = {"tok": 0}

    def one_step():
        state["tok"] += 1
        toks = np.full(N, state["tok"] % 32000, dtype=np.int32)
        r = bm.schedule_arrays(
            cfg, e64, ids, toks, offsets, e64, np.zeros(0, np.int32), np.zeros(1, np.int64)
        )
        assert len(r.req_ids) == N

    benchmark.pedantic(one_step, rounds=200, iterations=1)
    bm.check_invariants()


def test_decode_step_512_requests_with_block_tables(benchmark, running_manager):
    bm = running_manager
    ids = np.arange(N, dtype=np.int64)
    budgets = np.ones(N, dtype=np.int64)
    offsets = np.arange(N + 1, dtype=np.int64)
    toks = np.ones(N, dtype=np.int32)

    def one_step():
        res = bm.step(StepBatch(ids, budgets, toks, offsets), block_tables=True)
        assert res.block_tables.shape[0] == N

    benchmark.pedantic(one_step, rounds=200, iterations=1)


def test_trace_replay_256_conversations(benchmark):
    from slabcache.benchmarks.blocks import run_slabcache
    from slabcache.benchmarks.blocks_trace import make_trace

    trace = make_trace(256, seed=0)
    result = benchmark.pedantic(lambda: run_slabcache(trace), rounds=1, iterations=1)
    benchmark.extra_info["us_per_step"] = result["manager_ns"] / result["steps"] / 1e3
    benchmark.extra_info["hit_tokens"] = result["hit_tokens"]
