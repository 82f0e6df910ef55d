"""Reports, as skips with their reason, the vLLM tests the adapter cannot pass by design.

Loaded by :mod:`slabcache.integrations.vllm_pytest_plugin` (which also installs the
adapter); importing this module does not import vLLM. See that module for the rules.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

from ..errors import UnsupportedFeatureError

_SHA = "vLLM's SHA-256 block hash (the core hashes with BLAKE3 and keeps its hashes)"
_FREE_LIST = (
    "walks vLLM's free list (free_block_queue.fake_free_list_head) and passes free, "
    "never-cached blocks as a cache hit; the core refuses a hit not holding the prompt"
)
_HASH_MAP = "reads vLLM's block_pool.cached_block_hash_to_block (not mirrored)"
_AUX = (
    "vLLM's AuxOutputSchedulerConnector reads a group manager's block_pool and its "
    "SHA-256 block hashes (the adapter's group shims have no pool)"
)
_PORTED = "(its other checks are ported in tests/test_blocks_hybrid.py)"
_CACHED_BLOCK = "calls vLLM's block_pool.get_cached_block"
#: vLLM 0.33.0 test name (without parameters) -> why it cannot pass with the
#: adapter although the adapter's behaviour is the same (docs/blocks.md,
#: "vLLM's own tests").
KNOWN_DIFFERENCES: dict[str, str] = {
    "test_prefill": f"checks block_pool.blocks[i].block_hash against {_SHA}",
    "test_prefill_plp": f"checks block_pool.blocks[i].block_hash against {_SHA}",
    "test_decode": f"checks block_hash on a returned KVCacheBlock against {_SHA}",
    "test_prefill_hybrid_model": f"checks block_hash against {_SHA} {_PORTED}",
    "test_prefill_hybrid_model_eagle": f"checks block_hash against {_SHA} {_PORTED}",
    "test_streaming_lookahead_hashes_follow_recomputed_kv": f"expects {_SHA} on KVCacheBlocks",
    "test_kv_events_reconstruct_lookahead_block_hashes": f"compares event hashes with {_SHA}",
    "test_routed_experts_hashes_follow_scheduled_tokens": _AUX,
    "test_evicted_blocks_release_their_auxiliary_outputs_past_capacity": _AUX,
    "test_reset_prefix_cache": _HASH_MAP,
    "test_kv_cache_events": _HASH_MAP,
    "test_cache_hit_local_and_external": _FREE_LIST,
    "test_cache_hit_local_and_external_three_groups": _FREE_LIST,
    "test_cache_hit_local_and_external_three_groups_preempt_and_reallocate": _FREE_LIST,
    "test_cache_hit_local_and_external_two_groups_preempt_and_reallocate": _FREE_LIST,
    "test_eagle_with_sliding_window": f"{_CACHED_BLOCK} {_PORTED}",
    "test_pure_swa_dense_retention_caches_all": _CACHED_BLOCK,
    "test_block_stored_event_group_idx_multiple_groups": (
        "takes blocks out of vLLM's pool with block_pool.get_new_blocks, past the manager"
    ),
    "test_block_stored_event_group_idx_out_of_bounds": "appends to block_pool.kv_event_queue",
    "test_scheduler_publishes_lookahead_blocks_at_allocation": (
        "vLLM publishes lookahead blocks' events at allocation; the core stores a block "
        "when its tokens are known"
    ),
    "test_mm_prefix_caching": "its prompt holds token id -1; the core takes ids in [0, 2**31)",
}


def _unsupported(exc: BaseException | None) -> str | None:
    """The adapter's refusal message if ``exc`` (or its cause) is one."""
    while exc is not None:
        if isinstance(exc, UnsupportedFeatureError):
            return str(exc)
        if isinstance(exc, NotImplementedError) and str(exc).startswith("slabcache adapter:"):
            return str(exc)
        exc = exc.__cause__ or exc.__context__
    return None


def _skips_enabled() -> bool:
    return os.environ.get("SLABCACHE_VLLM_NO_SKIPS", "") in ("", "0")


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    if not _skips_enabled():
        return
    for item in items:
        reason = KNOWN_DIFFERENCES.get(item.originalname)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"slabcache adapter: {reason}"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if not _skips_enabled() or call.excinfo is None or report.outcome != "failed":
        return
    message = _unsupported(call.excinfo.value)
    if message is None:
        return
    path, line, _ = item.location
    report.outcome = "skipped"
    report.longrepr = (str(path), (line or 0) + 1, f"Skipped: unsupported: {message}")
