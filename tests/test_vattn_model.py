"""Model test of VAttnKVCache's page accounting and data under random interleavings.

Random admit / extend / map-ahead / trim / finish (with and without TTL) /
resume / expire / fork / swap-out / swap-in against a small page budget, so
that deferred reclamation, sharing and the watermark all come into play. After
every step:

- every live request's KV reads back exactly what was written (forked prefixes
  included): no page in use was reclaimed, reused or overwritten;
- the driver's mappings are exactly the slots' page tables, each handle is
  mapped once per slot that lists it, and pooled handles are mapped nowhere;
- ``available_pages`` is the budget minus the distinct pages holding tokens of
  live (active or pinned) requests, and admission follows it and the watermark.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from slabcache.errors import OutOfMemoryError
from slabcache.kv.vattn import HostVMMDriver, VAttnKVCache

PAGE = 4096
PAGE_TOKENS = 16  # 2 groups of 1 layer: row = 2 * 1 head * 32 * 4 B = 256 B
MAX_TOKENS = 96


class VAttnModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.drv = HostVMMDriver(page_size=PAGE)
        self.cache = VAttnKVCache(
            self.drv,
            num_layers=2,
            layers_per_group=1,
            num_kv_heads=1,
            head_dim=32,
            dtype="float32",
            max_slots=4,
            max_tokens=MAX_TOKENS,
            num_pages=14,
            watermark=0.15,
            precreate=6,
            host_pages=12,
        )
        assert self.cache.page_tokens == PAGE_TOKENS
        self.now = 0.0
        self.next_id = 0
        self.content: dict[int, np.ndarray] = {}  # req -> value of each token (live)
        self.pinned: dict[int, float] = {}  # req -> deadline
        self.swapped: dict[int, np.ndarray] = {}

    # ---- helpers ----------------------------------------------------------------------

    def _write(self, req: int, start: int, stop: int) -> None:
        vals = np.arange(start, stop, dtype=np.float32) + 1000.0 * (req + 1)
        for layer in range(2):
            k, v = self.cache.request_kv(req, layer)
            k[start:stop] = (vals + layer)[:, None, None]
            v[start:stop] = -(vals + layer)[:, None, None]
        old = self.content.get(req, np.zeros(0, np.float32))
        self.content[req] = np.concatenate([old[:start], vals])

    def _held(self) -> int:
        held: set[int] = set()
        for i in range(self.cache.max_slots):
            state, _req, length, pages = self.cache.slot_state(i)
            if state != "free":
                keep = math.ceil(length / PAGE_TOKENS)
                for pg in pages:
                    held.update(pg[:keep])
        return len(held)

    def _active(self) -> list[int]:
        return sorted(r for r in self.content if r not in self.pinned)

    def _expire_model(self) -> None:
        for r, d in list(self.pinned.items()):
            if d <= self.now:
                del self.pinned[r]
                del self.content[r]

    # ---- rules ------------------------------------------------------------------------

    @rule(n=st.integers(0, 70), dt=st.floats(0, 2))
    def admit(self, n: int, dt: float) -> None:
        self.now += dt
        self._expire_model()
        self.cache.expire(self.now)
        need = 2 * math.ceil(n / PAGE_TOKENS)
        avail = self.cache.num_pages - self._held()
        slot_free = len(self.content) < self.cache.max_slots
        r = self.next_id
        self.next_id += 1
        got = self.cache.admit(r, n, now=self.now)
        expect = slot_free and avail - need >= int(0.15 * 14)
        assert (got is not None) == expect, (got, avail, need, slot_free)
        if got is not None:
            self._write(r, 0, n)

    @precondition(lambda self: self._active())
    @rule(data=st.data(), k=st.integers(1, 24))
    def extend(self, data: st.DataObject, k: int) -> None:
        r = data.draw(st.sampled_from(self._active()))
        old = len(self.content[r])
        new = min(MAX_TOKENS, old + k)
        try:
            self.cache.extend(r, new)
        except OutOfMemoryError:
            assert self.cache.length(r) == old
            assert self.cache.available_pages - 2 * math.ceil(old / PAGE_TOKENS) <= 2 * (
                math.ceil(new / PAGE_TOKENS) - math.ceil(old / PAGE_TOKENS)
            )
            return
        self._write(r, old, new)

    @precondition(lambda self: self._active())
    @rule(data=st.data(), k=st.integers(1, 40), cap=st.none() | st.integers(0, 4))
    def map_ahead(self, data: st.DataObject, k: int, cap: int | None) -> None:
        r = data.draw(st.sampled_from(self._active()))
        n = self.cache.map_ahead([(r, min(MAX_TOKENS, len(self.content[r]) + k))], cap)
        assert cap is None or n <= cap

    @precondition(lambda self: self._active())
    @rule(data=st.data())
    def trim(self, data: st.DataObject) -> None:
        self.cache.trim(data.draw(st.sampled_from(self._active())))

    @precondition(lambda self: self._active())
    @rule(data=st.data(), ttl=st.none() | st.floats(0.5, 5))
    def finish(self, data: st.DataObject, ttl: float | None) -> None:
        r = data.draw(st.sampled_from(self._active()))
        self.cache.finish(r, ttl_s=ttl, now=self.now)
        if ttl is None:
            del self.content[r]
        else:
            self.pinned[r] = self.now + ttl

    @precondition(lambda self: self.pinned)
    @rule(data=st.data(), dt=st.floats(0, 3))
    def resume(self, data: st.DataObject, dt: float) -> None:
        r = data.draw(st.sampled_from(sorted(self.pinned)))
        self.now += dt
        got = self.cache.resume(r, now=self.now)
        alive = self.pinned[r] > self.now
        self._expire_model()
        assert (got is not None) == alive
        if alive:
            del self.pinned[r]

    @precondition(lambda self: self._active())
    @rule(data=st.data())
    def fork(self, data: st.DataObject) -> None:
        p = data.draw(st.sampled_from(self._active()))
        n = data.draw(st.integers(0, len(self.content[p])))
        c = self.next_id
        self.next_id += 1
        rest = 2 if n % PAGE_TOKENS else 0
        avail = self.cache.num_pages - self._held()
        slot_free = len(self.content) < self.cache.max_slots
        got = self.cache.fork(p, c, n, now=self.now)
        assert (got is not None) == (slot_free and avail - rest >= 2), (avail, rest)
        if got is not None:
            self.content[c] = self.content[p][:n].copy()

    @precondition(lambda self: self._active())
    @rule(data=st.data())
    def swap_out(self, data: st.DataObject) -> None:
        r = data.draw(st.sampled_from(self._active()))
        try:
            self.cache.swap_out(r, now=self.now)
        except OutOfMemoryError:
            assert len(self.cache._host_free) < 2 * math.ceil(len(self.content[r]) / PAGE_TOKENS)
            return
        self.swapped[r] = self.content.pop(r)

    @precondition(lambda self: self.swapped)
    @rule(data=st.data(), drop=st.booleans())
    def swap_in(self, data: st.DataObject, drop: bool) -> None:
        r = data.draw(st.sampled_from(sorted(self.swapped)))
        if drop:
            self.cache.finish(r)
            del self.swapped[r]
            return
        got = self.cache.swap_in(r, now=self.now)
        if got is not None:
            self.content[r] = self.swapped.pop(r)

    # ---- invariants -------------------------------------------------------------------

    @invariant()
    def data_reads_back(self) -> None:
        for r, vals in self.content.items():
            assert self.cache.length(r) == len(vals)
            for layer in range(2):
                k, v = self.cache.request_kv(r, layer)
                np.testing.assert_array_equal(k[:, 0, 0], vals + layer)
                np.testing.assert_array_equal(v[:, 0, 31], -(vals + layer))

    @invariant()
    def mappings_match_page_tables(self) -> None:
        c = self.cache
        total = 0
        refs: dict[int, int] = {}
        for i in range(c.max_slots):
            _state, _req, length, pages = c.slot_state(i)
            for g, pg in enumerate(pages):
                for j, h in enumerate(pg):
                    assert self.drv.mapping(c._va(g, i, j)) == h
                    refs[h] = refs.get(h, 0) + 1
                total += len(pg)
        assert self.drv.mapped_pages == total
        assert refs == c._refs
        assert not set(c._free_handles) & set(refs)
        assert self.drv.live_pages == len(refs) + len(c._free_handles) <= c.num_pages
        assert c.available_pages == c.num_pages - self._held()
        assert c.swapped == sorted(self.swapped)

    def teardown(self) -> None:
        self.cache.close()
        assert self.drv.mapped_pages == 0 and self.drv.live_pages == 0
        self.drv.close()


VAttnModel.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestVAttnModel = VAttnModel.TestCase
