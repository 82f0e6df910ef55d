"""BlockManager against a plain-Python model of vLLM's semantics, and a long trace.

The model is deliberately naive (lists, dicts, O(n) removal) so it is easy to
read as the specification: block ids, tables, hits and refusals must match
the Rust core exactly after every operation.
"""

from __future__ import annotations

import numpy as np
from blocks_trace_helper import make_trace, replay
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from slabcache import BlockManager
from slabcache.blocks import block_hashes

BS = 2
NUM_BLOCKS = 12


class Model:
    def __init__(self, num_blocks: int, bs: int) -> None:
        self.bs = bs
        self.free = list(range(num_blocks))  # front = reused first
        self.ref = [0] * num_blocks
        self.hash: list[bytes | None] = [None] * num_blocks
        self.cache: dict[bytes, list[int]] = {}
        self.reqs: dict[int, dict] = {}
        self.copies: list[tuple[int, int]] = []
        self.pins: dict[int, tuple[float, list[int]]] = {}

    def pin(self, rid: int, deadline: float, program: int) -> None:
        r = self.reqs.pop(rid)
        keep = min(r["ncached"], len(r["blocks"]))
        self.free_blocks(list(reversed(r["blocks"][keep:])))
        old = self.pins.pop(program, None)
        self.pins[program] = (deadline, r["blocks"][:keep])
        if old is not None:
            self.free_blocks(list(reversed(old[1])))

    def expire(self, now: float) -> None:
        for program in sorted(
            (p for p, (d, _) in self.pins.items() if d <= now), key=lambda p: (self.pins[p][0], p)
        ):
            _, blocks = self.pins.pop(program)
            self.free_blocks(list(reversed(blocks)))

    def release_pin(self, program: int | None) -> None:
        if program is not None and program in self.pins:
            _, blocks = self.pins.pop(program)
            self.free_blocks(list(reversed(blocks)))

    def hashes(self, tokens: list[int]) -> list[bytes]:
        return [bytes(h) for h in block_hashes(tokens, self.bs)] if tokens else []

    def touch(self, b: int) -> None:
        if self.ref[b] == 0:
            self.free.remove(b)
        self.ref[b] += 1

    def alloc(self) -> int:
        b = self.free.pop(0)
        h = self.hash[b]
        if h is not None:
            self.cache[h].remove(b)
            if not self.cache[h]:
                del self.cache[h]
            self.hash[b] = None
        self.ref[b] = 1
        return b

    def free_blocks(self, ordered: list[int]) -> None:
        first = []
        for b in ordered:
            self.ref[b] -= 1
            if self.ref[b] == 0:
                if self.hash[b] is not None:
                    self.free.append(b)
                else:
                    first.append(b)
        self.free[0:0] = first

    def lookup(self, tokens: list[int]) -> list[int]:
        out = []
        hs = self.hashes(tokens)
        for h in hs[: (len(tokens) - 1) // self.bs]:
            if h not in self.cache:
                break
            out.append(self.cache[h][0])
        return out

    def allocate(self, rid: int, n_new: int, new_tokens: list[int], hit: list[int]):
        r = self.reqs[rid]
        bs = self.bs
        computed = r["computed"] + len(hit) * bs
        need = -(-(computed + n_new) // bs)
        new_blocks = max(0, need - len(r["blocks"]) - len(hit))
        cow = []
        if n_new > 0 and r["blocks"]:
            first = r["computed"] // bs
            last = (r["computed"] + n_new - 1) // bs
            cow = [
                i
                for i in range(first, last + 1)
                if i < len(r["blocks"]) and self.ref[r["blocks"][i]] > 1
            ]
        evictable = sum(1 for b in hit if self.ref[b] == 0)
        if new_blocks + len(cow) > len(self.free) - evictable:
            return None
        r["tokens"] += new_tokens
        for b in hit:
            self.touch(b)
        r["blocks"] += hit
        r["computed"] = computed
        r["ncached"] += len(hit)
        for i in cow:
            src = r["blocks"][i]
            dst = self.alloc()
            self.free_blocks([src])
            r["blocks"][i] = dst
            self.copies.append((src, dst))
        added = [self.alloc() for _ in range(new_blocks)]
        r["blocks"] += added
        r["computed"] += n_new
        hs = self.hashes(r["tokens"])
        upto = min(r["computed"], len(r["tokens"])) // bs
        for i in range(r["ncached"], upto):
            b = r["blocks"][i]
            self.hash[b] = hs[i]
            self.cache.setdefault(hs[i], []).append(b)
        r["ncached"] = max(r["ncached"], upto)
        return added


class BlockManagerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.bm = BlockManager(num_blocks=NUM_BLOCKS, block_size=BS, clock=lambda: self.now)
        self.model = Model(NUM_BLOCKS, BS)
        self.next_id = 0
        self.now = 0.0

    def live(self) -> list[int]:
        return sorted(self.model.reqs)

    @rule(
        prefix=st.sampled_from([[], [1, 2], [1, 2, 3, 4], [5, 6, 7, 8, 9, 9]]),
        tail=st.lists(st.integers(0, 3), min_size=1, max_size=6),
        program=st.sampled_from([None, 0, 1]),
    )
    def admit(self, prefix, tail, program):
        rid = self.next_id
        self.next_id += 1
        prompt = prefix + tail
        hit, n = self.bm.get_computed_blocks(rid, prompt, program=program)
        m_hit = self.model.lookup(prompt)
        assert hit.tolist() == m_hit and n == len(m_hit) * BS
        got = self.bm.allocate_slots(rid, len(prompt) - n)
        self.model.expire(self.now)
        m_hit = self.model.lookup(prompt)  # expiry keeps hashes: same hit
        assert len(m_hit) * BS == n
        self.model.reqs[rid] = {
            "tokens": prompt,
            "blocks": [],
            "computed": 0,
            "ncached": 0,
            "program": program,
        }
        want = self.model.allocate(rid, len(prompt) - n, [], m_hit)
        if want is None:
            assert got is None
            del self.model.reqs[rid]
            self.bm.free(rid)  # the registered waiting request is dropped
        else:
            assert got.tolist() == want
            self.model.release_pin(program)

    @precondition(lambda self: self.model.reqs)
    @rule(data=st.data(), tok=st.integers(0, 3))
    def decode(self, data, tok):
        rid = data.draw(st.sampled_from(self.live()))
        got = self.bm.allocate_slots(rid, 1, [tok])
        self.model.expire(self.now)
        want = self.model.allocate(rid, 1, [tok], [])
        assert (got is None) == (want is None)
        if want is not None:
            assert got.tolist() == want

    @precondition(lambda self: self.model.reqs)
    @rule(data=st.data())
    def free(self, data):
        rid = data.draw(st.sampled_from(self.live()))
        self.bm.free(rid)
        r = self.model.reqs.pop(rid)
        self.model.free_blocks(list(reversed(r["blocks"])))

    @precondition(lambda self: self.model.reqs)
    @rule(data=st.data())
    def fork(self, data):
        rid = data.draw(st.sampled_from(self.live()))
        child = self.next_id
        self.next_id += 1
        self.bm.fork(rid, child)
        r = self.model.reqs[rid]
        self.model.reqs[child] = {k: (list(v) if isinstance(v, list) else v) for k, v in r.items()}
        self.model.reqs[child]["program"] = None
        for b in r["blocks"]:
            self.model.touch(b)

    @precondition(lambda self: self.model.reqs)
    @rule(data=st.data(), ttl=st.sampled_from([0.0, 1.0, 3.0]), program=st.sampled_from([None, 2]))
    def pin(self, data, ttl, program):
        rid = data.draw(st.sampled_from(self.live()))
        self.bm.pin(rid, ttl_s=ttl, program=program)
        key = program if program is not None else self.model.reqs[rid]["program"]
        self.model.pin(rid, self.now + ttl, rid if key is None else key)

    @rule(dt=st.sampled_from([0.5, 1.0, 2.0]))
    def advance(self, dt):
        self.now += dt
        self.bm.expire_pins()
        self.model.expire(self.now)

    @invariant()
    def agrees_with_model(self):
        self.bm.check_invariants()
        assert self.bm.num_free_blocks == len(self.model.free)
        assert self.bm.free_block_order().tolist() == self.model.free
        for rid, r in self.model.reqs.items():
            assert self.bm.block_table(rid).tolist() == r["blocks"]
        for program, (deadline, _) in self.model.pins.items():
            assert self.bm.pin_deadline(program) == deadline
        assert self.bm.stats()["num_pinned_blocks"] == sum(
            len(b) for _, b in self.model.pins.values()
        )
        copies = self.bm.drain_copies()
        assert [tuple(c) for c in copies.tolist()] == self.model.copies
        self.model.copies = []


TestBlockManagerModel = BlockManagerMachine.TestCase
TestBlockManagerModel.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_long_randomized_multi_turn_trace_keeps_invariants():
    # ~1700 requests (multi-turn, shared system prompts, tool pauses, bursts)
    # under memory pressure: evictions, refusals, preemptions and TTL pins.
    trace = make_trace(400, seed=7, num_blocks=400 * 12)
    assert trace.total_turns() > 1400
    bm = BlockManager(trace.num_blocks, trace.block_size)
    res = replay(trace, bm, pin_ttl_steps=40, after_each_call=bm.check_invariants)
    s = bm.stats()
    assert res.finished_turns == trace.total_turns()
    assert s["evictions"] > 0 and s["refusals"] > 0 and res.preemptions > 0
    assert s["pins_created"] > 0 and s["pins_expired"] + s["pins_released"] == s["pins_created"]
    # Everything is released at the end: no leaked block, ever.
    assert bm.num_requests == 0
    assert bm.num_free_blocks == trace.num_blocks
    assert all(bm.ref_count(b) == 0 for b in range(0, trace.num_blocks, 97))


def test_step_matches_per_request_calls():
    """The one-call step and the per-request API make identical decisions."""
    rng = np.random.default_rng(3)
    a = BlockManager(num_blocks=40, block_size=4)
    b = BlockManager(num_blocks=40, block_size=4)
    from slabcache import StepBatch

    running: list[int] = []
    nid = 0
    for _ in range(200):
        ids, budgets, toks = [], [], []
        for rid in running:
            ids.append(rid)
            budgets.append(1)
            toks.append([int(rng.integers(0, 5))])
        new = []
        for _ in range(int(rng.integers(0, 3))):
            prompt = [1, 2, 3, 4, 5, 6, 7, 8][: int(rng.integers(0, 9))] + list(
                rng.integers(0, 5, size=int(rng.integers(1, 6)))
            )
            ids.append(nid)
            budgets.append(1000)
            toks.append([int(t) for t in prompt])
            new.append(nid)
            nid += 1
        res = a.step(StepBatch.from_lists(ids, budgets, toks))
        preempted = []
        for i, rid in enumerate(ids):
            if rid in new:
                _, n = b.get_computed_blocks(rid, toks[i])
                got = b.allocate_slots(rid, len(toks[i]) - n)
                if got is None:
                    b.free(rid)
                    assert res.num_scheduled[i] == -1
                else:
                    assert res.num_scheduled[i] == len(toks[i]) - n
                    assert res.num_cached_tokens[i] == n
                    running.append(rid)
            else:
                got = b.allocate_slots(rid, 1, toks[i])
                assert (got is None) == (res.num_scheduled[i] == -1)
                if got is None:
                    preempted.append(rid)
        for rid in preempted:
            a.free(rid)
            b.free(rid)
            running.remove(rid)
        for rid in list(running):
            if rng.random() < 0.1:
                a.free(rid)
                b.free(rid)
                running.remove(rid)
        assert a.free_block_order().tolist() == b.free_block_order().tolist()
        for rid in running:
            assert a.block_table(rid).tolist() == b.block_table(rid).tolist()
    a.check_invariants()
    b.check_invariants()
