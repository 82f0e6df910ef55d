"""Background map-ahead: page mapping on its own thread, overlapping the step's compute.

The engine calls :meth:`MapAhead.request` with the lengths the *next* step
will need right after launching this step's kernels; the worker maps the
missing pages while the GPU computes (``ctypes`` drops the GIL inside each
driver call). At the next step :meth:`~slabcache.kv.vattn.VAttnKVCache.extend`
then finds the pages mapped and maps nothing on the critical path.

>>> from slabcache.kv.vattn import HostVMMDriver, MapAhead, VAttnKVCache
>>> cache = VAttnKVCache(HostVMMDriver(), num_layers=1, num_kv_heads=1, head_dim=64,
...                      dtype="float32", max_slots=2, max_tokens=256, num_pages=8)
>>> cache.page_tokens
8
>>> slot = cache.admit(1, 8)
>>> with MapAhead(cache) as ahead:
...     ahead.request([(1, 8 + 16)])   # the next steps will need 24 tokens: 2 more pages
...     ahead.wait()
>>> cache.extend(1, 24)                # nothing left to map synchronously
0
>>> ahead.pages_mapped
2
>>> cache.close()
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable
from typing import Any

from ...errors import OutOfMemoryError
from .cache import VAttnKVCache

__all__ = ["MapAhead"]


class MapAhead:
    """A worker thread that runs :meth:`VAttnKVCache.map_tokens` for queued requests.

    Failures (a request finished meanwhile, the budget used up) are counted in
    ``misses`` and left for :meth:`~VAttnKVCache.extend` to handle synchronously.
    """

    def __init__(self, cache: VAttnKVCache) -> None:
        self.cache = cache
        self.pages_mapped = 0
        self.misses = 0
        self._q: queue.Queue[Any] = queue.Queue()
        self._t = threading.Thread(target=self._run, name="slabcache-vattn-mapahead", daemon=True)
        self._t.start()

    def request(self, targets: Iterable[tuple[int, int]]) -> None:
        """Queues ``(req_id, num_tokens)`` pairs to map ahead; returns at once."""
        self._q.put(list(targets))

    def wait(self) -> None:
        """Blocks until everything queued so far is mapped (or given up)."""
        self._q.join()

    def _run(self) -> None:
        bind = getattr(self.cache.driver, "bind_thread", None)
        if bind is not None:
            bind()
        while True:
            item = self._q.get()
            try:
                if item is None:
                    return
                for req, n in item:
                    try:
                        self.pages_mapped += self.cache.map_tokens(req, n)
                    except (KeyError, OutOfMemoryError, ValueError):
                        self.misses += 1
            finally:
                self._q.task_done()

    def close(self) -> None:
        """Stops the worker after what is queued."""
        if self._t.is_alive():
            self._q.put(None)
            self._t.join()

    def __enter__(self) -> MapAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
