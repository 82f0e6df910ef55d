"""Trace equality with vLLM, without vLLM: replays a recorded vLLM 0.33 run.

``tests/data/blocks_vllm_0.33_calls.json.gz`` holds every call vLLM's v1
``Scheduler`` made to its stock ``KVCacheManager`` on three traces
(ShareGPT-like, RAG with shared documents, parallel sampling), with
preemptions and evictions, and what the manager answered: the prefix hit
(block ids, tokens) of each lookup and the new block ids (or refusal) of
each allocation. Recorded with
``python -m slabcache.benchmarks.blocks_vllm_scheduler --record ...`` in the
vLLM venv. The replay drives slabcache's BlockManager the way
``slabcache.integrations.vllm`` does (vLLM's block 0 is its null block, so
slabcache's id ``i`` is vLLM's ``i + 1``) and requires every answer to be
identical.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from slabcache import BlockManager

DATA = Path(__file__).parent / "data" / "blocks_vllm_0.33_calls.json.gz"


def _load() -> dict:
    with gzip.open(DATA, "rt") as f:
        return json.load(f)


@pytest.mark.parametrize("shape", ["sharegpt", "rag", "parallel"])
def test_replay_matches_vllm_call_by_call(shape):
    trace = _load()["traces"][shape]
    bs = trace["block_size"]
    bm = BlockManager(trace["num_blocks"] - 1, bs)
    ids: dict[str, int] = {}
    tokens: dict[str, list[int]] = {}
    computed: dict[int, int] = {}
    pending: dict[int, list[int]] = {}
    next_id = 0
    refusals = evicted_hits = 0
    for k, call in enumerate(trace["calls"]):
        rid = call["rid"]
        where = f"{shape} call {k} ({call['op']} {rid})"
        if call["op"] == "lookup":
            if rid not in ids:
                ids[rid] = next_id
                next_id += 1
            cid = ids[rid]
            tokens[rid] = list(call["tokens"])
            if cid in bm:
                assert computed.get(cid, 0) == 0, where
                bm.free(cid)
            limit = call["limit"] if call["limit"] is not None else len(tokens[rid]) - 1
            hit, n = bm.get_computed_blocks(cid, tokens[rid], max_hit_tokens=limit)
            got = (hit + 1).tolist()
            assert got == call["out"] and n == call["n"], where
            pending[cid] = got
            computed[cid] = 0
        elif call["op"] == "alloc":
            cid = ids[rid]
            appended = list(call["tokens"])
            known_before = len(tokens[rid])
            tokens[rid].extend(appended)
            known = len(tokens[rid])
            hit = call["hit"]
            if hit:
                assert pending.get(cid) == hit, where
            total = call["computed"] + len(hit) * bs
            target = total + call["new"]
            base = max(computed[cid], len(hit) * bs)
            n_core = max(0, min(target, known) - base)
            lookahead = max(0, target + call["lookahead"] - base - n_core)
            assert call["reserved"] == 0, where
            new = None
            fits = True
            if call["full"]:
                # vLLM's full_sequence_must_fit: the whole sequence must fit now.
                have = len(bm.block_table(cid)) + len(hit)
                need = max(0, -(-call["num_tokens"] // bs) - have)
                evictable = sum(1 for b in hit if bm.ref_count(b - 1) == 0)
                fits = need <= bm.num_free_blocks - evictable
            if fits:
                new = bm.allocate_slots(
                    cid,
                    n_core,
                    appended if known > known_before else None,
                    num_lookahead_tokens=lookahead,
                    reserve=0,
                )
            if call["out"] is None:
                assert new is None, where
                refusals += 1
                tokens[rid] = tokens[rid][:known_before]
            else:
                assert new is not None, where
                assert (new + 1).tolist() == call["out"], where
                computed[cid] = base + n_core
                pending.pop(cid, None)
        else:
            cid = ids.pop(rid)
            if cid in bm:
                bm.free(cid)
            computed.pop(cid, None)
            pending.pop(cid, None)
        if k % 256 == 0:
            bm.check_invariants()
    bm.check_invariants()
    stats = bm.stats()
    evicted_hits = stats["evictions"]
    # The trace must exercise what it claims to: refusals (preemption) and evictions.
    assert refusals > 0 and evicted_hits > 0, (refusals, evicted_hits)
