"""SlabcacheScheduler's one-call fast path (``integrations/_vllm_fast.py``).

Without vLLM: ``schedule_arrays(running=, waiting=)`` (the caller keeps the
queues) gives the same steps as ``schedule()`` owning them. With vLLM
(skipped otherwise): the fast path against stock ``Scheduler`` on random
traces, step by step (full records: tokens, kinds, computed, block ids,
preemptions).
"""

from __future__ import annotations

import importlib.util
import random

import numpy as np
import pytest

from slabcache import BlockManager, ScheduleConfig

_E64 = np.zeros(0, np.int64)
_E32 = np.zeros(0, np.int32)
_O = np.zeros(1, np.int64)


def _trace(seed: int, n: int) -> list[tuple[int, list[int], int]]:
    rng = random.Random(seed)
    shared = [rng.randrange(3, 500) for _ in range(48)]
    out = []
    for i in range(n):
        p = (shared if rng.random() < 0.5 else []) + [
            rng.randrange(3, 500) for _ in range(rng.randrange(1, 90))
        ]
        out.append((i, p, rng.randrange(1, 30)))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_external_queues_equal_owned_queues(seed: int) -> None:
    cfg = ScheduleConfig(64, 512, max_num_seqs=6, long_prefill_token_threshold=24)
    own, ext = BlockManager(40, 8), BlockManager(40, 8)
    trace = _trace(seed, 40)
    running: list[int] = []
    waiting: list[int] = []
    outputs = {i: 0 for i, _, _ in trace}
    max_tok = {i: m for i, _, m in trace}
    toks = {i: len(p) for i, p, _ in trace}
    pending = list(trace)
    appended: dict[int, int] = {}
    finished: list[int] = []
    step = 0
    while pending or running or waiting:
        arr = pending[:2] if step % 3 == 0 else []
        pending = pending[len(arr) :]
        a_ids = np.array(list(appended), np.int64) if appended else _E64
        a_toks = np.array([7 + t for t in appended.values()], np.int32) if appended else _E32
        a_offs = np.arange(len(appended) + 1, dtype=np.int64) if appended else _O
        n_ids = np.array([i for i, _, _ in arr], np.int64) if arr else _E64
        n_toks = np.array([t for _, p, _ in arr for t in p], np.int32) if arr else _E32
        n_offs = np.cumsum([0] + [len(p) for _, p, _ in arr]).astype(np.int64) if arr else _O
        fin = np.array(finished, np.int64) if finished else _E64
        r1 = own.schedule_arrays(cfg, fin, a_ids, a_toks, a_offs, n_ids, n_toks, n_offs)
        for f in finished:
            ext.free(f)
        # The caller's queues: arrivals join the waiting queue's back.
        waiting += [i for i, _, _ in arr]
        eligible = len(running) + len(waiting)
        c2 = ScheduleConfig(
            64, 512, max_num_seqs=6, long_prefill_token_threshold=24 if eligible > 1 else 0
        )
        r2 = ext.schedule_arrays(
            c2,
            _E64,
            a_ids,
            a_toks,
            a_offs,
            n_ids,
            n_toks,
            n_offs,
            running=np.array(running, np.int64),
            waiting=np.array(waiting, np.int64),
        )
        for f1, f2 in zip(
            (r1.req_ids, r1.num_scheduled, r1.num_computed, r1.kinds, r1.blocks, r1.preempted),
            (r2.req_ids, r2.num_scheduled, r2.num_computed, r2.kinds, r2.blocks, r2.preempted),
            strict=True,
        ):
            assert f1.tolist() == f2.tolist(), step
        assert not len(ext.running_queue()) and not len(ext.waiting_queue())
        for v in r2.preempted.tolist():
            assert running.pop() == v
            waiting.insert(0, v)
        for i, k in zip(r2.req_ids.tolist(), r2.kinds.tolist(), strict=True):
            if k:
                assert waiting.pop(0) == i
                running.append(i)
        assert running == own.running_queue().tolist()
        assert waiting == own.waiting_queue().tolist()
        # Sampling: a request whose prompt is done takes one token.
        appended, finished = {}, []
        for i, n, c in zip(
            r2.req_ids.tolist(), r2.num_scheduled.tolist(), r2.num_computed.tolist(), strict=True
        ):
            if c + n >= toks[i]:
                outputs[i] += 1
                toks[i] += 1
                if outputs[i] >= max_tok[i]:
                    finished.append(i)
                    running.remove(i)
                else:
                    appended[i] = outputs[i]
        own.check_invariants()
        ext.check_invariants()
        step += 1
    assert step > 20


def test_external_queues_reject_bad_input_unchanged() -> None:
    bm = BlockManager(8, 4)
    bm.schedule_arrays(
        ScheduleConfig(16, 64),
        _E64,
        _E64,
        _E32,
        _O,
        np.array([1]),
        np.array([1, 2, 3], np.int32),
        np.array([0, 3]),
        running=_E64,
        waiting=np.array([1]),
    )
    from slabcache import SlabcacheError

    bad_queues = (
        (np.array([1]), np.array([1])),  # queued twice
        (_E64, np.array([1])),  # a running request waiting with blocks
    )
    for running, waiting in bad_queues:
        with pytest.raises(SlabcacheError):
            bm.schedule_arrays(
                ScheduleConfig(16, 64),
                *(_E64, _E64, _E32, _O, _E64, _E32, _O),
                running=running,
                waiting=waiting,
            )
    bm.free(1)
    bm.check_invariants()
    assert bm.num_requests == 0


needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vLLM")


@needs_vllm
@pytest.mark.parametrize("shape,blocks", [("sharegpt", 120), ("rag", 200), ("parallel", 90)])
def test_fast_path_equals_stock_step_by_step(shape: str, blocks: int) -> None:
    from slabcache.benchmarks import blocks_vllm_scheduler as b

    trace = b.make_trace(shape, seed=3, n=40)
    for r in trace:
        r["prompt"] = r["prompt"][:500]
        r["max_tokens"] = min(r["max_tokens"], 40)
    kw = {"num_blocks": blocks, "max_num_seqs": 12, "max_num_batched_tokens": 384}
    stock_steps: list[object] = []
    fast_steps: list[object] = []
    b.run(b.make_scheduler(adapter=False, **kw), trace, steps_out=stock_steps)
    s = b.make_scheduler(adapter=True, **kw)
    b.run(s, trace, steps_out=fast_steps)
    assert s.fast_path_steps == len(fast_steps) and s.stock_path_steps == 0
    assert len(stock_steps) == len(fast_steps)
    for i, (x, y) in enumerate(zip(stock_steps, fast_steps, strict=True)):
        assert x == y, i
