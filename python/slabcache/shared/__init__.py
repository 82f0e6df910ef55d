"""Shared tiers on a Redis server behind slabcache's local (near) caches.

* :class:`RedisSemanticTier`: the :class:`~slabcache.SemanticCache`'s shared tier
  (``SemanticCache(..., shared="redis://...", namespace=...)``).
* :class:`RedisKVTier`: prefix KV blocks in Redis by fingerprint + chained hash, and
  :class:`NearFarKVTier`: an :class:`~slabcache.kv.ArenaKVTier` in front of it.

Needs ``pip install "slabcache[redis]"`` (redis-py + hiredis). See ``docs/shared_tier.md``.

    >>> from slabcache.shared import RedisOptions
    >>> RedisOptions(lookup_timeout_s=0.02).lookup_timeout_s
    0.02
"""

from ._client import CircuitBreaker, RedisOptions, SharedAuthError, SharedTierError
from .redis_kv import NearFarKVTier, RedisKVTier
from .redis_semantic import RedisSemanticTier

__all__ = [
    "CircuitBreaker",
    "NearFarKVTier",
    "RedisKVTier",
    "RedisOptions",
    "RedisSemanticTier",
    "SharedAuthError",
    "SharedTierError",
]
