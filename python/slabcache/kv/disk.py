"""The disk tier: evicted prefix blocks in a :class:`~slabcache.BlobArena`, by chained hash.

A full block that the BlockManager evicts from the device keeps its prefix
hash; its bytes (every layer) are written to the arena under
``b"kv1/" + fingerprint (16 B) + block hash (32 B)``. The fingerprint names
the model and :class:`~slabcache.kv.KVLayout`, so KV of another model or
layout never matches; the chained hash names the whole prefix, so a hit is
exactly the KV that prefix produces. The arena is crash-safe (WAL), so the
tier survives an engine restart: reopening it rebuilds the index from the
arena's keys. The tier keeps at most ``byte_budget`` bytes, evicting the
least recently used blocks first (after a restart: in write order).

Value format: a 16-byte header (``b"SKV1"``, u32 payload length, u64 write
sequence number, little-endian) then the payload, ``num_layers`` blocks of
``block_bytes`` in layer order.

    >>> import tempfile, numpy as np
    >>> from slabcache.kv import KVLayout, ArenaKVTier
    >>> lay = KVLayout(2, 4, 2, 8, "float32")
    >>> d = tempfile.mkdtemp()
    >>> tier = ArenaKVTier(d + "/kv", lay, model="toy")
    >>> h = np.arange(32, dtype=np.uint8).reshape(1, 32)
    >>> tier.put(h, np.ones((1, lay.block_bytes_all_layers), np.uint8))
    1
    >>> tier.close()
    >>> tier = ArenaKVTier(d + "/kv", lay, model="toy")     # after a restart
    >>> tier.match_prefix(h), int(tier.get(h)[0].sum()) == lay.block_bytes_all_layers
    (1, True)
    >>> tier.close()
"""

from __future__ import annotations

import os
import struct
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from ..arena import BlobArena, SyncModeName
from ..errors import ClosedError, CorruptionError, InvalidArgumentError, NotFoundError
from ..stats_types import ArenaKVTierStats
from .layout import KVLayout

__all__ = ["ArenaKVTier"]

_MAGIC = b"SKV1"
_HEADER = struct.Struct("<4sIQ")
_PREFIX = b"kv1/"
_PARALLEL_READ_BYTES = 4 << 20


def _hashes(h: npt.ArrayLike) -> np.ndarray:
    arr = np.asarray(h)
    if arr.ndim == 1 and arr.shape[0] == 32:
        arr = arr.reshape(1, 32)
    if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != 32:
        raise InvalidArgumentError(f"hashes must be uint8 (n, 32), got {arr.dtype} {arr.shape}")
    return arr


class ArenaKVTier:
    """Prefix-hash-addressed KV blocks on disk, in a blob arena, within a byte budget.

    Args:
        path: the arena directory (created if missing), or pass ``arena=``.
        layout: the block shape; with ``model`` it makes the key fingerprint.
        model: a name for the weights the KV came from (part of the fingerprint).
        byte_budget: most bytes of blocks (payload + header) kept; None: unbounded.
        sync: the arena's durability mode (a cache loses nothing it needs on a
            crash with ``"none"``: the WAL still survives a process kill).
        arena: an open :class:`~slabcache.BlobArena` to share (not closed by :meth:`close`).
        read_threads: threads copying a large :meth:`get` out of the arena's mmap.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        layout: KVLayout,
        *,
        model: str = "",
        byte_budget: int | None = None,
        sync: SyncModeName = "none",
        arena: BlobArena | None = None,
        read_threads: int = min(8, os.cpu_count() or 1),
    ) -> None:
        if (path is None) == (arena is None):
            raise InvalidArgumentError("give exactly one of path and arena")
        if byte_budget is not None and byte_budget < 0:
            raise InvalidArgumentError(f"byte_budget must be >= 0, got {byte_budget}")
        self.layout = layout
        self.fingerprint = layout.fingerprint(model)
        self._key_prefix = _PREFIX + self.fingerprint
        self.byte_budget = byte_budget
        self._own = arena is None
        self.arena = arena if arena is not None else BlobArena(path, sync=sync)  # type: ignore[arg-type]
        self._payload = layout.block_bytes_all_layers
        self._value_bytes = _HEADER.size + self._payload
        self._lru: OrderedDict[bytes, None] = OrderedDict()  # block hash -> (), oldest first
        self._seq = 0
        self.read_threads = max(1, int(read_threads))
        self._pool: ThreadPoolExecutor | None = None
        self.stats: ArenaKVTierStats = {
            "puts": 0,
            "hits": 0,
            "misses": 0,
            "evictions": 0,
            "dropped_corrupt": 0,
        }
        self._recover()
        self._closed = False

    def _recover(self) -> None:
        """Rebuilds the index (and the eviction order, by write sequence) from the arena."""
        keys = self.arena.keys(start=self._key_prefix, end=self._key_prefix + b"\xff" * 33)
        found: list[tuple[int, bytes]] = []
        for k in keys:
            if len(k) != len(self._key_prefix) + 32:
                continue
            v = self.arena.get(k)
            if v is None:
                continue
            if len(v) != self._value_bytes:
                self.arena.delete(k)  # a value this layout cannot hold: not ours to serve
                self.stats["dropped_corrupt"] += 1
                continue
            magic, n, seq = _HEADER.unpack_from(v, 0)
            if magic != _MAGIC or n != self._payload:
                self.arena.delete(k)
                self.stats["dropped_corrupt"] += 1
                continue
            found.append((seq, k[len(self._key_prefix) :]))
        found.sort()
        for seq, h in found:
            self._lru[h] = None
            self._seq = max(self._seq, seq + 1)

    # ---- queries ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._lru)

    def __contains__(self, block_hash: bytes) -> bool:
        return bytes(block_hash) in self._lru

    @property
    def nbytes(self) -> int:
        """Bytes the tier holds (what the budget counts)."""
        return len(self._lru) * self._value_bytes

    def match_prefix(self, hashes: npt.ArrayLike, start: int = 0) -> int:
        """How many of ``hashes[start:]`` are on disk, counting from ``start`` until the
        first miss (a prefix continues only as long as every block of it is there)."""
        hs = _hashes(hashes)
        n = 0
        for i in range(start, len(hs)):
            if hs[i].tobytes() not in self._lru:
                break
            n += 1
        return n

    # ---- reads and writes ------------------------------------------------------------

    def put(self, hashes: npt.ArrayLike, rows: npt.ArrayLike) -> int:
        """Stores blocks (``uint8 [n, num_layers * block_bytes]``) under their hashes;
        blocks already stored are only marked recently used. Then evicts to the budget.
        Returns how many were written."""
        self._check_open()
        hs = _hashes(hashes)
        data = np.asarray(rows)
        if data.dtype != np.uint8 or data.shape != (len(hs), self._payload):
            raise InvalidArgumentError(
                f"rows must be uint8 ({len(hs)}, {self._payload}), got {data.dtype} {data.shape}"
            )
        keys: list[bytes] = []
        values: list[Any] = []
        for i in range(len(hs)):
            h = hs[i].tobytes()
            if h in self._lru:
                self._lru.move_to_end(h)
                continue
            buf = bytearray(self._value_bytes)
            _HEADER.pack_into(buf, 0, _MAGIC, self._payload, self._seq)
            buf[_HEADER.size :] = data[i].tobytes()
            self._seq += 1
            keys.append(self._key_prefix + h)
            values.append(buf)
            self._lru[h] = None
        if keys:
            self.arena.put_many(keys, values)
            self.stats["puts"] += len(keys)
        self._evict_to_budget()
        return len(keys)

    def get(self, hashes: npt.ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
        """The blocks of ``hashes`` as ``uint8 [n, num_layers * block_bytes]`` (read from
        the arena's mmap; one copy, into ``out`` if given, e.g. pinned staging memory).
        ``NotFoundError`` if one is missing."""
        self._check_open()
        hs = _hashes(hashes)
        if out is None:
            out = np.empty((len(hs), self._payload), dtype=np.uint8)
        elif out.dtype != np.uint8 or out.shape != (len(hs), self._payload):
            raise InvalidArgumentError(
                f"out must be uint8 ({len(hs)}, {self._payload}), got {out.dtype} {out.shape}"
            )
        keys = [self._key_prefix + hs[i].tobytes() for i in range(len(hs))]
        found = self.arena.get_many(keys)
        for i, v in enumerate(found):
            h = keys[i][len(self._key_prefix) :]
            if v is None:
                self.stats["misses"] += 1
                self._lru.pop(h, None)
                raise NotFoundError(f"block {h.hex()[:16]}... is not on disk")
            if len(v) != self._value_bytes or bytes(v[:4]) != _MAGIC:
                raise CorruptionError(f"block {h.hex()[:16]}...: bad value of {len(v)} bytes")
        views = [v for v in found if v is not None]

        def copy(lo: int, hi: int) -> None:  # numpy releases the GIL for these copies
            for i in range(lo, hi):
                out[i] = np.frombuffer(views[i], dtype=np.uint8, offset=_HEADER.size)

        n = len(views)
        workers = min(self.read_threads, n)
        if workers > 1 and n * self._payload >= _PARALLEL_READ_BYTES:
            # one core copies from the page cache at a few GB/s, well below PCIe: split it
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.read_threads, "kv-arena-read")
            step = -(-n // workers)
            futs = [self._pool.submit(copy, lo, min(n, lo + step)) for lo in range(0, n, step)]
            for f in futs:
                f.result()
        else:
            copy(0, n)
        for k in keys:
            self._lru.move_to_end(k[len(self._key_prefix) :])
        self.stats["hits"] += len(hs)
        return out

    def _evict_to_budget(self) -> None:
        if self.byte_budget is None:
            return
        while self._lru and self.nbytes > self.byte_budget:
            h, _ = self._lru.popitem(last=False)
            self.arena.delete(self._key_prefix + h)
            self.stats["evictions"] += 1

    def flush(self) -> None:
        """Makes every stored block durable (the arena's fsync)."""
        self._check_open()
        self.arena.flush()

    def close(self) -> None:
        """Flushes, and closes the arena if this tier opened it."""
        if getattr(self, "_closed", True):
            return
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._own:
            self.arena.close()
        else:
            self.arena.flush()
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("disk tier is closed")

    def __enter__(self) -> ArenaKVTier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ArenaKVTier({len(self)} blocks, {self.nbytes} B, budget={self.byte_budget})"
