"""SemanticCache API behaviour on synthetic vectors (no embedding model needed)."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from slabcache import (
    ClosedError,
    InvalidArgumentError,
    InvalidTypeError,
    LockedError,
    NotFoundError,
    Policy,
    SemanticCache,
    SlabcacheError,
)

DIM = 32


def unit(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def near(v: np.ndarray, rng: np.random.Generator, eps: float = 0.02) -> np.ndarray:
    w = v + eps * rng.standard_normal(v.shape).astype(np.float32)
    return (w / np.linalg.norm(w, axis=-1, keepdims=True)).astype(np.float32)


class FakeClock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_insert_lookup_sources_and_payload(rng):
    c = SemanticCache(None, dim=DIM, trap_guard=False, slb_per_scope=4)
    vs = unit(rng, 20)
    keys = [c.insert(v, f"answer {i}".encode(), scope="m") for i, v in enumerate(vs)]
    # The most recent four are in the buffer; the first ones only in the index.
    h = c.lookup(near(vs[19], rng), scope="m")
    assert h is not None and bytes(h.value) == b"answer 19" and h.source == "slb"
    h = c.lookup(near(vs[0], rng), scope="m")
    assert h is not None and h.key == keys[0] and h.source == "index"
    assert isinstance(h.value, memoryview) and h.value.readonly
    assert 0.9 < h.score <= 1.0 and h.age_s >= 0
    # Promoted into the buffer by that hit.
    assert c.lookup(near(vs[0], rng), scope="m").source == "slb"
    # Exact text beats everything.
    c.insert(vs[5], b"exact", scope="m", text="Hello  World")
    h = c.lookup(unit(rng)[0], scope="m", text="hello world")
    assert h.source == "exact" and bytes(h.value) == b"exact" and h.score == 1.0


def test_scope_is_a_partition_applied_before_the_search(rng):
    c = SemanticCache(None, dim=DIM, trap_guard=False)
    v = unit(rng)[0]
    other = unit(rng)[0]
    # Scope b holds the identical vector; scope a holds only a far one.
    c.insert(v, b"b-answer", scope="b")
    c.insert(other, b"a-answer", scope="a")
    assert c.lookup(v, scope="a") is None  # never falls through to scope b's neighbour
    assert bytes(c.lookup(v, scope="b").value) == b"b-answer"
    # Categories partition too.
    assert c.lookup(v, scope="b", category="code") is None
    hits = c.lookup_many(np.stack([v, v]), scopes=["a", "b"])
    assert hits[0] is None and bytes(hits[1].value) == b"b-answer"


def test_thresholds_scale_and_validation(rng):
    v = unit(rng)[0]
    w = near(v, rng, 0.3)
    cos = float(v @ w)
    c = SemanticCache(None, dim=DIM, default=Policy(threshold=cos + 0.02), trap_guard=False)
    c.insert(v, b"x")
    assert c.lookup(w) is None
    assert c.lookup(w, threshold=cos - 0.02) is not None
    for bad in (1.5, -1.01, 4.0):
        with pytest.raises(InvalidArgumentError):
            Policy(threshold=bad)
        with pytest.raises(InvalidArgumentError):
            c.lookup(w, threshold=bad)
    # 0 is a value, not "unset".
    assert Policy(threshold=0.0).merged_over(Policy(threshold=0.9)).threshold == 0.0
    assert Policy().merged_over(Policy(threshold=0.9)).threshold == 0.9
    # threshold 1.0: exact only (same text, or the same vector)
    c2 = SemanticCache(None, dim=DIM, default=Policy(threshold=1.0), trap_guard=False)
    c2.insert(v, b"y", text="q")
    assert c2.lookup(near(v, rng, 0.001)) is None
    assert c2.lookup(v) is not None
    assert c2.lookup(unit(rng)[0], text="Q").source == "exact"


def test_per_category_policies(rng):
    v = unit(rng)[0]
    w = near(v, rng, 0.12)
    cos = float(v @ w)
    c = SemanticCache(
        None,
        dim=DIM,
        default=Policy(threshold=cos - 0.05),
        policies={"code": Policy(threshold=min(1.0, cos + 0.03)), "nope": Policy(cacheable=False)},
        trap_guard=False,
    )
    c.insert(v, b"d")
    c.insert(v, b"c", category="code")
    assert c.insert(v, b"n", category="nope") is None
    assert c.lookup(w) is not None
    assert c.lookup(w, category="code") is None
    assert c.lookup(v, category="nope") is None
    st = c.stats()["categories"]
    assert st["default"]["hits"]["slb"] + st["default"]["hits"]["index"] == 1
    assert st["code"]["lookups"] == 1 and st["code"]["hit_rate"] == 0.0
    assert st["nope"]["entries"] == 0


def test_bad_input_raises_slabcache_errors(rng):
    c = SemanticCache(None, dim=DIM)
    v = unit(rng)[0]
    with pytest.raises(InvalidArgumentError):
        c.lookup(np.zeros(DIM + 1, np.float32))
    with pytest.raises(InvalidTypeError):
        c.lookup(np.zeros(DIM, np.int64))
    with pytest.raises(SlabcacheError):
        c.insert(np.full(DIM, np.nan, np.float32), b"x")
    with pytest.raises(InvalidTypeError):
        c.insert(v, 12345)
    with pytest.raises(InvalidArgumentError):
        c.insert(v, b"x", cost=-1)
    with pytest.raises(InvalidArgumentError):
        c.insert(v, b"x", ttl_s=0)
    with pytest.raises(InvalidArgumentError):
        SemanticCache(None, dim=0)
    with pytest.raises(InvalidArgumentError):
        SemanticCache(None, dim=DIM, eviction="random")
    with pytest.raises(NotFoundError):
        c.report(999, correct=True)
    assert len(c) == 0  # nothing half-inserted
    c.close()
    with pytest.raises(ClosedError):
        c.lookup(v)


def test_ttl_expiry_removes_everything(rng):
    clock = FakeClock()
    c = SemanticCache(
        None, dim=DIM, clock=clock, policies={"chat": Policy(ttl_s=60)}, trap_guard=False
    )
    v, w = unit(rng, 2)
    k1 = c.insert(v, b"short", category="chat")
    k2 = c.insert(w, b"forever", category="chat", ttl_s=math.inf)
    clock.t += 30
    h = c.lookup(v, category="chat")
    assert h is not None and abs(h.age_s - 30) < 1e-6
    clock.t += 31
    assert c.lookup(v, category="chat") is None  # expired: a miss, and gone
    assert k1 not in c and k2 in c
    assert c._index.scope_len("\x1fchat") == 1 and k1 not in c._slb
    st = c.stats()["categories"]["chat"]
    assert st["expirations"] == 1 and st["entries"] == 1
    # expire() sweeps deadlines without lookups
    k3 = c.insert(unit(rng)[0], b"x", category="chat", ttl_s=5)
    clock.t += 6
    assert c.expire() == 1 and k3 not in c


def _no_zombies(c: SemanticCache) -> None:
    live = set(c._entries)
    assert len(c._index) == len(live)
    for e in c._entries.values():
        assert c._index.contains(e.part, e.key)
    assert set(c._lru) == live
    assert len(c._slb) <= len(live)


@pytest.mark.parametrize("eviction", ["lru", "fifo", "cost"])
def test_quota_eviction_leaves_no_zombie_rows(rng, eviction, tmp_path):
    c = SemanticCache(
        tmp_path / "c",
        dim=DIM,
        eviction=eviction,
        policies={"q": Policy(max_entries=10, max_bytes=10_000)},
        trap_guard=False,
        sync="none",
    )
    vs = unit(rng, 40)
    keys = []
    for i, v in enumerate(vs):
        keys.append(c.insert(v, bytes(100), category="q", cost=float(i % 5)))
        if eviction == "lru" and i >= 1:
            c.lookup(vs[0], category="q")  # keep entry 0 hot
    assert len(c) == 10
    _no_zombies(c)
    for k in keys:
        if k not in c:
            assert k not in c._slb  # no buffer row outlives its entry
        in_cache = k in c
        in_arena = c._arena.get(b"e" + k.to_bytes(8, "big")) is not None
        assert in_cache == in_arena
    evicted = [vs[i] for i, k in enumerate(keys) if k not in c]
    for v in evicted:
        h = c.lookup(v, category="q")
        assert h is None or h.key in c
    if eviction == "lru":
        assert keys[0] in c
    if eviction == "fifo":
        assert set(keys[-10:]) == {k for k in keys if k in c}
    if eviction == "cost":
        # cheap entries go first: the survivors are mostly the expensive ones
        costs = [i % 5 for i, k in enumerate(keys) if k in c]
        assert sum(costs) / len(costs) > 2.0
    st = c.stats()["categories"]["q"]
    assert st["evictions"] == 30 and st["entries"] == 10
    # byte quota
    c.set_policy("q", Policy(max_entries=10, max_bytes=350))
    assert len(c) == 3
    _no_zombies(c)
    c.close()


def test_delete_and_replace_same_text(rng):
    c = SemanticCache(None, dim=DIM, trap_guard=False)
    v = unit(rng)[0]
    k1 = c.insert(v, b"old", text="same question")
    k2 = c.insert(v, b"new", text="Same  question")
    assert k1 not in c and len(c) == 1
    assert bytes(c.lookup(v).value) == b"new"
    assert c.delete(k2) and not c.delete(k2)
    ks = c.insert_many(np.stack([v, v]), [b"a", b"b"], texts=["dup", "DUP"])
    assert ks[0] not in c and ks[1] in c and len(c) == 1
    assert c.delete(ks[1])
    assert c.lookup(v) is None and len(c._index) == 0 and len(c._slb) == 0


def test_single_flight_computes_once(rng):
    c = SemanticCache(None, dim=DIM, trap_guard=False)
    v = unit(rng)[0]
    calls = []
    gate = threading.Event()

    def slow():
        calls.append(1)
        gate.wait(2)
        return b"computed"

    results = []

    def worker():
        results.append(bytes(c.get_or_compute(v, slow, scope="s", text="what is x?")))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join(5)
    assert results == [b"computed"] * 8
    assert len(calls) == 1
    assert len(c) == 1
    # Errors reach every waiter and nothing is inserted.
    w = unit(rng)[0]

    def boom():
        raise RuntimeError("model down")

    with pytest.raises(RuntimeError):
        c.get_or_compute(w, boom, text="other")
    assert len(c) == 1
    with pytest.raises(InvalidTypeError):
        c.get_or_compute(w, lambda: 42, text="not bytes")
    assert len(c) == 1


def test_trap_guard_refuses_and_can_be_turned_off(rng):
    v = unit(rng)[0]
    pairs = [
        ("Cancel my subscription", "Don't cancel my subscription"),
        ("Is a 2-bedroom flat available in March?", "Is a 3-bedroom flat available in March?"),
        ("Are you open on Saturday?", "Are you open on Sunday?"),
        ("How do I migrate from MySQL to Postgres?", "How do I migrate from Postgres to MySQL?"),
        ("Do you deliver to Hackney?", "Do you deliver to Hounslow?"),
        ("How do I turn on dark mode?", "How do I turn off dark mode?"),
    ]
    for a, b in pairs:
        on = SemanticCache(None, dim=DIM)
        on.insert(v, b"x", text=a)
        assert on.lookup(v, text=b) is None, (a, b)
        assert sum(on.stats()["categories"]["default"]["refused"].values()) >= 1
        off = SemanticCache(None, dim=DIM, trap_guard=False)
        off.insert(v, b"x", text=a)
        assert off.lookup(v, text=b) is not None
    ok = SemanticCache(None, dim=DIM)
    ok.insert(v, b"x", text="How do I request a repeat prescription?")
    assert ok.lookup(v, text="how do i reqest a repeat perscription") is not None


def test_guard_falls_through_only_to_equally_close_candidates(rng):
    c = SemanticCache(None, dim=DIM)
    v = unit(rng)[0]
    c.insert(v, b"five", text="Price for 5 users?")
    c.insert(near(v, rng, 0.002), b"fifty", text="Price for 50 users?")
    h = c.lookup(v, text="price for 50 users")
    assert h is not None and bytes(h.value) == b"fifty"
    # A refused nearest entry is not replaced by a clearly farther one.
    c2 = SemanticCache(None, dim=DIM, default=Policy(threshold=0.5))
    c2.insert(v, b"cancel", text="Cancel my subscription")
    c2.insert(near(v, rng, 0.2), b"other", text="Tell me about my subscription plan")
    assert c2.lookup(v, text="Don't cancel my subscription") is None


def test_verifier_runs_on_near_threshold_hits(rng):
    seen = []

    def verifier(a, b, score):
        seen.append(score)
        return False

    v = unit(rng)[0]
    w = near(v, rng, 0.1)
    cos = float(v @ w)
    c = SemanticCache(
        None, dim=DIM, default=Policy(threshold=cos - 0.01, verify_margin=0.05),
        verifier=verifier, trap_guard=False,
    )  # fmt: skip
    c.insert(v, b"x", text="a")
    assert c.lookup(w, text="b") is None and len(seen) == 1
    assert c.lookup(v, text="c") is not None  # far above the margin: not asked
    assert len(seen) == 1


def test_adaptive_threshold_learns_from_reports(rng):
    c = SemanticCache(
        None, dim=DIM,
        default=Policy(threshold=0.5, adaptive=True, error_budget=0.05), trap_guard=False,
    )  # fmt: skip
    base = unit(rng, 60)
    keys = [c.insert(v, b"x") for v in base]
    # Feedback: below 0.9 answers are wrong, above right.
    for k, v in zip(keys, base, strict=True):
        for eps, _ in ((0.05, True), (0.6, False)):
            w = near(v, rng, eps)
            s = float(v @ w)
            c.report(k, correct=s > 0.9, score=s)
    learned = c.threshold("default")
    assert 0.85 < learned <= 1.0
    assert c.stats()["categories"]["default"]["threshold"] == learned
    # A wrong report pins that entry above the reported score.
    v = base[0]
    w = near(v, rng, 0.02)
    s = float(v @ w)
    c.report(keys[0], correct=False, score=min(1.0, s + 1e-4))
    h = c.lookup(w)
    assert h is None or h.key != keys[0]


def test_persistence_reopen_finds_everything(rng, tmp_path):
    path = tmp_path / "cache"
    vs = unit(rng, 50)
    with SemanticCache(path, dim=DIM, trap_guard=False, sync="always") as c:
        keys = c.insert_many(vs, [f"v{i}".encode() for i in range(50)], scopes="m",
                             texts=[f"q{i}" for i in range(50)])  # fmt: skip
        c.delete(keys[3])
    with SemanticCache(path, dim=DIM, trap_guard=False) as c:
        assert len(c) == 49
        for i, v in enumerate(vs):
            h = c.lookup(v, scope="m")
            if i == 3:
                assert h is None or h.key != keys[3]
            else:
                assert h is not None and h.key == keys[i] and bytes(h.value) == f"v{i}".encode()
        assert c.lookup(unit(rng)[0], scope="m", text="q7").key == keys[7]
        k = c.insert(vs[0], b"later", scope="m")
        assert k > max(keys)  # keys are never reused
        with pytest.raises(LockedError):
            SemanticCache(path, dim=DIM)  # one writer process at a time
        c.insert(vs[1], b"other scope", scope="n")
        assert c.drop_scope("m") == 50 and len(c) == 1
        assert c.lookup(vs[1], scope="m") is None and c.lookup(vs[1], scope="n") is not None
    with pytest.raises(SlabcacheError):
        SemanticCache(path, dim=DIM + 1)


def test_lookup_many_matches_lookup(rng):
    c = SemanticCache(None, dim=DIM, trap_guard=False, slb_per_scope=2)
    vs = unit(rng, 30)
    scopes = [f"s{i % 3}" for i in range(30)]
    c.insert_many(vs, [bytes([i]) for i in range(30)], scopes=scopes)
    q = near(vs, rng)
    many = c.lookup_many(q, scopes=scopes)
    for i, h in enumerate(many):
        assert h is not None and bytes(h.value) == bytes([i])
    assert c.lookup_many(unit(rng, 3), scopes="s0") == [None, None, None]


def test_stats_histograms_and_latency(rng):
    c = SemanticCache(None, dim=DIM, trap_guard=False)
    vs = unit(rng, 10)
    c.insert_many(vs, [b"x"] * 10)
    for v in vs:
        c.lookup(v)
    for v in unit(rng, 5):
        c.lookup(v)
    st = c.stats()
    cat = st["categories"]["default"]
    assert cat["lookups"] == 15 and sum(cat["hits"].values()) == 10
    assert cat["hit_score_hist"].sum() == 10 and cat["miss_score_hist"].sum() == 5
    assert cat["latency_us_p50"] > 0 and cat["latency_us_p99"] >= cat["latency_us_p50"]
    assert len(st["hist_edges"]) == 101


def test_docstring_examples_run():
    import doctest

    import slabcache.semantic
    import slabcache.slb
    import slabcache.trap_guard

    for mod in (slabcache.semantic, slabcache.slb, slabcache.trap_guard):
        result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, mod.__name__
        assert result.attempted > 0


def test_large_partitions_turn_clustered_and_keep_working(rng):
    c = SemanticCache(None, dim=DIM, trap_guard=False, cluster_above=300, slb_per_scope=1)
    vs = unit(rng, 500)
    keys = c.insert_many(vs, [bytes([i % 256]) for i in range(500)], scopes="big")
    assert c._index.is_clustered("big\x1fdefault")
    found = sum(1 for i, v in enumerate(vs) if (h := c.lookup(v, scope="big")) and h.key == keys[i])
    assert found >= 490  # probing 1/32 of the pages can miss a few
    assert c.delete(keys[7]) and len(c._index) == 499
    with pytest.raises(InvalidArgumentError):
        SemanticCache(None, dim=DIM, cluster_above=-1)
