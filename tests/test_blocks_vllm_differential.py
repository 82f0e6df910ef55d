"""The adapter against vLLM's own KVCacheManager, call by call.

EAGLE/MTP last-block drop: random traces (shared prefixes, hits, chunked
prefills, decodes, frees) on one full-attention group, one sliding-window
group and hybrid layouts, with ``use_eagle=True`` (and ``is_eagle_group`` on
some groups): every hit (block ids, length) and every allocation must equal
stock vLLM's, call by call, and so must every held block's ``ref_cnt``.
Events: ``BlockStored`` carries the storing request's ``session_id``. Skips
when vLLM is not installed (CI); run in the vLLM venv (``PYTHONPATH=python
/work/venvs/vllm/bin/python -m pytest tests/test_blocks_vllm_differential.py``).
"""

from __future__ import annotations

import random
from typing import Any

import pytest

pytest.importorskip("vllm.v1.core.kv_cache_manager")
torch = pytest.importorskip("torch")

from vllm.sampling_params import SamplingParams  # noqa: E402
from vllm.utils.hashing import sha256  # noqa: E402
from vllm.v1.core.kv_cache_manager import KVCacheManager  # noqa: E402
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash  # noqa: E402
from vllm.v1.kv_cache_interface import (  # noqa: E402
    FullAttentionSpec,
    KVCacheConfig,
    KVCacheGroupSpec,
    SlidingWindowSpec,
)
from vllm.v1.request import Request  # noqa: E402

from slabcache.integrations.vllm import SlabcacheKVCacheManager  # noqa: E402

BS = 4


def _config(windows: list[int | None], eagle_groups: list[int], num_blocks: int) -> Any:
    groups = []
    for i, w in enumerate(windows):
        if w is None:
            spec: Any = FullAttentionSpec(
                block_size=BS, num_kv_heads=1, head_size=1, dtype=torch.float32
            )
        else:
            spec = SlidingWindowSpec(
                block_size=BS, num_kv_heads=1, head_size=1, dtype=torch.float32, sliding_window=w
            )
        g = KVCacheGroupSpec([f"layer{i}"], spec)
        if i in eagle_groups:
            g.is_eagle_group = True
        groups.append(g)
    return KVCacheConfig(num_blocks=num_blocks, kv_cache_tensors=[], kv_cache_groups=groups)


def _request(rid: str, tokens: list[int], session_id: str | None = None) -> Any:
    sp = SamplingParams(max_tokens=64)
    sp.update_from_generation_config({}, eos_token_id=100)
    return Request(
        request_id=rid,
        prompt_token_ids=tokens,
        sampling_params=sp,
        pooling_params=None,
        block_hasher=get_request_block_hasher(BS, sha256),
        session_id=session_id,
    )


def _ids(blocks: Any) -> Any:
    return None if blocks is None else blocks.get_block_ids()


@pytest.mark.parametrize(
    ("windows", "eagle_groups"),
    [
        ([None], []),
        ([8], []),
        ([None, 8], []),
        ([None, 12, 5], []),
        ([None, 12, 5], [2]),
        ([None, None, 8], [1]),
    ],
    ids=str,
)
@pytest.mark.parametrize("seed", range(4))
def test_eagle_trace_equals_vllm(windows: list[int | None], eagle_groups: list[int], seed: int):
    init_none_hash(sha256)
    rng = random.Random(seed * 101 + len(windows) * 7 + len(eagle_groups))
    cfg = _config(windows, eagle_groups, 49)
    kw: dict[str, Any] = dict(
        max_model_len=512, scheduler_block_size=BS, hash_block_size=BS, use_eagle=True
    )
    stock = KVCacheManager(cfg, **kw)
    ours = SlabcacheKVCacheManager(cfg, **kw)
    prefixes = [[rng.randrange(50) for _ in range(rng.randrange(4, 24))] for _ in range(3)]
    running: dict[str, tuple[Any, Any]] = {}
    hits = drops = 0
    for step in range(120):
        op = rng.random()
        if op < 0.4 or not running:
            prompt = rng.choice(prefixes) + [rng.randrange(50) for _ in range(rng.randrange(1, 10))]
            rid = f"r{step}"
            ra, rb = _request(rid, prompt), _request(rid, prompt)
            ba, na, _ = stock.get_computed_blocks(ra)
            bb, nb, _ = ours.get_computed_blocks(rb)
            assert (na, _ids(ba)) == (nb, _ids(bb)), f"hit differs at step {step}"
            hits += na > 0
            drops += na < len(prompt) - 1 - (len(prompt) - 1) % BS
            chunk = rng.randrange(1, len(prompt) - na + 1)
            ga = stock.allocate_slots(ra, chunk, na, ba)
            gb = ours.allocate_slots(rb, chunk, nb, bb)
            assert _ids(ga) == _ids(gb), f"allocation differs at step {step}"
            if ga is not None:
                ra.num_computed_tokens = rb.num_computed_tokens = na + chunk
                running[rid] = (ra, rb)
        elif op < 0.85:
            rid = rng.choice(list(running))
            ra, rb = running[rid]
            if ra.num_computed_tokens < ra.num_tokens:  # next prefill chunk
                k = rng.randrange(1, ra.num_tokens - ra.num_computed_tokens + 1)
            else:  # decode: the sampled token
                k = 1
                tok = rng.randrange(50)
                ra.append_output_token_ids(tok)
                rb.append_output_token_ids(tok)
            ga = stock.allocate_slots(ra, k)
            gb = ours.allocate_slots(rb, k)
            assert _ids(ga) == _ids(gb), f"allocation differs at step {step}"
            if ga is None:
                stock.free(ra)
                ours.free(rb)
                del running[rid]
            else:
                ra.num_computed_tokens += k
                rb.num_computed_tokens += k
        else:
            rid = rng.choice(list(running))
            ra, rb = running.pop(rid)
            stock.free(ra)
            ours.free(rb)
        assert stock.block_pool.get_num_free_blocks() == ours.block_pool.get_num_free_blocks()
        for rid in running:  # ref_cnt of the blocks handed out (the null block aside)
            want = [[b.ref_cnt for b in g if not b.is_null] for g in stock.get_blocks(rid).blocks]
            got = [[b.ref_cnt for b in g if not b.is_null] for g in ours.get_blocks(rid).blocks]
            assert want == got, f"ref_cnt differs at step {step}"
    assert hits > 0 and drops > 0


def _event_view(events: list[Any]) -> list[tuple]:
    from vllm.distributed.kv_events import BlockStored

    return [
        (type(e).__name__, len(e.block_hashes))
        + ((tuple(e.token_ids), e.group_idx, e.session_id) if isinstance(e, BlockStored) else ())
        for e in events
    ]


@pytest.mark.parametrize("windows", [[None], [None, 8]], ids=str)
def test_block_stored_events_carry_the_session_id(windows: list[int | None]):
    """Each store event names the session of the request whose call stored
    it (chunked prefill, decode, a shared prefix stored by another session),
    as vLLM's ``BlockPool`` does; removals carry none."""
    init_none_hash(sha256)
    cfg = _config(windows, [], 1 + 12 * len(windows))
    kw: dict[str, Any] = dict(
        max_model_len=512,
        scheduler_block_size=BS,
        hash_block_size=BS,
        enable_kv_cache_events=True,
    )
    stock = KVCacheManager(cfg, **kw)
    ours = SlabcacheKVCacheManager(cfg, **kw)
    shared = list(range(10))
    plan = [
        ("a", shared + [20, 21, 22], "s-a"),
        ("b", shared + [30] * 9, "s-b"),
        ("c", [7] * 9, None),
    ]
    reqs = []
    for rid, prompt, sess in plan:
        pair = (_request(rid, prompt, sess), _request(rid, prompt, sess))
        got = []
        for m, r in zip((stock, ours), pair, strict=True):
            blocks, n, _ = m.get_computed_blocks(r)
            got.append(_ids(m.allocate_slots(r, 5, n, blocks)))  # a first chunk
            r.num_computed_tokens = n + 5
        assert got[0] == got[1]
        reqs.append(pair)
    for ra, rb in reqs:  # the rest of each prompt, then two decodes
        for m, r in ((stock, ra), (ours, rb)):
            rest = r.num_tokens - r.num_computed_tokens
            assert m.allocate_slots(r, rest) is not None
            r.num_computed_tokens += rest
            for tok in (1, 2):
                r.append_output_token_ids(tok)
                m.allocate_slots(r, 1)
                r.num_computed_tokens += 1
    want, got_ev = _event_view(stock.take_events()), _event_view(ours.take_events())
    assert want == got_ev
    assert {e[-1] for e in want if e[0] == "BlockStored"} == {"s-a", "s-b", None}
