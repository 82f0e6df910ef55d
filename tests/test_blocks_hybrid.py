"""Hybrid KV-cache groups (full attention + sliding window over one pool).

The expectations are vLLM 0.33's (``HybridKVCacheCoordinator``,
``FullAttentionManager``, ``SlidingWindowManager``, ``BlockPool``), checked two
ways without vLLM installed: cases ported from vLLM's own
``tests/v1/core/test_prefix_caching.py`` (block ids shifted by one: vLLM's
block 0 is its null block), and random traces replayed on the core and on
:class:`RefHybrid`, a plain-Python model of vLLM's rules written from vLLM's
code, compared after every call (block tables, hits, free-queue order, ref
counts, events).
"""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from slabcache.blocks import NULL_BLOCK, HybridBlockManager
from slabcache.errors import InvalidArgumentError, SlabcacheError

N = NULL_BLOCK


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ---- the reference: vLLM 0.33's rules, one page size, no EAGLE -----------------------


@dataclass
class _Req:
    tokens: list[int]
    key: int
    tables: list[list[int]]
    num_cached: list[int | None]
    hashes: list[tuple] = field(default_factory=list)


class RefHybrid:
    """vLLM's coordinator + single-type managers + block pool, as lists."""

    def __init__(
        self, num_blocks: int, bs: int, windows: list[int | None], caps=None, eagle=()
    ) -> None:
        self.bs = bs
        self.eagle = set(eagle)  # vLLM's drop_eagle_group_ids
        self.windows = windows
        self.caps = caps or [None] * len(windows)
        self.free_q = list(range(num_blocks))  # front = next allocated
        self.ref = [0] * num_blocks
        self.hash_of: list[tuple | None] = [None] * num_blocks  # (hash, group)
        self.cache: dict[tuple, list[int]] = {}  # (hash, group) -> blocks, first = hit
        self.reqs: dict[int, _Req] = {}
        self.events: list[tuple] = []
        # Spec groups: identical specs together, full attention first.
        specs: list[tuple[int | None, list[int]]] = []
        for g, w in enumerate(windows):
            for s in specs:
                if s[0] == w:
                    s[1].append(g)
                    break
            else:
                specs.append((w, [g]))
        self.specs = sorted(specs, key=lambda s: s[0] is not None)
        # An attention group drops the EAGLE block if any member does.
        self.spec_eagle = [any(g in self.eagle for g in m) for _, m in self.specs]

    # hashes: chained tuples (an independent scheme; only equality matters)
    def hashes(self, tokens: list[int], key: int) -> list[tuple]:
        out: list[tuple] = []
        parent: tuple = ("root", key)
        for i in range(len(tokens) // self.bs):
            parent = (hash((parent, tuple(tokens[i * self.bs : (i + 1) * self.bs]))), key)
            out.append(parent)
        return out

    def skipped(self, g: int, n: int) -> int:
        w = self.windows[g]
        return 0 if w is None else max(0, n - w + 1)

    def get_cached(self, h: tuple, members: list[int]) -> list[int] | None:
        out = []
        for g in members:
            blocks = self.cache.get((h, g))
            if not blocks:
                return None
            out.append(blocks[0])
        return out

    def find_hit(self, tokens: list[int], key: int, max_len: int) -> tuple[list[list[int]], int]:
        hashes = self.hashes(tokens, key)
        bs = self.bs
        hit_len = max_len
        by_group: list[list[int] | None] = [None] * len(self.windows)
        len_by_group = [0] * len(self.windows)
        simple = len(self.specs) == 2 and self.specs[0][0] is None
        verified: set[int] = set()  # vLLM's eagle_verified
        while True:
            curr = hit_len
            for idx, (w, members) in enumerate(self.specs):
                if w is None and by_group[members[0]] is not None:
                    curr = min(curr, len_by_group[members[0]])
                    continue
                drop = self.spec_eagle[idx] and idx not in verified
                # The hybrid coordinator's eagle margin (none with one group).
                look = min(curr + bs, len(hashes) * bs) if drop and len(self.windows) > 1 else curr
                if w is None:
                    blocks: list[list[int]] = [[] for _ in members]
                    for h in hashes[: look // bs]:
                        c = self.get_cached(h, members)
                        if c is None:
                            break
                        for t, b in zip(blocks, c, strict=True):
                            t.append(b)
                    if drop and blocks[0]:
                        for t in blocks:
                            t.pop()
                else:
                    need = cdiv(w - 1, bs) + drop
                    m = min(look // bs, len(hashes))
                    blocks = [[N] * m for _ in members]
                    run, found = 0, False
                    for i in range(m - 1, -1, -1):
                        c = self.get_cached(hashes[i], members)
                        if c is not None:
                            for t, b in zip(blocks, c, strict=True):
                                t[i] = b
                            run += 1
                            if run >= need:
                                for t in blocks:
                                    del t[i + run :]
                                found = True
                                break
                        else:
                            run = 0
                    if not found:
                        for t in blocks:
                            del t[run:]
                    if drop and blocks[0]:
                        for t in blocks:
                            t.pop()
                new_len = len(blocks[0]) * bs
                if drop:
                    verified.add(idx)
                elif new_len < curr:
                    verified.clear()
                curr = new_len
                for g, t in zip(members, blocks, strict=True):
                    by_group[g] = t
                    len_by_group[g] = curr
            if curr >= hit_len:
                break
            hit_len = curr
            if simple:
                break
        for w, members in self.specs:
            if w is None:
                for g in members:
                    del by_group[g][cdiv(hit_len, bs) :]  # type: ignore[index]
        return [t or [] for t in by_group], hit_len

    # pool
    def touch(self, b: int) -> None:
        if self.ref[b] == 0:
            self.free_q.remove(b)
        self.ref[b] += 1

    def free_blocks(self, blocks: list[int]) -> None:
        first, last = [], []
        for b in blocks:
            if b == N:
                continue
            self.ref[b] -= 1
            if self.ref[b] == 0:
                (first if self.hash_of[b] is None else last).append(b)
        self.free_q[:0] = first
        self.free_q.extend(last)

    def new_blocks(self, n: int) -> list[int]:
        out = self.free_q[:n]
        del self.free_q[:n]
        for b in out:
            hk = self.hash_of[b]
            if hk is not None:
                self.cache[hk].remove(b)
                if not self.cache[hk]:
                    del self.cache[hk]
                self.hash_of[b] = None
                self.events.append(("removed", hk[1], b))
            self.ref[b] = 1
        return out

    def n_to_alloc(self, r: _Req, num_tokens: int, hit, total: int, cap: bool) -> int:
        out = 0
        for g in range(len(self.windows)):
            req = cdiv(num_tokens, self.bs)
            if cap and self.caps[g] is not None:
                req = min(req, self.caps[g])
            have = len(r.tables[g])
            h = hit[g] if hit else []
            if r.num_cached[g] is not None:
                out += max(req - have, 0)
                continue
            sk = self.skipped(g, total) // self.bs
            new = max(req - max(sk, len(h) + have), 0)
            skip_h = max(0, sk - have)
            out += new + sum(1 for b in h[skip_h:] if b != N and self.ref[b] == 0)
        return out

    def remove_skipped(self, rid: int, n: int) -> None:
        r = self.reqs.get(rid)
        if r is None:
            return
        for g in range(len(self.windows)):
            sk = self.skipped(g, n)
            if sk <= 0:
                continue
            t = r.tables[g]
            k = min(sk // self.bs, len(t))
            freed = []
            for i in range(k - 1, -1, -1):
                if t[i] == N:
                    break
                freed.append(t[i])
                t[i] = N
            self.free_blocks(freed)

    def cache_blocks(self, rid: int, n: int) -> None:
        r = self.reqs[rid]
        for g in range(len(self.windows)):
            cached = r.num_cached[g] or 0
            full = min(n, len(r.hashes) * self.bs) // self.bs
            if cached >= full:
                continue
            stored = []
            for i in range(cached, full):
                b = r.tables[g][i]
                if b == N:
                    continue
                hk = (r.hashes[i], g)
                if self.hash_of[b] is None:
                    self.hash_of[b] = hk
                    self.cache.setdefault(hk, []).append(b)
                stored.append(b)
            self.events.append(("stored", g, tuple(stored)))
            r.num_cached[g] = full

    def allocate(self, rid: int, new_tokens, n_new, *, hit=None, computed=0, new_computed=0,
                 lookahead=0, mml=1 << 40, full_fit=False):  # fmt: skip
        is_new = rid not in self.reqs
        if is_new:
            ng = len(self.windows)
            self.reqs[rid] = _Req([], 0, [[] for _ in range(ng)], [None] * ng)
        r = self.reqs[rid]
        r.tokens.extend(new_tokens or [])
        r.hashes = self.hashes(r.tokens, r.key)
        known = len(r.tokens)
        local = computed + new_computed
        total = min(local, mml)
        if full_fit and self.n_to_alloc(r, min(known, mml), hit, total, True) > len(self.free_q):
            if is_new:
                del self.reqs[rid]
            return None
        main = total + n_new
        slots = min(main + lookahead, mml)
        self.remove_skipped(rid, total)
        if self.n_to_alloc(r, slots, hit, local, False) > len(self.free_q):
            if is_new:
                del self.reqs[rid]
            return None
        if hit and any(hit) and not any(c is not None for c in r.num_cached):
            for g in range(len(self.windows)):
                sk = self.skipped(g, local) // self.bs
                kept = hit[g][sk:]
                for b in kept:
                    if b != N:
                        self.touch(b)
                r.tables[g].extend([N] * sk + kept)
                r.num_cached[g] = len(r.tables[g])
        out = []
        for g in range(len(self.windows)):
            k = max(0, cdiv(slots, self.bs) - len(r.tables[g]))
            nb = self.new_blocks(k)
            r.tables[g].extend(nb)
            out.append(nb)
        self.cache_blocks(rid, min(main, known))
        return out

    def free(self, rid: int) -> None:
        r = self.reqs.pop(rid, None)
        if r is None:
            return
        for t in r.tables:
            i = 0
            while i < len(t) and t[i] == N:
                i += 1
            self.free_blocks(list(reversed(t[i:])))


def _core_events(bm: HybridBlockManager) -> list[tuple]:
    out = []
    for kind, g, blocks, _h, _p, _k, _t in bm.drain_events():
        out.append(("stored", g, tuple(blocks)) if kind == 0 else ("removed", g, blocks[0]))
    return out


def _same_state(bm: HybridBlockManager, ref: RefHybrid) -> None:
    assert bm.free_block_order().tolist() == ref.free_q
    for rid, r in ref.reqs.items():
        assert bm.block_tables(rid) == r.tables, rid
        for g in range(len(ref.windows)):
            assert bm.num_cached_blocks(rid, g) == r.num_cached[g]
    for b in range(len(ref.ref)):
        assert bm.ref_count(b) == ref.ref[b]
    assert _core_events(bm) == ref.events
    ref.events.clear()
    bm.check_invariants()


# ---- ported from vLLM's test_prefix_caching.py ------------------------------------------


def test_prefill_hybrid_model_vllm_case() -> None:
    """vLLM's ``test_prefill_hybrid_model``: full attention + two sliding-window
    groups (window 2 blocks), 21 blocks (20 here: no null block)."""
    bs = 16
    bm = HybridBlockManager(20, bs, [None, 2 * bs, 2 * bs])
    common = [i for i in range(3) for _ in range(bs)]
    p0 = common + [3] * 7
    hit, n = bm.find_longest_cache_hit(p0, max_hit_tokens=len(p0) - 1)
    assert (hit, n) == ([[], [], []], 0)
    new = bm.allocate_slots(0, p0, 55)
    # vLLM: ([1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12])
    assert new == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    for b in (0, 1, 2, 4, 5, 6, 8, 9, 10):
        assert bm._core.cached_hash(b) is not None
    assert [bm._core.cached_hash(b)[0] for b in (0, 4, 8)] == [0, 1, 2]  # type: ignore[index]
    for b in (3, 7, 11):
        assert bm._core.cached_hash(b) is None and bm.ref_count(b) == 1
    p1 = common + [3] * 5
    hit, n = bm.find_longest_cache_hit(p1, max_hit_tokens=len(p1) - 1)
    # vLLM: ([1, 2, 3], [0, 6, 7], [0, 10, 11])
    assert (hit, n) == ([[0, 1, 2], [N, 5, 6], [N, 9, 10]], 48)
    new = bm.allocate_slots(1, p1, 53 - 48, hit=hit, num_new_computed_tokens=48)
    assert new == [[12], [13], [14]]  # vLLM: ([13], [14], [15])
    for g in hit:
        for b in g:
            if b != N:
                assert bm.ref_count(b) == 2
    bm.free(0)
    bm.free(1)
    bm.check_invariants()

    def partial_hit(evict: list[int], expect_blocks: int) -> None:
        # vLLM pops the hashes from its map and restores them; here the
        # blocks' hashes are dropped on a copy of the manager's state: the
        # same prompt is cached again afterwards by a fresh manager.
        hit, n = bm.find_longest_cache_hit(p1, max_hit_tokens=len(p1) - 1)
        assert n == 48
        bm.evict_blocks(evict)
        hit, n = bm.find_longest_cache_hit(p1, max_hit_tokens=len(p1) - 1)
        assert n == expect_blocks * bs
        assert all(len(g) == expect_blocks for g in hit)

    # Each case on a fresh copy of the state above (same calls, same ids).
    def fresh() -> HybridBlockManager:
        m = HybridBlockManager(20, bs, [None, 2 * bs, 2 * bs])
        m.allocate_slots(0, p0, 55)
        h, _ = m.find_longest_cache_hit(p1, max_hit_tokens=len(p1) - 1)
        m.allocate_slots(1, p1, 5, hit=h, num_new_computed_tokens=48)
        m.free(0)
        m.free(1)
        return m

    # Blocks of position 0 of the window groups: outside the window, no change.
    # First block of full attention: a total miss. Last block of all groups: 2.
    # Last block of full attention or of one window group: 2. Full's last and
    # the windows' first: full hits 2 blocks, the windows need blocks 0 and 1
    # at a 2-block hit... vLLM's case 8 evicts full's block 2 and the windows'
    # block 0: full hits 2 blocks, the windows then find no 2-block run ending
    # at block 1: total miss.
    cases = [([4, 8], 3), ([0], 0), ([2, 6, 10], 2), ([2], 2), ([6], 2), ([10], 2), ([2, 4, 8], 0)]
    for evict, expect in cases:
        bm = fresh()
        partial_hit(evict, expect)
        bm.check_invariants()


def test_cache_blocks_multi_group_vllm_case() -> None:
    """vLLM's ``test_cache_blocks_multi_group`` shape: each group caches its
    own blocks under its own key; a hit needs every group."""
    bs = 4
    bm = HybridBlockManager(40, bs, [None, 2 * bs], enable_events=True)
    p = list(range(14))
    bm.allocate_slots(1, p, 14)
    ev = bm.drain_events()
    assert [(k, g, b) for k, g, b, *_ in ev] == [(0, 0, [0, 1, 2]), (0, 1, [4, 5, 6])]
    assert ev[0][3] == ev[1][3]  # the same hashes, group-keyed in the pool
    assert ev[0][6] == p[:12]
    # Drop group 1's last cached block: the hit shrinks to what both agree on.
    bm.evict_blocks([6])
    ev = bm.drain_events()
    assert [(k, g, b) for k, g, b, *_ in ev] == [(1, 1, [6])]
    hit, n = bm.find_longest_cache_hit(p, max_hit_tokens=13)
    assert n == 8 and hit == [[0, 1], [4, 5]]


def test_prefill_hybrid_model_eagle_vllm_case() -> None:
    """vLLM's ``test_prefill_hybrid_model_eagle``: full attention + two
    sliding-window groups (window 3 blocks), every group with the EAGLE drop;
    31 blocks in vLLM (30 here: no null block, ids one lower)."""
    bs = 16
    common = [i for i in range(6) for _ in range(bs)]
    p0 = common + [6] * 7
    p1 = common + [6] * 5

    def fresh() -> tuple[HybridBlockManager, list[list[int]]]:
        m = HybridBlockManager(30, bs, [None, 3 * bs, 3 * bs], eagle_groups=[0, 1, 2])
        assert m.find_longest_cache_hit(p0, max_hit_tokens=len(p0) - 1) == ([[], [], []], 0)
        t0 = m.allocate_slots(0, p0, len(p0))
        assert t0 is not None
        return m, t0

    bm, t0 = fresh()
    # vLLM: ([1..7], [8..14], [15..21])
    assert t0 == [list(range(0, 7)), list(range(7, 14)), list(range(14, 21))]
    hit, n = bm.find_longest_cache_hit(p1, max_hit_tokens=len(p1) - 1)
    # 6 blocks match (the hybrid coordinator looks one block past the cap),
    # the last is dropped; vLLM: ([1..5], [0, 0, 10, 11, 12], [0, 0, 17, 18, 19]).
    assert n == 5 * bs
    assert hit == [[0, 1, 2, 3, 4], [N, N, 9, 10, 11], [N, N, 16, 17, 18]]
    new = bm.allocate_slots(1, p1, len(p1) - n, hit=hit, num_new_computed_tokens=n)
    assert new == [[21, 22], [23, 24], [25, 26]]  # vLLM: ([22, 23], [24, 25], [26, 27])
    for g in hit:
        for b in g:
            if b != N:
                assert bm.ref_count(b) == 2
    bm.check_invariants()

    def evict_case(positions: list[tuple[int, int]], expect_blocks: int) -> None:
        # vLLM pops (hash, group) keys from its map; here every block cached
        # under that key (req 0's and, for position 5, req 1's) is evicted.
        m, t = fresh()
        h, k = m.find_longest_cache_hit(p1, max_hit_tokens=len(p1) - 1)
        m.allocate_slots(1, p1, len(p1) - k, hit=h, num_new_computed_tokens=k)
        m.free(0)
        m.free(1)
        keys = {m._core.cached_hash(t[g][pos]) for pos, g in positions}
        m.evict_blocks([b for b in range(30) if m._core.cached_hash(b) in keys])
        h, k = m.find_longest_cache_hit(p1, max_hit_tokens=len(p1) - 1)
        assert k == expect_blocks * bs, (positions, k)
        assert all(len(g) == expect_blocks for g in h)
        m.check_invariants()

    evict_case([(0, 1), (0, 2)], 5)  # outside the window: no change
    evict_case([(0, 0)], 0)  # full attention's first block: total miss
    evict_case([(5, 0), (5, 1), (5, 2)], 4)  # last block of every group
    evict_case([(5, 0)], 4)  # last block of full attention
    evict_case([(4, 1)], 3)  # the windows' second-to-last block
    evict_case([(4, 2)], 3)
    evict_case([(5, 0), (0, 1), (0, 2)], 4)  # coordinated single drop


def test_eagle_with_sliding_window_vllm_case() -> None:
    """vLLM's ``test_eagle_with_sliding_window``: one sliding-window group
    (window = 1 block) with the EAGLE drop: the run needs 2 blocks, then
    drops one; one group gets no look-past margin (vLLM's unitary
    coordinator)."""
    bs = 16
    bm = HybridBlockManager(9, bs, [bs], eagle_groups=[0])
    p = [0] * (2 * bs + 5)
    t = bm.allocate_slots(0, p, len(p))
    assert t == [[0, 1, 2]]
    bm.free(0)
    hit, n = bm.find_longest_cache_hit(p, max_hit_tokens=len(p) - 1)
    assert (hit, n) == ([[0]], bs)  # 2 matched, 1 dropped
    bm.evict_blocks([0])  # the first block
    hit, n = bm.find_longest_cache_hit(p, max_hit_tokens=len(p) - 1)
    # [NULL, block 2] would be a hit without EAGLE; after the drop, none.
    assert (hit, n) == ([[]], 0)


def test_eagle_drop_only_on_flagged_groups() -> None:
    """A group outside ``eagle_groups`` keeps vLLM's plain rule; with no
    flagged group the hit is the plain one."""
    bs = 4
    p = list(range(25))
    plain = HybridBlockManager(40, bs, [None, 8])
    eagle = HybridBlockManager(40, bs, [None, 8], eagle_groups=[1])
    for m in (plain, eagle):
        m.allocate_slots(0, p, len(p))
        m.free(0)
    assert plain.find_longest_cache_hit(p, max_hit_tokens=24)[1] == 24
    # Full attention (not flagged) hits 6 blocks; the window (flagged) looks
    # one block past 24 (none: 6 full blocks), needs 3 in a row, drops one.
    assert eagle.find_longest_cache_hit(p, max_hit_tokens=24)[1] == 20
    with pytest.raises(InvalidArgumentError):
        HybridBlockManager(40, bs, [None, 8], eagle_groups=[2])


# ---- behaviours ---------------------------------------------------------------------------


def test_window_blocks_are_freed_newest_first_and_null_in_the_table() -> None:
    bs = 4
    bm = HybridBlockManager(40, bs, [None, 8])
    p = list(range(33))
    assert bm.allocate_slots(1, p, 33) == [list(range(9)), list(range(9, 18))]
    # One decode step: 33 computed, window 8 skips 26 tokens = 6 blocks.
    assert bm.allocate_slots(1, [99], 1, num_computed_tokens=33) == [[], []]
    assert bm.block_tables(1)[1] == [N] * 6 + [15, 16, 17]
    assert bm.free_block_order().tolist()[-6:] == [14, 13, 12, 11, 10, 9]
    # The freed blocks stay cached, but a hit only needs the window's blocks.
    hit, n = bm.find_longest_cache_hit(p, max_hit_tokens=32)
    assert n == 32 and hit[1] == [N] * 6 + [15, 16]
    bm.free(1)
    assert bm.num_free_blocks == 40
    bm.check_invariants()


def test_allocation_counts_every_group() -> None:
    bm = HybridBlockManager(7, 4, [None, 8])
    assert bm.allocate_slots(1, list(range(16)), 16) is None  # 4 + 4 > 7
    assert 1 not in bm and bm.num_free_blocks == 7
    assert bm.allocate_slots(1, list(range(12)), 12) is not None  # 3 + 3
    assert bm.num_free_blocks == 1


def test_admission_cap_applies_to_full_sequence_check_only() -> None:
    # Window group capped at 2 blocks for the whole-sequence admission test.
    bm = HybridBlockManager(10, 4, [None, 8], admission_caps=[None, 2])
    p = list(range(24))  # 6 blocks per group uncapped = 12 > 10; capped 6 + 2 = 8
    new = bm.allocate_slots(1, p, 8, full_sequence_must_fit=True)
    assert new is not None and [len(g) for g in new] == [2, 2]
    bm2 = HybridBlockManager(10, 4, [None, 8])
    assert bm2.allocate_slots(1, p, 8, full_sequence_must_fit=True) is None


def test_bad_input_raises() -> None:
    with pytest.raises(InvalidArgumentError):
        HybridBlockManager(8, 4, [])
    with pytest.raises(InvalidArgumentError):
        HybridBlockManager(8, 4, [None, 0])
    with pytest.raises(InvalidArgumentError):
        HybridBlockManager(8, 0, [None])
    bm = HybridBlockManager(8, 4, [None, 8])
    with pytest.raises(InvalidArgumentError):
        bm.allocate_slots(1, [1, 2], 0)
    with pytest.raises(InvalidArgumentError):  # a hit block that holds nothing
        bm.allocate_slots(1, list(range(8)), 4, hit=[[3], []], num_new_computed_tokens=4)
    with pytest.raises(InvalidArgumentError):
        bm.allocate_slots(1, [-5], 1)
    with pytest.raises(SlabcacheError):
        bm.evict_blocks([8])
    assert 1 not in bm
    bm.check_invariants()


# ---- random traces against the reference --------------------------------------------------


_LAYOUTS = [[None, 8], [None, 8, 8], [None, 12, 5], [8], [None, None, 8]]
# EAGLE drop on every group, on some groups only (vLLM's is_eagle_group).
_EAGLE_LAYOUTS = [
    ([None, 8], [0, 1]),
    ([None, 12, 5], [0, 1, 2]),
    ([None, 12, 5], [2]),
    ([8], [0]),
    ([None, None, 8], [1]),
]


@pytest.mark.parametrize(
    ("windows", "eagle"), [(w, []) for w in _LAYOUTS] + _EAGLE_LAYOUTS, ids=str
)
@pytest.mark.parametrize("seed", range(6))
def test_random_trace_matches_reference(
    windows: list[int | None], eagle: list[int], seed: int
) -> None:
    rng = random.Random(seed * 31 + len(windows) + 7 * len(eagle))
    bs, nb = 4, 48
    bm = HybridBlockManager(nb, bs, windows, enable_events=True, eagle_groups=eagle)
    ref = RefHybrid(nb, bs, windows, eagle=eagle)
    prefixes = [[rng.randrange(50) for _ in range(rng.randrange(4, 24))] for _ in range(3)]
    running: dict[int, int] = {}  # rid -> computed tokens
    next_id = 0
    for _step in range(160):
        op = rng.random()
        if op < 0.35 or not running:
            prompt = rng.choice(prefixes) + [rng.randrange(50) for _ in range(rng.randrange(1, 12))]
            hit, n = bm.find_longest_cache_hit(prompt, max_hit_tokens=len(prompt) - 1)
            rhit, rn = ref.find_hit(prompt, 0, len(prompt) - 1)
            assert (hit, n) == (rhit, rn)
            chunk = rng.randrange(1, len(prompt) - n + 1)
            kw = dict(hit=hit if n else None, num_new_computed_tokens=n)
            fit = rng.random() < 0.3
            got = bm.allocate_slots(next_id, prompt, chunk, full_sequence_must_fit=fit, **kw)
            want = ref.allocate(next_id, prompt, chunk, hit=hit if n else None, new_computed=n,
                                full_fit=fit)  # fmt: skip
            assert got == want
            if got is not None:
                running[next_id] = n + chunk
            next_id += 1
        elif op < 0.85:
            rid = rng.choice(list(running))
            computed = running[rid]
            known = ref.reqs[rid].tokens
            if computed < len(known):  # next prefill chunk
                k = rng.randrange(1, len(known) - computed + 1)
                new_toks: list[int] = []
            else:  # decode: the sampled token
                k, new_toks = 1, [rng.randrange(50)]
            look = rng.choice([0, 0, 2])
            got = bm.allocate_slots(
                rid, new_toks, k, num_computed_tokens=computed, num_lookahead_tokens=look
            )
            want = ref.allocate(rid, new_toks, k, computed=computed, lookahead=look)
            assert got == want
            if got is None:  # preempted, as a scheduler would
                bm.free(rid)
                ref.free(rid)
                del running[rid]
            else:
                running[rid] = computed + k
        else:
            rid = rng.choice(list(running))
            bm.free(rid)
            ref.free(rid)
            del running[rid]
        _same_state(bm, ref)
    for rid in list(running):
        bm.free(rid)
        ref.free(rid)
    _same_state(bm, ref)
    assert bm.num_free_blocks == nb


# ---- a trace recorded from vLLM's own Scheduler ------------------------------------------

_TRACE = Path(__file__).parent / "data" / "blocks_vllm_0.33_hybrid_calls.json.gz"


def _load_hybrid_trace() -> dict:
    with gzip.open(_TRACE, "rt") as f:
        return json.load(f)


@pytest.mark.parametrize("shape", ["sharegpt", "rag", "parallel"])
def test_replay_vllm_hybrid_trace(shape: str) -> None:
    """Every call vLLM 0.33's Scheduler made to its stock KVCacheManager with
    hybrid groups (``--record-hybrid``), replayed on the core: every prefix
    hit (per-group block ids, null blocks included, and length) and every
    allocation (new block ids per group, or refusal) must be identical."""
    data = _load_hybrid_trace()
    assert data["vllm_version"].startswith("0.33")
    t = data["traces"][shape]
    bm = HybridBlockManager(
        t["num_blocks"] - 1,
        t["block_size"],
        t["sliding_windows"],
        admission_caps=t["admission_caps"],
    )
    core = bm._core
    tokens: dict[str, list[int]] = {}
    ids: dict[str, int] = {}
    checked = refused = hits = next_id = 0
    for c in t["calls"]:
        rid = c["rid"]
        if c["op"] == "lookup":
            tokens[rid] = list(c["tokens"])
            hit, n = core.find_longest_cache_hit(tokens[rid], 0, c["limit"])
            assert n == c["n"], (rid, c)
            assert [[b + 1 for b in g] for g in hit] == c["out"], (rid, c)
            hits += n > 0
        elif c["op"] == "alloc":
            tokens.setdefault(rid, []).extend(c["tokens"])
            if rid not in ids:
                ids[rid] = next_id
                next_id += 1
            cid = ids[rid]
            have = core.num_tokens(cid)
            new_tokens = tokens[rid] if have is None else tokens[rid][have:]
            hit = None if c["hit"] is None else [[b - 1 for b in g] for g in c["hit"]]
            out = core.allocate_slots(
                cid,
                new_tokens,
                c["new"],
                hit=hit,
                num_computed_tokens=c["computed"],
                num_new_computed_tokens=c["new_computed"],
                num_external_computed_tokens=c["external"],
                num_lookahead_tokens=c["lookahead"],
                num_in_flight_tokens=c["in_flight"],
                max_model_len=t["max_model_len"],
                reserved_blocks=c["reserved"],
                full_sequence_must_fit=c["full"],
            )
            want = c["out"]
            got = None if out is None else [[b + 1 for b in g] for g in out]
            assert got == want, (rid, c)
            checked += 1
            refused += out is None
        elif c["op"] == "free":
            cid = ids.pop(rid, None)
            tokens.pop(rid, None)
            if cid is not None:
                core.free(cid)
        elif c["op"] == "cache":
            cid = ids[rid]
            tokens[rid].extend(c["tokens"])
            have = core.num_tokens(cid)
            if have is not None:
                core.append_tokens(cid, tokens[rid][have:])
                core.cache_blocks(cid, c["n"])
        elif c["op"] == "skip":
            if rid in ids:
                core.remove_skipped_blocks(ids[rid], c["n"])
    bm.check_invariants()
    assert checked > 1000 and refused > 100 and hits > 0
