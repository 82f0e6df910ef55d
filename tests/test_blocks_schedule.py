"""BlockManager.schedule: vLLM's v1 scheduler step (FCFS) in one call.

The trace-equality test replays schedules recorded from vLLM 0.33.0's own
``Scheduler`` with its stock ``KVCacheManager`` (``tests/data/
blocks_vllm_0.33_schedule.json.gz``, written by ``python -m
slabcache.benchmarks.blocks_vllm_scheduler --record-schedule``): the same
requests, arrivals and sampled tokens through ``ScheduleLoop`` must give the
same schedule at every step — tokens per request, admission kind, computed
tokens, block ids, preempted requests.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slabcache import BlockManager, ScheduleConfig, ScheduleResult
from slabcache.errors import InvalidArgumentError, InvalidTypeError, NotFoundError
from slabcache.integrations.schedule_loop import ScheduleLoop

DATA = Path(__file__).parent / "data" / "blocks_vllm_0.33_schedule.json.gz"


def _recorded() -> dict:
    with gzip.open(DATA, "rt") as f:
        return json.load(f)


def _replay(t: dict) -> list:
    loop = ScheduleLoop(
        BlockManager(t["num_blocks"] - 1, t["block_size"]),
        ScheduleConfig(
            max_num_batched_tokens=t["max_num_batched_tokens"],
            max_model_len=t["max_model_len"],
            max_num_seqs=t["max_num_seqs"],
        ),
    )
    pending = sorted(t["requests"], key=lambda r: r["arrival"])
    steps: list = []
    step = pi = 0
    while pi < len(pending) or loop.has_unfinished_requests():
        while pi < len(pending) and pending[pi]["arrival"] <= step:
            r = pending[pi]
            loop.add_request(r["id"], r["prompt"], r["max_tokens"])
            pi += 1
        step += 1
        if not loop.has_unfinished_requests():
            continue
        s = loop.schedule()
        raw = s.raw
        assert raw is not None
        rows = []
        for i in range(len(raw.req_ids)):
            b = (raw.blocks_of(i) + 1).tolist()
            kind = int(raw.kinds[i])
            rows.append(
                [
                    loop.request_name(int(raw.req_ids[i])),
                    int(raw.num_scheduled[i]),
                    kind,
                    int(raw.num_computed[i]),
                    b if (b or kind) else None,
                ]
            )
        steps.append([rows, sorted(s.preempted)])
        loop.update()
        loop.bm.check_invariants()
    assert loop.schedule().num_scheduled_tokens == {}  # frees the last finished requests
    assert loop.bm.num_requests == 0
    assert loop.bm.num_free_blocks == t["num_blocks"] - 1
    return steps


@pytest.mark.parametrize("shape", ["sharegpt", "rag", "parallel"])
def test_schedule_equals_vllm_scheduler_step_by_step(shape):
    rec = _recorded()
    assert rec["vllm_version"] == "0.33.0"
    t = rec["traces"][shape]
    want = t["steps"]
    # The recording must exercise what the mode is about.
    assert sum(len(p) for _, p in want) == t["summary"]["preemptions"] > 0
    assert any(row[2] == ScheduleResult.RESUMED for rows, _ in want for row in rows)
    got = _replay(t)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"{shape}: step {i} differs"


CFG = ScheduleConfig(max_num_batched_tokens=8, max_model_len=64, full_sequence_must_fit=False)


def _arrive(*reqs):
    return [(rid, list(range(100 * rid, 100 * rid + n))) for rid, n in reqs]


def test_one_budget_shared_and_chunked_prefill():
    bm = BlockManager(num_blocks=16, block_size=4)
    r = bm.schedule(CFG, arrivals=_arrive((1, 5), (2, 6)))
    assert r.req_ids.tolist() == [1, 2] and r.num_scheduled.tolist() == [5, 3]
    assert r.kinds.tolist() == [ScheduleResult.NEW, ScheduleResult.NEW]
    r = bm.schedule(CFG, appended=[(1, [7])])
    # Running first (1's decode, 2's last 3 prompt tokens), then nothing waits.
    assert r.req_ids.tolist() == [1, 2] and r.num_scheduled.tolist() == [1, 3]
    assert r.num_computed.tolist() == [5, 3]
    bm.check_invariants()


def test_preempts_from_the_back_and_admits_nothing_that_step():
    bm = BlockManager(num_blocks=4, block_size=4)
    cfg = ScheduleConfig(max_num_batched_tokens=64, max_model_len=64, full_sequence_must_fit=False)
    r = bm.schedule(cfg, arrivals=_arrive((1, 4), (2, 4), (3, 4), (4, 4)))
    assert r.req_ids.tolist() == [1, 2, 3, 4]
    bm.schedule(cfg, arrivals=_arrive((5, 2)))  # 5 waits: no block left
    # 1 needs a 2nd block: the last running request (4) is preempted; then 2
    # needs one: 3 is preempted.
    r = bm.schedule(cfg, appended=[(1, [1, 1, 1, 1]), (2, [2])])
    assert r.preempted.tolist() == [4, 3]
    assert r.req_ids.tolist() == [1, 2]
    assert bm.running_queue().tolist() == [1, 2]
    assert bm.waiting_queue().tolist() == [3, 4, 5]  # preempted go to the front, in order
    # Resumed with the tokens they had (4: at most 3 may hit, so no full block).
    r = bm.schedule(cfg, finished=[1, 2])
    assert r.req_ids.tolist() == [3, 4, 5]
    assert r.kinds.tolist() == [ScheduleResult.RESUMED] * 2 + [ScheduleResult.NEW]
    assert r.num_computed.tolist()[:2] == [0, 0]  # 4 tokens: at most num_tokens - 1 may hit
    assert bm.stats()["preemptions"] == 2
    bm.check_invariants()


def test_a_request_that_cannot_fit_preempts_itself_and_stops_the_pass():
    bm = BlockManager(num_blocks=2, block_size=4)
    cfg = ScheduleConfig(max_num_batched_tokens=64, max_model_len=64, full_sequence_must_fit=False)
    bm.schedule(cfg, arrivals=_arrive((1, 8)))
    r = bm.schedule(cfg, appended=[(1, [5])])  # a 3rd block does not exist
    assert r.req_ids.tolist() == [] and r.preempted.tolist() == [1]
    assert bm.num_free_blocks == 2 and bm.waiting_queue().tolist() == [1]
    bm.check_invariants()


def test_fcfs_head_of_line_and_max_num_seqs():
    bm = BlockManager(num_blocks=4, block_size=4)
    cfg = ScheduleConfig(max_num_batched_tokens=64, max_model_len=64, max_num_seqs=2)
    r = bm.schedule(cfg, arrivals=_arrive((1, 30), (2, 2)))
    # 1's full prompt needs 8 blocks (full_sequence_must_fit): refused, and 2
    # behind it waits too although it would fit.
    assert r.req_ids.tolist() == [] and bm.waiting_queue().tolist() == [1, 2]
    r = bm.schedule(cfg, finished=[1])
    assert r.req_ids.tolist() == [2]
    r = bm.schedule(cfg, arrivals=_arrive((3, 2), (4, 2)))
    assert r.req_ids.tolist() == [3]  # 2 has nothing to compute; max_num_seqs = 2
    assert bm.waiting_queue().tolist() == [4]


def test_watermark_applies_only_while_something_runs():
    bm = BlockManager(num_blocks=4, block_size=4)
    cfg = ScheduleConfig(64, 64, watermark_blocks=2, full_sequence_must_fit=False)
    r = bm.schedule(cfg, arrivals=_arrive((1, 12)))
    assert r.req_ids.tolist() == [1]  # nothing else runs: no watermark
    r = bm.schedule(cfg, arrivals=_arrive((2, 2)), appended=[(1, [1])])
    assert r.req_ids.tolist() == [1]  # 2 would leave fewer than 2 blocks free


def test_long_prefill_threshold_caps_chunks_when_several_are_eligible():
    bm = BlockManager(num_blocks=16, block_size=4)
    cfg = ScheduleConfig(64, 64, long_prefill_token_threshold=4, full_sequence_must_fit=False)
    r = bm.schedule(cfg, arrivals=_arrive((1, 10)))
    assert r.num_scheduled.tolist() == [10]  # alone: no cap
    r = bm.schedule(cfg, arrivals=_arrive((2, 10)), appended=[(1, [3])])
    assert r.num_scheduled.tolist() == [1, 4]


def test_bad_input_raises_and_changes_nothing():
    bm = BlockManager(num_blocks=8, block_size=4)
    bm.schedule(CFG, arrivals=_arrive((1, 3)))
    before = (bm.running_queue().tolist(), bm.free_block_order().tolist())
    with pytest.raises(NotFoundError):
        bm.schedule(CFG, finished=[9], arrivals=_arrive((2, 3)))
    with pytest.raises(InvalidArgumentError):
        bm.schedule(CFG, arrivals=_arrive((1, 3)))  # already exists
    with pytest.raises(InvalidArgumentError):
        bm.schedule(CFG, finished=[1], appended=[(1, [4])])
    with pytest.raises(InvalidArgumentError):
        bm.schedule(CFG, arrivals=[(3, [])])
    with pytest.raises(InvalidArgumentError):
        bm.schedule(CFG, arrivals=[(3, list(range(65)))])  # past max_model_len
    with pytest.raises(InvalidArgumentError):
        bm.schedule(ScheduleConfig(8, 64, max_num_seqs=0))
    with pytest.raises(InvalidTypeError):
        bm.schedule(CFG, finished=[True])  # True is not request 1
    with pytest.raises(InvalidTypeError):
        bm.schedule(CFG, arrivals=[(True, [1, 2])])
    with pytest.raises(InvalidTypeError):
        bm.schedule_arrays(
            CFG,
            np.array([True]),
            *(np.zeros(0, np.int64), np.zeros(0, np.int32)),
            np.zeros(1, np.int64),
            np.zeros(0, np.int64),
            np.zeros(0, np.int32),
            np.zeros(1, np.int64),
        )
    assert (bm.running_queue().tolist(), bm.free_block_order().tolist()) == before
    assert 2 not in bm and 3 not in bm
    bm.check_invariants()


def test_queued_requests_belong_to_schedule():
    bm = BlockManager(num_blocks=8, block_size=4)
    bm.schedule(CFG, arrivals=_arrive((1, 3)))
    with pytest.raises(InvalidArgumentError):
        bm.allocate_slots(1, 1, [5])
    with pytest.raises(InvalidArgumentError):
        bm.get_computed_blocks(1, list(range(100, 103)))
    bm.free(1)  # freeing is fine: it leaves the queue too
    assert bm.running_queue().tolist() == []
    bm.check_invariants()
    bm.get_computed_blocks(5, [1, 2, 3])
    with pytest.raises(InvalidArgumentError):
        bm.schedule(CFG, finished=[5])  # not a schedule() request


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    num_blocks=st.integers(2, 24),
    budget=st.integers(1, 40),
    max_seqs=st.integers(1, 6),
)
def test_random_workloads_keep_invariants_and_conserve_tokens(seed, num_blocks, budget, max_seqs):
    rng = np.random.default_rng(seed)
    bm = BlockManager(num_blocks=num_blocks, block_size=4)
    cfg = ScheduleConfig(
        budget, 48, max_num_seqs=max_seqs, watermark_blocks=int(rng.integers(0, 2))
    )
    loop = ScheduleLoop(bm, cfg)
    prefixes = [list(rng.integers(0, 9, 8)) for _ in range(2)]
    for i in range(12):
        prompt = prefixes[i % 2][: int(rng.integers(0, 9))] + list(
            rng.integers(0, 9, int(rng.integers(1, 12)))
        )
        loop.add_request(f"r{i}", [int(t) for t in prompt], int(rng.integers(1, 8)))
    finished = []
    for _ in range(400):
        if not loop.has_unfinished_requests():
            break
        s = loop.schedule()
        assert sum(s.num_scheduled_tokens.values()) <= budget
        assert len(bm.running_queue()) <= max_seqs
        assert not (s.preempted and s.new_reqs), "no admission in a step that preempted"
        bm.check_invariants()
        finished += loop.update()
    loop.schedule()  # frees the last finished requests
    # Every request finished unless the pool can never hold it (then it waits forever).
    stuck = bm.waiting_queue().tolist() + bm.running_queue().tolist()
    assert len(finished) + len(stuck) == 12
    if not stuck:
        assert bm.num_free_blocks == num_blocks and bm.num_requests == 0


def test_loop_abort_anywhere_leaks_nothing():
    loop = ScheduleLoop(BlockManager(num_blocks=6, block_size=4), ScheduleConfig(16, 64))
    for i in range(5):
        loop.add_request(f"r{i}", list(range(10 * i, 10 * i + 9)), max_tokens=6)
    loop.abort("r4")  # never reached the core
    s = loop.schedule()
    assert "r4" not in s.num_scheduled_tokens
    loop.abort(next(iter(s.num_scheduled_tokens)))  # scheduled, before update()
    loop.update()
    loop.abort(loop.request_name(int(loop.bm.waiting_queue()[0])))  # waiting in the core
    while loop.has_unfinished_requests():
        loop.schedule()
        loop.update()
        loop.bm.check_invariants()
    loop.schedule()
    assert loop.bm.num_requests == 0 and loop.bm.num_free_blocks == 6
