"""BSkipList values as one tagged word (issue 10): ints inline near zero, any other
value an owned reference. Exact ints at the edges of the inline range, reference
counts that come back to where they were, and batch calls racing the first object
stored into a map of ints."""

from __future__ import annotations

import gc
import sys
import threading
import weakref

import numpy as np
import pytest

from slabcache import BSkipList

# The inline range is [-2**62, 2**62) on 64-bit machines; these straddle both
# ends and the int64 ends, and go beyond them.
EDGES = [
    0,
    1,
    -1,
    2**62 - 1,
    2**62,
    -(2**62),
    -(2**62) - 1,
    2**63 - 1,
    -(2**63),
    2**63,
    2**64 + 5,
    -(2**70),
]
I64_EDGES = [v for v in EDGES if -(2**63) <= v < 2**63]


def _reclaim() -> None:
    """Frees the values writes retired (they wait for the epoch otherwise):
    the collector's hook does, when it clears a map caught in a cycle."""
    for _ in range(3):
        m = BSkipList("int")
        m[0] = m
        del m
        gc.collect()


def _check_ints(m: BSkipList, values: list[int]) -> None:
    for i, v in enumerate(values):
        got = m[i]
        assert got == v and type(got) is int, (i, v, got)
    assert list(m.values()) == values
    assert m.peekitem(0) == (0, values[0]) and m.peekitem() == (len(values) - 1, values[-1])


@pytest.mark.parametrize(
    "how", ["setitem", "dict", "pairs", "update_many_int64", "update_many_list", "setdefault"]
)
def test_ints_at_the_inline_edges_keep_their_value(how: str) -> None:
    values = I64_EDGES if how == "update_many_int64" else EDGES
    m = BSkipList("int")
    if how == "setitem":
        for i, v in enumerate(values):
            m[i] = v
    elif how == "dict":
        m = BSkipList(dict(enumerate(values)))
    elif how == "pairs":
        m = BSkipList(list(enumerate(values)))
    elif how == "update_many_int64":
        m.update_many(np.arange(len(values)), np.array(values, dtype=np.int64))
    elif how == "update_many_list":
        m.update_many(np.arange(len(values)), values)
    else:
        for i, v in enumerate(values):
            assert m.setdefault(i, v) == v
    _check_ints(m, values)
    _check_ints(m.copy(), values)


def test_get_many_and_range_arrays_give_int64_for_every_int64_value() -> None:
    m = BSkipList("int")
    m.update_many(np.arange(len(I64_EDGES)), np.array(I64_EDGES, dtype=np.int64))
    vals, found = m.get_many(np.arange(len(I64_EDGES) + 1))
    assert vals.dtype == np.int64 and vals.tolist() == [*I64_EDGES, 0]
    assert found.tolist() == [True] * len(I64_EDGES) + [False]
    _, rvals = m.range_arrays()
    assert rvals.dtype == np.int64 and rvals.tolist() == I64_EDGES
    # One int beyond int64 (or any non-int) makes it an object array, exact.
    m[len(I64_EDGES)] = 2**64
    vals, _ = m.get_many(np.arange(len(I64_EDGES) + 1))
    assert vals.dtype == object and vals.tolist() == [*I64_EDGES, 2**64]
    m[0] = True
    assert m.get_many(np.array([0]))[0].tolist() == [True]


def test_reference_counts_come_back() -> None:
    payload = object()
    other = ["other"]
    gc.collect()
    base, base_other = sys.getrefcount(payload), sys.getrefcount(other)
    for key_type, keys in (("int", list(range(3000))), ("str", [f"k{i:05}" for i in range(3000)])):
        m = BSkipList(key_type)
        for k in keys:
            m[k] = payload
        for k in keys[::3]:
            m[k] = other  # replaces
        m.update({k: payload for k in keys[1::3]})
        m.setdefault(keys[0], other)
        assert m.pop(keys[1]) is payload
        del m[keys[2]]
        assert m.popitem()[1] in (payload, other)
        assert all(v is payload or v is other for v in m.values())
        assert sum(1 for _ in m.items()) == len(m)
        c = m.copy()
        assert c == m
        if key_type == "int":
            vals, found = m.get_many(np.array(keys[3:-1], dtype=np.int64))
            assert found.all() and all(v is payload or v is other for v in vals)
            del vals
            _, rv = m.range_arrays(0, 100)
            del rv
        m.clear()
        del m, c
    _reclaim()
    assert sys.getrefcount(payload) == base
    assert sys.getrefcount(other) == base_other


def test_values_of_a_dropped_map_are_freed() -> None:
    class Payload:
        pass

    objs = [Payload() for _ in range(2000)]
    refs = [weakref.ref(o) for o in objs]
    m = BSkipList(dict(enumerate(objs)))
    m.update_many(np.arange(1000), np.arange(1000))  # replaces half by ints
    del objs
    _reclaim()
    assert sum(r() is not None for r in refs) == 1000
    del m
    _reclaim()
    assert all(r() is None for r in refs)


@pytest.mark.parametrize("key_type", ["int", "float"])
def test_batches_racing_the_first_object_stored(key_type: str) -> None:
    # Batch calls run without the GIL only on a map that has held nothing but
    # ints; another thread storing the first object must wait for them (and
    # later batches keep the GIL). Whatever the interleaving, every answer is
    # one of the values written.
    n = 20_000
    dtype = np.int64 if key_type == "int" else np.float64
    keys = np.arange(n).astype(dtype)
    for _ in range(5):
        m = BSkipList(key_type)
        m.update_many(keys, np.arange(n))
        stop = threading.Event()
        errors: list[BaseException] = []

        def batches(
            m: BSkipList = m,
            stop: threading.Event = stop,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                while not stop.is_set():
                    vals, found = m.get_many(keys)
                    assert found.all()
                    assert all(v == i or v == f"s{i}" for i, v in enumerate(vals.tolist()))
                    _, rv = m.range_arrays()
                    assert len(rv) == n
                    m.update_many(keys[::7], np.arange(0, n, 7))
                    m.copy()
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        t = threading.Thread(target=batches)
        t.start()
        for i in range(0, n, 5):
            m[keys[i].item()] = f"s{i}"
        stop.set()
        t.join()
        assert not errors, errors
        for i in range(0, n, 5):
            assert m[keys[i].item()] in (i, f"s{i}")
        m._check()


def test_replacing_in_place_frees_each_old_value_once() -> None:
    """``m[k] = v`` on a present key swaps the value in its leaf slot (no leaf
    rewrite): every replaced value is freed once the epoch passes, never
    before a read that still holds it, and ints and objects replace each
    other in either direction."""

    class Payload:
        def __init__(self, i: int) -> None:
            self.i = i

    m = BSkipList("int")
    first = [Payload(i) for i in range(3000)]
    refs = [weakref.ref(o) for o in first]
    for i, o in enumerate(first):
        m[i] = o
    del first, o
    it = iter(m.items())
    head = [next(it) for _ in range(10)]
    seen = {id(v) for _, v in head}
    second = [Payload(i) for i in range(3000)]
    for i in range(3000):
        m[i] = second[i] if i % 3 else i * 7  # object -> object, object -> int
    rest = list(it)
    assert [k for k, _ in head + rest] == list(range(3000))
    # The live iterator gives each key once, with its old or its new value.
    for k, v in rest:
        assert v is second[k] or v == k * 7 or v.i == k
    del head, rest, it, seen
    _reclaim()
    assert all(r() is None for r in refs), "a replaced value was not freed"
    for i in range(0, 3000, 3):
        m[i] = Payload(-i)  # int -> object
    assert [m[i].i if i % 3 == 0 else m[i] is second[i] for i in range(6)] == [
        0,
        True,
        True,
        -3,
        True,
        True,
    ]
    same = Payload(1)
    m[1] = same
    _reclaim()
    base = sys.getrefcount(same)
    m[1] = same  # the same object again: still one reference once reclaimed
    _reclaim()
    assert sys.getrefcount(same) == base


def test_a_replaced_value_whose_del_writes_the_map() -> None:
    """The old value of an in-place replace is freed later, in some write's
    reclamation step, with no core lock held: its ``__del__`` may write to the
    same map."""
    m = BSkipList("int")

    class Writer:
        def __del__(self) -> None:
            m[-1] = "from __del__"
            m[0] = "replaced from __del__"

    for i in range(200):
        m[i] = Writer()
    for i in range(200):
        m[i] = i
    _reclaim()
    for i in range(1, 200):
        m[i] = i + 1
    assert m[-1] == "from __del__"
    assert len(m) == 201
