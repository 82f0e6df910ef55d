"""BSkipList never stores a value other than the one given: one regression test per case
that used to go wrong silently (issue 10), plus the bad-input family."""

from __future__ import annotations

import gc
import math
import threading
import weakref

import numpy as np
import pytest

from slabcache import BSkipList
from slabcache.errors import (
    IndexOutOfRangeError,
    InvalidArgumentError,
    InvalidTypeError,
    NotFoundError,
    SlabcacheError,
)


def test_uint64_values_above_int64_keep_their_value() -> None:
    m = BSkipList("int")
    big = np.array([2**64 - 1, 2**63, 5], dtype=np.uint64)
    m.update_many(np.array([1, 2, 3]), big)
    assert m[1] == 2**64 - 1 and m[2] == 2**63 and m[3] == 5
    values, found = m.get_many(np.array([1, 2, 3]))
    assert values.tolist() == [2**64 - 1, 2**63, 5] and found.all()
    # In range, the unboxed path is still taken and exact.
    m.update_many(np.array([4]), np.array([2**63 - 1], dtype=np.uint64))
    assert m[4] == 2**63 - 1


@pytest.mark.parametrize("via_batch", [False, True])
def test_float_map_refuses_ints_no_float_equals(via_batch: bool) -> None:
    m = BSkipList("float")
    m[2**53] = "a"
    with pytest.raises(InvalidArgumentError):
        if via_batch:
            m.update_many(np.array([2**53 + 1], dtype=np.int64), ["b"])
        else:
            m[2**53 + 1] = "b"
    assert len(m) == 1 and m[2**53] == "a"
    # A miss, not a collision, when only looked up.
    assert (2**53 + 1) not in m and m.get(2**53 + 1, "d") == "d"
    # Exactly representable big ints are fine, also beyond 64 bits.
    m[2**60] = "c"
    m[2**70] = "e"
    assert m[2.0**60] == "c" and m[2**70] == "e"
    with pytest.raises(InvalidArgumentError):
        m[2**70 + 1] = "x"
    with pytest.raises(InvalidArgumentError):
        m[10**400] = "x"
    with pytest.raises(InvalidArgumentError):
        m.update_many(np.array([2**62 + 1], dtype=np.int64), np.array([1]))
    assert len(m) == 3


def test_float_zero_signs_are_one_key_and_nan_is_refused() -> None:
    m = BSkipList("float")
    m[0.0] = "pos"
    m[-0.0] = "neg"
    assert len(m) == 1 and m[0.0] == "neg" and m[-0.0] == "neg"
    m.update_many(np.array([-0.0, 1.0]), np.array([7, 8]))
    assert len(m) == 2 and m[0.0] == 7
    assert list(m.irange(-0.0, 0.0)) == [0.0]
    with pytest.raises(InvalidArgumentError):
        m[math.nan] = 1
    with pytest.raises(InvalidArgumentError):
        m.update_many(np.array([math.nan]), np.array([1]))
    assert math.nan not in m and len(m) == 2


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.bool_, np.uint64, object])
def test_two_dimensional_value_arrays_raise_for_every_dtype(dtype: type) -> None:
    m = BSkipList("int")
    with pytest.raises(InvalidArgumentError):
        m.update_many(np.array([1, 2]), np.ones((2, 1), dtype=dtype))
    with pytest.raises(InvalidArgumentError):
        m.update_many(np.array([1]), np.array(3, dtype=dtype))  # 0-d
    s = BSkipList("str")
    with pytest.raises(InvalidArgumentError):
        s.update_many(["a", "b"], np.ones((2, 1), dtype=dtype))
    assert len(m) == 0 and len(s) == 0


def test_bool_values_stay_bool_in_batches() -> None:
    m = BSkipList("int")
    m.update_many(np.array([1, 2]), np.array([True, False]))
    m[3] = True
    assert m[1] is True and m[2] is False and m[3] is True
    values, _ = m.get_many(np.array([1, 2, 3]))
    assert [type(v) for v in values.tolist()] == [bool, bool, bool]
    f = BSkipList("float")
    f.update_many(np.array([0.5]), np.array([np.True_]))
    assert f[0.5] is True


def test_a_reference_cycle_through_a_value_is_collected() -> None:
    class Payload:
        pass

    obj = Payload()
    alive = weakref.ref(obj)
    m = BSkipList("int")
    m[1] = (obj, m)
    m_ref = weakref.ref(m)
    del m, obj
    gc.collect()
    assert alive() is None and m_ref() is None


def test_gc_sees_the_values_of_a_map() -> None:
    m = BSkipList("str")
    payload = ["x"]
    m["a"] = payload
    m["b"] = 5
    assert any(r is payload for r in gc.get_referents(m))


def test_numpy_scalars_are_keys_like_python_numbers() -> None:
    m = BSkipList("int")
    m[np.int64(3)] = "a"
    m[np.uint8(1)] = "b"
    assert m[3] == "a" and m[np.int32(1)] == "b" and np.int16(3) in m
    assert list(m) == [1, 3] and all(type(k) is int for k in m)
    f = BSkipList("float")
    f[np.float32(1.5)] = "x"
    f[np.int64(2)] = "y"
    assert f[1.5] == "x" and f[2.0] == "y" and np.float64(1.5) in f
    # Inferred from the first key.
    assert BSkipList({np.int64(1): 0}).key_type == "int"
    assert BSkipList({np.float32(1): 0}).key_type == "float"


def test_lookups_answer_like_a_dict_for_keys_of_another_type() -> None:
    s = BSkipList("str", {"a": 1})
    assert 5 not in s and s.get(5, "d") == "d" and s.pop(5, "d") == "d"
    with pytest.raises(NotFoundError):
        s[5]
    i = BSkipList("int", {3: "x"})
    assert i[3.0] == "x" and 3.0 in i and 3.5 not in i and "3" not in i
    assert 2**70 not in i and i.get(math.nan) is None


@pytest.mark.parametrize(
    ("call", "family"),
    [
        (lambda: BSkipList("complex"), InvalidArgumentError),
        (lambda: BSkipList("int", {}, {}), InvalidTypeError),
        (lambda: BSkipList(lambda k: -k), InvalidTypeError),
        (lambda: BSkipList(5), InvalidTypeError),
        (lambda: BSkipList([(1, 2, 3)]), InvalidArgumentError),
        (lambda: BSkipList([5]), InvalidTypeError),
        (lambda: BSkipList("str", {"\ud800": 1}), InvalidArgumentError),
        (lambda: BSkipList("float", {10**400: 1}), InvalidArgumentError),
        (lambda: BSkipList("int", {2**64: 1}), InvalidArgumentError),
        (lambda: BSkipList({object(): 1}), InvalidTypeError),
        (lambda: BSkipList("int", {1: 2}).irange(1, 2, inclusive=True), InvalidArgumentError),
        (lambda: BSkipList("int", {1: 2}).irange(1, 2, inclusive=(1, 0)), InvalidTypeError),
        (lambda: BSkipList("int").peekitem(), IndexOutOfRangeError),
        (lambda: BSkipList("int", {1: 2}).peekitem(5), IndexOutOfRangeError),
        (lambda: BSkipList("int").popitem(), NotFoundError),
        (lambda: BSkipList("int", {1: 2}).popitem(3), IndexOutOfRangeError),
        (lambda: BSkipList("int", {1: 2}).index(5), InvalidArgumentError),
        (lambda: BSkipList("int", {1: 2}).keys()[3], IndexOutOfRangeError),
        (lambda: BSkipList("int").update(5), InvalidTypeError),
        (lambda: BSkipList("int").update_many([1, 2], [1]), InvalidArgumentError),
        (lambda: BSkipList("int").update_many(np.zeros((2, 2), int), [1, 2]), InvalidArgumentError),
        (lambda: BSkipList({"a": 1})._set_key_type("int"), InvalidArgumentError),
        (lambda: BSkipList("int", {1: 2}).peekitem("x"), InvalidTypeError),
        (lambda: BSkipList("int", {1: 2}).peekitem(1.0), InvalidTypeError),
        (lambda: BSkipList("int", {1: 2}).popitem(2**70), IndexOutOfRangeError),
        (lambda: BSkipList("int", {1: 2}).keys()["a"], InvalidTypeError),
        (lambda: list(BSkipList("int", {1: 2}).islice("a")), InvalidTypeError),
        (lambda: BSkipList.fromkeys(5), InvalidTypeError),
        (lambda: BSkipList(key_type=5), InvalidArgumentError),
    ],
)
def test_every_bad_input_raises_from_the_family(call, family) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(family) as exc:
        call()
    assert isinstance(exc.value, SlabcacheError)


def test_a_failed_batch_inserts_nothing() -> None:
    m = BSkipList("str", {"keep": 0})
    with pytest.raises(InvalidTypeError):
        m.update([("a", 1), ("b", 2), (3, 3)])
    with pytest.raises(InvalidArgumentError):
        m.update([("a", 1), ("b", 2, 2)])
    assert dict(m.items()) == {"keep": 0}


def test_generators_work_for_batches() -> None:
    m = BSkipList("int")
    m.update_many((i for i in range(5)), (i * 10 for i in range(5)))
    m.update((k, -k) for k in range(5, 8))
    assert dict(m.items()) == {0: 0, 1: 10, 2: 20, 3: 30, 4: 40, 5: -5, 6: -6, 7: -7}


def test_removals_reach_live_iterators_by_the_next_leaf() -> None:
    # An iterator holds at most the rest of one leaf (B = 64 keys) it has
    # read; a key removed anywhere past that is never returned.
    m = BSkipList("int", {i: i for i in range(5000)})
    it, rit, items = iter(m), reversed(m), iter(m.items())
    assert next(it) == 0 and next(rit) == 4999 and next(items) == (0, 0)
    gone = set(range(1000, 4000))
    for k in gone:
        del m[k]
    m.pop(4500)
    fwd, back, its = list(it), list(rit), list(items)
    assert not gone & set(fwd) and not gone & set(back) and 4500 not in fwd + back
    assert fwd == sorted(fwd) and back == sorted(back, reverse=True)
    assert [k for k, _ in its] == fwd
    for make in (iter, reversed):
        m = BSkipList("int", {i: i for i in range(5000)})
        live = make(m)
        next(live)
        m.clear()
        assert len(list(live)) < 64
    # Inserts after the iterator started may or may not appear.
    m.update({10: 0, 20: 0})
    it = iter(m)
    assert next(it) == 10
    m[15] = 0
    assert list(it) in ([15, 20], [20])


def test_iteration_under_concurrent_writers_stays_ordered_and_complete() -> None:
    m = BSkipList("int", {i: i for i in range(0, 20000, 2)})
    stop = threading.Event()

    def churn() -> None:
        k = 1
        while not stop.is_set():
            m[k] = k
            m.pop(k, None)
            k = (k + 2) % 20000

    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(5):
            seen = list(m)
            assert seen == sorted(set(seen))
            assert set(range(0, 20000, 2)) <= set(seen)
    finally:
        stop.set()
        t.join()


@pytest.mark.parametrize("key_type", ["int", "float"])
def test_dense_and_sparse_get_many_agree_with_single_lookups(key_type: str) -> None:
    rng = np.random.default_rng(11)
    keys = rng.permutation(200_000)[:50_000]
    m = BSkipList(key_type)
    m.update_many(keys if key_type == "int" else keys.astype(float), keys * 2)
    for n in (100, 20_000):  # sparse: one descent per key; dense: in key order
        probe = rng.integers(-10, 200_010, n)
        if key_type == "float":
            probe = probe.astype(float)
        values, found = m.get_many(probe)
        want = [m.get(k) for k in probe.tolist()]
        got = zip(values.tolist(), found.tolist(), strict=True)
        assert [v if f else None for v, f in got] == want


def test_tuple_keys_order_like_tuples_and_keep_one_type_per_position() -> None:
    keys = [("a", 0), ("a", -5), ("b",), ("a",), ("a\x00",), ("", 2**62), ("a", 2)]
    m = BSkipList(dict.fromkeys(keys, 1))
    assert m.key_type == "tuple" and list(m) == sorted(keys)
    assert list(m.irange(("a",), ("a", 0))) == [("a",), ("a", -5), ("a", 0)]
    with pytest.raises(InvalidTypeError):
        m[("a", "x")] = 1  # Python cannot order "x" against the ints at position 1
    assert ("a", "x") not in m and m.get(("a", "x"), "d") == "d"
    dup = m.copy()
    with pytest.raises(InvalidTypeError):
        dup[("a", "x")] = 1  # the copy keeps the positions' types
    f = BSkipList("tuple", {(1.5, b"x"): 1, (-0.0, b""): 2, (-3.25, b"\x00\x01"): 3})
    assert list(f) == [(-3.25, b"\x00\x01"), (0.0, b""), (1.5, b"x")]
    with pytest.raises(InvalidTypeError):
        BSkipList({(object(),): 1})


_REENTRY_SCRIPT = """
from slabcache import BSkipList
m = BSkipList("int")
calls = 0
class V:
    def __del__(self):
        # A value freed while the map holds its position index calls back into the map.
        global calls
        calls += 1
        m.peekitem(0)
        m[10**9 + calls] = 1
for i in range(20000):
    m[i] = V()
for r in range(6):
    m.peekitem(5)
    for i in range(0, 20000, 3):
        m[i] = V()
        if i % 301 == 0:
            m.index(i)
    for i in range(1, 20000, 7):
        m.pop(i, None)
        if i % 97 == 0:
            m.peekitem(-1)
keys = list(m.keys())
assert keys == sorted(keys) and len(keys) == len(m)
for j in range(0, len(keys), 997):
    assert m.index(keys[j]) == j and m.peekitem(j)[0] == keys[j]
print("done", calls)
"""


def test_destructor_calling_back_into_the_map_does_not_deadlock() -> None:
    """A value's `__del__` run while the map holds its position lock (epoch-deferred frees)
    used to wait on that lock forever; it now gets an answer, and positions stay exact."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _REENTRY_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("done") and int(out.stdout.split()[1]) > 0
