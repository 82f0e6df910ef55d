"""The slab allocator: out-of-band metadata, checked frees, buffers for numpy.

Memory comes from size-class slabs (16 B .. 32 KiB, eight classes per power
of two) in a reserved region, page runs in 4 MiB chunks of that region up to
2 MiB, and a mapping of its own above. All allocator metadata lives in a
separate table, so a buffer
overflow cannot corrupt it, and every free is checked: a double free or a
foreign object raises instead of corrupting memory.

    >>> import numpy as np
    >>> from slabcache import SlabAllocator
    >>> a = SlabAllocator()
    >>> buf = a.alloc(4096, zero=True)
    >>> arr = buf.view(np.float32)          # no copy
    >>> arr[:2] = 1.5
    >>> float(np.frombuffer(buf, np.float32)[1])
    1.5
    >>> del arr                             # release the views before freeing
    >>> a.free(buf)
    >>> a.free(buf)
    Traceback (most recent call last):
    ...
    slabcache.errors.DoubleFreeError: double free: ... was already freed

Rules:

* ``free`` raises :class:`~slabcache.errors.DoubleFreeError` for an allocation
  already freed and :class:`~slabcache.errors.InvalidFreeError` for one of
  another allocator (or an item of a batch).
* ``free`` while a buffer view (``memoryview``, ``numpy`` array from
  :meth:`Allocation.view` / ``np.frombuffer`` / ``np.asarray``) is alive raises
  :class:`~slabcache.errors.BufferExportedError` and frees nothing: drop the
  views, then free.
* A freed ``Allocation`` raises :class:`~slabcache.errors.ClosedError` on
  ``address``, ``view()`` and buffer export.
* An ``Allocation`` (or batch) garbage-collected without a free gives its
  memory back. Each keeps the allocator's memory alive, so allocator and
  allocations may go away in any order.
"""

from __future__ import annotations

from typing import Any, cast

from . import _native
from ._native import Allocation, AllocationBatch
from .stats_types import SlabStats

__all__ = ["Allocation", "AllocationBatch", "AllocatorStats", "SlabAllocator"]

_BYTE_KEYS = (
    "bytes_requested",
    "bytes_in_use",
    "bytes_mapped",
    "metadata_bytes",
    "large_bytes",
)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class AllocatorStats(dict[str, Any]):
    """A snapshot of an allocator's memory: a plain ``dict`` that prints as a
    rich table (``rich.print(a.stats())``).

    Its keys are :class:`~slabcache.stats_types.SlabStats`'s (the one place they
    are written down): bytes requested, in use (rounded to slots), mapped and
    reserved, metadata, live allocations, slab and large-mapping counts,
    ``fragmentation`` (``1 - in_use / mapped``), ``internal_waste``
    (``1 - requested / in_use``) and ``classes``, one
    :class:`~slabcache.stats_types.SlabClassStats` per size class in use.

        >>> s = SlabAllocator().stats()
        >>> s["live_allocations"]
        0
    """

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.table import Table

        summary = Table(title="slab allocator", show_header=False)
        summary.add_column("what")
        summary.add_column("value", justify="right")
        for key, value in self.items():
            if key == "classes":
                continue
            if key in _BYTE_KEYS or key == "bytes_reserved":
                text = _human(value)
            elif isinstance(value, float):
                text = f"{value:.1%}"
            else:
                text = f"{value:,}"
            summary.add_row(key, text)
        classes = Table(title="size classes in use")
        for col in ("size", "slabs", "live", "in use", "available"):
            classes.add_column(col, justify="right")
        for c in self.get("classes", []):
            classes.add_row(
                _human(c["size"]),
                str(c["slabs"]),
                f"{c['live']:,}",
                _human(c["bytes_in_use"]),
                f"{c['available']:,}",
            )
        return Group(summary, classes)


class SlabAllocator(_native.SlabAllocator):
    """A thread-safe slab allocator whose every free is checked.

    Args:
        arena_size: most bytes of address space the slab region may reserve
            (default 64 GiB, reserved as it grows; only what is used is
            backed by memory).
        zero_on_free: overwrite memory with zeros when it is freed.
        release_threshold: bytes of empty slabs kept for reuse before their
            pages go back to the OS (default 2 MiB).
        thread_cache: keep per-thread caches of free objects (the fast path).

    Methods (native, no Python layer in between on the hot path):

    * ``alloc(size, zero=False) -> Allocation``: ``size`` bytes as a writable buffer.
    * ``free(allocation)``: raises (and frees nothing) unless ``allocation`` is a
      live allocation of this allocator with no buffer view alive.
    * ``alloc_many(sizes, zero=False) -> AllocationBatch``: one allocation per
      entry of ``sizes`` (1-D ints), in one call; all or nothing.
    * ``free_many(batch_or_allocations)``: frees a batch, or an iterable of
      allocations; all or nothing.
    * ``stats() -> AllocatorStats``; ``owns(address)``; ``slot_size(size)``; ``config``.

    Example:
        >>> a = SlabAllocator(zero_on_free=True)
        >>> with a.alloc(100) as buf:
        ...     with memoryview(buf) as mv:
        ...         mv[0:3] = b"abc"
        ...         bytes(mv[0:3])
        b'abc'
        >>> batch = a.alloc_many([16, 64, 1024])
        >>> len(batch), int(batch.sizes.sum())
        (3, 1104)
        >>> a.free_many(batch)
    """

    def stats(self) -> SlabStats:
        """A snapshot of this allocator's memory: the keys of
        :class:`~slabcache.stats_types.SlabStats`, in an :class:`AllocatorStats`
        (a ``dict`` that prints as a rich table)."""
        return cast("SlabStats", AllocatorStats(super().stats()))
