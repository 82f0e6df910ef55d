"""CUDA's virtual memory management API through ``ctypes`` on ``libcuda.so.1``.

The driver library is loaded when a :class:`CudaVMMDriver` is made, never at
import, so this module imports (and its doctest runs) on machines without CUDA:

>>> from slabcache.kv.vattn.cuda_driver import cuda_driver_available
>>> isinstance(cuda_driver_available(), bool)
True

Every call is checked; a failing one raises
:class:`~slabcache.errors.OutOfMemoryError` (``CUDA_ERROR_OUT_OF_MEMORY``) or
:class:`CudaDriverError` with the driver's error name. ``ctypes`` releases
the GIL during each call, so a background thread can map pages while the
main thread launches kernels.
"""

from __future__ import annotations

import ctypes
import threading
from collections import Counter
from typing import Any

from ...errors import InvalidArgumentError, InvalidFreeError, OutOfMemoryError, SlabcacheError

__all__ = ["CudaDriverError", "CudaVMMDriver", "cuda_driver_available"]

_CU_MEM_ALLOCATION_TYPE_PINNED = 1
_CU_MEM_LOCATION_TYPE_DEVICE = 1
_CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 3
_CU_MEM_ALLOC_GRANULARITY_MINIMUM = 0
_CU_MEM_ALLOC_GRANULARITY_RECOMMENDED = 1
_CUDA_ERROR_OUT_OF_MEMORY = 2


class CudaDriverError(SlabcacheError, RuntimeError):
    """A CUDA driver call returned an error."""


class _Location(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]


class _AllocFlags(ctypes.Structure):
    _fields_ = [
        ("compressionType", ctypes.c_ubyte),
        ("gpuDirectRDMACapable", ctypes.c_ubyte),
        ("usage", ctypes.c_ushort),
        ("reserved", ctypes.c_ubyte * 4),
    ]


class _AllocationProp(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("requestedHandleTypes", ctypes.c_int),
        ("location", _Location),
        ("win32HandleMetaData", ctypes.c_void_p),
        ("allocFlags", _AllocFlags),
    ]


class _AccessDesc(ctypes.Structure):
    _fields_ = [("location", _Location), ("flags", ctypes.c_int)]


_lib: Any = None
_lib_lock = threading.Lock()


def _load() -> Any:
    global _lib
    with _lib_lock:
        if _lib is None:
            lib = ctypes.CDLL("libcuda.so.1")
            u64, sz, p = ctypes.c_uint64, ctypes.c_size_t, ctypes.POINTER
            sig = {
                "cuInit": [ctypes.c_uint],
                "cuDriverGetVersion": [p(ctypes.c_int)],
                "cuDeviceGet": [p(ctypes.c_int), ctypes.c_int],
                "cuDevicePrimaryCtxRetain": [p(ctypes.c_void_p), ctypes.c_int],
                "cuCtxSetCurrent": [ctypes.c_void_p],
                "cuCtxGetCurrent": [p(ctypes.c_void_p)],
                "cuMemGetAllocationGranularity": [p(sz), p(_AllocationProp), ctypes.c_int],
                "cuMemAddressReserve": [p(u64), sz, sz, u64, ctypes.c_ulonglong],
                "cuMemAddressFree": [u64, sz],
                "cuMemCreate": [p(u64), sz, p(_AllocationProp), ctypes.c_ulonglong],
                "cuMemRelease": [u64],
                "cuMemMap": [u64, sz, sz, u64, ctypes.c_ulonglong],
                "cuMemUnmap": [u64, sz],
                "cuMemSetAccess": [u64, sz, p(_AccessDesc), sz],
                "cuMemGetInfo_v2": [p(sz), p(sz)],
                "cuGetErrorName": [ctypes.c_int, p(ctypes.c_char_p)],
            }
            for name, args in sig.items():
                fn = getattr(lib, name)
                fn.argtypes = args
                fn.restype = ctypes.c_int
            _lib = lib
        return _lib


def cuda_driver_available() -> bool:
    """True when ``libcuda.so.1`` loads and ``cuInit`` finds a device."""
    try:
        lib = _load()
    except OSError:
        return False
    n = ctypes.c_int()
    return bool(lib.cuInit(0) == 0 and lib.cuDeviceGet(ctypes.byref(n), 0) == 0)


def _check(rc: int, what: str) -> None:
    if rc == 0:
        return
    name = ctypes.c_char_p()
    lib = _load()
    lib.cuGetErrorName(rc, ctypes.byref(name))
    text = f"{what}: {name.value.decode() if name.value else rc}"
    if rc == _CUDA_ERROR_OUT_OF_MEMORY:
        raise OutOfMemoryError(text)
    raise CudaDriverError(text)


def _runs(vas: list[int], page: int) -> list[tuple[int, int]]:
    """Sorted page addresses as ``(start, pages)`` runs of adjacent pages."""
    out: list[tuple[int, int]] = []
    for va in vas:
        if out and out[-1][0] + out[-1][1] * page == va:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((va, 1))
    return out


class CudaVMMDriver:
    """:class:`~slabcache.kv.vattn.VMMDriver` on GPU ``device`` (its primary context).

    ``page_size`` defaults to the driver's minimum granularity (2 MiB on current
    GPUs); ``counts`` holds the number of calls of each operation. Threads that
    call in get the primary context made current first (:meth:`bind_thread`).
    """

    device = "cuda"

    def __init__(self, device: int = 0, page_size: int | None = None) -> None:
        lib = _load()
        _check(lib.cuInit(0), "cuInit")
        dev = ctypes.c_int()
        _check(lib.cuDeviceGet(ctypes.byref(dev), device), "cuDeviceGet")
        self._lib, self.device_index = lib, device
        self._ctx = ctypes.c_void_p()
        _check(
            lib.cuDevicePrimaryCtxRetain(ctypes.byref(self._ctx), dev), "cuDevicePrimaryCtxRetain"
        )
        self._prop = _AllocationProp()
        self._prop.type = _CU_MEM_ALLOCATION_TYPE_PINNED
        self._prop.location.type = _CU_MEM_LOCATION_TYPE_DEVICE
        self._prop.location.id = device
        self._access = _AccessDesc()
        self._access.location.type = _CU_MEM_LOCATION_TYPE_DEVICE
        self._access.location.id = device
        self._access.flags = _CU_MEM_ACCESS_FLAGS_PROT_READWRITE
        self.bind_thread()
        self.granularity = self._granularity(_CU_MEM_ALLOC_GRANULARITY_MINIMUM)
        self.recommended_granularity = self._granularity(_CU_MEM_ALLOC_GRANULARITY_RECOMMENDED)
        if page_size is None:
            page_size = self.granularity
        if page_size <= 0 or page_size % self.granularity:
            raise InvalidArgumentError(
                f"page_size must be a multiple of the granularity {self.granularity}"
            )
        self.page_size = page_size
        self.counts: Counter[str] = Counter()
        self._sizes: dict[int, int] = {}
        self._bound = threading.local()
        self._bound.ok = True

    def bind_thread(self) -> None:
        """Makes this driver's context current on the calling thread."""
        _check(self._lib.cuCtxSetCurrent(self._ctx), "cuCtxSetCurrent")

    def _ensure_bound(self) -> None:
        if not getattr(self._bound, "ok", False):
            self.bind_thread()
            self._bound.ok = True

    def _granularity(self, kind: int) -> int:
        g = ctypes.c_size_t()
        _check(
            self._lib.cuMemGetAllocationGranularity(
                ctypes.byref(g), ctypes.byref(self._prop), kind
            ),
            "cuMemGetAllocationGranularity",
        )
        return int(g.value)

    @staticmethod
    def driver_version() -> int:
        """``cuDriverGetVersion`` (e.g. 13000 for CUDA 13.0)."""
        v = ctypes.c_int()
        _check(_load().cuDriverGetVersion(ctypes.byref(v)), "cuDriverGetVersion")
        return int(v.value)

    def mem_info(self) -> tuple[int, int]:
        """(free, total) bytes of device memory."""
        self._ensure_bound()
        f, t = ctypes.c_size_t(), ctypes.c_size_t()
        _check(self._lib.cuMemGetInfo_v2(ctypes.byref(f), ctypes.byref(t)), "cuMemGetInfo")
        return int(f.value), int(t.value)

    # ---- VMMDriver ---------------------------------------------------------------------

    def reserve(self, size: int) -> int:
        if size <= 0 or size % self.page_size:
            raise InvalidArgumentError(f"size must be a positive multiple of the page, got {size}")
        self._ensure_bound()
        va = ctypes.c_uint64()
        _check(
            self._lib.cuMemAddressReserve(ctypes.byref(va), size, self.page_size, 0, 0),
            "cuMemAddressReserve",
        )
        self._sizes[va.value] = size
        self.counts["reserve"] += 1
        return int(va.value)

    def free(self, va: int) -> None:
        size = self._sizes.pop(va, None)
        if size is None:
            raise InvalidFreeError(f"{va:#x} is not a reserved range")
        self._ensure_bound()
        _check(self._lib.cuMemAddressFree(va, size), "cuMemAddressFree")
        self.counts["free"] += 1

    def create(self) -> int:
        self._ensure_bound()
        h = ctypes.c_uint64()
        _check(
            self._lib.cuMemCreate(ctypes.byref(h), self.page_size, ctypes.byref(self._prop), 0),
            "cuMemCreate",
        )
        self.counts["create"] += 1
        return int(h.value)

    def release(self, handle: int) -> None:
        self._ensure_bound()
        _check(self._lib.cuMemRelease(handle), "cuMemRelease")
        self.counts["release"] += 1

    def map(self, va: int, handle: int) -> None:
        self._ensure_bound()
        _check(self._lib.cuMemMap(va, self.page_size, 0, handle, 0), "cuMemMap")
        rc = self._lib.cuMemSetAccess(va, self.page_size, ctypes.byref(self._access), 1)
        if rc:
            self._lib.cuMemUnmap(va, self.page_size)
            _check(rc, "cuMemSetAccess")
        self.counts["map"] += 1

    def map_batch(self, pairs: list[tuple[int, int]]) -> None:
        """Maps ``(va, handle)`` pairs, then one ``cuMemSetAccess`` per run of adjacent pages."""
        self._ensure_bound()
        done: list[int] = []
        try:
            for va, h in pairs:
                _check(self._lib.cuMemMap(va, self.page_size, 0, h, 0), "cuMemMap")
                done.append(va)
            for start, n in _runs(sorted(done), self.page_size):
                _check(
                    self._lib.cuMemSetAccess(
                        start, n * self.page_size, ctypes.byref(self._access), 1
                    ),
                    "cuMemSetAccess",
                )
        except BaseException:
            for va in done:
                self._lib.cuMemUnmap(va, self.page_size)
            raise
        self.counts["map"] += len(pairs)
        self.counts["set_access"] += len(_runs(sorted(done), self.page_size))

    def set_access_only(self, va: int, size: int) -> None:
        """``cuMemSetAccess`` alone over mapped ``[va, va + size)`` (for timing it apart)."""
        self._ensure_bound()
        _check(self._lib.cuMemSetAccess(va, size, ctypes.byref(self._access), 1), "cuMemSetAccess")

    def map_only(self, va: int, handle: int) -> None:
        """``cuMemMap`` alone, no access set (for timing it apart; call set_access_only next)."""
        self._ensure_bound()
        _check(self._lib.cuMemMap(va, self.page_size, 0, handle, 0), "cuMemMap")

    def unmap(self, va: int) -> None:
        self._ensure_bound()
        _check(self._lib.cuMemUnmap(va, self.page_size), "cuMemUnmap")
        self.counts["unmap"] += 1

    def __repr__(self) -> str:
        return f"CudaVMMDriver(device={self.device_index}, page_size={self.page_size})"
