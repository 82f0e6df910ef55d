"""BSkipList: the SortedDict-like mapping, batches, errors, threads."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sortedcontainers import SortedDict

from slabcache import BSkipList
from slabcache.errors import InvalidArgumentError, InvalidTypeError, NotFoundError


def test_mapping_protocol_int_keys() -> None:
    m = BSkipList("int")
    obj = object()
    m[5] = obj
    m[1] = "one"
    m[3] = None
    assert m[5] is obj
    assert m[3] is None and 3 in m
    assert len(m) == 3 and list(m) == [1, 3, 5]
    assert m.get(4, "dflt") == "dflt" and m.get(3, "dflt") is None
    del m[3]
    assert 3 not in m and len(m) == 2
    with pytest.raises(KeyError):
        del m[3]
    with pytest.raises(NotFoundError):
        m[42]
    assert m.pop(1) == "one"
    assert m.pop(1, "gone") == "gone"
    with pytest.raises(KeyError):
        m.pop(1)
    assert m.setdefault(7, "a") == "a"
    assert m.setdefault(7, "b") == "a"
    assert list(reversed(m)) == [7, 5]
    assert m == {5: obj, 7: "a"}
    m.clear()
    assert len(m) == 0 and list(m) == [] and m.first() is None and m.last() is None


@pytest.mark.parametrize(
    ("key_type", "keys"),
    [
        ("int", [-(2**63), -1, 0, 7, 2**63 - 1]),
        ("float", [-math.inf, -1.5, -0.0, 0.25, 1e300, math.inf]),
        ("bytes", [b"", b"\x00", b"a", b"ab", b"b"]),
        ("str", ["", "a", "ab", "b", "\u00e9t\u00e9"]),
    ],
)
def test_every_key_type_orders_like_python(key_type: str, keys: list) -> None:
    m = BSkipList(key_type)
    for i, k in enumerate(reversed(keys)):
        m[k] = i
    assert list(m) == sorted(keys)
    assert m.first()[0] == min(keys) and m.last()[0] == max(keys)
    assert m.key_type == key_type


@pytest.mark.parametrize(
    ("key_type", "bad"),
    [("int", "x"), ("int", 1.5), ("float", "x"), ("bytes", "x"), ("str", b"x"), ("str", 3)],
)
def test_wrong_key_type_raises_where_stored_and_is_absent_where_looked_up(
    key_type: str, bad: object
) -> None:
    m = BSkipList(key_type)
    for call in (lambda: m.__setitem__(bad, 1), lambda: m.setdefault(bad, 1)):
        with pytest.raises(InvalidTypeError) as exc:
            call()
        assert isinstance(exc.value, TypeError)
    if not (key_type == "int" and bad == 1.5):  # a float end orders against int keys
        with pytest.raises(InvalidTypeError):
            list(m.irange(bad))
    # A lookup answers like a dict: such a key is simply not there.
    assert bad not in m and m.get(bad, "d") == "d" and m.pop(bad, "d") == "d"
    for call in (lambda: m[bad], lambda: m.__delitem__(bad), lambda: m.pop(bad)):
        with pytest.raises(NotFoundError):
            call()
    assert len(m) == 0


def test_nan_and_out_of_range_keys_raise_value_error() -> None:
    f = BSkipList("float")
    with pytest.raises(InvalidArgumentError) as exc:
        f[float("nan")] = 1
    assert isinstance(exc.value, ValueError)
    with pytest.raises(ValueError):
        f.update_many(np.array([1.0, np.nan]), np.array([1, 2]))
    assert len(f) == 0, "a failed batch must insert nothing"
    i = BSkipList("int")
    with pytest.raises(InvalidArgumentError):
        i[2**64] = 1
    with pytest.raises(InvalidArgumentError):
        i.update_many(np.array([2**64 - 1], dtype=np.uint64), np.array([1]))
    with pytest.raises(InvalidArgumentError):
        BSkipList("complex")  # type: ignore[arg-type]


def test_irange_bounds_and_reverse() -> None:
    m = BSkipList("int", {i: i * i for i in range(20)})
    # Both ends included by default, as SortedDict.irange.
    assert list(m.irange(3, 7)) == [3, 4, 5, 6, 7]
    assert list(m.irange(3, 7, inclusive=(True, False))) == [3, 4, 5, 6]
    assert list(m.irange(3, 7, inclusive=(False, True))) == [4, 5, 6, 7]
    assert list(m.irange(3, 7, reverse=True)) == [7, 6, 5, 4, 3]
    assert list(m.irange(None, 2)) == [0, 1, 2]
    assert list(m.irange(17)) == [17, 18, 19]
    assert list(m.irange(18, None, reverse=True)) == [19, 18]
    assert list(m.irange_items(2, 3)) == [(2, 4), (3, 9)]
    # Ends need not be keys, nor ints: they only have to order against them.
    assert list(m.irange(2.5, 5.5)) == [3, 4, 5]
    assert list(m.irange(2.0, 4.0, inclusive=(False, False))) == [3]
    assert list(m.irange(-(2**70), 1)) == [0, 1] and list(m.irange(2**70)) == []
    assert list(m.irange(18, 2**70)) == [18, 19]
    for bad in ((True,), (True, False, True), "ab", (1, 0), None):
        with pytest.raises((InvalidArgumentError, InvalidTypeError)):
            m.irange(1, 5, inclusive=bad)  # type: ignore[arg-type]
    assert m.ceiling(5) == (5, 25) and m.ceiling(5, inclusive=False) == (6, 36)
    assert m.floor(5) == (5, 25) and m.floor(5, inclusive=False) == (4, 16)
    assert m.floor(-1) is None and m.ceiling(20) is None


def test_pop_first_and_popitem() -> None:
    m = BSkipList("str", {"b": 2, "a": 1, "c": 3})
    assert m.pop_first() == ("a", 1)
    assert m.popitem() == ("c", 3)
    assert m.pop_first() == ("b", 2)
    with pytest.raises(KeyError):
        m.pop_first()
    with pytest.raises(KeyError):
        m.popitem()


def test_update_many_fast_path_and_object_values() -> None:
    m = BSkipList("int")
    keys = np.arange(100_000, dtype=np.int64)[::-1].copy()
    m.update_many(keys, keys * 3)
    assert len(m) == 100_000
    values, found = m.get_many(np.array([0, 5, 100_000, 99_999]))
    assert values.dtype == np.int64
    assert values.tolist() == [0, 15, 0, 299_997]
    assert found.tolist() == [True, True, False, True]
    ks, vs = m.range_arrays(10, 15, inclusive=(True, False))
    assert ks.dtype == np.int64 and ks.tolist() == [10, 11, 12, 13, 14]
    assert vs.tolist() == [30, 33, 36, 39, 42]
    ks, _ = m.range_arrays(99_998, None, inclusive=(False, True))
    assert ks.tolist() == [99_999]
    # Object values: arrays become object arrays, missing -> None.
    m.update_many(np.array([1, 2]), ["x", None])
    values, found = m.get_many(np.array([1, 2, -5]))
    assert values.dtype == object and values.tolist() == ["x", None, None]
    assert found.tolist() == [True, True, False]
    with pytest.raises(InvalidArgumentError):
        m.update_many(np.array([1, 2, 3]), np.array([1, 2]))
    with pytest.raises(InvalidTypeError):
        m.update_many(np.array(["a"]), np.array([1]))
    with pytest.raises(InvalidArgumentError):
        m.update_many(np.zeros((2, 2), dtype=np.int64), np.zeros(4, dtype=np.int64))


def test_batches_for_float_bytes_and_str_keys() -> None:
    f = BSkipList("float")
    f.update_many(np.array([0.5, -1.0, 2.0]), np.array([1, 2, 3]))
    ks, vs = f.range_arrays(-1.0, 2.0, inclusive=(True, False))
    assert ks.dtype == np.float64 and ks.tolist() == [-1.0, 0.5]
    assert vs.tolist() == [2, 1]
    f.update_many([3, 4], ["a", "b"])  # ints are fine float keys
    assert f[3.0] == "a"
    b = BSkipList("bytes")
    b.update_many([b"x", b"a"], [1, 2])
    values, found = b.get_many([b"a", b"zz"])
    assert values.tolist() == [2, 0] and found.tolist() == [True, False]
    ks, vs = b.range_arrays(b"a", None)
    assert ks.tolist() == [b"a", b"x"] and vs.tolist() == [2, 1]
    s = BSkipList("str")
    s.update_many(["k2", "k1"], [None, 1.5])
    assert list(s.items()) == [("k1", 1.5), ("k2", None)]


def test_int_values_keep_identity_semantics_for_non_int_objects() -> None:
    m = BSkipList("int")
    m[1] = True  # a bool is not stored as an int
    m[2] = 2**80  # too big for the unboxed path
    m[3] = -7
    assert m[1] is True and m[2] == 2**80 and m[3] == -7


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["set", "del", "pop_first", "setdefault"]),
            st.integers(-50, 50),
            st.integers(),
        ),
        max_size=200,
    ),
    st.integers(-60, 60),
    st.integers(-60, 60),
    st.booleans(),
    st.booleans(),
)
def test_matches_sorteddict(
    ops: list[tuple[str, int, int]], lo: int, hi: int, inc_lo: bool, rev: bool
) -> None:
    m = BSkipList("int")
    ref: SortedDict = SortedDict()
    for op, k, v in ops:
        if op == "set":
            m[k] = v
            ref[k] = v
        elif op == "del":
            assert m.pop(k, None) == ref.pop(k, None)
        elif op == "setdefault":
            assert m.setdefault(k, v) == ref.setdefault(k, v)
        elif ref:
            assert m.pop_first() == ref.popitem(0)
        else:
            with pytest.raises(KeyError):
                m.pop_first()
    assert list(m.items()) == list(ref.items())
    assert len(m) == len(ref)
    want = list(ref.irange(lo, hi, inclusive=(inc_lo, False), reverse=rev))
    assert list(m.irange(lo, hi, inclusive=(inc_lo, False), reverse=rev)) == want
    ks, _ = m.range_arrays(lo, hi, inclusive=(inc_lo, False))
    assert ks.tolist() == list(ref.irange(lo, hi, inclusive=(inc_lo, False)))


def test_iterating_while_other_threads_write() -> None:
    m = BSkipList("int")
    stable = list(range(0, 20_000, 10))
    m.update_many(np.array(stable), np.array(stable))
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                ks = rng.integers(0, 2_000, 500) * 10 + rng.integers(1, 10, 500)
                m.update_many(ks, ks)
                for k in ks[:100].tolist():
                    m.pop(k, None)
                m[int(ks[0])] = "obj"
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(2)]
    for t in threads:
        t.start()
    try:
        for rnd in range(6):
            keys = list(m.irange(reverse=rnd % 2 == 1))
            if rnd % 2:
                keys.reverse()
            assert keys == sorted(set(keys)), "keys repeated or out of order"
            assert set(stable) <= set(keys), "a key present throughout was missed"
            ks, _ = m.range_arrays()
            assert np.all(np.diff(ks) > 0)
            assert set(stable) <= set(ks.tolist())
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    for k in stable:
        assert m[k] == k


def test_concurrent_update_many_from_threads_is_exact() -> None:
    m = BSkipList("int")
    n = 50_000

    def work(t: int) -> None:
        ks = np.arange(t, n * 4, 4, dtype=np.int64)
        m.update_many(ks, ks + 1)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(m) == n * 4
    ks, vs = m.range_arrays()
    assert np.array_equal(ks, np.arange(n * 4)) and np.array_equal(vs, ks + 1)


@pytest.mark.parametrize("key_type", ["int", "str"])
def test_positions_stay_exact_between_single_key_writes(key_type: str) -> None:
    # Positional calls between single-key writes use the incrementally kept
    # position index (no rebuild per write): it must agree with SortedDict
    # through leaf splits (a hot spot of inserts), merges (a run of deletes),
    # every write path and an unreported batch write.
    import random

    rng = random.Random(5)

    def key(i: int) -> object:
        return i if key_type == "int" else f"{i:08d}"

    ours, model = BSkipList(key_type), SortedDict()
    for i in range(0, 30_000, 10):
        ours[key(i)] = i
        model[key(i)] = i
    for step in range(3_000):
        op = rng.random()
        if op < 0.35:  # hot spot: one range gets many new keys
            i = rng.randrange(15_000, 15_600)
            ours[key(i)] = model[key(i)] = step
        elif op < 0.45:
            i = rng.randrange(30_000)
            assert ours.setdefault(key(i), step) == model.setdefault(key(i), step)
        elif op < 0.65:  # deletes over one span, so leaves there merge
            i = rng.randrange(0, 6_000)
            if key(i) in model:
                if rng.random() < 0.5:
                    del ours[key(i)]
                    del model[key(i)]
                else:
                    assert ours.pop(key(i)) == model.pop(key(i))
        elif op < 0.72:
            j = rng.randrange(-len(model), len(model))
            assert ours.popitem(j) == model.popitem(j)
        elif op < 0.75:
            assert ours.popitem(0) == model.popitem(0)
        elif op < 0.76:  # an unreported batch: the index is rebuilt
            batch = {key(rng.randrange(30_000)): -1 for _ in range(50)}
            ours.update(batch)
            model.update(batch)
        q = key(rng.randrange(30_000))
        assert ours.bisect_left(q) == model.bisect_left(q)
        assert ours.bisect_right(q) == model.bisect_right(q)
        j = rng.randrange(len(model))
        assert ours.peekitem(j) == model.peekitem(j)
        assert ours.keys()[j] == model.keys()[j]
        if q in model:
            assert ours.index(q) == model.index(q)
    assert list(ours.items()) == list(model.items())
    ours._check()


@pytest.mark.parametrize("n", [3, 10_000])
def test_pairs_with_a_repeated_key_keep_the_last_value_like_dict(n: int) -> None:
    # Pairs are first tried as distinct keys (fast unstable sort); a repeat
    # anywhere must still give dict's answer: the last value given wins.
    pairs = [(i * 7 % n, f"v{i}") for i in range(n)]
    pairs += [(0, "first-repeat"), (n // 2, "x"), (0, "last")]
    ours = BSkipList(pairs)
    want = dict(pairs)
    assert list(ours.items()) == sorted(want.items())
    assert ours[0] == "last"
    distinct = BSkipList([(k, v) for k, v in want.items()])
    assert list(distinct.items()) == sorted(want.items())
    ours._check()


@pytest.mark.parametrize("spread", [40, 2**20, 2**62])
def test_batches_of_int_and_float_keys_sort_like_sorted(spread: int) -> None:
    # Batches of int and float keys are radix sorted on the bits where the
    # keys differ; negative keys, both ends of the range, repeated keys (the
    # last value wins) and keys that differ only in a few bits among many.
    rng = np.random.default_rng(spread)
    ints = rng.integers(-spread, spread, 5000).tolist() + [-(2**63), 2**63 - 1, 0, -1]
    pairs = [(k, i) for i, k in enumerate(ints)]
    pairs += [(ints[7], "again"), (2**63 - 1, "top")]
    for build in (BSkipList, lambda p: BSkipList(dict(p))):
        ours = build(pairs)
        assert list(ours.items()) == sorted(dict(pairs).items())
        ours._check()
    arr = BSkipList("int")
    arr.update_many(np.array(ints, dtype=np.int64), np.arange(len(ints)))
    assert list(arr.keys()) == sorted(set(ints))
    floats = (rng.standard_normal(3000) * spread).tolist()
    floats += [-0.0, 0.0, math.inf, -math.inf, 5e-324, -5e-324, 1e308, -1e308]
    fm = BSkipList(dict.fromkeys(floats, 1))
    assert list(fm.keys()) == sorted(set(floats))
    fm._check()


def test_build_from_a_dict_converts_every_key_and_value_once() -> None:
    # The dict fast path reads items through borrowed references: every
    # value kind must arrive intact, ints unboxed and objects by identity.
    obj = object()
    d = {5: obj, 1: 10, 3: "s", 2: True, 4: 2**70, 0: None}
    m = BSkipList(d)
    assert list(m.items()) == sorted(d.items())
    assert m[5] is obj and m[2] is True and m[4] == 2**70
    f = BSkipList({np.int64(2): "b", 1: "a", np.int32(3): "c"})
    assert list(f.items()) == [(1, "a"), (2, "b"), (3, "c")]


def test_build_from_a_dict_that_a_key_conversion_mutates_raises() -> None:
    # A key whose conversion runs Python code that changes the dict: the
    # build stops (as iterating a changed dict does) and never reads a freed item.
    d: dict[object, object] = {}

    class Sneaky(np.int64):
        def __index__(self) -> int:
            d.clear()
            return int(np.int64(self))

    d.update({Sneaky(1): "a", Sneaky(2): "b", Sneaky(3): "c"})
    with pytest.raises(RuntimeError, match="changed size"):
        BSkipList("int", d)


def test_build_from_a_list_of_int_pairs_and_its_fallbacks() -> None:
    # The fast path takes exact (int, value) tuples; anything else goes the
    # general way with the same answers and errors, and a failed build
    # inserts nothing.
    obj = object()
    pairs = [(3, obj), (1, "a"), (2, 20), (1, "b")]
    m = BSkipList(pairs)
    assert list(m.items()) == [(1, "b"), (2, 20), (3, obj)] and m[3] is obj
    for bad, err in (
        ([(1, "a"), ("x", "b")], InvalidTypeError),
        ([(1, "a"), (2**64, "b")], InvalidArgumentError),
        ([(1, "a"), (2, "b", "c")], InvalidArgumentError),
    ):
        e = BSkipList("int")
        with pytest.raises(err):
            e.update(bad)
        assert len(e) == 0
    f = BSkipList("float", [(2, "b"), (1, "a")])
    assert list(f.items()) == [(1.0, "a"), (2.0, "b")]
    assert list(BSkipList([(True, "t"), [5, "l"]]).items()) == [(1, "t"), (5, "l")]
