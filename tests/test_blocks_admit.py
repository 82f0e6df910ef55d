"""The side-effect-free admission path: lookup() + admit() (+ cache_blocks()).

What vLLM's KV connectors need (external computed tokens, delay_cache_blocks),
allocation without a prior lookup, and a lookup that registers nothing, so a
waiting request that is aborted leaks nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slabcache import BlockManager
from slabcache.errors import InvalidArgumentError, SlabcacheError


def test_lookup_registers_nothing_and_counts_nothing():
    bm = BlockManager(num_blocks=8, block_size=2)
    assert bm.admit(1, [1, 2, 3, 4, 5], 5) is not None
    before = bm.stats()
    for _ in range(1000):  # many waiting requests looked up and aborted
        hit, n = bm.lookup([1, 2, 3, 4, 9])
    assert hit.tolist() == bm.block_table(1)[:2].tolist() and n == 4
    assert bm.num_requests == 1
    assert bm.stats() == before
    bm.check_invariants()


def test_lookup_caps_like_vllm():
    bm = BlockManager(num_blocks=8, block_size=2)
    bm.admit(1, [1, 2, 3, 4], 4)
    assert bm.lookup([1, 2, 3, 4])[1] == 2  # at most len - 1 tokens hit
    assert bm.lookup([1, 2, 3, 4, 5], max_hit_tokens=3)[1] == 2
    assert bm.lookup([1, 2, 3, 4, 5], max_hit_tokens=0)[1] == 0  # skip reading the cache
    assert bm.lookup([1, 2, 3, 4, 5], extra_key=7)[1] == 0  # another LoRA / salt


def test_admit_takes_the_hit_and_equals_the_registering_path():
    a = BlockManager(num_blocks=16, block_size=4)
    b = BlockManager(num_blocks=16, block_size=4)
    prompts = [list(range(10)), list(range(8)) + [50, 51, 52], list(range(4)) + [9] * 6]
    for rid, p in enumerate(prompts):
        hit, n = a.lookup(p)
        new_a = a.admit(rid, p, len(p) - n, hit=hit)
        hit_b, n_b = b.get_computed_blocks(rid, p)
        new_b = b.allocate_slots(rid, len(p) - n_b)
        assert (hit.tolist(), n) == (hit_b.tolist(), n_b)
        assert new_a.tolist() == new_b.tolist()
        assert a.block_table(rid).tolist() == b.block_table(rid).tolist()
    for rid in range(3):
        a.free(rid)
        b.free(rid)
    assert a.free_block_order().tolist() == b.free_block_order().tolist()
    a.check_invariants()


def test_refused_admission_leaves_no_trace():
    bm = BlockManager(num_blocks=4, block_size=2)
    bm.admit(1, [1, 2, 3], 3)
    order = bm.free_block_order().tolist()
    hit, _ = bm.lookup([1, 2, 7, 7, 7, 7, 7, 7, 7, 7])
    assert bm.admit(2, [1, 2] + [7] * 8, 8, hit=hit) is None
    assert 2 not in bm and bm.num_requests == 1
    assert bm.free_block_order().tolist() == order
    assert bm.ref_count(int(hit[0])) == 1  # the hit was not taken
    bm.check_invariants()


def test_external_tokens_and_delayed_caching():
    bm = BlockManager(num_blocks=16, block_size=4)
    prompt = list(range(20))
    # A connector loads 12 tokens asynchronously: slots now, cached only once the load lands.
    new = bm.admit(1, prompt, 0, num_external_tokens=12, delay_cache=True)
    assert len(new) == 3 and bm.num_computed_tokens(1) == 12
    assert bm.lookup(prompt)[1] == 0
    bm.cache_blocks(1, 8)
    assert bm.lookup(prompt)[1] == 8
    # The rest is computed later; its full blocks are cached at that allocation.
    assert len(bm.allocate_slots(1, 8)) == 2
    assert bm.lookup(prompt + [1])[1] == 20
    bm.check_invariants()


def test_external_and_local_hit_together():
    bm = BlockManager(num_blocks=16, block_size=4)
    bm.admit(1, list(range(8)), 8)
    prompt = list(range(8)) + list(range(100, 112))
    hit, n = bm.lookup(prompt)
    assert n == 8
    new = bm.admit(2, prompt, 4, hit=hit, num_external_tokens=8)
    assert len(new) == 3 and bm.num_computed_tokens(2) == 20
    assert bm.block_table(2)[:2].tolist() == hit.tolist()
    bm.check_invariants()


def test_admit_rejects_a_hit_that_is_not_this_prompts_prefix():
    bm = BlockManager(num_blocks=8, block_size=2)
    bm.admit(1, [1, 2, 3], 3)
    hit, _ = bm.lookup([1, 2, 3])
    with pytest.raises(InvalidArgumentError):
        bm.admit(2, [5, 6, 7], 1, hit=hit)  # another prompt's block
    with pytest.raises(InvalidArgumentError):
        bm.admit(2, [1, 2], 0, hit=hit)  # would hit the whole prompt
    with pytest.raises(InvalidArgumentError):
        bm.admit(2, [1, 2, 3], 5, hit=hit)  # more tokens than known
    with pytest.raises(SlabcacheError):
        bm.admit(1, [1, 2, 3], 3)  # already registered
    assert 2 not in bm
    bm.check_invariants()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_random_lookups_admissions_and_aborts_never_leak(seed):
    rng = np.random.default_rng(seed)
    bm = BlockManager(num_blocks=12, block_size=2)
    live: list[int] = []
    for rid in range(60):
        prompt = [1, 2, 3, 4][: int(rng.integers(0, 5))] + [int(t) for t in rng.integers(0, 4, 3)]
        hit, n = bm.lookup(prompt)
        if rng.random() < 0.3:
            continue  # aborted while waiting: nothing to clean up
        ext = int(rng.integers(0, len(prompt) - n + 1))
        new = bm.admit(
            rid,
            prompt,
            len(prompt) - n - ext,
            hit=hit,
            num_external_tokens=ext,
            delay_cache=bool(rng.random() < 0.5),
        )
        if new is not None:
            live.append(rid)
            bm.cache_blocks(rid, len(prompt))
        if live and rng.random() < 0.4:
            bm.free(live.pop(int(rng.integers(0, len(live)))))
        bm.check_invariants()
        assert bm.num_requests == len(live)
    for rid in live:
        bm.free(rid)
    assert bm.num_free_blocks == 12 and bm.num_requests == 0
