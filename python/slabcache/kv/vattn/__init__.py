"""vAttention: virtually contiguous KV per request slot, physical pages mapped on demand.

- :class:`VAttnKVCache`: the allocator and its policies (budget + watermark
  admission, deferred reclamation, handle pool, TTL pins, page sharing, swap);
- :class:`MapAhead`: background mapping that overlaps the step's compute;
- :class:`VMMDriver`: the six virtual-memory calls; :class:`HostVMMDriver`
  (CPU, ``mmap``) and :class:`CudaVMMDriver` (``libcuda`` through ``ctypes``).

See ``docs/vattn.md``.
"""

from __future__ import annotations

from .cache import VAttnKVCache
from .cuda_driver import CudaDriverError, CudaVMMDriver, cuda_driver_available
from .driver import HostVMMDriver, VMMDriver
from .mapahead import MapAhead

__all__ = [
    "CudaDriverError",
    "CudaVMMDriver",
    "HostVMMDriver",
    "MapAhead",
    "VAttnKVCache",
    "VMMDriver",
    "cuda_driver_available",
]
