"""The KV data plane on CPU (numpy only): pool layout, coalesced transfers, host/disk tiers,
and a decode loop through the BlockManager's block tables against a contiguous reference."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slabcache import BlockManager, SlabAllocator
from slabcache.blocks import block_hashes
from slabcache.errors import (
    BufferExportedError,
    ClosedError,
    InvalidArgumentError,
    InvalidTypeError,
    NotFoundError,
    SlabcacheError,
)
from slabcache.kv import (
    ArenaKVTier,
    HostKVTier,
    KVCachePool,
    KVLayout,
    KVTransfer,
    TieredKVCache,
    plan_transfer,
)
from slabcache.kv.toy_model import ContiguousKV, PagedKV, ToyConfig, ToyLlama

LAY = KVLayout(num_layers=3, block_size=4, num_kv_heads=2, head_dim=8, dtype="float32")


def _fill_random(pool: KVCachePool, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for g in range(pool.layout.num_layers):
        b = pool.layer_bytes(g)
        b[:] = rng.integers(0, 256, size=b.shape, dtype=np.uint8)


# ---- pool layout -------------------------------------------------------------------


def test_pool_layout_and_dlpack_views_share_memory():
    pool = KVCachePool(LAY, num_blocks=5)
    t = pool.layer(1)
    assert t.shape == (5, 2, 4, 2, 8) and t.dtype == np.float32 and t.flags.c_contiguous
    assert LAY.block_bytes == 2 * 4 * 2 * 8 * 4
    # block b of a layer is one contiguous span of block_bytes: K then V
    t[3, 1, 2, 1, 5] = 7.0
    raw = pool.layer_bytes(1)
    off = ((1 * 4 + 2) * 2 + 1) * 8 + 5
    assert raw.shape == (5, LAY.block_bytes)
    assert raw[3].view(np.float32)[off] == 7.0
    assert np.from_dlpack(t) is not None and np.shares_memory(np.from_dlpack(t), raw)
    assert pool.nbytes == 5 * LAY.block_bytes_all_layers


def test_pool_bad_arguments_raise_family_errors():
    with pytest.raises(InvalidArgumentError):
        KVCachePool(LAY, num_blocks=0)
    with pytest.raises(InvalidTypeError):
        KVCachePool("layout", num_blocks=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        KVCachePool(LAY, 3, device="tpu")
    with pytest.raises(InvalidArgumentError):
        KVCachePool(KVLayout(1, 4, 1, 4, "bfloat16"), 3)  # numpy has no bfloat16
    with pytest.raises(InvalidArgumentError):
        KVLayout(0, 4, 1, 4)
    with pytest.raises(InvalidArgumentError):
        KVLayout(1, 4, 1, 4, "float64")
    pool = KVCachePool(LAY, 4)
    with pytest.raises(InvalidArgumentError):
        pool.copy_blocks(np.array([[0, 4]]))
    with pytest.raises(InvalidArgumentError):
        pool.write_blocks([0], np.zeros((1, 3), np.uint8))
    assert issubclass(InvalidArgumentError, SlabcacheError)


def test_cow_copies_copy_every_layer():
    pool = KVCachePool(LAY, 6)
    _fill_random(pool)
    before = [pool.layer_bytes(g).copy() for g in range(3)]
    pool.copy_blocks(np.array([[1, 4], [2, 5]], dtype=np.int32))
    for g in range(3):
        b = pool.layer_bytes(g)
        assert np.array_equal(b[4], before[g][1]) and np.array_equal(b[5], before[g][2])
        assert np.array_equal(b[:4], before[g][:4])


# ---- host tier and transfers ------------------------------------------------------------


def test_host_tier_is_slab_allocated_and_page_aligned():
    alloc = SlabAllocator()
    host = HostKVTier(LAY, num_blocks=10, allocator=alloc, slab_blocks=4, pin=False)
    assert host.num_slabs == 3 and host.nbytes == 12 * LAY.block_bytes_all_layers
    assert all(alloc.owns(a) and a % 4096 == 0 for a in host.slab_addresses)
    assert alloc.stats()["live_allocations"] == 3
    assert host.locate(9) == (2, 1)
    a = host.block_address(2, 9)
    assert a == host.slab_addresses[2] + (2 * 4 + 1) * LAY.block_bytes
    with pytest.raises(InvalidArgumentError):
        host.locate(10)
    host.close()
    host.close()  # idempotent
    assert alloc.stats()["live_allocations"] == 0
    with pytest.raises(ClosedError):
        host.block_view(0, 0, 0, 1)


def test_plan_is_one_copy_per_contiguous_range():
    ranges = np.array([[0, 0, 8], [10, 8, 3], [20, 11, 1]], dtype=np.int32)
    plan = plan_transfer(ranges, "out", slab_blocks=64, block_bytes=1024, short_bytes=0)
    assert plan.segments.tolist() == [[0, 0, 0, 8], [10, 0, 8, 3], [20, 0, 11, 1]]
    # a row crossing a slab boundary is split there, and only there
    plan = plan_transfer(np.array([[5, 6, 6]]), "in", slab_blocks=4, block_bytes=1, short_bytes=0)
    assert plan.segments.tolist() == [[6, 1, 1, 3], [9, 2, 0, 3]]
    # short rows go to the batched copy
    plan = plan_transfer(ranges, "out", slab_blocks=64, block_bytes=1024, short_bytes=4096)
    assert plan.segments.tolist() == [[0, 0, 0, 8]]
    assert plan.short_device.tolist() == [10, 11, 12, 20]
    assert plan.short_host.tolist() == [8, 9, 10, 11]
    per_block = plan_transfer(ranges, "out", slab_blocks=64, block_bytes=1024, coalesce=False)
    assert len(per_block.segments) == 12 and per_block.num_blocks == 12
    with pytest.raises(InvalidArgumentError):
        plan_transfer(np.array([[0, 0]]), "out", slab_blocks=4, block_bytes=1)
    with pytest.raises(InvalidArgumentError):
        plan_transfer(np.array([[0, 0, 0]]), "out", slab_blocks=4, block_bytes=1)


def _swap_round_trip(
    num_blocks: int, num_cpu: int, req_blocks: list[int], slab_blocks: int, caching: bool = False
):
    # Without prefix caching every swapped-in block is copied back; with it, blocks the
    # device still caches are reused, so the device must then be left alone.
    bm = BlockManager(
        num_blocks=num_blocks, block_size=4, num_cpu_blocks=num_cpu, enable_prefix_caching=caching
    )
    pool = KVCachePool(LAY, num_blocks)
    host = HostKVTier(LAY, num_cpu, slab_blocks=slab_blocks, pin=False)
    xfer = KVTransfer(pool, host, short_bytes=2 * LAY.block_bytes)
    _fill_random(pool, seed=len(req_blocks))
    reqs = []
    for i, nb in enumerate(req_blocks):
        bm.get_computed_blocks(i, np.arange(nb * 4) + 1000 * i)
        if bm.allocate_slots(i, nb * 4) is None:
            break
        reqs.append(i)
    saved = {
        r: np.concatenate([pool.layer_bytes(g)[bm.block_table(r)] for g in range(3)]) for r in reqs
    }
    copies = 0
    for r in reqs:
        ranges = bm.swap_out(r)
        if ranges is None:
            continue
        h = xfer.swap_out(ranges)
        h.synchronize()
        copies += h.num_copies
        host_table = bm.host_block_table(r)
        assert np.array_equal(
            host.read(host_table)
            .reshape(len(host_table), 3, -1)
            .transpose(1, 0, 2)
            .reshape(saved[r].shape),
            saved[r],
        )
    if not caching:
        for g in range(3):  # the device copies are gone
            pool.layer_bytes(g)[:] = 0
    for r in reqs:
        if bm.host_block_table(r) is None:
            continue
        ranges = bm.swap_in(r)
        assert ranges is not None
        xfer.swap_in(ranges).synchronize()
        got = np.concatenate([pool.layer_bytes(g)[bm.block_table(r)] for g in range(3)])
        assert np.array_equal(got, saved[r]), f"request {r} came back different"
    bm.check_invariants()
    host.close()
    return copies


@pytest.mark.parametrize("caching", [False, True])
def test_swap_round_trip_exact_bytes(caching):
    _swap_round_trip(32, 40, [5, 3, 7, 2], slab_blocks=6, caching=caching)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(1, 6), min_size=1, max_size=6),
    st.integers(2, 16),
)
def test_swap_round_trip_property(req_blocks, slab_blocks):
    _swap_round_trip(40, 48, req_blocks, slab_blocks)


def test_swap_copies_counted_per_range_and_layer():
    bm = BlockManager(num_blocks=16, block_size=4, num_cpu_blocks=16)
    pool = KVCachePool(LAY, 16)
    host = HostKVTier(LAY, 16, pin=False)
    xfer = KVTransfer(pool, host, short_bytes=0)
    bm.get_computed_blocks(1, np.arange(24))
    bm.allocate_slots(1, 24)
    ranges = bm.swap_out(1)
    assert len(ranges) == 1 and ranges[0, 2] == 6  # one contiguous range
    h = xfer.swap_out(ranges)
    assert h.num_copies == 3  # one copy per layer tensor
    assert xfer.swap_out(ranges, coalesce=False).num_copies == 18
    host.close()


# ---- disk tier --------------------------------------------------------------------------


def _rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, LAY.block_bytes_all_layers), dtype=np.uint8)


def test_disk_tier_reload_after_reopen(tmp_path):
    hashes = block_hashes(np.arange(40), 4)
    rows = _rows(len(hashes), 1)
    with ArenaKVTier(tmp_path / "kv", LAY, model="m") as d:
        assert d.put(hashes, rows) == 10
        assert d.put(hashes[:3], rows[:3]) == 0  # already there
    with ArenaKVTier(tmp_path / "kv", LAY, model="m") as d:
        assert len(d) == 10 and d.match_prefix(hashes) == 10
        assert np.array_equal(d.get(hashes), rows)
    # another model or layout never matches the same hashes
    with ArenaKVTier(tmp_path / "kv", LAY, model="other") as d:
        assert len(d) == 0 and d.match_prefix(hashes) == 0
        with pytest.raises(NotFoundError):
            d.get(hashes[:1])


def test_disk_tier_reload_in_a_fresh_process(tmp_path):
    hashes = block_hashes(np.arange(20), 4)
    rows = _rows(len(hashes), 2)
    np.save(tmp_path / "rows.npy", rows)
    code = textwrap.dedent(
        f"""
        import numpy as np
        from slabcache.blocks import block_hashes
        from slabcache.kv import ArenaKVTier, KVLayout
        lay = KVLayout(3, 4, 2, 8, "float32")
        d = ArenaKVTier({str(tmp_path / "kv")!r}, lay, model="m", sync="always")
        d.put(block_hashes(np.arange(20), 4), np.load({str(tmp_path / "rows.npy")!r}))
        import os; os._exit(0)   # no close, no flush: the WAL alone must carry it
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))
    with ArenaKVTier(tmp_path / "kv", LAY, model="m") as d:
        assert d.match_prefix(hashes) == 5
        assert np.array_equal(d.get(hashes), rows)


def test_disk_tier_byte_budget_evicts_least_recently_used(tmp_path):
    hashes = block_hashes(np.arange(40), 4)
    rows = _rows(10, 3)
    per = LAY.block_bytes_all_layers + 16
    with ArenaKVTier(tmp_path / "kv", LAY, byte_budget=4 * per) as d:
        d.put(hashes[:4], rows[:4])
        d.get(hashes[:1])  # block 0 is now the most recently used
        d.put(hashes[4:6], rows[4:6])
        assert d.nbytes <= 4 * per and len(d) == 4
        assert hashes[0].tobytes() in d and hashes[1].tobytes() not in d
        assert hashes[2].tobytes() not in d and hashes[5].tobytes() in d
        assert d.stats["evictions"] == 2
        assert len(d.arena) == 4  # evicted blocks are deleted from the arena
        assert d.put(hashes[3:4], rows[3:4]) == 0  # already there: only marked recently used
        d.put(hashes[7:8], rows[7:8])
        assert hashes[3].tobytes() in d and hashes[0].tobytes() not in d
    with ArenaKVTier(tmp_path / "kv", LAY, byte_budget=2 * per) as d:  # smaller after restart
        d.put(hashes[6:7], rows[6:7])
        assert len(d) == 2 and hashes[6].tobytes() in d
    with pytest.raises(InvalidArgumentError):
        ArenaKVTier(tmp_path / "x", LAY, byte_budget=-1)
    with pytest.raises(InvalidArgumentError):
        ArenaKVTier(tmp_path / "kv", LAY).put(hashes[:1], rows[:2])


# ---- the decode loop against the contiguous reference ------------------------------------


CFG = ToyConfig(vocab=97, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn=64)
BS = 4


class _Seq:
    """One sequence decoded twice: through the paged tiers and through a contiguous cache."""

    def __init__(self, model, tiers, req, tokens, ref=None):
        self.model, self.tiers, self.req = model, tiers, req
        self.tokens = list(tokens)
        self.paged = PagedKV(tiers.pool, lambda: tiers.manager.block_table(req))
        self.ref = ref if ref is not None else ContiguousKV(model.cfg, 256)

    def prefill(self, computed: int = 0, ref_done: int = 0):
        toks = np.array(self.tokens)
        lp = self.model.forward(toks[computed:], computed, self.paged)[-1]
        lr = self.model.forward(toks[ref_done:], ref_done, self.ref)[-1]
        return self._check(lp, lr)

    def decode(self, steps: int):
        for _ in range(steps):
            nxt = self.last
            pos = len(self.tokens)
            self.tokens.append(nxt)
            assert self.tiers.allocate(self.req, 1, [nxt]) is not None
            lp = self.model.forward(np.array([nxt]), pos, self.paged)[-1]
            lr = self.model.forward(np.array([nxt]), pos, self.ref)[-1]
            self._check(lp, lr)

    def _check(self, lp, lr):
        np.testing.assert_allclose(lp, lr, rtol=0, atol=1e-5)
        assert int(np.argmax(lp)) == int(np.argmax(lr))
        self.last = int(np.argmax(lp))
        return lp


def _tiers(tmp_path, num_blocks=40, num_cpu=48, budget=None, model="toy"):
    bm = BlockManager(num_blocks=num_blocks, block_size=BS, num_cpu_blocks=num_cpu)
    lay = CFG.layout(BS)
    pool = KVCachePool(lay, num_blocks)
    host = HostKVTier(lay, num_cpu, slab_blocks=16, pin=False)
    disk = ArenaKVTier(tmp_path / "kv", lay, model=model, byte_budget=budget)
    return TieredKVCache(bm, pool, host=host, disk=disk)


def _noise(tiers, req, n_tokens, seed):
    """Another request that takes the free blocks (evicting cached ones) and scribbles on them."""
    rng = np.random.default_rng(seed)
    prompt = rng.integers(0, CFG.vocab, n_tokens)
    assert tiers.admit(req, prompt) is not None
    for g in range(CFG.n_layers):
        tiers.pool.layer(g)[tiers.manager.block_table(req)] = rng.standard_normal(
            (len(tiers.manager.block_table(req)), 2, BS, CFG.n_kv_heads, CFG.head_dim)
        )
    tiers.manager.free(req)


def test_decode_loop_matches_contiguous_reference_across_swap_fork_and_reload(tmp_path):
    model = ToyLlama(CFG, seed=1)
    tiers = _tiers(tmp_path)
    bm = tiers.manager
    prompt = list(np.random.default_rng(5).integers(0, CFG.vocab, 18))

    # 1. prefill + decode
    a = _Seq(model, tiers, 1, prompt)
    adm = tiers.admit(1, prompt)
    assert adm.num_computed_tokens == 0
    a.prefill()
    a.decode(5)  # 23 tokens: last block partial

    # 2. fork: the child shares every block; appending into the shared partial block copies it
    tiers.fork(1, 2)
    b = _Seq(model, tiers, 2, a.tokens, ref=a.ref.copy())
    b.last = a.last
    b.decode(4)  # the child's first append triggers the copy-on-write copy
    assert tiers.stats["cow_copies"] >= 1
    a.decode(4)  # the parent still sees its own partial block
    assert a.tokens != b.tokens or a.tokens[:23] == b.tokens[:23]

    # 3. swap the parent out, let another request scribble over the device, swap it back
    assert tiers.swap_out(1) is not None
    assert tiers.swap_out(2) is not None  # both: no device block keeps a reference
    tiers.synchronize()
    _noise(tiers, 50, bm.num_free_blocks * BS, seed=9)  # every free block is overwritten
    assert tiers.swap_in(1) is not None
    assert tiers.swap_in(2) is not None
    tiers.synchronize()
    # the noise evicted every cached copy: the parent's whole table came from the host
    # (the child's shared full blocks are then reused from the parent's, only its own copied)
    assert tiers.stats["swap_in_blocks"] >= len(bm.block_table(1))
    a.decode(6)
    b.decode(3)
    bm.check_invariants()

    # 4. finish both; other traffic evicts their prefix blocks to disk
    full_a = list(a.tokens)
    bm.free(1)
    bm.free(2)
    for i in range(3):
        _noise(tiers, 60 + i, bm.num_free_blocks * BS - BS, seed=20 + i)
    assert tiers.stats["blocks_offloaded"] > 0

    # 5. a new request with the parent's whole sequence as prompt: its prefix comes from disk
    c = _Seq(model, tiers, 3, full_a)
    adm = tiers.admit(3, full_a)
    assert adm.num_disk_tokens > 0, adm
    assert adm.num_computed_tokens == (len(full_a) - 1) // BS * BS
    c.prefill(computed=adm.num_computed_tokens)  # the reference recomputes everything
    c.decode(5)
    bm.check_invariants()
    tiers.disk.close()
    tiers.host.close()

    # 6. restart: a new manager and pool, the same arena: the prefix reloads again
    tiers2 = _tiers(tmp_path)
    d = _Seq(model, tiers2, 7, full_a)
    adm = tiers2.admit(7, full_a)
    assert adm.num_device_tokens == 0
    assert adm.num_disk_tokens == (len(full_a) - 1) // BS * BS
    d.prefill(computed=adm.num_computed_tokens)
    d.decode(5)
    assert d.tokens == c.tokens
    tiers2.disk.close()
    tiers2.host.close()


def test_disk_hit_stops_at_first_missing_block(tmp_path):
    model = ToyLlama(CFG, seed=2)
    tiers = _tiers(tmp_path, num_blocks=24)
    prompt = list(range(1, 30))
    s = _Seq(model, tiers, 1, prompt)
    tiers.admit(1, prompt)
    s.prefill()
    tiers.manager.free(1)
    _noise(tiers, 9, tiers.manager.num_free_blocks * BS, seed=1)  # evicts every block
    hs = block_hashes(prompt, BS)
    n_disk = tiers.disk.match_prefix(hs)
    assert n_disk == 7
    # drop block 3 from disk: only blocks 0..2 may load, the rest is computed
    tiers.disk.arena.delete(tiers.disk._key_prefix + hs[3].tobytes())
    tiers.disk._lru.pop(hs[3].tobytes())
    s2 = _Seq(model, tiers, 2, prompt)
    adm = tiers.admit(2, prompt)
    assert adm.num_disk_tokens == 3 * BS
    s2.prefill(computed=adm.num_computed_tokens)
    s2.decode(3)
    tiers.disk.close()
    tiers.host.close()


def test_blocks_cached_and_evicted_before_any_forward_are_not_written_to_disk(tmp_path):
    """Within one drain window (no forward pass ran), a block stored and evicted again never
    held its KV: only genuine old content may reach the disk under a hash."""
    tiers = _tiers(tmp_path, num_blocks=8)
    bm = tiers.manager
    old = list(range(100, 116))  # 4 full blocks, computed ("forward" wrote them)
    tiers.admit(1, old)
    for g in range(CFG.n_layers):
        tiers.pool.layer(g)[bm.block_table(1)] = 1.0
    bm.free(1)
    # no after_schedule from here on: request 2 is cached at allocation, freed before its
    # forward, and request 3 evicts both its blocks and request 1's
    bm.get_computed_blocks(2, list(range(200, 216)))
    bm.allocate_slots(2, 16)
    bm.free(2)
    bm.get_computed_blocks(3, list(range(300, 332)))
    bm.allocate_slots(3, 32)
    tiers.after_schedule()
    assert tiers.disk.match_prefix(block_hashes(old, BS)) == 4
    assert tiers.disk.match_prefix(block_hashes(list(range(200, 216)), BS)) == 0
    rows = tiers.disk.get(block_hashes(old, BS))
    assert np.all(rows.view(np.float32) == 1.0)
    tiers.disk.close()
    tiers.host.close()


@pytest.mark.parametrize(
    "mod", ["layout", "pool", "host", "transfer", "disk", "tiers", "toy_model"]
)
def test_docstring_examples_run(mod):
    import doctest
    import importlib

    m = importlib.import_module(f"slabcache.kv.{mod}")
    result = doctest.testmod(m, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_host_close_with_a_live_view_raises_and_can_be_retried():
    alloc = SlabAllocator()
    host = HostKVTier(LAY, 8, allocator=alloc, slab_blocks=4, pin=False)
    v = host.block_view(0, 1, 0, 2)
    with pytest.raises(BufferExportedError):
        host.close()
    with pytest.raises(ClosedError):
        host.block_view(0, 0, 0, 1)
    assert alloc.stats()["live_allocations"] == 1  # only the slab still viewed
    del v
    host.close()
    assert alloc.stats()["live_allocations"] == 0


def test_disk_get_parallel_copy_is_exact(tmp_path):
    lay = KVLayout(4, 16, 8, 64, "float16")  # 64 KiB per layer block: a 16-block read = 4 MiB
    hs = block_hashes(np.arange(16 * 16), 16)
    rows = np.random.default_rng(4).integers(
        0, 256, (16, lay.block_bytes_all_layers), dtype=np.uint8
    )
    with ArenaKVTier(tmp_path / "kv", lay, read_threads=4) as d:
        d.put(hs, rows)
        assert np.array_equal(d.get(hs), rows)
        out = np.empty_like(rows)
        assert d.get(hs[::-1], out=out) is out and np.array_equal(out, rows[::-1])
        with pytest.raises(InvalidArgumentError):
            d.get(hs, out=np.empty((3, 3), np.uint8))


def test_tiered_cache_refuses_mismatched_pieces(tmp_path):
    bm = BlockManager(num_blocks=8, block_size=4, num_cpu_blocks=8)
    with pytest.raises(InvalidArgumentError):
        TieredKVCache(bm, KVCachePool(LAY, 9))  # block count differs
    with pytest.raises(InvalidArgumentError):
        TieredKVCache(bm, KVCachePool(KVLayout(3, 8, 2, 8, "float32"), 8))  # block size
    with pytest.raises(InvalidArgumentError):
        TieredKVCache(bm, KVCachePool(LAY, 8), host=HostKVTier(LAY, 4, pin=False))
    other = KVLayout(3, 4, 2, 8, "float16")
    with pytest.raises(InvalidArgumentError):
        TieredKVCache(bm, KVCachePool(LAY, 8), disk=ArenaKVTier(tmp_path / "kv", other))
    with pytest.raises(InvalidArgumentError):
        KVTransfer(KVCachePool(LAY, 8), HostKVTier(other, 8, pin=False))
    tiers = TieredKVCache(bm, KVCachePool(LAY, 8))
    tiers.admit(1, list(range(6)))
    with pytest.raises(InvalidArgumentError):
        tiers.swap_out(1)  # no host tier
    host = HostKVTier(LAY, 8, pin=False)
    with pytest.raises(InvalidArgumentError):
        KVTransfer(KVCachePool(LAY, 8), host, short_kernel="cuda")  # type: ignore[arg-type]
    xfer = KVTransfer(KVCachePool(LAY, 8), host)
    with pytest.raises(InvalidArgumentError):
        xfer.swap_out(np.array([[6, 0, 3]]))  # past the device pool
    with pytest.raises(InvalidArgumentError):
        xfer.swap_in(np.array([[7, 0, 2]]))  # past the host tier
    host.close()


def test_admission_that_does_not_fit_allocates_nothing(tmp_path):
    tiers = _tiers(tmp_path, num_blocks=4)
    assert tiers.admit(1, list(range(40))) is None
    assert tiers.manager.num_free_blocks == 4
    tiers.disk.close()
    tiers.host.close()


def test_docs_worked_example_runs(tmp_path, monkeypatch):
    doc = os.path.join(os.path.dirname(__file__), "..", "docs", "kv_tiers.md")
    with open(doc) as f:
        text = f.read()
    code = text.split("## Worked example", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    code = code.replace('"/tmp/kv-arena"', repr(str(tmp_path / "kv-arena")))
    exec(compile(code, "kv_tiers.md", "exec"), {})


# ---- random interleavings: every live request always reads the KV its tokens produce ----

SLAY = KVLayout(num_layers=2, block_size=4, num_kv_heads=1, head_dim=4, dtype="float32")


def _kv_of(tokens: list[int], layer: int) -> np.ndarray:
    """The KV a position holds: a function of its whole prefix (like a real model's), so
    blocks shared by prefix caching or reloaded from disk must carry the same values."""
    h = hash((layer, *tokens)) & 0xFFFFFF
    return (np.arange(8, dtype=np.float32) + np.float32(h)).reshape(2, 1, 4)


def _compute(tiers, req, tokens, start):
    bs = SLAY.block_size
    table = tiers.manager.block_table(req)
    for p in range(start, len(tokens)):
        for g in range(SLAY.num_layers):
            kv = _kv_of(tokens[: p + 1], g)
            tiers.pool.write_tokens(
                g, np.array([table[p // bs] * bs + p % bs]), kv[0][None], kv[1][None]
            )


def _check(tiers, req, tokens, upto=None):
    n = len(tokens) if upto is None else upto
    for g in range(SLAY.num_layers):
        k, v = tiers.pool.gather_tokens(g, tiers.manager.block_table(req).astype(np.int64), n)
        for p in range(n):
            want = _kv_of(tokens[: p + 1], g)
            assert np.array_equal(k[p], want[0]) and np.array_equal(v[p], want[1]), (req, p)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_random_interleavings_keep_every_request_s_kv(tmp_path_factory, seed):
    rng = np.random.default_rng(seed)
    path = tmp_path_factory.mktemp("kv")
    bm = BlockManager(num_blocks=24, block_size=4, num_cpu_blocks=24)
    budget = [None, 6, 1000][int(rng.integers(0, 3))]
    if budget is not None:
        budget *= SLAY.block_bytes_all_layers + 16
    tiers = TieredKVCache(
        bm,
        KVCachePool(SLAY, 24),
        host=HostKVTier(SLAY, 24, slab_blocks=int(rng.integers(2, 9)), pin=False),
        disk=ArenaKVTier(path / "a", SLAY, byte_budget=budget),
    )
    families = [list(rng.integers(0, 50, 16)) for _ in range(2)]
    running: dict[int, list[int]] = {}
    swapped: dict[int, list[int]] = {}
    next_id = 0
    for _ in range(60):
        op = rng.choice(["new", "new", "decode", "decode", "fork", "swap", "free", "churn"])
        if op == "churn":  # a one-off request that evicts cached blocks (to the disk tier)
            next_id += 1
            prompt = list(rng.integers(50, 100, rng.integers(8, 48)))
            if tiers.admit(next_id, prompt) is None:
                bm.free(next_id)
            else:
                _compute(tiers, next_id, prompt, 0)
                bm.free(next_id)
        elif op == "new" or not running and not swapped:
            next_id += 1
            fam = families[int(rng.integers(0, 2))]
            prompt = fam[: int(rng.integers(1, 17))] + list(rng.integers(0, 50, rng.integers(0, 6)))
            adm = tiers.admit(next_id, prompt)
            if adm is None:
                bm.free(next_id)
                continue
            _check(tiers, next_id, prompt, upto=adm.num_computed_tokens)  # hits and reloads
            _compute(tiers, next_id, prompt, adm.num_computed_tokens)
            running[next_id] = prompt
        elif op == "decode" and running:
            r = int(rng.choice(list(running)))
            tok = int(rng.integers(0, 50))
            if tiers.allocate(r, 1, [tok]) is not None:
                running[r].append(tok)
                _compute(tiers, r, running[r], len(running[r]) - 1)
        elif op == "fork" and running:
            r = int(rng.choice(list(running)))
            next_id += 1
            tiers.fork(r, next_id)
            running[next_id] = list(running[r])
        elif op == "swap":
            if swapped and (rng.random() < 0.5 or not running):
                r = int(rng.choice(list(swapped)))
                if tiers.swap_in(r) is not None:
                    running[r] = swapped.pop(r)
            elif running:
                r = int(rng.choice(list(running)))
                if tiers.swap_out(r) is not None:
                    swapped[r] = running.pop(r)
        elif op == "free" and (running or swapped):
            pool_ = running if running and (not swapped or rng.random() < 0.7) else swapped
            r = int(rng.choice(list(pool_)))
            bm.free(r)
            del pool_[r]
        for r, toks in running.items():
            _check(tiers, r, toks)
        if budget is not None:
            assert tiers.disk.nbytes <= budget
    bm.check_invariants()
    tiers.disk.close()
    tiers.host.close()


def test_step_api_runs_cow_copies_and_offloads(tmp_path):
    from slabcache import StepBatch

    bm = BlockManager(num_blocks=12, block_size=4)
    tiers = TieredKVCache(
        bm, KVCachePool(SLAY, 12), disk=ArenaKVTier(tmp_path / "a", SLAY, model="m")
    )
    prompt = list(range(1, 11))  # 2 full blocks + a partial one
    res = tiers.step(StepBatch.from_lists([1], [100], [prompt]))
    assert res.num_scheduled.tolist() == [10]
    _compute(tiers, 1, prompt, 0)
    tiers.fork(1, 2)
    res = tiers.step(StepBatch.from_lists([1, 2], [1, 1], [[20], [30]]))
    assert len(res.copies) == 1  # the shared partial block was copied for the writer
    _compute(tiers, 1, prompt + [20], 10)
    _compute(tiers, 2, prompt + [30], 10)
    _check(tiers, 1, prompt + [20])
    _check(tiers, 2, prompt + [30])
    # finishing both and flooding the pool pushes their full blocks to disk
    tiers.step(StepBatch.from_lists([9], [48], [list(range(100, 148))], finished=[1, 2]))
    assert tiers.disk.match_prefix(block_hashes(prompt, 4)) == 2
    tiers.disk.close()
