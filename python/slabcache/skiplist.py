"""A concurrent sorted map: the B-skiplist.

:class:`BSkipList` is a mapping kept in key order, shaped like
``sortedcontainers.SortedDict``, backed by the Rust core's concurrent
B-skiplist. Keys are all of one type chosen at construction (``"int"``
(64-bit signed), ``"float"``, ``"bytes"`` or ``"str"``); values are any Python
objects, and Python ints are stored unboxed so that int -> int maps never
touch a Python object in the batch calls.

    >>> from slabcache import BSkipList
    >>> m = BSkipList(key_type="int")
    >>> m[5] = "five"; m[1] = "one"; m[3] = "three"
    >>> list(m)
    [1, 3, 5]
    >>> list(m.irange(2, 5))              # inclusive=(True, False) by default
    [3]
    >>> m.first(), m.pop_first()
    ((1, 'one'), (1, 'one'))

Batch calls take and return numpy arrays and release the GIL for int and
float keys with int values:

    >>> import numpy as np
    >>> m = BSkipList(key_type="int")
    >>> m.update_many(np.arange(10), np.arange(10) * 100)
    >>> keys, values = m.range_arrays(2, 5)
    >>> keys.tolist(), values.tolist()
    ([2, 3, 4], [200, 300, 400])

The map is safe to share between threads: every call is atomic, and an
iterator stays valid (returning each key at most once, in order) while other
threads write.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any, Literal

import numpy as np

from . import _native
from .errors import InvalidArgumentError, InvalidTypeError, NotFoundError

__all__ = ["BSkipList", "KeyType"]

KeyType = Literal["int", "float", "bytes", "str"]

_MISSING: Any = object()
_KEYS, _VALUES, _ITEMS = 0, 1, 2


class BSkipList(_native.BSkipListCore, MutableMapping[Any, Any]):
    """A sorted mapping with typed keys, safe for concurrent use.

    Args:
        key_type: ``"int"``, ``"float"``, ``"bytes"`` or ``"str"``. A key of
            another type raises :class:`~slabcache.errors.InvalidTypeError`
            (a ``TypeError``); a NaN float key raises
            :class:`~slabcache.errors.InvalidArgumentError` (a ``ValueError``).
        items: optional initial contents (a mapping or ``(key, value)`` pairs).

    Differences from ``SortedDict``: ``irange`` defaults to a half-open range
    ``inclusive=(True, False)``; ``keys()``, ``values()`` and ``items()``
    return lazy iterators that take an optional ``(lo, hi)`` range instead of
    views; there is no positional indexing.

        >>> m = BSkipList("str", {"b": 2, "a": 1})
        >>> m["a"], m.get("z", 0), "b" in m, len(m)
        (1, 0, True, 2)
    """

    # The native base holds the map and implements ``len``, ``in``,
    # ``m[k]``, ``m[k] = v`` and ``del m[k]`` directly (no Python frame), and
    # the ``key_type`` property. Everything else is here.
    __slots__ = ()

    def __init__(self, key_type: KeyType = "int", items: Iterable[Any] | Any | None = None) -> None:
        # The native ``__new__`` already built the map for ``key_type``.
        if items is not None:
            self.update(items)

    # ---- mapping protocol ------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        return self._iter(None, None, True, True, False, _KEYS)

    def __reversed__(self) -> Iterator[Any]:
        return self._iter(None, None, True, True, True, _KEYS)

    def __repr__(self) -> str:
        body = ", ".join(f"{k!r}: {v!r}" for k, v in self.items())
        return f"BSkipList({self.key_type!r}, {{{body}}})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BSkipList):
            return self.key_type == other.key_type and list(self.items()) == list(other.items())
        if isinstance(other, dict):
            return len(self) == len(other) and all(
                k in other and other[k] == v for k, v in self.items()
            )
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable

    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        return self._get(key, default)

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        """Removes ``key`` and returns its value (``default``, or KeyError, if absent)."""
        value = self._remove(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise NotFoundError(key)
            return default
        return value

    def setdefault(self, key: Any, default: Any = None) -> Any:
        """Atomically: the value of ``key``, inserting ``default`` first if absent."""
        return self._setdefault(key, default)

    def clear(self) -> None:
        """Removes every entry."""
        self._clear()

    def popitem(self) -> tuple[Any, Any]:
        """Removes and returns the last ``(key, value)`` (like ``SortedDict.popitem``)."""
        while True:
            last = self._last()
            if last is None:
                raise NotFoundError("popitem(): BSkipList is empty")
            value = self._remove(last[0], _MISSING)
            if value is not _MISSING:  # else another thread took it: retry
                return (last[0], value)

    # ---- order -----------------------------------------------------------

    def first(self) -> tuple[Any, Any] | None:
        """The smallest ``(key, value)``, or None when empty."""
        return self._first()

    def last(self) -> tuple[Any, Any] | None:
        """The largest ``(key, value)``, or None when empty."""
        return self._last()

    def pop_first(self) -> tuple[Any, Any]:
        """Atomically removes and returns the smallest ``(key, value)``.

        Raises :class:`~slabcache.errors.NotFoundError` (a ``KeyError``) when empty.
        """
        item = self._pop_first()
        if item is None:
            raise NotFoundError("pop_first(): BSkipList is empty")
        return item

    def ceiling(self, key: Any, inclusive: bool = True) -> tuple[Any, Any] | None:
        """The first ``(key, value)`` with key ``>= key`` (``>`` if not inclusive)."""
        return self._lower_bound(key, inclusive)

    def floor(self, key: Any, inclusive: bool = True) -> tuple[Any, Any] | None:
        """The last ``(key, value)`` with key ``<= key`` (``<`` if not inclusive)."""
        return self._upper_bound(key, inclusive)

    def irange(
        self,
        minimum: Any = None,
        maximum: Any = None,
        inclusive: tuple[bool, bool] = (True, False),
        reverse: bool = False,
    ) -> Iterator[Any]:
        """A lazy iterator of the keys between ``minimum`` and ``maximum``.

        ``None`` leaves that end open. The iterator stays valid while other
        threads write; it returns each key at most once, in order.

            >>> m = BSkipList("int", {i: i for i in range(10)})
            >>> list(m.irange(3, 6)), list(m.irange(3, 6, (False, True), reverse=True))
            ([3, 4, 5], [6, 5, 4])
        """
        lo_inc, hi_inc = inclusive
        return self._iter(minimum, maximum, lo_inc, hi_inc, reverse, _KEYS)

    def keys(  # type: ignore[override]
        self, lo: Any = None, hi: Any = None, inclusive: tuple[bool, bool] = (True, False)
    ) -> Iterator[Any]:
        """Keys in order, optionally within ``lo``..``hi``."""
        return self._iter(lo, hi, inclusive[0], inclusive[1], False, _KEYS)

    def values(  # type: ignore[override]
        self, lo: Any = None, hi: Any = None, inclusive: tuple[bool, bool] = (True, False)
    ) -> Iterator[Any]:
        """Values in key order, optionally for keys within ``lo``..``hi``."""
        return self._iter(lo, hi, inclusive[0], inclusive[1], False, _VALUES)

    def items(  # type: ignore[override]
        self,
        lo: Any = None,
        hi: Any = None,
        inclusive: tuple[bool, bool] = (True, False),
        reverse: bool = False,
    ) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` pairs in key order, optionally within ``lo``..``hi``."""
        return self._iter(lo, hi, inclusive[0], inclusive[1], reverse, _ITEMS)

    # ---- batches ---------------------------------------------------------

    def _key_array(self, keys: Any) -> np.ndarray:
        arr = np.asarray(keys)
        if arr.ndim != 1:
            raise InvalidArgumentError(f"keys must be one-dimensional, got shape {arr.shape}")
        kt = self.key_type
        if kt == "int":
            if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
                raise InvalidArgumentError("int key out of the 64-bit signed range")
            if arr.dtype.kind not in "iu" and arr.size:
                raise InvalidTypeError(f"int keys need an integer array, got dtype {arr.dtype}")
            return np.ascontiguousarray(arr, dtype=np.int64)
        if arr.dtype.kind not in "iuf" and arr.size:
            raise InvalidTypeError(f"float keys need a numeric array, got dtype {arr.dtype}")
        return np.ascontiguousarray(arr, dtype=np.float64)

    def update_many(self, keys: Any, values: Any) -> None:
        """Inserts or replaces ``keys[i] -> values[i]`` for all ``i``, in one call.

        For int/float maps ``keys`` is an array; with an integer ``values``
        array the whole batch runs without the GIL and without Python objects.
        Otherwise ``values`` is any sequence of the same length. Keys are all
        checked (type, NaN) before anything is inserted.

            >>> m = BSkipList("float")
            >>> m.update_many(np.array([0.5, 1.5]), np.array([1, 2]))
            >>> m[1.5]
            2
        """
        if self.key_type in ("int", "float"):
            karr = self._key_array(keys)
            if isinstance(values, np.ndarray) and values.dtype.kind in "iub":
                varr = np.ascontiguousarray(values, dtype=np.int64)
                if varr.ndim != 1:
                    raise InvalidArgumentError("values must be one-dimensional")
                self._update_many_numeric(karr, varr)
                return
            if isinstance(values, np.ndarray):
                values = values.tolist()
            self._update_many_objects(karr.tolist(), values)
            return
        if isinstance(values, np.ndarray):
            values = values.tolist()
        self._update_many_objects(keys, values)

    def get_many(self, keys: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(values, found)`` for a batch of keys, in one call.

        ``values`` is an int64 array (0 where missing) when every value found
        is an int, else an object array (None where missing); ``found`` is a
        bool array.

            >>> m = BSkipList("int", {1: 10, 2: 20})
            >>> values, found = m.get_many(np.array([1, 3, 2]))
            >>> values.tolist(), found.tolist()
            ([10, 0, 20], [True, False, True])
        """
        if self.key_type in ("int", "float"):
            return self._get_many(self._key_array(keys))
        return self._get_many(keys)

    def range_arrays(
        self, lo: Any = None, hi: Any = None, inclusive: tuple[bool, bool] = (True, False)
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(keys, values)`` arrays of every entry within ``lo``..``hi``, ascending.

        Keys are int64/float64 for int/float maps (object arrays otherwise);
        values as in :meth:`get_many`. One call, GIL released for int/float keys.
        """
        return self._range_arrays(lo, hi, inclusive[0], inclusive[1])
