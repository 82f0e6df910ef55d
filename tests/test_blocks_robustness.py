"""Regression tests for the BlockManager robustness cases of issue 12."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from slabcache import BlockManager, StepBatch
from slabcache.errors import (
    DoubleFreeError,
    InvalidArgumentError,
    InvalidTypeError,
    NotFoundError,
    SlabcacheError,
)


def test_fcfs_stops_at_a_registered_request_that_does_not_fit():
    # Issue repro: request 1 (100 tokens) cannot fit 8 blocks of 4; request 2
    # (3 tokens) could, but FCFS must not admit it past the refused one.
    bm = BlockManager(8, 4)
    bm.get_computed_blocks(1, list(range(100)))
    bm.get_computed_blocks(2, [1, 2, 3])
    res = bm.step(StepBatch.from_lists([1, 2], [1000, 1000]), fcfs=True)
    assert res.num_scheduled.tolist() == [-1, -1]
    bm.check_invariants()
    # Same batch with fresh ids: the same answer.
    bm2 = BlockManager(8, 4)
    res2 = bm2.step(
        StepBatch.from_lists([1, 2], [1000, 1000], [list(range(100)), [1, 2, 3]]), fcfs=True
    )
    assert res2.num_scheduled.tolist() == [-1, -1]
    # Without fcfs the small one is admitted; both registered ids stay usable.
    res3 = bm.step(StepBatch.from_lists([1, 2], [1000, 1000]), fcfs=False)
    assert res3.num_scheduled.tolist() == [-1, 3]
    assert 1 in bm and 2 in bm
    bm.check_invariants()


def test_fcfs_does_not_stop_running_requests():
    bm = BlockManager(8, 4)
    bm.get_computed_blocks(1, [1, 2, 3])
    assert bm.allocate_slots(1, 3) is not None
    bm.get_computed_blocks(2, list(range(100)))
    # The waiting request is refused; the running one (appending) still runs.
    res = bm.step(StepBatch.from_lists([2, 1], [1000, 1], [[], [7]]), fcfs=True)
    assert res.num_scheduled.tolist() == [-1, 1]
    bm.check_invariants()


def test_huge_pool_under_memory_limit_raises_out_of_memory():
    code = textwrap.dedent(
        """
        import resource
        from slabcache import BlockManager
        from slabcache.errors import OutOfMemoryError
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        try:
            BlockManager(2**27, 16)
        except OutOfMemoryError as e:
            assert isinstance(e, MemoryError)
            print("OOM-RAISED")
        else:
            print("NO-ERROR")
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "OOM-RAISED" in r.stdout


def test_stats_from_another_thread_while_step_runs():
    # step() releases the GIL; a metrics thread reading stats() meanwhile must
    # wait for it (a lock), not fail with pyo3's "Already mutably borrowed".
    rng = np.random.default_rng(0)
    n, plen = 400, 2048
    bm = BlockManager(n * plen // 16 + 16, 16)
    errors: list[BaseException] = []
    calls = [0]
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                bm.stats()
                _ = bm.num_free_blocks
                calls[0] += 1
            except BaseException as e:  # noqa: BLE001 - the test records anything
                errors.append(e)
                return

    t = threading.Thread(target=reader)
    t.start()
    try:
        for rep in range(4):
            ids = np.arange(rep * n, (rep + 1) * n, dtype=np.int64)
            toks = rng.integers(0, 50_000, n * plen, dtype=np.int32)
            offs = np.arange(0, n * plen + 1, plen, dtype=np.int64)
            batch = StepBatch(ids, np.full(n, plen, dtype=np.int64), toks, offs)
            res = bm.step(batch, block_tables=True)
            assert (res.num_scheduled == plen).all()
            for i in ids:
                bm.free(int(i))
    finally:
        done.set()
        t.join()
    assert not errors, errors
    assert calls[0] > 0
    bm.check_invariants()


@pytest.mark.parametrize("flag", [True, False, np.True_])
def test_bool_is_not_a_request_id(flag):
    bm = BlockManager(8, 4)
    with pytest.raises(InvalidTypeError):
        bm.get_computed_blocks(flag, [1, 2, 3])
    bm.get_computed_blocks(1, [1, 2, 3])
    with pytest.raises(InvalidTypeError):
        bm.allocate_slots(flag, 3)
    with pytest.raises(InvalidTypeError):
        bm.free(flag)
    with pytest.raises(InvalidTypeError):
        bm.allocate_slots(1, flag)
    with pytest.raises(InvalidTypeError):
        bm.step(StepBatch(np.array([True]), np.array([3])))
    assert bm.num_requests == 1
    bm.check_invariants()


@pytest.mark.parametrize("kw", ["num_blocks", "block_size", "num_cpu_blocks"])
@pytest.mark.parametrize("value", [2**64, 2**63, -(2**64), 2**31])
def test_out_of_range_sizes_raise_the_error_family(kw, value):
    args = {"num_blocks": 8, "block_size": 4, "num_cpu_blocks": 0, kw: value}
    with pytest.raises(InvalidArgumentError) as ei:
        BlockManager(**args)
    assert isinstance(ei.value, SlabcacheError) and isinstance(ei.value, ValueError)


def test_out_of_range_token_counts_raise_the_error_family():
    bm = BlockManager(8, 4)
    bm.get_computed_blocks(1, [1, 2, 3])
    for v in (2**64, 2**63, -1):
        with pytest.raises(InvalidArgumentError):
            bm.allocate_slots(1, v)
        with pytest.raises(InvalidArgumentError):
            bm.allocate_slots(1, 1, num_lookahead_tokens=v)
    bm.check_invariants()


def test_double_free_detected_after_many_other_frees():
    bm = BlockManager(1024, 4)
    bm.get_computed_blocks(-5, [1, 2, 3])
    bm.allocate_slots(-5, 3)
    bm.free(-5)
    # 70,000 other requests come and go (more than any bounded memory of 65,536).
    batch_ids = np.arange(1, 70_001, dtype=np.int64)
    for chunk in np.array_split(batch_ids, 70):
        n = len(chunk)
        toks = np.tile(np.array([9, 8, 7], dtype=np.int32), n)
        offs = np.arange(0, 3 * n + 1, 3, dtype=np.int64)
        res = bm.step(StepBatch(chunk, np.full(n, 3, dtype=np.int64), toks, offs))
        assert (res.num_scheduled == 3).all()
        bm.step(StepBatch(np.zeros(0, np.int64), np.zeros(0, np.int64), finished=chunk))
    with pytest.raises(DoubleFreeError):
        bm.free(-5)
    with pytest.raises(DoubleFreeError):
        bm.free(1)
    with pytest.raises(NotFoundError):
        bm.free(70_001)
    # A freed id that is reused is live again, then a double free again.
    bm.get_computed_blocks(-5, [4, 5])
    bm.free(-5)
    with pytest.raises(DoubleFreeError):
        bm.free(-5)
    bm.check_invariants()
