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
