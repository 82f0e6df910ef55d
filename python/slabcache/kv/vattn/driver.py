"""The virtual-memory calls a :class:`~slabcache.kv.vattn.VAttnKVCache` makes, and a CPU driver.

vAttention needs six operations of CUDA's virtual memory management API:
reserve a virtual range, create a physical page, map a page at an address of
a range, make a mapping accessible, unmap it, release a page. :class:`VMMDriver`
names them; two classes implement them:

- :class:`HostVMMDriver` (this file): the same semantics on the CPU with
  ``mmap``: a reservation is a ``PROT_NONE`` anonymous mapping, a physical page
  is a range of one ``memfd`` file, mapping is ``mmap(MAP_FIXED | MAP_SHARED)``
  of that range. Pages mapped twice really alias (prefix sharing is tested on
  it), and unmapped addresses really fault, so the CPU tests exercise the
  policy and the data path together. It also checks the protocol strictly
  (no map over a mapped address, no release of a mapped page) and counts calls.
- :class:`~slabcache.kv.vattn.cuda_driver.CudaVMMDriver`: ``libcuda.so.1``
  through ``ctypes`` (``cuMemAddressReserve``, ``cuMemCreate``, ``cuMemMap``,
  ``cuMemSetAccess``, ``cuMemUnmap``, ``cuMemRelease``).

>>> drv = HostVMMDriver(page_size=4096)
>>> va = drv.reserve(4 * 4096)
>>> h = drv.create()
>>> drv.map(va + 4096, h)
>>> drv.write(va + 4096, b"kv")
>>> drv.map(va + 3 * 4096, h)            # the same physical page at a second address
>>> drv.read(va + 3 * 4096, 2)
b'kv'
>>> drv.unmap(va + 4096); drv.unmap(va + 3 * 4096); drv.release(h); drv.free(va)
>>> drv.counts["map"], drv.counts["unmap"]
(2, 2)
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
from collections import Counter
from typing import Protocol

from ...errors import InvalidArgumentError, InvalidFreeError, OutOfMemoryError

__all__ = ["HostVMMDriver", "VMMDriver"]


class VMMDriver(Protocol):
    """Virtual memory management calls, one page (``page_size`` bytes) at a time."""

    #: bytes of one physical page (the allocation granularity: 2 MiB on NVIDIA GPUs)
    page_size: int
    #: ``"cpu"`` or ``"cuda"``: where a tensor view over a range lives
    device: str

    def reserve(self, size: int) -> int:
        """A new virtual range of ``size`` bytes (a multiple of the page), nothing mapped."""
        ...

    def free(self, va: int) -> None:
        """Gives a range back; nothing may be mapped in it any more."""
        ...

    def create(self) -> int:
        """A new physical page; returns its handle."""
        ...

    def release(self, handle: int) -> None:
        """Frees a physical page that is mapped nowhere."""
        ...

    def map(self, va: int, handle: int) -> None:
        """Maps page ``handle`` at page-aligned ``va`` inside a range and makes it read/write."""
        ...

    def map_batch(self, pairs: list[tuple[int, int]]) -> None:
        """Maps several ``(va, handle)`` pairs; all or none (fewer access calls on CUDA)."""
        ...

    def unmap(self, va: int) -> None:
        """Unmaps the page mapped at ``va``."""
        ...


_PROT_NONE, _PROT_RW = 0, 3
_MAP_SHARED, _MAP_PRIVATE, _MAP_FIXED, _MAP_ANON, _MAP_NORESERVE = 1, 2, 0x10, 0x20, 0x4000
_MAP_FAILED = ctypes.c_void_p(-1).value


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.munmap.restype = ctypes.c_int
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc


class HostVMMDriver:
    """:class:`VMMDriver` on the CPU: ``mmap`` of one ``memfd`` (Linux), strict, counting.

    ``max_pages`` bounds the physical pages alive at once (``create`` past it raises
    :class:`~slabcache.errors.OutOfMemoryError`, as ``cuMemCreate`` does when the GPU
    is full). ``counts`` holds the number of calls of each operation.
    """

    device = "cpu"

    def __init__(self, page_size: int = mmap.PAGESIZE, max_pages: int | None = None) -> None:
        if not sys.platform.startswith("linux"):
            raise InvalidArgumentError("HostVMMDriver needs Linux (memfd + mmap MAP_FIXED)")
        if page_size <= 0 or page_size % mmap.PAGESIZE:
            raise InvalidArgumentError(
                f"page_size must be a positive multiple of {mmap.PAGESIZE}, got {page_size}"
            )
        self.page_size = page_size
        self.max_pages = max_pages
        self.counts: Counter[str] = Counter()
        self._libc = _libc()
        self._fd = os.memfd_create("slabcache-vattn")
        self._file_pages = 0
        self._free_offsets: list[int] = []
        self._handles: dict[int, int] = {}  # handle -> file offset
        self._next_handle = 1
        self._ranges: dict[int, int] = {}  # va -> size
        self._mapped: dict[int, int] = {}  # va -> handle
        self._map_count: Counter[int] = Counter()  # handle -> number of addresses

    # ---- VMMDriver ---------------------------------------------------------------------

    def reserve(self, size: int) -> int:
        if size <= 0 or size % self.page_size:
            raise InvalidArgumentError(f"size must be a positive multiple of the page, got {size}")
        # Over-reserve by a page so the range can start page_size-aligned (as CUDA's does).
        raw = self._libc.mmap(
            None,
            size + self.page_size,
            _PROT_NONE,
            _MAP_PRIVATE | _MAP_ANON | _MAP_NORESERVE,
            -1,
            0,
        )
        if raw in (None, _MAP_FAILED):
            raise OutOfMemoryError(f"reserve of {size} bytes: {os.strerror(ctypes.get_errno())}")
        va = (raw + self.page_size - 1) // self.page_size * self.page_size
        if va > raw:
            self._libc.munmap(raw, va - raw)
        tail = raw + size + self.page_size - (va + size)
        if tail:
            self._libc.munmap(va + size, tail)
        self._ranges[va] = size
        self.counts["reserve"] += 1
        return int(va)

    def free(self, va: int) -> None:
        size = self._ranges.get(va)
        if size is None:
            raise InvalidFreeError(f"{va:#x} is not a reserved range")
        if any(va <= a < va + size for a in self._mapped):
            raise InvalidFreeError(f"range {va:#x} still has mapped pages")
        self._libc.munmap(va, size)
        del self._ranges[va]
        self.counts["free"] += 1

    def create(self) -> int:
        if self.max_pages is not None and len(self._handles) >= self.max_pages:
            raise OutOfMemoryError(f"all {self.max_pages} physical pages are in use")
        if self._free_offsets:
            off = self._free_offsets.pop()
        else:
            off = self._file_pages * self.page_size
            self._file_pages += 1
            os.ftruncate(self._fd, self._file_pages * self.page_size)
        h = self._next_handle
        self._next_handle += 1
        self._handles[h] = off
        self.counts["create"] += 1
        return h

    def release(self, handle: int) -> None:
        off = self._handles.get(handle)
        if off is None:
            raise InvalidFreeError(f"handle {handle} is not a live page")
        if self._map_count[handle]:
            raise InvalidFreeError(f"handle {handle} is still mapped")
        # Zero it so a later create() never shows another request's bytes.
        os.pwrite(self._fd, bytes(self.page_size), off)
        del self._handles[handle]
        self._free_offsets.append(off)
        self.counts["release"] += 1

    def map(self, va: int, handle: int) -> None:
        off = self._handles.get(handle)
        if off is None:
            raise InvalidArgumentError(f"handle {handle} is not a live page")
        if va % self.page_size or not self._inside(va):
            raise InvalidArgumentError(f"{va:#x} is not a page of a reserved range")
        if va in self._mapped:
            raise InvalidArgumentError(f"{va:#x} is already mapped")
        got = self._libc.mmap(va, self.page_size, _PROT_RW, _MAP_SHARED | _MAP_FIXED, self._fd, off)
        if got != va:
            raise OutOfMemoryError(f"map at {va:#x}: {os.strerror(ctypes.get_errno())}")
        self._mapped[va] = handle
        self._map_count[handle] += 1
        self.counts["map"] += 1

    def map_batch(self, pairs: list[tuple[int, int]]) -> None:
        """Maps several ``(va, handle)`` pairs (all or none)."""
        done: list[int] = []
        try:
            for va, h in pairs:
                self.map(va, h)
                done.append(va)
        except BaseException:
            for va in done:
                self.unmap(va)
            raise

    def unmap(self, va: int) -> None:
        handle = self._mapped.pop(va, None)
        if handle is None:
            raise InvalidFreeError(f"{va:#x} is not mapped")
        # Back to an inaccessible reservation (not munmap: the range stays ours).
        got = self._libc.mmap(
            va,
            self.page_size,
            _PROT_NONE,
            _MAP_PRIVATE | _MAP_ANON | _MAP_FIXED | _MAP_NORESERVE,
            -1,
            0,
        )
        if got != va:
            raise OutOfMemoryError(f"unmap at {va:#x}: {os.strerror(ctypes.get_errno())}")
        self._map_count[handle] -= 1
        self.counts["unmap"] += 1

    # ---- CPU-only helpers (tests, doctests) -------------------------------------------

    def read(self, va: int, n: int) -> bytes:
        """``n`` bytes at ``va`` (must be mapped)."""
        self._check_mapped(va, n)
        return ctypes.string_at(va, n)

    def write(self, va: int, data: bytes) -> None:
        """Stores ``data`` at ``va`` (must be mapped)."""
        self._check_mapped(va, len(data))
        ctypes.memmove(va, data, len(data))

    @property
    def live_pages(self) -> int:
        """Physical pages created and not yet released."""
        return len(self._handles)

    @property
    def mapped_pages(self) -> int:
        """Addresses with a page mapped (a page mapped twice counts twice)."""
        return len(self._mapped)

    def mapping(self, va: int) -> int | None:
        """The handle mapped at page ``va``, or None."""
        return self._mapped.get(va)

    def _inside(self, va: int) -> bool:
        return any(r <= va < r + s for r, s in self._ranges.items())

    def _check_mapped(self, va: int, n: int) -> None:
        p = va // self.page_size * self.page_size
        while p < va + n:
            if p not in self._mapped:
                raise InvalidArgumentError(f"{p:#x} is not mapped")
            p += self.page_size

    def close(self) -> None:
        """Unmaps, releases and frees everything (tests call it; the OS would anyway)."""
        for va in list(self._mapped):
            self.unmap(va)
        for h in list(self._handles):
            self.release(h)
        for va in list(self._ranges):
            self.free(va)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __repr__(self) -> str:
        return (
            f"HostVMMDriver(page_size={self.page_size}, live_pages={self.live_pages}, "
            f"mapped={self.mapped_pages})"
        )
