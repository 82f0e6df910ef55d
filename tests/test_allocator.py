"""SlabAllocator from Python: buffers, views, batches, stats, and every bad input."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest
from rich.console import Console

from slabcache import (
    Allocation,
    AllocationBatch,
    BufferExportedError,
    ClosedError,
    DoubleFreeError,
    InvalidArgumentError,
    InvalidFreeError,
    InvalidTypeError,
    OutOfMemoryError,
    SlabAllocator,
)


@pytest.fixture
def a() -> SlabAllocator:
    return SlabAllocator(arena_size=1 << 30)


def test_alloc_write_read_free(a: SlabAllocator) -> None:
    for n in (0, 1, 16, 100, 4096, 32768, 100_000):
        buf = a.alloc(n)
        assert isinstance(buf, Allocation)
        assert buf.nbytes == n == len(buf)
        assert buf.address % 16 == 0
        mv = memoryview(buf)
        assert mv.nbytes == n and not mv.readonly and mv.format == "B"
        if n:
            mv[:] = bytes([7]) * n
            assert bytes(buf)[-1] == 7
        mv.release()
        a.free(buf)
        assert buf.freed


def test_zero_gives_zeroed_memory_even_when_recycled(a: SlabAllocator) -> None:
    for n in (64, 5000, 70_000):
        buf = a.alloc(n)
        memoryview(buf)[:] = b"\xff" * n
        a.free(buf)
        z = a.alloc(n, zero=True)
        assert not np.frombuffer(z, np.uint8).any()
        gc.collect()
        a.free(z)


def test_view_is_a_numpy_array_over_the_same_memory(a: SlabAllocator) -> None:
    buf = a.alloc(4096, zero=True)
    arr = buf.view(np.float32)
    assert arr.shape == (1024,) and arr.dtype == np.float32
    arr[3] = 2.5
    assert np.asarray(buf).view(np.float32)[3] == 2.5
    assert arr.ctypes.data == buf.address
    assert buf.view().dtype == np.uint8
    del arr
    a.free(buf)


def test_view_rejects_bad_dtypes(a: SlabAllocator) -> None:
    buf = a.alloc(10)
    with pytest.raises(InvalidArgumentError):
        buf.view(np.float32)  # 10 bytes is not whole float32s
    with pytest.raises(InvalidTypeError):
        buf.view("not a dtype")
    a.free(buf)


def test_double_free_and_foreign_frees_raise_and_change_nothing(a: SlabAllocator) -> None:
    buf = a.alloc(100)
    other = SlabAllocator(arena_size=1 << 28)
    foreign = other.alloc(100)
    with pytest.raises(InvalidFreeError):
        a.free(foreign)
    assert not foreign.freed
    other.free(foreign)
    before = a.stats()["live_allocations"]
    a.free(buf)
    with pytest.raises(DoubleFreeError):
        a.free(buf)
    assert a.stats()["live_allocations"] == before - 1
    for bad in (None, 5, b"bytes", bytearray(4), np.zeros(4)):
        with pytest.raises(InvalidTypeError):
            a.free(bad)  # type: ignore[arg-type]


def test_use_after_free_raises_closed(a: SlabAllocator) -> None:
    buf = a.alloc(64)
    a.free(buf)
    with pytest.raises(ClosedError):
        _ = buf.address
    with pytest.raises(ClosedError):
        memoryview(buf)
    with pytest.raises(ClosedError):
        buf.view()
    with pytest.raises(ClosedError):
        np.frombuffer(buf, np.uint8)
    # np.asarray falls back to wrapping the object itself: no memory is touched.
    assert np.asarray(buf).dtype == object
    assert "freed" in repr(buf)


def test_free_while_exported_raises_buffer_error(a: SlabAllocator) -> None:
    buf = a.alloc(256)
    mv = memoryview(buf)
    with pytest.raises(BufferExportedError):
        a.free(buf)
    with pytest.raises(BufferError):
        a.free(buf)
    assert not buf.freed
    mv.release()
    arr = np.asarray(buf)
    with pytest.raises(BufferExportedError):
        a.free(buf)
    del arr
    gc.collect()
    a.free(buf)


def test_context_manager_frees(a: SlabAllocator) -> None:
    with a.alloc(128) as buf:
        memoryview(buf)[:3] = b"abc"
        assert bytes(memoryview(buf)[:3]) == b"abc"
    assert buf.freed
    with pytest.raises(BufferExportedError):
        with a.alloc(128) as buf2:
            keep = memoryview(buf2)
    keep.release()
    a.free(buf2)


@pytest.mark.parametrize(
    ("size", "exc"),
    [
        (-1, InvalidArgumentError),
        (-(10**30), InvalidArgumentError),
        (1.5, InvalidTypeError),
        ("10", InvalidTypeError),
        (None, InvalidTypeError),
        (10**30, OutOfMemoryError),
        (1 << 62, OutOfMemoryError),
    ],
)
def test_bad_sizes(a: SlabAllocator, size: object, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        a.alloc(size)  # type: ignore[arg-type]


def test_numpy_integers_are_sizes(a: SlabAllocator) -> None:
    buf = a.alloc(np.int64(32))
    assert buf.nbytes == 32
    a.free(buf)


def test_bad_options() -> None:
    with pytest.raises(InvalidArgumentError):
        SlabAllocator(arena_size=10)
    with pytest.raises(InvalidArgumentError):
        SlabAllocator(arena_size=-5)
    with pytest.raises(InvalidTypeError):
        SlabAllocator(arena_size="big")  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError):
        SlabAllocator(release_threshold=1.0)  # type: ignore[arg-type]
    cfg = SlabAllocator(arena_size=1 << 28, zero_on_free=True, thread_cache=False).config
    assert cfg["zero_on_free"] and not cfg["thread_cache"] and cfg["arena_size"] == 1 << 28


def test_arena_exhaustion_raises_out_of_memory() -> None:
    a = SlabAllocator(arena_size=1 << 20)
    held = []
    with pytest.raises(OutOfMemoryError):
        for _ in range(1000):
            held.append(a.alloc(30_000))
    a.free_many(held)
    a.free(a.alloc(30_000))


def test_batches(a: SlabAllocator) -> None:
    sizes = np.array([16, 64, 1000, 40_000], dtype=np.int32)
    batch = a.alloc_many(sizes, zero=True)
    assert isinstance(batch, AllocationBatch)
    assert len(batch) == 4 and batch.nbytes == int(sizes.sum())
    assert (batch.sizes == sizes).all()
    assert batch.addresses.dtype == np.uint64 and (batch.addresses % 16 == 0).all()
    item = batch[2]
    assert item.nbytes == 1000 and item.address == int(batch.addresses[2])
    assert batch[-1].nbytes == 40_000
    with pytest.raises(IndexError):
        batch[4]
    assert not np.asarray(item).any()
    with pytest.raises(InvalidFreeError):
        a.free(item)  # items belong to the batch
    view = np.asarray(item)
    with pytest.raises(BufferExportedError):
        a.free_many(batch)
    del view
    gc.collect()
    assert a.stats()["live_allocations"] == 4
    a.free_many(batch)
    assert batch.freed and item.freed
    with pytest.raises(ClosedError):
        _ = item.address
    with pytest.raises(DoubleFreeError):
        a.free_many(batch)
    assert a.stats()["live_allocations"] == 0
    a.free_many(a.alloc_many([]))


def test_free_many_of_allocations_is_all_or_nothing(a: SlabAllocator) -> None:
    bufs = [a.alloc(n) for n in (10, 20, 30)]
    with pytest.raises(DoubleFreeError):
        a.free_many([*bufs, bufs[0]])
    assert not any(b.freed for b in bufs)
    a.free(bufs[1])
    with pytest.raises(DoubleFreeError):
        a.free_many(bufs)
    assert not bufs[0].freed and not bufs[2].freed
    with pytest.raises(InvalidTypeError):
        a.free_many([bufs[0], "x"])  # type: ignore[list-item]
    with pytest.raises(InvalidTypeError):
        a.free_many(42)  # type: ignore[arg-type]
    a.free_many([bufs[0], bufs[2]])
    assert a.stats()["live_allocations"] == 0


@pytest.mark.parametrize(
    ("sizes", "exc"),
    [
        ([1, -2], InvalidArgumentError),
        ([[1, 2]], InvalidArgumentError),
        ([1.5], InvalidTypeError),
        (["a"], InvalidTypeError),
        (np.array([True]), InvalidTypeError),
    ],
)
def test_alloc_many_bad_sizes_change_nothing(
    a: SlabAllocator, sizes: object, exc: type[Exception]
) -> None:
    with pytest.raises(exc):
        a.alloc_many(sizes)  # type: ignore[arg-type]
    assert a.stats()["live_allocations"] == 0


def test_batch_from_another_allocator_is_refused(a: SlabAllocator) -> None:
    other = SlabAllocator(arena_size=1 << 28)
    batch = other.alloc_many([8, 8])
    with pytest.raises(InvalidFreeError):
        a.free_many(batch)
    other.free_many(batch)


def test_stats_add_up_and_render(a: SlabAllocator) -> None:
    bufs = [a.alloc(100) for _ in range(10)] + [a.alloc(50_000)]
    s = a.stats()
    assert s["live_allocations"] == 11
    assert s["bytes_requested"] == 10 * 100 + 50_000
    assert s["bytes_in_use"] == 10 * 112 + 53_248
    assert s["large_allocations"] == 1
    assert s["bytes_mapped"] >= s["bytes_in_use"]
    assert 0.0 <= s["fragmentation"] <= 1.0
    assert sum(c["bytes_in_use"] for c in s["classes"]) + s["large_bytes"] == s["bytes_in_use"]
    console = Console(record=True, width=100)
    console.print(s)
    text = console.export_text()
    assert "bytes_requested" in text and "112 B" in text
    a.free_many(bufs)
    assert a.stats()["bytes_requested"] == 0


def test_allocations_outlive_their_allocator() -> None:
    a = SlabAllocator(arena_size=1 << 28)
    buf = a.alloc(64)
    batch = a.alloc_many([32, 32])
    arr = buf.view(np.uint8)
    del a
    gc.collect()
    arr[:] = 9  # the memory is still there
    assert np.asarray(batch[0]).size == 32
    del arr, buf, batch
    gc.collect()


def test_dropped_allocations_give_memory_back() -> None:
    a = SlabAllocator(arena_size=1 << 28)
    for _ in range(1000):
        a.alloc(1000)
    a.alloc_many([100] * 100)
    gc.collect()
    assert a.stats()["live_allocations"] == 0


def test_owns_and_slot_size(a: SlabAllocator) -> None:
    buf = a.alloc(10)
    assert a.owns(buf.address)
    assert not a.owns(id(object()))
    assert SlabAllocator.slot_size(10) == 16
    assert SlabAllocator.slot_size(257) == 288
    assert SlabAllocator.slot_size(1 << 20) is None
    a.free(buf)


def test_threads_allocate_and_free_across_each_other(a: SlabAllocator) -> None:
    made: list[Allocation] = []
    lock = threading.Lock()

    def producer() -> None:
        local = [a.alloc(64 + i % 500) for i in range(2000)]
        with lock:
            made.extend(local)

    threads = [threading.Thread(target=producer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    half = len(made) // 2

    def consumer(items: list[Allocation]) -> None:
        for b in items:
            a.free(b)

    t1 = threading.Thread(target=consumer, args=(made[:half],))
    t1.start()
    consumer(made[half:])
    t1.join()
    assert a.stats()["live_allocations"] == 0


def test_docstring_examples_run() -> None:
    import doctest

    import slabcache.allocator

    result = doctest.testmod(slabcache.allocator, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
