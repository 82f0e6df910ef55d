"""Every ``stats()`` result has exactly the keys its TypedDict in ``slabcache.stats_types``
declares (nested dicts too), so the declared schema cannot drift from what the code returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from slabcache import BlobArena, BlockManager, SemanticCache, SlabAllocator
from slabcache import stats_types as T
from slabcache.kv import ArenaKVTier, KVCachePool, KVLayout, TieredKVCache


def _declared(schema: Any) -> set[str]:
    return set(schema.__required_keys__ | schema.__optional_keys__)


def _same_keys(got: dict[str, Any], schema: Any) -> None:
    assert set(got) == _declared(schema), (
        f"{schema.__name__}: returned but not declared {sorted(set(got) - _declared(schema))}, "
        f"declared but not returned {sorted(_declared(schema) - set(got))}"
    )


def test_allocator_stats() -> None:
    a = SlabAllocator()
    x = a.alloc(64)
    s = a.stats()
    _same_keys(s, T.SlabStats)
    assert s["classes"], "one class is in use"
    for c in s["classes"]:
        _same_keys(c, T.SlabClassStats)
    a.free(x)


def test_arena_stats(tmp_path: Any) -> None:
    with BlobArena(tmp_path / "a", sync="none") as ar:
        ar.put(b"k", b"v")
        s = ar.stats()
    _same_keys(s, T.ArenaStats)
    _same_keys(s["recovery"], T.ArenaRecoveryStats)


def test_arena_reports(tmp_path: Any) -> None:
    with BlobArena(tmp_path / "a", sync="none") as ar:
        ar.put(b"k", b"v")
        ar.put(b"k", b"w")
        _same_keys(ar.compact(), T.ArenaCompactReport)
        _same_keys(ar.verify(), T.ArenaVerifyReport)
    r = BlobArena.repair(tmp_path / "a")
    _same_keys(r, T.ArenaRepairReport)
    assert isinstance(r["backup_dir"], Path) and isinstance(r["dropped"], list)


def test_block_manager_stats() -> None:
    _same_keys(BlockManager(num_blocks=8, block_size=4).stats(), T.BlockManagerStats)


def test_kv_tier_stats(tmp_path: Any) -> None:
    lay = KVLayout(num_layers=1, block_size=4, num_kv_heads=1, head_dim=4, dtype="float32")
    with ArenaKVTier(tmp_path / "kv", lay, model="m") as disk:
        _same_keys(disk.stats, T.ArenaKVTierStats)
        tiers = TieredKVCache(BlockManager(num_blocks=8, block_size=4), KVCachePool(lay, 8))
        _same_keys(tiers.stats, T.TieredKVCacheStats)


def test_vattn_kv_cache_stats() -> None:
    from slabcache.kv.vattn import HostVMMDriver, VAttnKVCache

    cache = VAttnKVCache(
        HostVMMDriver(page_size=4096),
        max_slots=2,
        max_tokens=16,
        num_pages=4,
        num_layers=1,
        num_kv_heads=1,
        head_dim=8,
        dtype="float32",
    )
    _same_keys(cache.stats(), T.VAttnKVCacheStats)


def test_semantic_cache_stats() -> None:
    cache = SemanticCache(None, dim=8)
    v = np.ones(8, np.float32)
    cache.insert(v, b"answer", text="prompt")
    assert cache.lookup(v, text="prompt") is not None
    s = cache.stats()
    _same_keys(s, T.SemanticCacheStats)
    assert s["categories"], "one category was used"
    for cat in s["categories"].values():
        _same_keys(cat, T.SemanticCategoryStats)
    cache.close()
