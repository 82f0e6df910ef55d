"""Behavioural tests of slabcache.BlockManager, modelled on what a serving engine relies on."""

from __future__ import annotations

import numpy as np
import pytest

from slabcache import BlockManager, StepBatch
from slabcache.blocks import block_hashes, extra_key
from slabcache.errors import (
    AlreadyExistsError,
    CorruptionError,
    DoubleFreeError,
    InvalidArgumentError,
    InvalidTypeError,
    NotFoundError,
    SlabcacheError,
)

BS = 4


def toks(*ranges: tuple[int, int]) -> list[int]:
    out: list[int] = []
    for a, b in ranges:
        out.extend(range(a, b))
    return out


def admit(bm: BlockManager, rid: int, prompt: list[int], **kw) -> tuple[np.ndarray, int]:
    hit, n = bm.get_computed_blocks(rid, prompt, **kw)
    new = bm.allocate_slots(rid, len(prompt) - n)
    assert new is not None
    return hit, n


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


# ---- prefix caching --------------------------------------------------------------------


def test_shared_system_prompt_hits_across_requests():
    bm = BlockManager(num_blocks=64, block_size=BS)
    system = toks((1000, 1012))  # 3 full blocks
    _, n1 = admit(bm, 1, system + [1, 2])
    assert n1 == 0
    t1 = bm.block_table(1)
    hit, n2 = admit(bm, 2, system + [7, 8, 9])
    assert n2 == 12
    assert hit.tolist() == t1[:3].tolist()
    t2 = bm.block_table(2)
    assert t2[:3].tolist() == t1[:3].tolist()  # shared blocks
    assert t2[3] != t1[3]  # the partial tail never is
    for b in t1[:3]:
        assert bm.ref_count(int(b)) == 2
    s = bm.stats()
    assert s["prefix_hit_tokens"] == 12
    assert s["prefix_queries"] == 2
    bm.check_invariants()


def test_partial_blocks_are_never_shared():
    bm = BlockManager(num_blocks=16, block_size=BS)
    admit(bm, 1, [1, 2, 3])  # less than a block
    _, n = bm.get_computed_blocks(2, [1, 2, 3, 9])
    assert n == 0


def test_full_prompt_hit_recomputes_last_block_like_vllm():
    bm = BlockManager(num_blocks=16, block_size=BS)
    prompt = toks((0, 8))  # exactly two blocks
    admit(bm, 1, prompt)
    bm.free(1)
    hit, n = bm.get_computed_blocks(2, prompt)
    assert n == 4  # not 8: at most len - 1 tokens may hit
    assert len(hit) == 1
    # One more token and both blocks hit.
    hit, n = bm.get_computed_blocks(3, prompt + [99])
    assert n == 8


def test_decode_fills_blocks_that_become_cached():
    bm = BlockManager(num_blocks=16, block_size=BS)
    admit(bm, 1, [1, 2, 3])
    assert bm.allocate_slots(1, 1, [4]).tolist() == []  # fills block 0
    assert len(bm.allocate_slots(1, 1, [5])) == 1  # starts block 1
    _, n = bm.get_computed_blocks(2, [1, 2, 3, 4, 6])
    assert n == 4  # the block filled by decoding is cached


def test_extra_key_separates_lora_adapters():
    bm = BlockManager(num_blocks=16, block_size=BS)
    prompt = toks((0, 9))
    admit(bm, 1, prompt, extra_key="lora-a")
    _, n = bm.get_computed_blocks(2, prompt, extra_key="lora-b")
    assert n == 0
    _, n = bm.get_computed_blocks(3, prompt, extra_key="lora-a")
    assert n == 8


def test_chained_hash_depends_on_prefix():
    a = block_hashes([1, 2, 3, 4, 5, 6, 7, 8], BS)
    b = block_hashes([9, 2, 3, 4, 5, 6, 7, 8], BS)
    assert a.shape == (2, 32)
    assert (a[1] != b[1]).any()  # same tokens, different parent
    assert (block_hashes([1, 2, 3, 4], BS)[0] == a[0]).all()
    assert extra_key("x") != extra_key("y")


# ---- LRU eviction and ref counts --------------------------------------------------------


def test_freed_cached_blocks_are_evicted_tail_first_in_lru_order():
    bm = BlockManager(num_blocks=6, block_size=BS)
    admit(bm, 1, toks((0, 12)) + [50])  # blocks 0,1,2 cached, 3 partial
    t1 = bm.block_table(1).tolist()
    bm.free(1)
    order = bm.free_block_order().tolist()
    # The uncached partial block is reused first, then free blocks never used,
    # then cached blocks tail first (suffix before prefix).
    assert order[0] == t1[3]
    assert order[-3:] == [t1[2], t1[1], t1[0]]
    # Allocate enough to evict exactly one cached block: the tail.
    admit(bm, 2, toks((100, 112)) + [1])  # needs 4 blocks: partial + 2 fresh + 1 evicted
    _, n = bm.get_computed_blocks(3, toks((0, 12)) + [50])
    assert n == 8  # blocks 0 and 1 still cached, block 2 was evicted
    assert bm.stats()["evictions"] == 1


def test_cache_hit_takes_block_out_of_evictable_set():
    bm = BlockManager(num_blocks=4, block_size=BS)
    admit(bm, 1, toks((0, 8)) + [9])
    bm.free(1)
    assert bm.num_free_blocks == 4
    admit(bm, 2, toks((0, 8)) + [7])
    assert bm.num_free_blocks == 1  # 2 revived + 1 new
    # The revived blocks cannot be evicted by another request.
    assert bm.get_computed_blocks(3, toks((200, 210)))[1] == 0
    assert bm.allocate_slots(3, 10) is None
    bm.check_invariants()


def test_eviction_only_when_free_blocks_run_out():
    bm = BlockManager(num_blocks=8, block_size=BS)
    admit(bm, 1, toks((0, 8)) + [1])
    bm.free(1)
    admit(bm, 2, toks((100, 104)) + [1])  # 2 blocks: uncached ones first, no eviction
    assert bm.stats()["evictions"] == 0
    assert bm.get_computed_blocks(3, toks((0, 8)) + [2])[1] == 8


def test_ref_counts_return_to_zero_after_all_frees():
    bm = BlockManager(num_blocks=32, block_size=BS)
    sys_prompt = toks((0, 8))
    for rid in range(5):
        admit(bm, rid, sys_prompt + [100 + rid] * (rid + 1))
        for t in range(3):
            assert bm.allocate_slots(rid, 1, [t]) is not None
    bm.fork(0, 50)
    for rid in [*range(5), 50]:
        bm.free(rid)
    assert bm.num_requests == 0
    assert bm.num_free_blocks == 32
    assert all(bm.ref_count(b) == 0 for b in range(32))
    bm.check_invariants()


# ---- all-or-nothing and watermark -----------------------------------------------------


def test_allocation_is_all_or_nothing():
    bm = BlockManager(num_blocks=4, block_size=BS)
    admit(bm, 1, toks((0, 10)))  # 3 blocks
    bm.get_computed_blocks(2, toks((50, 60)))
    before = (bm.num_free_blocks, bm.stats()["refusals"])
    assert bm.allocate_slots(2, 10) is None
    assert bm.num_free_blocks == before[0]
    assert bm.stats()["refusals"] == before[1] + 1
    assert bm.num_computed_tokens(2) == 0
    bm.check_invariants()


def test_watermark_refuses_admission_but_not_decode():
    bm = BlockManager(num_blocks=10, block_size=BS, watermark=0.2)  # keep 2 free
    bm.get_computed_blocks(1, toks((0, 32)))
    assert bm.allocate_slots(1, 32) is not None  # 8 blocks, leaves exactly 2
    bm.get_computed_blocks(2, [1, 2])
    assert bm.allocate_slots(2, 2) is None  # would dip into the reserve
    # A running request may use the reserve.
    assert bm.allocate_slots(1, 1, [7]) is not None
    assert bm.num_free_blocks == 1


# ---- fork and copy-on-write -------------------------------------------------------------


def test_fork_shares_blocks_and_copies_on_write():
    bm = BlockManager(num_blocks=16, block_size=BS)
    admit(bm, 1, toks((0, 6)))  # blocks: [full, partial(2 tokens)]
    parent = bm.block_table(1).tolist()
    bm.fork(1, 2)
    assert bm.block_table(2).tolist() == parent
    assert bm.ref_count(parent[1]) == 2
    # The child appends into the shared partial block: copy it first.
    assert bm.allocate_slots(2, 1, [9]).tolist() == []
    copies = bm.drain_copies()
    assert copies.shape == (1, 2)
    src, dst = copies[0].tolist()
    assert src == parent[1]
    child = bm.block_table(2).tolist()
    assert child == [parent[0], dst]
    assert bm.ref_count(parent[1]) == 1
    assert bm.ref_count(parent[0]) == 2  # full blocks stay shared
    # The parent now owns its partial block alone: no copy.
    bm.allocate_slots(1, 1, [8])
    assert bm.drain_copies().shape == (0, 2)
    bm.check_invariants()


def test_fork_errors():
    bm = BlockManager(num_blocks=8, block_size=BS)
    admit(bm, 1, [1, 2])
    admit(bm, 2, [3, 4])
    with pytest.raises(AlreadyExistsError):
        bm.fork(1, 2)
    with pytest.raises(NotFoundError):
        bm.fork(9, 10)


# ---- swap -------------------------------------------------------------------------------


def test_swap_round_trip_with_coalesced_ranges():
    bm = BlockManager(num_blocks=16, block_size=BS, num_cpu_blocks=16, enable_prefix_caching=False)
    bm.get_computed_blocks(1, toks((0, 22)))
    bm.allocate_slots(1, 22)
    table = bm.block_table(1).tolist()
    assert table == list(range(6))
    out = bm.swap_out(1)
    assert out.tolist() == [[0, 0, 6]]  # one contiguous copy, not six
    assert bm.num_free_blocks == 16
    assert bm.host_block_table(1).tolist() == list(range(6))
    with pytest.raises(InvalidArgumentError):
        bm.allocate_slots(1, 1, [5])
    back = bm.swap_in(1)
    assert int(back[:, 2].sum()) == 6
    assert len(back) <= 2
    new_table = bm.block_table(1).tolist()
    # Every host block is copied to the device block that now stands at its table position.
    mapped = {}
    for h, d, n in back.tolist():
        for k in range(n):
            mapped[h + k] = d + k
    assert [mapped[i] for i in range(6)] == new_table
    assert bm.num_computed_tokens(1) == 22
    bm.free(1)
    assert bm.stats()["num_used_cpu_blocks"] == 0
    bm.check_invariants()


def test_swap_in_reuses_blocks_still_cached_on_device():
    bm = BlockManager(num_blocks=16, block_size=BS, num_cpu_blocks=16)
    admit(bm, 1, toks((0, 10)))
    bm.swap_out(1)
    back = bm.swap_in(1)
    # Both full blocks were still cached: only the partial block is copied.
    assert int(back[:, 2].sum()) == 1
    assert bm.stats()["swap_in_blocks_reused"] == 2
    bm.check_invariants()


def test_swap_refusals_change_nothing():
    bm = BlockManager(num_blocks=8, block_size=BS, num_cpu_blocks=2)
    admit(bm, 1, toks((0, 12)))  # 3 blocks > 2 host blocks
    assert bm.swap_out(1) is None
    assert len(bm.block_table(1)) == 3
    with pytest.raises(InvalidArgumentError):
        bm.swap_in(1)
    bm.check_invariants()


# ---- TTL pins ---------------------------------------------------------------------------


def test_pin_keeps_blocks_until_next_turn():
    clock = FakeClock()
    bm = BlockManager(num_blocks=6, block_size=BS, clock=clock)
    turn1 = toks((0, 13))  # 3 full blocks + 1 partial
    admit(bm, 1, turn1, program=77)
    bm.pin(1, ttl_s=30)
    assert bm.stats()["num_pinned_blocks"] == 3
    assert bm.num_free_blocks == 3  # the partial block was freed at once
    # Pressure: another request cannot evict the pinned blocks.
    bm.get_computed_blocks(2, toks((500, 520)))
    assert bm.allocate_slots(2, 20) is None
    # The next turn arrives: it hits everything and the pin is released.
    turn2 = turn1 + [5, 6, 7]
    _, n = bm.get_computed_blocks(3, turn2, program=77)
    assert n == 12
    assert bm.allocate_slots(3, len(turn2) - n) is not None
    assert bm.pin_deadline(77) is None
    assert bm.stats()["pins_released"] == 1
    bm.check_invariants()


def test_pins_expire_in_deadline_order():
    clock = FakeClock()
    bm = BlockManager(num_blocks=16, block_size=BS, clock=clock)
    for rid, ttl in ((1, 30.0), (2, 10.0), (3, 20.0)):
        admit(bm, rid, toks((rid * 100, rid * 100 + 5)))
        bm.pin(rid, ttl_s=ttl)
    assert bm.pin_deadline(2) == 110.0
    clock.t = 115.0
    assert bm.expire_pins() == 1
    assert bm.pin_deadline(2) is None and bm.pin_deadline(3) is not None
    assert bm.expire_pins(now=125.0) == 1
    assert bm.pin_deadline(1) is not None
    clock.t = 200.0
    bm.get_computed_blocks(9, [1])
    bm.allocate_slots(9, 1)  # allocation expires due pins first
    assert bm.stats()["pins_expired"] == 3
    assert bm.stats()["num_pinned_blocks"] == 0
    bm.check_invariants()


def test_pin_errors():
    bm = BlockManager(num_blocks=8, block_size=BS)
    admit(bm, 1, [1, 2, 3, 4, 5])
    with pytest.raises(InvalidArgumentError):
        bm.pin(1, ttl_s=-1)
    with pytest.raises(InvalidArgumentError):
        bm.pin(1, ttl_s=float("nan"))
    with pytest.raises(NotFoundError):
        bm.unpin(1)
    bm.pin(1, ttl_s=5, now=0.0)
    with pytest.raises(DoubleFreeError):
        bm.free(1)  # pinning finished the request
    bm.unpin(1)
    assert bm.num_free_blocks == 8


# ---- step: one call per scheduler step --------------------------------------------------


def test_step_admits_decodes_and_frees_in_one_call():
    bm = BlockManager(num_blocks=32, block_size=BS)
    system = toks((0, 8))
    b = StepBatch.from_lists([1, 2], [100, 100], [system + [1], system + [2, 3]])
    r = bm.step(b, block_tables=True)
    assert r.num_scheduled.tolist() == [9, 2]
    assert r.num_cached_tokens.tolist() == [0, 8]
    assert r.block_tables.shape == (2, 3)
    assert r.block_tables[0, :2].tolist() == r.block_tables[1, :2].tolist()
    assert r.new_blocks_of(0).tolist() == bm.block_table(1).tolist()
    # Next step: both decode one sampled token, request 1 finishes afterwards.
    r = bm.step(StepBatch.from_lists([1, 2], [1, 1], [[50], [60]]))
    assert r.num_scheduled.tolist() == [1, 1]
    r = bm.step(StepBatch.from_lists([2], [1], [[61]], finished=[1]))
    assert 1 not in bm
    assert bm.num_computed_tokens(2) == 12
    bm.check_invariants()


def test_step_chunked_prefill_budget():
    bm = BlockManager(num_blocks=32, block_size=BS)
    prompt = toks((0, 30))
    r = bm.step(StepBatch.from_lists([1], [8], [prompt]))
    assert r.num_scheduled.tolist() == [8]
    r = bm.step(StepBatch.from_lists([1], [8], [[]]))
    assert r.num_scheduled.tolist() == [8]
    assert bm.num_computed_tokens(1) == 16
    r = bm.step(StepBatch.from_lists([1], [100], [[]]))
    assert r.num_scheduled.tolist() == [14]


def test_step_refusal_and_fcfs():
    bm = BlockManager(num_blocks=4, block_size=BS)
    b = StepBatch.from_lists([1, 2, 3], [100] * 3, [toks((0, 8)), toks((10, 30)), [1, 2]])
    r = bm.step(b)
    assert r.num_scheduled.tolist() == [8, -1, 2]  # 2 does not fit, 3 still does
    assert 2 not in bm
    bm2 = BlockManager(num_blocks=4, block_size=BS)
    r = bm2.step(b, fcfs=True)
    assert r.num_scheduled.tolist() == [8, -1, -1]  # head-of-line: admission stops
    assert 3 not in bm2
    bm.check_invariants()
    bm2.check_invariants()


def test_step_bad_batch_changes_nothing():
    bm = BlockManager(num_blocks=16, block_size=BS)
    bm.step(StepBatch.from_lists([1], [100], [[1, 2, 3]]))
    snapshot = (bm.num_free_blocks, bm.num_computed_tokens(1), bm.stats()["prefix_queries"])
    bad = [
        StepBatch.from_lists([1, 1], [1, 1], [[4], [5]]),  # duplicate id
        StepBatch.from_lists([1, 2], [1, -1], [[4], [5]]),  # negative budget
        StepBatch.from_lists([2], [1], [[]]),  # new request without a prompt
        StepBatch.from_lists([1], [1], [[4]], finished=[1]),  # finished and scheduled
        StepBatch.from_lists([3], [4], [[1]], finished=[99]),  # unknown finished id
        StepBatch(
            np.array([1]), np.array([1]), np.array([4], np.int32), np.array([0, 5])
        ),  # offsets past the tokens
        StepBatch(np.array([1]), np.array([1]), np.array([-4], np.int32), np.array([0, 1])),
    ]
    for b in bad:
        with pytest.raises(SlabcacheError):
            bm.step(b)
        assert (
            bm.num_free_blocks,
            bm.num_computed_tokens(1),
            bm.stats()["prefix_queries"],
        ) == snapshot
        assert 2 not in bm and 3 not in bm
    bm.check_invariants()


# ---- events, stats, errors ---------------------------------------------------------------


def test_event_stream_reports_stored_and_removed_hashes():
    bm = BlockManager(num_blocks=3, block_size=BS, enable_events=True)
    admit(bm, 1, toks((0, 9)))
    ev = bm.drain_events()
    assert ev.kinds.tolist() == [ev.STORED, ev.STORED]
    expected = block_hashes(toks((0, 9)), BS)
    assert (ev.hashes == expected).all()
    assert ev.has_parent.tolist() == [False, True]
    assert (ev.parents[1] == expected[0]).all()
    assert len(bm.drain_events()) == 0
    bm.free(1)
    admit(bm, 2, toks((100, 111)))  # needs all 3 blocks: evicts both cached ones
    ev = bm.drain_events()
    removed = [i for i in range(len(ev)) if ev.kinds[i] == ev.REMOVED]
    assert len(removed) == 2
    assert {ev.hash_hex(i) for i in removed} == {bytes(h).hex() for h in expected}


def test_bad_input_raises_clear_errors_and_changes_nothing():
    bm = BlockManager(num_blocks=8, block_size=BS)
    admit(bm, 1, [1, 2, 3, 4, 5])
    with pytest.raises(NotFoundError):
        bm.allocate_slots(42, 1, [1])
    with pytest.raises(NotFoundError):
        bm.free(42)
    with pytest.raises(InvalidArgumentError):
        bm.allocate_slots(1, -1)
    with pytest.raises(InvalidArgumentError):
        bm.allocate_slots(1, 3, [6])  # more tokens than known
    with pytest.raises(InvalidArgumentError):
        bm.allocate_slots(1, 1, [-6])
    with pytest.raises(InvalidTypeError):
        bm.allocate_slots(1, 1, [1.5])
    with pytest.raises(InvalidTypeError):
        bm.free("one")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        bm.get_computed_blocks(1, [1, 2, 3])  # running request
    bm.get_computed_blocks(2, [7, 8, 9])
    with pytest.raises(InvalidArgumentError, match="disagree"):
        bm.get_computed_blocks(2, [7, 8, 0])
    with pytest.raises(InvalidArgumentError):
        bm.get_computed_blocks(3, [])
    with pytest.raises(InvalidArgumentError):
        bm.get_computed_blocks(4, [2**40])
    assert bm.num_computed_tokens(1) == 5
    bm.free(1)
    with pytest.raises(DoubleFreeError):
        bm.free(1)
    with pytest.raises(InvalidArgumentError):
        BlockManager(num_blocks=0, block_size=16)
    with pytest.raises(InvalidArgumentError):
        BlockManager(num_blocks=8, block_size=0)
    with pytest.raises(InvalidArgumentError):
        BlockManager(num_blocks=8, block_size=16, watermark=1.5)
    with pytest.raises(InvalidTypeError):
        BlockManager(num_blocks=8.0, block_size=16)  # type: ignore[arg-type]
    bm.check_invariants()


def test_check_invariants_is_a_real_check():
    bm = BlockManager(num_blocks=8, block_size=BS)
    bm.check_invariants()
    assert issubclass(CorruptionError, SlabcacheError)


def test_block_tables_padding_and_dtype():
    bm = BlockManager(num_blocks=16, block_size=BS)
    admit(bm, 1, toks((0, 9)))
    admit(bm, 2, [1])
    t = bm.block_tables([1, 2], pad=0, min_width=5)
    assert t.dtype == np.int32 and t.shape == (2, 5)
    assert t[1, 1:].tolist() == [0, 0, 0, 0]
    assert bm.block_table(1).dtype == np.int32
    with pytest.raises(NotFoundError):
        bm.block_tables([1, 3])


def test_prefix_caching_disabled():
    bm = BlockManager(num_blocks=8, block_size=BS, enable_prefix_caching=False)
    admit(bm, 1, toks((0, 8)) + [1])
    hit, n = bm.get_computed_blocks(2, toks((0, 8)) + [1])
    assert n == 0 and len(hit) == 0
    with pytest.raises(InvalidArgumentError):
        bm.pin(1, 5.0)


def test_reset_prefix_cache():
    bm = BlockManager(num_blocks=8, block_size=BS)
    admit(bm, 1, toks((0, 9)))
    assert not bm.reset_prefix_cache()
    bm.free(1)
    assert bm.reset_prefix_cache()
    assert bm.get_computed_blocks(2, toks((0, 9)))[1] == 0


def test_errors_neither_expire_pins_nor_count_queries():
    clock = FakeClock()
    bm = BlockManager(num_blocks=16, block_size=BS, clock=clock)
    admit(bm, 1, toks((0, 9)))
    bm.pin(1, ttl_s=1)
    bm.get_computed_blocks(2, toks((0, 9)))
    before = bm.stats()
    clock.t = 1000.0  # the pin is due, but failed calls must not change anything
    with pytest.raises(InvalidArgumentError):
        bm.allocate_slots(2, 10)  # more tokens than the 9 known
    with pytest.raises(NotFoundError):
        bm.allocate_slots(99, 1)
    with pytest.raises(InvalidArgumentError):
        bm.swap_in(2)  # not swapped out
    assert bm.pin_deadline(1) == 101.0
    assert bm.stats() == before
    assert bm.allocate_slots(2, 1) is not None  # a valid call expires it
    assert bm.pin_deadline(1) is None


def test_bench_reports_a_missing_peer_instead_of_crashing(monkeypatch, tmp_path):
    from slabcache.benchmarks import blocks as suite

    monkeypatch.setenv("SLABCACHE_VLLM_PYTHON", str(tmp_path / "no-python"))
    peer, note = suite.run_vllm(8, 0)
    assert peer is None and "not found" in note
    monkeypatch.delenv("SLABCACHE_VLLM_PYTHON")
    peer, note = suite.run_vllm(8, 0)
    assert peer is None and "set SLABCACHE_VLLM_PYTHON" in note


def test_lookahead_slots_for_speculative_decoding():
    bm = BlockManager(num_blocks=16, block_size=BS)
    admit(bm, 1, [1, 2, 3, 4])  # one full block
    new = bm.allocate_slots(1, 1, [5], num_lookahead_tokens=4)
    assert len(new) == 2  # slots for tokens 5..9: two more blocks
    assert bm.num_computed_tokens(1) == 5
    assert len(bm.allocate_slots(1, 1, [6])) == 0  # already has room
    bm.check_invariants()


def test_step_admission_of_next_turn_releases_pin():
    clock = FakeClock()
    bm = BlockManager(num_blocks=8, block_size=BS, clock=clock)
    turn1 = toks((0, 12)) + [1]
    bm.step(StepBatch.from_lists([1], [100], [turn1], programs=[5]))
    bm.pin(1, ttl_s=60)  # program 5 was recorded at admission
    assert bm.pin_deadline(5) == 160.0
    turn2 = turn1 + [2, 3, 4]
    r = bm.step(StepBatch.from_lists([2], [100], [turn2], programs=[5]))
    assert r.num_cached_tokens.tolist() == [12]
    assert bm.pin_deadline(5) is None
    s = bm.stats()
    assert s["pins_released"] == 1 and s["num_pinned_blocks"] == 0
    bm.check_invariants()


def test_step_block_tables_pad_refused_rows():
    bm = BlockManager(num_blocks=3, block_size=BS)
    b = StepBatch.from_lists([1, 2], [100, 100], [toks((0, 9)), toks((20, 30))])
    r = bm.step(b, block_tables=True, pad=-7)
    assert r.num_scheduled.tolist() == [9, -1]
    assert r.block_tables.shape == (2, 3)
    assert r.block_tables[1].tolist() == [-7, -7, -7]
    assert 2 not in bm
    bm.check_invariants()
