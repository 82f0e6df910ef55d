"""The behaviours sortedcontainers' own SortedDict tests check (coverage, stress and
view modules), re-expressed here against ``SortedDict`` = BSkipList renamed
(``sorteddict_adapter``), plus a model test that drives BSkipList and the real
``sortedcontainers.SortedDict`` with the same random calls and compares.

The upstream modules themselves run with ``run_upstream.py`` (result in
docs/skiplist.md); this file is what CI runs, with no network.
"""

from __future__ import annotations

import copy
import operator
import pickle
import random
import string

import pytest
import sortedcontainers
from hypothesis import given, settings
from hypothesis import strategies as st
from sorteddict_adapter import SortedDict

LETTERS = string.ascii_lowercase
PAIRS = [(c, i) for i, c in enumerate(LETTERS)]


def letters() -> SortedDict:
    return SortedDict(PAIRS)


def test_construction_forms() -> None:
    empty = SortedDict()
    assert len(empty) == 0 and empty.key is None
    empty._check()
    assert dict(SortedDict([("b", 2), ("a", 1)])) == {"a": 1, "b": 2}
    assert dict(SortedDict(b=2, a=1)) == {"a": 1, "b": 2}
    assert dict(SortedDict({"x": 1}, y=2)) == {"x": 1, "y": 2}
    assert list(SortedDict((k, -k) for k in range(300))) == list(range(300))
    assert dict(SortedDict.fromkeys("cab", 0)) == {"a": 0, "b": 0, "c": 0}
    # Tuple keys (fromkeys over pairs) order like tuples.
    fk = SortedDict.fromkeys(PAIRS[::-1], 1)
    assert list(fk) == PAIRS and all(fk[k] == 1 for k in fk)


def test_mapping_basics() -> None:
    m = letters()
    assert len(m) == 26 and all(c in m for c in LETTERS) and "A" not in m
    assert all(m[c] == i for c, i in PAIRS)
    assert list(m) == list(LETTERS) and list(reversed(m)) == list(reversed(LETTERS))
    assert m.get("a") == 0 and m.get("A", -1) == -1
    del m["a"]
    m._check()
    assert "a" not in m and len(m) == 25
    with pytest.raises(KeyError):
        del m["a"]
    assert m.pop("b") == 1 and m.pop("b", -1) == -1
    with pytest.raises(KeyError):
        m.pop("B")
    assert m.setdefault("c", -1) == 2 and m.setdefault("C", -1) == -1 and m["C"] == -1
    m.clear()
    assert len(m) == 0 and not m


def test_setitem_twice_keeps_one_entry_per_key() -> None:
    m = SortedDict()
    for _ in range(2):
        for i, c in enumerate(LETTERS):
            m[c] = i
            m._check()
    assert len(m) == 26


def test_equality_against_maps_and_dicts() -> None:
    a, b = letters(), letters()
    assert a == b and not a != b and a == dict(PAIRS)
    b["a"] = 100
    assert a != b
    del b["a"]
    assert a != b
    b["a"] = 0
    b["zz"] = 0
    assert a != b and not a == b
    assert a == sortedcontainers.SortedDict(PAIRS)


def test_update_forms() -> None:
    m = SortedDict()
    m.update()
    m.update(PAIRS[:10])
    m.update(dict(PAIRS[10:20]))
    m.update(SortedDict(PAIRS[20:]))
    m.update(PAIRS[3:6])
    assert list(m.items()) == PAIRS
    m2 = SortedDict()
    m2.update(**dict(PAIRS))
    assert list(m2.items()) == PAIRS


def test_positions() -> None:
    m = letters()
    assert m.peekitem() == ("z", 25) and m.peekitem(0) == ("a", 0) and m.peekitem(4) == ("e", 4)
    assert m.peekitem(-3) == ("x", 23)
    with pytest.raises(IndexError):
        m.peekitem(100)
    assert m.index("a") == 0 and m.index("f", 3, -3) == 5
    with pytest.raises(ValueError):
        m.index("f", 6)
    assert m.bisect_left("a") == 0 and m.bisect_right("f") == 6 and m.bisect("f") == 6
    assert m.bisect_left("ff") == 6 and m.bisect_right("0") == 0 and m.bisect_left("{") == 26
    for start in range(-2, 30):
        for stop in range(-2, 30):
            assert list(m.islice(start, stop)) == list(LETTERS[start:stop])
            assert list(m.islice(start, stop, reverse=True)) == list(LETTERS[start:stop])[::-1]
    assert m.popitem() == ("z", 25) and m.popitem(index=0) == ("a", 0)
    assert m.popitem(3) == ("e", 4)
    with pytest.raises(KeyError):
        SortedDict().popitem()


def test_irange_is_inclusive_at_both_ends_by_default() -> None:
    m = letters()
    for start in range(26):
        for stop in range(start + 1, 26):
            want = list(LETTERS[start:stop])
            assert list(m.irange(want[0], want[-1])) == want
            assert list(m.irange(want[0], want[-1], (False, False))) == want[1:-1]
            assert list(m.irange(want[0], want[-1], reverse=True)) == want[::-1]
    # Ends need not be keys.
    assert list(m.irange("bb", "dd")) == ["c", "d"]


def test_iloc() -> None:
    m = letters()
    assert len(m.iloc) == 26 and m.iloc[0] == "a" and m.iloc[-1] == "z"
    assert m.iloc[-3:] == ["x", "y", "z"]
    del m.iloc[0]
    assert m.iloc[0] == "b"
    del m.iloc[-3:]
    assert m.iloc[-1] == "w" and len(m) == 22


def test_copies_are_independent() -> None:
    m = letters()
    for dup in (m.copy(), copy.copy(m), copy.deepcopy(m)):
        assert dup == m and type(dup) is SortedDict
        dup.clear()
        assert len(m) == 26


def test_repr_forms() -> None:
    m = SortedDict({"alice": 3, "bob": 1, "carol": 2, "dave": 4})
    assert repr(m) == "SortedDict({'alice': 3, 'bob': 1, 'carol': 2, 'dave': 4})"
    m["bob"] = m
    assert repr(m) == "SortedDict({'alice': 3, 'bob': ..., 'carol': 2, 'dave': 4})"

    class Custom(SortedDict):
        pass

    assert repr(Custom({"a": 1})) == "Custom({'a': 1})"
    two = SortedDict(PAIRS[:2])
    assert repr(two.keys()) == "SortedKeysView(SortedDict({'a': 0, 'b': 1}))"
    assert repr(two.values()) == "SortedValuesView(SortedDict({'a': 0, 'b': 1}))"
    assert repr(two.items()) == "SortedItemsView(SortedDict({'a': 0, 'b': 1}))"


def test_keys_view() -> None:
    m = SortedDict(PAIRS[:13])
    keys = m.keys()
    assert len(keys) == 13 and "a" in keys and keys[0] == "a"
    assert list(keys) == list(LETTERS[:13]) and list(keys) == list(keys)  # re-iterable
    assert list(reversed(keys)) == list(reversed(LETTERS[:13]))
    assert keys.index("f") == 5 and keys.count("m") == 1 and keys.count("0") == 0
    assert keys.isdisjoint(["1", "2"]) and bool(keys) and not SortedDict().keys()
    m.update(PAIRS[13:])  # views are live
    assert len(keys) == 26 and "z" in keys and keys[-3:] == ["x", "y", "z"]
    theirs = dict(PAIRS).keys()
    assert keys == theirs and not keys != theirs and keys <= theirs and keys >= theirs
    assert not keys < theirs and not keys > theirs
    assert sorted(keys & theirs) == list(LETTERS) and sorted(keys | theirs) == list(LETTERS)
    assert sorted(keys - theirs) == [] and sorted(keys ^ theirs) == []
    assert keys[::5] == list(LETTERS[::5]) and keys[::-1] == list(reversed(LETTERS))


def test_values_view() -> None:
    m = SortedDict(PAIRS[:13])
    values = m.values()
    assert len(values) == 13 and 0 in values and values[0] == 0
    assert values[-3:] == [10, 11, 12] and list(reversed(values)) == list(reversed(range(13)))
    assert values.index(5) == 5 and values.count(10) == 1
    with pytest.raises(ValueError):
        values.index(100)
    m.update(PAIRS[13:])
    assert len(values) == 26 and 25 in values and list(values) == list(range(26))
    theirs = dict(PAIRS).values()
    for op in (operator.lt, operator.gt, operator.le, operator.ge, operator.and_, operator.or_):
        with pytest.raises(TypeError):
            op(values, theirs)
    for op in (operator.sub, operator.xor):
        with pytest.raises(TypeError):
            op(values, theirs)


def test_items_view() -> None:
    m = SortedDict(PAIRS[:13])
    items = m.items()
    assert len(items) == 13 and ("a", 0) in items and ("a", 1) not in items
    assert ("a", 0, 1) not in items and 5 not in items
    assert items[0] == ("a", 0) and items[-3:] == [("k", 10), ("l", 11), ("m", 12)]
    assert list(reversed(items)) == PAIRS[:13][::-1]
    assert items.index(("f", 5)) == 5 and items.count(("m", 12)) == 1
    with pytest.raises(ValueError):
        items.index(("f", 100))
    assert items.isdisjoint([("0", 26)]) and not items.isdisjoint([("a", 0)])
    m.update(PAIRS[13:])
    theirs = dict(PAIRS).items()
    assert items == theirs and items <= theirs and items >= theirs and not items < theirs
    assert sorted(items & theirs) == PAIRS and sorted(items - theirs) == []


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_every_protocol(protocol: int) -> None:
    m = SortedDict(zip(range(2000), range(2000), strict=True))
    back = pickle.loads(pickle.dumps(m, protocol))
    assert back == m and type(back) is SortedDict and back.key_type == "int"
    empty = pickle.loads(pickle.dumps(SortedDict(key_type="str"), protocol))
    assert empty.key_type == "str" and len(empty) == 0
    rec = SortedDict({"a": 1})
    rec["self"] = rec
    back = pickle.loads(pickle.dumps(rec, protocol))
    assert back["self"] is back


def test_merge_operators() -> None:
    a = SortedDict({"a": 1, "b": 2})
    assert dict(a | {"b": 3, "c": 4}) == {"a": 1, "b": 3, "c": 4} and type(a | {}) is SortedDict
    merged = {"b": 0, "z": 9} | a
    assert type(merged) is SortedDict and dict(merged) == {"a": 1, "b": 2, "z": 9}
    a |= [("d", 5)]
    assert dict(a) == {"a": 1, "b": 2, "d": 5}
    with pytest.raises(TypeError):
        a | 5  # noqa: B018


class WithState(SortedDict):
    """A user subclass with instance attributes (so a ``__dict__``)."""


def test_weakref_and_subclass_state() -> None:
    import weakref

    m = WithState({"a": 1})
    m.note = "kept"  # type: ignore[attr-defined]
    r = weakref.ref(m)
    back = pickle.loads(pickle.dumps(m))
    assert r() is m and back.note == "kept" and dict(back) == {"a": 1}


def test_stress_mix_like_upstream() -> None:
    # The upstream stress module's actions in a seeded random order, with
    # the size kept between 500 and 2000 and the invariants checked each time.
    rnd = random.Random(0)
    m = SortedDict((k, -k) for k in range(1000))

    def contains() -> None:
        assert all(k in m for k in list(m))

    def delitem() -> None:
        keys = list(m)
        for _ in range(100):
            pos = rnd.randrange(len(keys))
            del m[keys.pop(pos)]

    def getitem() -> None:
        assert all(m[k] == v for k, v in list(m.items()))

    def eq() -> None:
        assert m == dict(m.items())

    def setitem_len() -> None:
        missing = sum(1 for k in range(100) if k not in m)
        before = len(m)
        for k in range(100):
            m[k] = -k
        assert len(m) == before + missing

    def get() -> None:
        for k in range(100):
            assert m.get(k, 1) == (-k if k in m else 1)

    def views() -> None:
        assert list(m.items()) == list(zip(m.keys(), m.values(), strict=True))

    def pop() -> None:
        for k in range(200):
            want = m[k] if k in m else 1
            assert m.pop(k, 1) == want

    def popitem() -> None:
        items = [m.popitem() for _ in range(100)]
        assert all(a[0] > b[0] for a, b in zip(items, items[1:], strict=False))
        assert all(k == -v for k, v in items)

    def setdefault() -> None:
        for k in range(200):
            if k in m:
                assert m.setdefault(k) == -k
            else:
                m.setdefault(k)
                assert m[k] is None
                del m[k]

    actions = [contains, delitem, getitem, eq, setitem_len, get, views, pop, popitem, setdefault]
    actions.append(lambda: m.copy())
    for _ in range(300):
        rnd.choice(actions)()
        m._check()
        while len(m) < 500:
            k = rnd.randrange(2000)
            m[k] = -k
        while len(m) > 2000:
            k = rnd.randrange(2000)
            m.pop(k, None)
        m._check()


ops = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "set",
                "del",
                "pop",
                "popitem",
                "peekitem",
                "bisect_left",
                "bisect_right",
                "irange",
                "islice",
                "index",
                "setdefault",
            ]
        ),
        st.integers(-50, 50),
        st.integers(-50, 50),
        st.booleans(),
        st.booleans(),
    ),
    max_size=80,
)


def _call(m, op, a, b, f1, f2):  # type: ignore[no-untyped-def]
    try:
        if op == "set":
            m[a] = b
            return None
        if op == "del":
            del m[a]
            return None
        if op == "pop":
            return m.pop(a, "missing")
        if op == "popitem":
            return m.popitem(a % 5 - 2 if f1 else -1)
        if op == "peekitem":
            return m.peekitem(a)
        if op == "bisect_left":
            return m.bisect_left(a)
        if op == "bisect_right":
            return m.bisect_right(a + 0.5 if f1 else a)
        if op == "irange":
            return list(m.irange(a, b, (f1, f2), reverse=f1 ^ f2))
        if op == "islice":
            return list(m.islice(a, b, reverse=f1))
        if op == "index":
            return m.index(a)
        return m.setdefault(a, b)
    except (KeyError, IndexError, ValueError) as e:
        # Compare the builtin kind, not the class.
        return next(t for t in (KeyError, IndexError, ValueError) if isinstance(e, t))


@settings(max_examples=150, deadline=None)
@given(ops)
def test_same_answers_as_sortedcontainers(calls) -> None:  # type: ignore[no-untyped-def]
    ours, theirs = SortedDict(key_type="int"), sortedcontainers.SortedDict()
    for call in calls:
        assert _call(ours, *call) == _call(theirs, *call), call
        assert list(ours.items()) == list(theirs.items())
    ours._check()
