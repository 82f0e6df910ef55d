"""A crash-safe, append-only blob store: WAL + mmap'd generation files.

Values are written once to an append-only data file, then a checksummed WAL
record makes them durable; ``get`` returns a read-only, zero-copy
``memoryview`` into the file's mmap that stays valid across overwrites,
deletes and compaction.

    >>> import tempfile, os
    >>> from slabcache import BlobArena
    >>> path = os.path.join(tempfile.mkdtemp(), "cache.arena")
    >>> with BlobArena(path, sync="batch") as ar:
    ...     ar.put(b"key", b"value")
    ...     bytes(ar.get(b"key"))
    b'value'
    >>> with BlobArena(path) as ar:          # reopened: recovered from the WAL
    ...     b"key" in ar, len(ar)
    (True, 1)

Durability (``sync=``): ``"always"`` fsyncs before every put returns (with
group commit between threads), ``"batch"`` fsyncs every ``batch_interval_ms``
or ``batch_bytes`` and on ``flush()``, ``"none"`` only on ``flush()``,
checkpoints, compaction and close. Every mode survives a process crash
(``kill -9``) without losing acknowledged writes; see ``docs/arena.md`` for
power loss.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any, Literal

from . import _native

__all__ = ["BlobArena", "SyncModeName"]

SyncModeName = Literal["always", "batch", "none"]


class BlobArena(_native.BlobArena):
    """A crash-safe blob store in directory ``path`` (created if missing).

    Args:
        path: the arena directory.
        sync: ``"always"``, ``"batch"`` (default) or ``"none"``.
        batch_interval_ms: ``"batch"``: longest time between fsyncs.
        batch_bytes: ``"batch"``: fsync inline once this many bytes are unsynced.
        checkpoint_bytes: write an index checkpoint once the WAL segment is this
            long (bounds recovery time); 0 disables periodic checkpoints.
        auto_compact: compact when dead bytes exceed ``compact_dead_ratio`` of
            the data *and* ``compact_min_dead_bytes``.
        verify_reads: check each blob's CRC32C on ``get`` (raises
            :class:`~slabcache.errors.CorruptionError` on a mismatch).
        verify_replay: check blob checksums of the WAL records replayed on open.
        create: create the arena if it does not exist.
        inline_max: ``"always"``: values up to this size also travel inside
            their WAL record, so one fsync (of the WAL) acknowledges them and
            the blob file is synced lazily; recovery rewrites any blob that did
            not reach the disk. 0 disables (at most 64 KiB).

    Raises:
        LockedError: another writer holds the arena.
        CorruptionError: damaged files that recovery cannot cut away.

    Keys are ``bytes`` or ``str`` (stored as UTF-8; ``keys()`` returns
    ``bytes``); anything else raises :class:`~slabcache.errors.InvalidTypeError`.
    Values are any contiguous bytes-like object (``bytes``, ``bytearray``,
    ``memoryview``, numpy arrays), written without an intermediate copy.

        >>> import tempfile
        >>> ar = BlobArena(tempfile.mkdtemp() + "/a", sync="none")
        >>> ar.put_many([b"a", b"b"], [b"1", b"22"])
        >>> [bytes(v) for v in ar.get_many([b"a", b"b"])]
        [b'1', b'22']
        >>> ar.keys(start=b"b")
        [b'b']
        >>> ar.close()
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sync: SyncModeName = "batch",
        batch_interval_ms: float = 10.0,
        batch_bytes: int = 4 << 20,
        checkpoint_bytes: int = 64 << 20,
        auto_compact: bool = True,
        compact_dead_ratio: float = 0.5,
        compact_min_dead_bytes: int = 64 << 20,
        verify_reads: bool = False,
        verify_replay: bool = True,
        create: bool = True,
        inline_max: int = 16 << 10,
    ) -> None:
        # The native __new__ opened and recovered the arena with these arguments.
        super().__init__()

    def __enter__(self) -> BlobArena:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __getitem__(self, key: bytes | str) -> memoryview:
        value = self.get(key)
        if value is None:
            from .errors import NotFoundError

            raise NotFoundError(f"key {key!r} is not in the arena")
        return value

    def __setitem__(self, key: bytes | str, value: Any) -> None:
        self.put(key, value)

    def __delitem__(self, key: bytes | str) -> None:
        if not self.delete(key):
            from .errors import NotFoundError

            raise NotFoundError(f"key {key!r} is not in the arena")

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self)} keys"
        return f"BlobArena({os.fspath(self.path)!r}, sync={self.sync!r}, {state})"


# The native methods' docstrings (written in rust/python/src/arena.rs, shown by ``help()``)
# carry the per-method examples; doctest does not look into an extension module, so they are
# listed here to run with this module's doctests.
_DOCUMENTED = (
    "put", "put_many", "get", "get_many", "delete", "keys", "flush", "checkpoint", "compact",
    "stats", "verify", "close", "repair", "closed", "poisoned", "path", "sync",
)  # fmt: skip
__test__ = {
    f"BlobArena.{name}": getattr(_native.BlobArena, name).__doc__ or "" for name in _DOCUMENTED
}
