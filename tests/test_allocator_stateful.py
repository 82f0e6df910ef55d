"""Hypothesis state machine: SlabAllocator against a model of live buffers.

Random allocs, frees, double frees, batch traffic and views; after every step
the live buffers keep their contents and the stats equal the model's sums.
"""

from __future__ import annotations

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from slabcache import (
    Allocation,
    AllocationBatch,
    BufferExportedError,
    ClosedError,
    DoubleFreeError,
    SlabAllocator,
)

SIZES = st.one_of(st.integers(0, 300), st.integers(300, 33_000), st.integers(33_000, 150_000))


class AllocatorMachine(RuleBasedStateMachine):
    buffers = Bundle("buffers")
    freed = Bundle("freed")
    batches = Bundle("batches")

    def __init__(self) -> None:
        super().__init__()
        self.a = SlabAllocator(arena_size=1 << 30, release_threshold=0)
        self.live: dict[int, tuple[Allocation, int]] = {}  # id -> (alloc, fill byte)
        self.live_batches: dict[int, AllocationBatch] = {}
        self.counter = 0

    def _fill(self, buf: Allocation) -> int:
        self.counter = (self.counter + 1) % 251
        np.frombuffer(buf, np.uint8)[:] = self.counter
        return self.counter

    @rule(target=buffers, n=SIZES, zero=st.booleans())
    def alloc(self, n: int, zero: bool) -> Allocation:
        buf = self.a.alloc(n, zero=zero)
        if zero:
            assert not np.frombuffer(buf, np.uint8).any()
        assert buf.address % 16 == 0
        self.live[id(buf)] = (buf, self._fill(buf))
        return buf

    @rule(target=freed, buf=consumes(buffers))
    def free(self, buf: Allocation) -> Allocation:
        _, fill = self.live.pop(id(buf))
        assert (np.frombuffer(buf, np.uint8) == fill).all()
        self.a.free(buf)
        return buf

    @rule(buf=freed)
    def double_free(self, buf: Allocation) -> None:
        try:
            self.a.free(buf)
        except DoubleFreeError:
            pass
        else:
            raise AssertionError("double free accepted")
        try:
            _ = buf.address
        except ClosedError:
            pass
        else:
            raise AssertionError("freed allocation still usable")

    @rule(buf=buffers)
    def free_while_viewed(self, buf: Allocation) -> None:
        view = memoryview(buf)
        try:
            self.a.free(buf)
        except BufferExportedError:
            pass
        else:
            raise AssertionError("free with a live view accepted")
        finally:
            view.release()

    @rule(target=batches, sizes=st.lists(SIZES, max_size=20))
    def alloc_many(self, sizes: list[int]) -> AllocationBatch:
        batch = self.a.alloc_many(np.array(sizes, dtype=np.int64))
        assert len(batch) == len(sizes)
        self.live_batches[id(batch)] = batch
        return batch

    @rule(batch=consumes(batches))
    def free_many(self, batch: AllocationBatch) -> None:
        del self.live_batches[id(batch)]
        self.a.free_many(batch)
        try:
            self.a.free_many(batch)
        except DoubleFreeError:
            pass
        else:
            raise AssertionError("batch freed twice")

    @invariant()
    def stats_match_the_model(self) -> None:
        s = self.a.stats()
        singles = [n.nbytes for n, _ in self.live.values()]
        batch_sizes = [int(b.sizes.sum()) for b in self.live_batches.values()]
        batch_count = sum(len(b) for b in self.live_batches.values())
        assert s["live_allocations"] == len(singles) + batch_count
        assert s["bytes_requested"] == sum(singles) + sum(batch_sizes)
        assert s["bytes_in_use"] >= s["bytes_requested"]

    @invariant()
    def contents_survive(self) -> None:
        for buf, fill in self.live.values():
            if buf.nbytes:
                arr = np.frombuffer(buf, np.uint8)
                assert arr[0] == fill and arr[-1] == fill


TestAllocatorMachine = AllocatorMachine.TestCase
TestAllocatorMachine.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
