"""Drift guard: the installed vLLM's KVCacheManager must still match the adapter.

Skips when vLLM is not installed (CI); run in the vLLM venv
(``PYTHONPATH=python /work/venvs/vllm/bin/python -m pytest tests/test_blocks_vllm_drift.py``).
"""

from __future__ import annotations

import inspect

import pytest

pytest.importorskip("vllm.v1.core.kv_cache_manager")

from slabcache.integrations import vllm as adapter  # noqa: E402


def test_constructor_and_allocate_slots_signatures_unchanged():
    init_sig, alloc_sig = adapter.signature_of_installed_vllm()
    assert init_sig == adapter.KV_CACHE_MANAGER_SIGNATURE
    assert alloc_sig == adapter.ALLOCATE_SLOTS_SIGNATURE
    # ... and the adapter's own methods take exactly those parameters.
    ours = adapter.SlabcacheKVCacheManager
    assert adapter._params(ours.__init__) == adapter.KV_CACHE_MANAGER_SIGNATURE
    assert adapter._params(ours.allocate_slots) == adapter.ALLOCATE_SLOTS_SIGNATURE


def test_adapter_has_every_public_method_of_kv_cache_manager():
    from vllm.v1.core.kv_cache_manager import KVCacheManager

    theirs = {n for n, _ in inspect.getmembers(KVCacheManager) if not n.startswith("_")}
    ours = {n for n, _ in inspect.getmembers(adapter.SlabcacheKVCacheManager)}
    missing = sorted(theirs - ours)
    assert not missing, f"vLLM's KVCacheManager has methods the adapter lacks: {missing}"


def test_adapter_parameters_match_vllm_method_by_method():
    from vllm.v1.core.kv_cache_manager import KVCacheManager

    for name, fn in inspect.getmembers(adapter.SlabcacheKVCacheManager, inspect.isfunction):
        theirs = getattr(KVCacheManager, name, None)
        if name.startswith("_") or not inspect.isfunction(theirs):
            continue
        ours_p = list(inspect.signature(fn).parameters)
        theirs_p = list(inspect.signature(theirs).parameters)
        assert ours_p == theirs_p, f"{name}: {ours_p} != {theirs_p}"
