"""A concurrent sorted map: the B-skiplist, a drop-in for ``SortedDict``.

:class:`BSkipList` is a mapping kept in key order with the API of
``sortedcontainers.SortedDict`` (views, positions, ``irange``, ``islice``,
``bisect``, ``peekitem``, ...), backed by the Rust core's concurrent
B-skiplist. Keys are all of one type: ``"int"`` (64-bit signed),
``"float"``, ``"bytes"`` or ``"str"``, named at construction or taken from
the first key stored; values are any Python objects, and Python ints are
stored unboxed so that int -> int maps never touch a Python object in the
batch calls.

    >>> from slabcache import BSkipList
    >>> m = BSkipList({5: "five", 1: "one", 3: "three"})
    >>> list(m), m.key_type
    ([1, 3, 5], 'int')
    >>> list(m.irange(2, 5))              # inclusive=(True, True), as SortedDict
    [3, 5]
    >>> m.peekitem(0), m.keys()[-1], m.bisect_left(4)
    ((1, 'one'), 5, 2)

Batch calls take and return numpy arrays and release the GIL for int and
float keys with int values:

    >>> import numpy as np
    >>> m = BSkipList("int")
    >>> m.update_many(np.arange(10), np.arange(10) * 100)
    >>> keys, values = m.range_arrays(2, 4)
    >>> keys.tolist(), values.tolist()
    ([2, 3, 4], [200, 300, 400])

The map is safe to share between threads: every single-key call is atomic,
and an iterator stays valid (returning each key at most once, in order)
while other threads write.
"""

from __future__ import annotations

import copy as _copy
import itertools
import reprlib
from collections.abc import (
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    Sequence,
    ValuesView,
)
from typing import Any, Literal

import numpy as np

from . import _native
from .errors import InvalidArgumentError, InvalidTypeError, NotFoundError

__all__ = ["BSkipList", "KeyType", "SortedItemsView", "SortedKeysView", "SortedValuesView"]

KeyType = Literal["int", "float", "bytes", "str", "tuple"]

_KEY_TYPES = ("int", "float", "bytes", "str", "tuple")
# Native iterators hand out one leaf (a list) per call; this flattens them in C.
_flatten = itertools.chain.from_iterable
_KEYS, _VALUES, _ITEMS = 0, 1, 2
_INT64_MAX = np.iinfo(np.int64).max
_FLOAT_EXACT = 2**53  # every int of at most this magnitude is a float exactly


def _inclusive(inclusive: Any) -> tuple[bool, bool]:
    if not isinstance(inclusive, (tuple, list)) or len(inclusive) != 2:
        raise InvalidArgumentError(
            f"inclusive must be a pair of bools like (True, False), got {inclusive!r}"
        )
    lo, hi = inclusive
    if not isinstance(lo, (bool, np.bool_)) or not isinstance(hi, (bool, np.bool_)):
        raise InvalidTypeError(f"inclusive must be a pair of bools, got {inclusive!r}")
    return bool(lo), bool(hi)


def _bounds(start: Any, stop: Any, n: int) -> tuple[int, int]:
    try:
        lo, hi, _ = slice(start, stop).indices(n)
    except TypeError:
        raise InvalidTypeError(f"positions must be ints or None, got {start!r}, {stop!r}") from None
    return lo, hi


def _one_dim_values(values: np.ndarray) -> None:
    # One rule for every dtype: a value array is a sequence of scalars.
    if values.ndim != 1:
        raise InvalidArgumentError(
            f"values must be a one-dimensional array, got shape {values.shape} "
            "(to store rows as values, pass list(array))"
        )


class BSkipList(_native.BSkipListCore, MutableMapping[Any, Any]):
    """A sorted mapping with typed keys, safe for concurrent use.

    Called like ``SortedDict``: ``BSkipList()``, ``BSkipList(mapping)``,
    ``BSkipList(pairs)``, ``BSkipList(**kwargs)``, optionally with the key
    type first: ``BSkipList("str", mapping)`` or ``key_type="str"``.
    Without one, the first key stored picks it (int, float, bytes or str).

    A key of another type raises :class:`~slabcache.errors.InvalidTypeError`
    (a ``TypeError``) where it would be stored, and is simply absent where
    it is looked up (``in``, ``get``, ``m[k]``), as in a dict. Invalid keys
    (NaN, ints outside 64 bits, ints a float key cannot hold exactly) raise
    :class:`~slabcache.errors.InvalidArgumentError` (a ``ValueError``).

        >>> m = BSkipList("str", {"b": 2, "a": 1})
        >>> m["a"], m.get("z", 0), "b" in m, 5 in m, len(m)
        (1, 0, True, False, 2)

    Differences from ``SortedDict`` are listed in ``docs/skiplist.md``
    ("Migrating from SortedDict").
    """

    # The native base holds the map and implements the mapping dunders,
    # ``get``, ``pop``, ``setdefault``, ``peekitem``, ``popitem`` and the
    # ``bisect`` family directly (no Python frame), and ``key_type``.
    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        key_type = kwargs.pop("key_type", None)
        if args and (args[0] is None or isinstance(args[0], str)):
            if args[0] is not None and args[0] not in _KEY_TYPES:
                raise InvalidArgumentError(
                    f"key_type must be one of {', '.join(_KEY_TYPES)}; got {args[0]!r}"
                )
            key_type, args = args[0] or key_type, args[1:]
        if args and callable(args[0]) and not isinstance(args[0], (Mapping, type)):
            raise InvalidTypeError("BSkipList does not take a key= function (keys order natively)")
        if len(args) > 1:
            raise InvalidTypeError(f"BSkipList expected at most 1 mapping, got {len(args)}")
        if key_type is not None:
            if key_type not in _KEY_TYPES:
                raise InvalidArgumentError(
                    f"key_type must be one of {', '.join(_KEY_TYPES)}; got {key_type!r}"
                )
            self._set_key_type(key_type)
        if args or kwargs:
            self.update(*args, **kwargs)

    @property
    def iloc(self) -> SortedKeysView:
        """The keys view, as ``SortedDict.iloc`` (deprecated there): ``del m.iloc[i]``."""
        return SortedKeysView(self)

    @property
    def key(self) -> None:
        """Always None: keys order by their natural order (``SortedDict.key``)."""
        return None

    # ---- mapping protocol ------------------------------------------------

    clear = _native.BSkipListCore._clear

    def __iter__(self) -> Iterator[Any]:
        return _flatten(self._leaves(False, _KEYS))

    def __reversed__(self) -> Iterator[Any]:
        return _flatten(self._leaves(True, _KEYS))

    def _iter(
        self, lo: Any, hi: Any, lo_inclusive: bool, hi_inclusive: bool, reverse: bool, mode: int
    ) -> Iterator[Any]:
        return _flatten(self._range_leaves(lo, hi, lo_inclusive, hi_inclusive, reverse, mode))

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Inserts every item of a mapping or of ``(key, value)`` pairs, then ``kwargs``.

        One native batch: the items are checked first, so a bad key inserts
        nothing; a key given twice keeps its last value.
        """
        if type(other) is dict or isinstance(other, BSkipList):
            self._update_from(other if type(other) is dict else other.items())
        elif hasattr(other, "keys"):
            self._update_from([(k, other[k]) for k in other.keys()])
        elif isinstance(other, Iterable):
            self._update_from(other)
        else:
            raise InvalidTypeError(
                f"update() needs a mapping or (key, value) pairs, got {type(other).__name__}"
            )
        if kwargs:
            self._update_from(kwargs)

    @reprlib.recursive_repr()
    def __repr__(self) -> str:
        body = ", ".join(f"{k!r}: {v!r}" for k, v in self.items())
        return f"{type(self).__name__}({{{body}}})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BSkipList):
            return len(self) == len(other) and all(
                a == b for a, b in zip(self.items(), other.items(), strict=False)
            )
        if isinstance(other, Mapping):
            if len(self) != len(other):
                return False
            missing = object()
            for k, v in self.items():
                w = other.get(k, missing)
                if w is missing or not (w is v or w == v):
                    return False
            return True
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable

    def copy(self) -> BSkipList:
        """A shallow copy (same class, same key type), built in one native pass."""
        new = self.__class__()
        self._copy_into(new)
        return new

    __copy__ = copy

    def __deepcopy__(self, memo: dict[int, Any]) -> BSkipList:
        new = self.__class__()
        memo[id(self)] = new
        if self.key_type is not None:
            new._set_key_type(self.key_type)
        keys, values = [], []
        for k, v in self.items():
            keys.append(k)
            values.append(_copy.deepcopy(v, memo))
        new._update_many_objects(keys, values)
        return new

    def __reduce__(self) -> Any:
        # Items go as the fifth element (set one by one after construction),
        # so a map that contains itself pickles.
        args = () if self.key_type is None else (self.key_type,)
        state = getattr(self, "__dict__", None) or None
        return (self.__class__, args, state, None, iter(self.items()))

    @classmethod
    def fromkeys(cls, iterable: Iterable[Any], value: Any = None) -> BSkipList:
        """A new map with every key of ``iterable`` mapped to ``value``."""
        if not isinstance(iterable, Iterable):
            raise InvalidTypeError(f"fromkeys() needs an iterable, got {type(iterable).__name__}")
        new = cls()
        keys = list(iterable)
        new._update_many_objects(keys, itertools.repeat(value, len(keys)))
        return new

    def __or__(self, other: Any) -> BSkipList:
        if not isinstance(other, Mapping):
            return NotImplemented
        new = self.copy()
        new.update(other)
        return new

    def __ror__(self, other: Any) -> BSkipList:
        if not isinstance(other, Mapping):
            return NotImplemented
        new = self.__class__()
        new.update(other)
        new.update(self)
        return new

    def __ior__(self, other: Any) -> BSkipList:
        self.update(other)
        return self

    # ---- views -----------------------------------------------------------

    def keys(self) -> SortedKeysView:
        """A live, indexable view of the keys (``SortedKeysView``)."""
        return SortedKeysView(self)

    def values(self) -> SortedValuesView:
        """A live, indexable view of the values in key order."""
        return SortedValuesView(self)

    def items(self) -> SortedItemsView:
        """A live, indexable view of the ``(key, value)`` pairs in key order."""
        return SortedItemsView(self)

    # ---- positions -------------------------------------------------------

    def index(self, key: Any, start: int | None = None, stop: int | None = None) -> int:
        """The position of ``key``; ``ValueError`` if absent (or outside ``start:stop``).

        >>> BSkipList("str", {"a": 1, "b": 2, "c": 3}).index("c")
        2
        """
        if key not in self:
            raise InvalidArgumentError(f"{key!r} is not in {type(self).__name__}")
        pos = self.bisect_left(key)
        lo, hi = _bounds(start, stop, len(self))
        if not lo <= pos < hi:
            raise InvalidArgumentError(f"{key!r} is not in {type(self).__name__}[{lo}:{hi}]")
        return pos

    def _positions(
        self, start: int | None, stop: int | None, reverse: bool, mode: int
    ) -> Iterator[Any]:
        lo, hi = _bounds(start, stop, len(self))
        if lo >= hi:
            return iter(())
        if reverse:
            last = self._nth(hi - 1, _KEYS)
            return itertools.islice(self._iter(None, last, True, True, True, mode), hi - lo)
        first = self._nth(lo, _KEYS)
        return itertools.islice(self._iter(first, None, True, True, False, mode), hi - lo)

    def islice(
        self, start: int | None = None, stop: int | None = None, reverse: bool = False
    ) -> Iterator[Any]:
        """The keys at positions ``start:stop`` (like a slice), lazily.

        >>> list(BSkipList({i: i for i in range(10)}).islice(2, 5, reverse=True))
        [4, 3, 2]
        """
        return self._positions(start, stop, reverse, _KEYS)

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
        inclusive: tuple[bool, bool] = (True, True),
        reverse: bool = False,
    ) -> Iterator[Any]:
        """A lazy iterator of the keys between ``minimum`` and ``maximum``.

        ``None`` leaves that end open; both ends are included by default, as
        in ``SortedDict.irange``. Ends need not be keys of the map (a float
        end works on an int map). The iterator stays valid while other
        threads write; it returns each key at most once, in order.

            >>> m = BSkipList({i: i for i in range(10)})
            >>> list(m.irange(3, 6)), list(m.irange(3, 6, (False, True), reverse=True))
            ([3, 4, 5, 6], [6, 5, 4])
        """
        lo_inc, hi_inc = _inclusive(inclusive)
        return self._iter(minimum, maximum, lo_inc, hi_inc, bool(reverse), _KEYS)

    def irange_items(
        self,
        minimum: Any = None,
        maximum: Any = None,
        inclusive: tuple[bool, bool] = (True, True),
        reverse: bool = False,
    ) -> Iterator[tuple[Any, Any]]:
        """Like :meth:`irange`, yielding ``(key, value)`` pairs."""
        lo_inc, hi_inc = _inclusive(inclusive)
        return self._iter(minimum, maximum, lo_inc, hi_inc, bool(reverse), _ITEMS)

    # ---- batches ---------------------------------------------------------

    def _key_array(self, keys: Any) -> np.ndarray:
        try:
            arr = np.asarray(keys)
        except OverflowError as e:
            raise InvalidArgumentError(f"key out of range: {e}") from None
        if arr.ndim != 1:
            raise InvalidArgumentError(f"keys must be one-dimensional, got shape {arr.shape}")
        if arr.dtype.kind == "O" and arr.size:
            raise InvalidArgumentError("keys out of the 64-bit range (or of mixed types)")
        if self.key_type == "int":
            if arr.dtype.kind == "u" and arr.size and int(arr.max()) > _INT64_MAX:
                raise InvalidArgumentError("int key out of the 64-bit signed range")
            if arr.dtype.kind not in "iu" and arr.size:
                raise InvalidTypeError(f"int keys need an integer array, got dtype {arr.dtype}")
            return np.ascontiguousarray(arr, dtype=np.int64)
        if arr.dtype.kind not in "iuf" and arr.size:
            raise InvalidTypeError(f"float keys need a numeric array, got dtype {arr.dtype}")
        if arr.dtype.kind in "iu" and arr.size:
            big = arr[(arr > _FLOAT_EXACT) | (arr < -_FLOAT_EXACT)]
            for k in big.tolist():
                if float(k) != k:
                    raise InvalidArgumentError(
                        f"int key {k} is not exactly representable as a float key"
                    )
        return np.ascontiguousarray(arr, dtype=np.float64)

    def _infer_key_type(self, keys: Any) -> None:
        if self.key_type is None and isinstance(keys, np.ndarray) and keys.size:
            if keys.dtype.kind in "iu":
                self._set_key_type("int")
            elif keys.dtype.kind == "f":
                self._set_key_type("float")

    def update_many(self, keys: Any, values: Any) -> None:
        """Inserts or replaces ``keys[i] -> values[i]`` for all ``i``, in one call.

        For int/float maps ``keys`` is an array; with a signed (or in-range
        unsigned) integer ``values`` array the whole batch runs without the
        GIL and without Python objects. Other value arrays store the Python
        scalars ``values.tolist()`` gives (``np.bool_`` -> ``bool``, a
        ``uint64`` above 2**63 - 1 -> that int); a value array must be
        one-dimensional. Keys are all checked (type, NaN, range) before
        anything is inserted; a generator works for keys and values.

            >>> m = BSkipList("float")
            >>> m.update_many(np.array([0.5, 1.5]), np.array([1, 2]))
            >>> m[1.5]
            2
        """
        if not hasattr(keys, "__len__"):
            keys = list(keys)
        if not hasattr(values, "__len__"):
            values = list(values)
        self._infer_key_type(keys)
        if isinstance(values, np.ndarray):
            _one_dim_values(values)
        if self.key_type in ("int", "float"):
            karr = self._key_array(keys)
            if isinstance(values, np.ndarray):
                kind = values.dtype.kind
                if kind == "i" or (
                    kind == "u" and (values.size == 0 or int(values.max()) <= _INT64_MAX)
                ):
                    self._update_many_numeric(karr, np.ascontiguousarray(values, dtype=np.int64))
                    return
                values = values.tolist()
            # Keys straight from the array (no temporary int per key).
            self._update_many_array_objects(karr, values)
            return
        if isinstance(values, np.ndarray):
            values = values.tolist()
        if isinstance(keys, np.ndarray):
            keys = keys.tolist()
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
        if self.key_type is None:
            n = len(keys) if hasattr(keys, "__len__") else len(list(keys))
            return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
        if self.key_type in ("int", "float"):
            return self._get_many(self._key_array(keys))
        return self._get_many(keys)

    def range_arrays(
        self, lo: Any = None, hi: Any = None, inclusive: tuple[bool, bool] = (True, True)
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(keys, values)`` arrays of every entry within ``lo``..``hi``, ascending.

        Keys are int64/float64 for int/float maps (object arrays otherwise);
        values as in :meth:`get_many`. One call, GIL released for int/float keys.
        """
        lo_inc, hi_inc = _inclusive(inclusive)
        return self._range_arrays(lo, hi, lo_inc, hi_inc)


def _view_slice(m: BSkipList, index: slice, mode: int) -> list[Any]:
    lo, hi, step = index.indices(len(m))
    if step == 1:
        return list(m._positions(lo, hi, False, mode))
    if step == -1 and lo > hi:
        return list(m._positions(hi + 1, lo + 1, True, mode))
    every = list(m._positions(None, None, False, mode))
    return every[index]


class SortedKeysView(KeysView[Any], Sequence[Any]):
    """The keys of a :class:`BSkipList`: a live set-like, indexable view.

    >>> m = BSkipList("str", {"b": 1, "a": 2})
    >>> k = m.keys()
    >>> k[0], k[-1], "a" in k, k == {"a": 0, "b": 0}.keys(), list(k & {"b"})
    ('a', 'b', True, True, ['b'])
    """

    __slots__ = ()
    _mapping: BSkipList

    def __iter__(self) -> Iterator[Any]:
        return iter(self._mapping)

    def __reversed__(self) -> Iterator[Any]:
        return reversed(self._mapping)

    def __contains__(self, key: object) -> bool:
        return key in self._mapping

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return _view_slice(self._mapping, index, _KEYS)
        return self._mapping._nth(index, _KEYS)

    def __delitem__(self, index: Any) -> None:
        m = self._mapping
        for k in self[index] if isinstance(index, slice) else [self[index]]:
            m.pop(k, None)

    def index(self, key: Any, start: int | None = None, stop: int | None = None) -> int:
        return self._mapping.index(key, start, stop)

    def count(self, key: Any) -> int:
        return int(key in self._mapping)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._mapping!r})"


class SortedValuesView(ValuesView[Any], Sequence[Any]):
    """The values of a :class:`BSkipList` in key order: a live, indexable view."""

    __slots__ = ()
    _mapping: BSkipList

    def __iter__(self) -> Iterator[Any]:
        return _flatten(self._mapping._leaves(False, _VALUES))

    def __reversed__(self) -> Iterator[Any]:
        return _flatten(self._mapping._leaves(True, _VALUES))

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return _view_slice(self._mapping, index, _VALUES)
        return self._mapping._nth(index, _VALUES)

    def index(self, value: Any, start: int | None = None, stop: int | None = None) -> int:
        lo, hi = _bounds(start, stop, len(self._mapping))
        for i, v in enumerate(self._mapping._positions(lo, hi, False, _VALUES), lo):
            if v is value or v == value:
                return i
        raise InvalidArgumentError(f"{value!r} is not in the values")

    def count(self, value: Any) -> int:
        return sum(1 for v in self if v is value or v == value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._mapping!r})"


class SortedItemsView(ItemsView[Any, Any], Sequence[tuple[Any, Any]]):
    """The ``(key, value)`` pairs of a :class:`BSkipList`: a live set-like, indexable view."""

    __slots__ = ()
    _mapping: BSkipList

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return _flatten(self._mapping._leaves(False, _ITEMS))

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, tuple) or len(item) != 2:
            return False
        missing = object()
        value = self._mapping.get(item[0], missing)
        return value is not missing and (value is item[1] or value == item[1])

    def __reversed__(self) -> Iterator[tuple[Any, Any]]:
        return _flatten(self._mapping._leaves(True, _ITEMS))

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return _view_slice(self._mapping, index, _ITEMS)
        return self._mapping._nth(index, _ITEMS)

    def index(self, item: Any, start: int | None = None, stop: int | None = None) -> int:
        if item in self:
            return self._mapping.index(item[0], start, stop)
        raise InvalidArgumentError(f"{item!r} is not in the items")

    def count(self, item: Any) -> int:
        return int(item in self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._mapping!r})"
