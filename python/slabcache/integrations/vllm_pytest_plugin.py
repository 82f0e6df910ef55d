"""pytest plugin: runs vLLM's own tests with slabcache's KV-cache manager.

``pytest -p slabcache.integrations.vllm_pytest_plugin tests/v1/core/...`` (in a
vLLM source tree) replaces ``KVCacheManager`` in vLLM's scheduler and
kv_cache_manager modules before the test modules import it, so both the
scheduler tests (through ``Scheduler``) and the prefix-caching tests (which
build ``KVCacheManager`` directly) exercise the adapter.

Two kinds of test are reported as skipped, each with its reason (``-rs``
lists them), instead of failing:

* a test whose model or request uses a feature the adapter refuses: the
  adapter raises :class:`slabcache.UnsupportedFeatureError` (a
  ``NotImplementedError``) naming it, at construction or at the call, and
  never gives an answer that differs from vLLM's; the skip reason is that
  message (Mamba and HiSparse groups, mixed block sizes, cross attention,
  context parallelism, ...);
* a test in :data:`KNOWN_DIFFERENCES`: it reads a vLLM internal the adapter
  does not mirror, or checks a documented difference (block hashes are
  BLAKE3, not vLLM's SHA-256). Each entry names the test and says why.

``SLABCACHE_VLLM_NO_SKIPS=1`` turns both off (every such test then fails,
as it would without the plugin's bookkeeping).
"""

from __future__ import annotations

from ._vllm_test_skips import (
    KNOWN_DIFFERENCES,
    pytest_collection_modifyitems,
    pytest_runtest_makereport,
)
from .vllm import install

__all__ = ["KNOWN_DIFFERENCES", "pytest_collection_modifyitems", "pytest_runtest_makereport"]

install()

# vsched: vLLM's tests build ``Scheduler`` from vLLM's module; it is replaced
# by SlabcacheScheduler (one-call fast path, stock schedule() outside its
# subset). vLLM's scheduler subclasses are imported first: they keep vLLM's base.
import vllm.v1.core.sched.async_scheduler  # noqa: E402,F401
import vllm.v1.core.sched.diffusion_scheduler  # noqa: E402,F401
import vllm.v1.core.sched.scheduler as _sched  # noqa: E402

from . import vllm as _adapter  # noqa: E402

_sched.Scheduler = _adapter.SlabcacheScheduler  # type: ignore[misc]
