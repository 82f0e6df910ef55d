"""vAttention KV cache (slabcache.kv.vattn) on the CPU driver: pages, policies, data.

HostVMMDriver maps real memory (memfd + mmap), so these tests check the bytes as
well as the bookkeeping. They never touch an unmapped address (that would be a
SIGSEGV, as it would be an illegal-address fault on the GPU).
"""

from __future__ import annotations

import numpy as np
import pytest

from slabcache.errors import (
    AlreadyExistsError,
    ClosedError,
    InvalidArgumentError,
    InvalidFreeError,
    NotFoundError,
    OutOfMemoryError,
    SlabcacheError,
)
from slabcache.kv.vattn import HostVMMDriver, MapAhead, VAttnKVCache, cuda_driver_available

PAGE = 4096


def make(num_pages=16, max_slots=4, max_tokens=64, **kw):
    drv = HostVMMDriver(page_size=PAGE)
    # row = 2 layers * (K, V) * 1 head * 32 * 4 B = 512 B: 8 tokens a page
    args = dict(num_layers=2, num_kv_heads=1, head_dim=32, dtype="float32")
    args.update(kw)
    cache = VAttnKVCache(
        drv, max_slots=max_slots, max_tokens=max_tokens, num_pages=num_pages, **args
    )
    return drv, cache


def fill(cache, req, start, stop, base):
    """Token t of every layer: K = base + t, V = -(base + t)."""
    for layer in range(cache.num_layers):
        k, v = cache.request_kv(req, layer)
        vals = base + np.arange(start, stop, dtype=np.float32)
        k[start:stop] = vals[:, None, None] + layer * 0.5
        v[start:stop] = -vals[:, None, None] - layer * 0.5


def check(cache, req, bases):
    """``bases``: list of (start, stop, base) runs the request's tokens were written with."""
    for layer in range(cache.num_layers):
        k, v = cache.request_kv(req, layer)
        for start, stop, base in bases:
            vals = base + np.arange(start, stop, dtype=np.float32) + layer * 0.5
            np.testing.assert_array_equal(k[start:stop, 0, 0], vals)
            np.testing.assert_array_equal(v[start:stop, 0, 5], -vals)


# ---- driver ----------------------------------------------------------------------------


def test_host_driver_protocol_is_strict():
    drv = HostVMMDriver(page_size=PAGE, max_pages=2)
    va = drv.reserve(4 * PAGE)
    h = drv.create()
    drv.map(va, h)
    with pytest.raises(InvalidArgumentError):
        drv.map(va, h)  # already mapped
    with pytest.raises(InvalidArgumentError):
        drv.map(va + 1, h)  # unaligned
    with pytest.raises(InvalidFreeError):
        drv.release(h)  # still mapped
    with pytest.raises(InvalidFreeError):
        drv.free(va)  # has a mapping
    with pytest.raises(InvalidFreeError):
        drv.unmap(va + PAGE)  # nothing there
    drv.create()
    with pytest.raises(OutOfMemoryError):
        drv.create()  # max_pages
    drv.write(va + 10, b"abc")
    drv.unmap(va)
    drv.release(h)
    h2 = drv.create()  # reuses the file range: must come back zeroed
    drv.map(va, h2)
    assert drv.read(va + 10, 3) == b"\0\0\0"
    drv.close()


def test_host_driver_aliases_one_page_at_two_addresses():
    drv = HostVMMDriver(page_size=PAGE)
    a, b = drv.reserve(2 * PAGE), drv.reserve(2 * PAGE)
    h = drv.create()
    drv.map_batch([(a + PAGE, h), (b, h)])
    drv.write(b + 100, b"shared")
    assert drv.read(a + PAGE + 100, 6) == b"shared"
    h2 = drv.create()
    with pytest.raises(InvalidArgumentError):  # all or none: the first pair is undone
        drv.map_batch([(a, h2), (b, h2)])
    assert drv.mapping(a) is None
    drv.close()


# ---- layout and views --------------------------------------------------------------------


def test_views_are_one_strided_range_per_group():
    drv, cache = make(layers_per_group=1)
    assert cache.num_groups == 2 and cache.page_tokens == 16  # 256 B rows
    slot = cache.admit(5, 20)
    fill(cache, 5, 0, 20, 100.0)
    k0, v0 = cache.layer_kv(0)
    assert k0.shape == (4, cache.max_tokens, 1, 32)
    # token stride = one group row (K and V of its layers side by side), slot stride = range
    assert k0.strides[1] == cache.token_bytes and k0.strides[0] == cache.slot_bytes
    assert float(k0[slot, 19, 0, 0]) == 119.0 and float(v0[slot, 3, 0, 0]) == -103.0
    assert cache.stats()["mapped_pages"] == 2 * 2  # 20 tokens = 2 pages, in each group
    assert drv.mapped_pages == 4
    with pytest.raises(InvalidArgumentError):
        VAttnKVCache(
            HostVMMDriver(page_size=PAGE),
            num_layers=3,  # 3 layers * 2 * 32 * 4 = 768 B does not divide 4096
            num_kv_heads=1,
            head_dim=32,
            dtype="float32",
            max_slots=1,
            max_tokens=8,
            num_pages=1,
        )
    cache.close()
    assert drv.mapped_pages == 0 and drv.live_pages == 0


def test_torch_views_share_the_range():
    torch = pytest.importorskip("torch")
    drv = HostVMMDriver(page_size=PAGE)
    cache = VAttnKVCache(
        drv,
        num_layers=2,
        num_kv_heads=1,
        head_dim=32,
        dtype="bfloat16",
        max_slots=2,
        max_tokens=32,
        num_pages=8,
        framework="torch",
    )
    cache.admit(1, 10)
    k, _ = cache.request_kv(1, 1)
    assert k.dtype == torch.bfloat16 and k.shape == (10, 1, 32)
    k.fill_(2.0)
    assert float(cache.layer_kv(1)[0][cache.slot_of(1), :10].float().sum()) == 640.0
    cache.close()


# ---- admission, deferred reclamation, handle pool ----------------------------------------


def test_admission_under_budget_and_watermark():
    drv, cache = make(num_pages=10, watermark=0.2)  # keeps 2 pages free
    assert cache.admit(1, 40) is not None  # 5 pages, 5 left
    assert not cache.can_admit(32)  # 4 pages would leave 1 < 2
    assert cache.admit(2, 32) is None
    assert cache.admit(2, 24) is not None  # 3 pages leave 2
    # growth of an admitted request may use the watermark, then fails cleanly
    cache.extend(2, 32)  # 4 pages
    cache.extend(1, 48)  # 6 pages: all 10 used
    with pytest.raises(OutOfMemoryError):
        cache.extend(1, 56)
    assert cache.length(1) == 48  # unchanged by the failed call
    assert cache.stats()["mapped_pages"] == 10
    cache.close()


def test_finished_slot_keeps_pages_and_next_request_reuses_them():
    drv, cache = make(num_pages=8, precreate=8)
    s = cache.admit(1, 30)  # 4 pages
    assert drv.counts["create"] == 8 and drv.counts["map"] == 4
    cache.finish(1)
    assert cache.stats()["surplus_pages"] == 4 and drv.mapped_pages == 4
    assert cache.admit(2, 25) == s  # best fit: the slot with the pages
    assert drv.counts["map"] == 4 and drv.counts["unmap"] == 0
    cache.close()


def test_reclaims_surplus_pages_lru_when_budget_is_used():
    drv, cache = make(num_pages=6, max_slots=4)
    cache.admit(1, 16, now=0.0)  # 2 pages
    cache.admit(2, 16, now=1.0)  # 2 pages
    cache.finish(1, now=2.0)
    cache.finish(2, now=3.0)
    cache.admit(3, 8, slot=2, now=4.0)  # a fresh slot: 1 of the 2 pooled pages
    cache.extend(3, 40)  # 5 pages: the other pooled one, then 3 reclaimed, LRU slot first
    st1 = cache.slot_state(0)
    st2 = cache.slot_state(1)
    assert sum(map(len, st1[3])) == 0 and sum(map(len, st2[3])) == 1  # slot 0 was older
    assert drv.counts["unmap"] == 3
    cache.extend(3, 48)
    with pytest.raises(OutOfMemoryError):
        cache.extend(3, 56)
    cache.close()


def test_map_ahead_is_not_length_and_is_reclaimable():
    drv, cache = make(num_pages=6)
    cache.admit(1, 8)
    assert cache.map_tokens(1, 40) == 4  # 5 pages mapped, 1 holds tokens
    st = cache.stats()
    assert st["mapped_pages"] == 1 and st["surplus_pages"] == 4 and st["waste_bytes"] == 0
    assert cache.available_pages == 5
    assert cache.admit(2, 32) is not None  # 1 pooled page + 3 of request 1's map-ahead
    assert cache.pages_missing(1, 40) == 3
    assert cache.trim(1) == 1  # its one page of map-ahead left
    cache.close()


def test_map_ahead_cap_spreads_a_burst():
    drv, cache = make(num_pages=32, max_slots=4)
    for r in range(4):
        cache.admit(r, 8, slot=r)
    targets = [(r, 24) for r in range(4)]  # 2 more pages each
    assert cache.map_ahead(targets, max_pages=3) == 3
    assert cache.map_ahead(targets, max_pages=3) == 3
    assert cache.map_ahead(targets, max_pages=3) == 2
    assert cache.map_ahead(targets) == 0
    assert all(cache.extend(r, 24) == 0 for r in range(4))
    assert cache.map_ahead([(77, 8)]) == 0  # unknown requests are skipped
    cache.close()


def test_background_map_ahead_thread():
    drv, cache = make(num_pages=16)
    cache.admit(1, 8)
    with MapAhead(cache) as ahead:
        ahead.request([(1, 32), (42, 8)])  # 42 does not exist: a miss, not an error
        ahead.wait()
        assert ahead.pages_mapped == 3 and ahead.misses == 1
    assert cache.extend(1, 32) == 0 and cache.sync_maps == 1
    cache.close()


# ---- TTL pins -------------------------------------------------------------------------------


def test_ttl_pin_keeps_pages_until_expiry():
    drv, cache = make(num_pages=6, max_slots=2)
    s = cache.admit(1, 20, now=0.0)
    fill(cache, 1, 0, 20, 10.0)
    cache.finish(1, ttl_s=5.0, now=1.0)
    assert cache.available_pages == 3  # pinned pages are held
    assert cache.admit(2, 40, now=2.0) is None  # would need the pinned pages
    with pytest.raises(InvalidArgumentError):
        cache.extend(1, 21)  # pinned: resume first
    assert cache.resume(1, now=3.0) == s
    check(cache, 1, [(0, 20, 10.0)])
    cache.extend(1, 24)
    cache.finish(1, ttl_s=5.0, now=4.0)
    assert cache.resume(1, now=9.5) is None  # expired at 9.0
    assert cache.admit(2, 40, now=10.0) is not None
    cache.close()


# ---- prefix sharing -------------------------------------------------------------------------


def test_fork_shares_whole_pages_and_copies_the_tail():
    drv, cache = make(num_pages=16)
    p = cache.admit(1, 20)
    fill(cache, 1, 0, 20, 0.0)
    maps = drv.counts["map"]
    c = cache.fork(1, 2, 19)  # 2 whole pages shared, page 2 (tokens 16..18) copied
    assert c is not None and c != p
    hp, hc = cache.slot_state(p)[3][0], cache.slot_state(c)[3][0]
    assert hp[:2] == hc[:2] and hp[2] != hc[2]
    assert drv.counts["map"] - maps == 3 and cache.stats()["mapped_pages"] == 4
    check(cache, 2, [(0, 19, 0.0)])
    # both append; neither sees the other's tokens
    fill(cache, 2, 19, 19, 0.0)
    cache.extend(2, 30)
    fill(cache, 2, 19, 30, 500.0)
    cache.extend(1, 30)
    fill(cache, 1, 20, 30, 900.0)
    check(cache, 1, [(0, 20, 0.0), (20, 30, 900.0)])
    check(cache, 2, [(0, 19, 0.0), (19, 30, 500.0)])
    cache.close()


def test_reusing_a_forked_parents_slot_never_writes_shared_pages():
    drv, cache = make(num_pages=16, max_slots=2)
    p = cache.admit(1, 24)
    fill(cache, 1, 0, 24, 0.0)
    c = cache.fork(1, 2, 24)  # all three pages shared
    cache.finish(1)
    assert cache.admit(3, 24, slot=p) == p  # shared pages are dropped from slot p first
    fill(cache, 3, 0, 24, 7000.0)
    check(cache, 2, [(0, 24, 0.0)])
    check(cache, 3, [(0, 24, 7000.0)])
    assert c is not None
    cache.close()


# ---- swap to the host tier ------------------------------------------------------------------


def test_swap_out_and_in_is_byte_exact():
    drv, cache = make(num_pages=8, max_slots=2, host_pages=5)
    s = cache.admit(1, 20)
    fill(cache, 1, 0, 20, 3.0)
    cache.swap_out(1)
    assert cache.swapped == [1]
    with pytest.raises(AlreadyExistsError):
        cache.admit(1, 4)
    cache.admit(2, 20, slot=s)  # overwrite the pages the request had
    fill(cache, 2, 0, 20, 8000.0)
    cache.finish(2)
    s2 = cache.swap_in(1, slot=1 - s)
    assert s2 == 1 - s and cache.length(1) == 20 and cache.swapped == []
    check(cache, 1, [(0, 20, 3.0)])
    # the host tier holds 5 pages: not two 3-page requests
    cache.admit(3, 20)
    cache.swap_out(3)
    with pytest.raises(OutOfMemoryError):
        cache.swap_out(1)
    cache.finish(3)  # dropping a swapped request frees its host pages
    cache.swap_out(1)
    cache.close()


# ---- errors -------------------------------------------------------------------------------


def test_bad_input_raises_clear_errors():
    drv, cache = make()
    cache.admit(1, 8)
    with pytest.raises(AlreadyExistsError):
        cache.admit(1, 8)
    with pytest.raises(NotFoundError):
        cache.extend(9, 8)
    with pytest.raises(InvalidArgumentError):
        cache.extend(1, 10_000)
    with pytest.raises(InvalidArgumentError):
        cache.admit(2, -1)
    with pytest.raises(InvalidArgumentError):
        cache.layer_kv(2)
    with pytest.raises(InvalidArgumentError):
        cache.finish(1, ttl_s=0.0)
    with pytest.raises(InvalidArgumentError):
        cache.swap_out(1)  # no host tier
    with pytest.raises(InvalidArgumentError):
        cache.fork(1, 3, 9)  # longer than the parent
    with pytest.raises(InvalidArgumentError):
        make(watermark=1.0)
    with pytest.raises(InvalidArgumentError):
        make(max_slots=0)
    cache.close()
    with pytest.raises(ClosedError):
        cache.admit(5, 1)
    for e in (AlreadyExistsError, NotFoundError, InvalidArgumentError, ClosedError):
        assert issubclass(e, SlabcacheError)


@pytest.mark.skipif(not cuda_driver_available(), reason="needs libcuda and a GPU")
def test_cuda_driver_round_trip():  # pragma: no cover - runs on a GPU machine only
    from slabcache.kv.vattn import CudaVMMDriver

    drv = CudaVMMDriver()
    assert drv.page_size % (2 << 20) == 0
    va = drv.reserve(2 * drv.page_size)
    h = drv.create()
    drv.map_batch([(va, h), (va + drv.page_size, drv.create())])
    drv.unmap(va)
    drv.unmap(va + drv.page_size)
    drv.release(h)
    drv.free(va)


def test_docs_examples_run():
    import doctest
    import pathlib

    doc = pathlib.Path(__file__).resolve().parent.parent / "docs" / "vattn.md"
    res = doctest.testfile(str(doc), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert res.attempted >= 15 and res.failed == 0
