"""The slabcache exception family.

Every error slabcache raises is a :class:`SlabcacheError` *and* the builtin
exception that fits, so callers can catch either::

    >>> from slabcache.errors import SlabcacheError, DoubleFreeError
    >>> issubclass(DoubleFreeError, ValueError) and issubclass(DoubleFreeError, SlabcacheError)
    True

The Rust core names one of these classes for each failure; the bindings
raise it with the core's message.
"""

from __future__ import annotations

__all__ = [
    "SlabcacheError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "NotFoundError",
    "IndexOutOfRangeError",
    "AlreadyExistsError",
    "InvalidFreeError",
    "DoubleFreeError",
    "ClosedError",
    "BufferExportedError",
    "OutOfMemoryError",
    "StorageError",
    "CorruptionError",
    "LockedError",
    "NotBundledError",
    "SharedTierError",
    "SharedAuthError",
    "UnsupportedFeatureError",
]


class SlabcacheError(Exception):
    """Base class of every exception slabcache raises on purpose."""


class InvalidArgumentError(SlabcacheError, ValueError):
    """A value is out of range or malformed: negative size, NaN, wrong shape."""


class InvalidTypeError(SlabcacheError, TypeError):
    """A value has the wrong type: key type, array dtype."""


class NotFoundError(SlabcacheError, KeyError):
    """An id or key that does not exist."""

    def __str__(self) -> str:  # KeyError's str() is repr(); keep the message readable
        return str(self.args[0]) if self.args else ""


class IndexOutOfRangeError(SlabcacheError, IndexError):
    """A position past either end of an ordered container."""


class AlreadyExistsError(SlabcacheError, KeyError):
    """An id or key that already exists where a new one is required."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidFreeError(SlabcacheError, ValueError):
    """A free of something that is not a live allocation of this allocator."""


class DoubleFreeError(InvalidFreeError):
    """A free of an allocation that is already free."""


class ClosedError(SlabcacheError, ValueError):
    """An object used after it was closed or freed."""


class BufferExportedError(SlabcacheError, BufferError):
    """Memory cannot be released while a buffer view of it is still alive."""


class OutOfMemoryError(SlabcacheError, MemoryError):
    """Not enough memory (or blocks) to satisfy the request."""


class StorageError(SlabcacheError, OSError):
    """An operating-system I/O failure."""


class CorruptionError(StorageError):
    """On-disk data failed validation (checksum, magic, version, truncation)."""


class LockedError(StorageError):
    """Another process holds the store's lock."""


class NotBundledError(SlabcacheError, FileNotFoundError):
    """A file only the release wheel ships (the LD_PRELOAD library, the C header) is absent."""


class SharedTierError(StorageError):
    """The shared tier's server (Redis) cannot be used: unreachable, refused, wrong setup."""


class SharedAuthError(SharedTierError, PermissionError):
    """Redis refused the credentials, or the ACL user may not use the namespace's keys."""


class UnsupportedFeatureError(SlabcacheError, NotImplementedError):
    """An integration was asked for a feature it does not model (a vLLM KV-cache spec the
    adapter cannot manage, say); raised before any answer that could differ from the host's."""
