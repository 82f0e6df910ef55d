"""The per-request options the vLLM adapter relies on: hit limits (skip-read,
``max_cache_hit_length``), caller-chosen reserves, events with token ids."""

from __future__ import annotations

import numpy as np
import pytest

from slabcache import BlockManager
from slabcache.blocks import block_hashes
from slabcache.errors import InvalidArgumentError, InvalidTypeError


def _cached(bm: BlockManager, rid: int, prompt: list[int]) -> None:
    bm.get_computed_blocks(rid, prompt)
    assert bm.allocate_slots(rid, len(prompt)) is not None


def test_max_hit_tokens_zero_skips_the_prefix_cache():
    bm = BlockManager(16, 4)
    prompt = list(range(1, 14))
    _cached(bm, 1, prompt)
    hit, n = bm.get_computed_blocks(2, prompt, max_hit_tokens=0)
    assert (hit.size, n) == (0, 0)
    # The allocation takes exactly that (no) hit: all 13 tokens get fresh blocks.
    new = bm.allocate_slots(2, len(prompt))
    assert len(new) == 4 and not set(new.tolist()) & set(bm.block_table(1).tolist())
    bm.check_invariants()


@pytest.mark.parametrize("limit, blocks", [(3, 0), (4, 1), (11, 2), (12, 3), (1000, 3)])
def test_max_hit_tokens_caps_the_hit(limit, blocks):
    bm = BlockManager(16, 4)
    prompt = list(range(1, 14))
    _cached(bm, 1, prompt)
    hit, n = bm.get_computed_blocks(2, prompt, max_hit_tokens=limit)
    assert hit.tolist() == bm.block_table(1)[:blocks].tolist() and n == 4 * blocks
    assert bm.allocate_slots(2, len(prompt) - n) is not None
    assert bm.block_table(2)[:blocks].tolist() == bm.block_table(1)[:blocks].tolist()
    bm.check_invariants()


def test_max_hit_tokens_rejects_bad_values():
    bm = BlockManager(16, 4)
    with pytest.raises(InvalidArgumentError):
        bm.get_computed_blocks(1, [1, 2, 3], max_hit_tokens=-1)
    with pytest.raises(InvalidTypeError):
        bm.get_computed_blocks(1, [1, 2, 3], max_hit_tokens=True)
    assert bm.num_requests == 0


def test_reserve_replaces_the_watermark():
    bm = BlockManager(10, 4, watermark=0.5)  # 5 blocks kept free for admissions
    bm.get_computed_blocks(1, list(range(1, 25)))  # 6 blocks
    assert bm.allocate_slots(1, 24) is None  # 6 + 5 > 10
    assert bm.allocate_slots(1, 24, reserve=5) is None
    assert bm.allocate_slots(1, 24, reserve=4) is not None  # 6 + 4 <= 10
    assert bm.num_free_blocks == 4
    # A running request may be held to a reserve too.
    assert bm.allocate_slots(1, 1, [7], reserve=4) is None
    assert bm.allocate_slots(1, 1, [7], reserve=3) is not None
    bm.check_invariants()


def test_events_carry_token_ids_and_extra_key():
    bm = BlockManager(16, 4, enable_events=True)
    prompt = list(range(100, 110))  # 2 full blocks + 2 tokens
    bm.get_computed_blocks(1, prompt, extra_key=77)
    bm.allocate_slots(1, len(prompt))
    ev = bm.drain_events()
    assert ev.kinds.tolist() == [0, 0]
    assert ev.tokens_of(0).tolist() == prompt[:4] and ev.tokens_of(1).tolist() == prompt[4:8]
    assert ev.extra_keys.tolist() == [77, 77]
    want = block_hashes(prompt, 4, 77)
    assert np.array_equal(ev.hashes, want)
    assert not ev.has_parent[0] and np.array_equal(ev.parents[1], want[0])
    # A decode that fills the third block stores it with its tokens.
    bm.allocate_slots(1, 2, [5, 6])
    ev = bm.drain_events()
    assert ev.tokens_of(0).tolist() == [108, 109, 5, 6]
    # Removals carry no tokens.
    bm.free(1)
    assert bm.reset_prefix_cache()
    ev = bm.drain_events()
    assert set(ev.kinds.tolist()) == {1} and len(ev.token_ids) == 0
    assert ev.token_offsets.tolist() == [0] * (len(ev) + 1)
