"""pytest plugin: runs vLLM's own tests with slabcache's KV-cache manager.

``pytest -p slabcache.integrations.vllm_pytest_plugin tests/v1/core/...`` (in a
vLLM source tree) replaces ``KVCacheManager`` in vLLM's scheduler and
kv_cache_manager modules before the test modules import it, so both the
scheduler tests (through ``Scheduler``) and the prefix-caching tests (which
build ``KVCacheManager`` directly) exercise the adapter.
"""

from __future__ import annotations

from .vllm import install

install()

# vsched: vLLM's tests build ``Scheduler`` from vLLM's module; it is replaced
# by SlabcacheScheduler (one-call fast path, stock schedule() outside its
# subset). vLLM's scheduler subclasses are imported first: they keep vLLM's base.
import vllm.v1.core.sched.async_scheduler  # noqa: E402,F401
import vllm.v1.core.sched.diffusion_scheduler  # noqa: E402,F401
import vllm.v1.core.sched.scheduler as _sched  # noqa: E402

from . import vllm as _adapter  # noqa: E402

_sched.Scheduler = _adapter.SlabcacheScheduler  # type: ignore[misc]
