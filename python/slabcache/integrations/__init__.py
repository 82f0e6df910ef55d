"""Adapters that plug slabcache pieces into other systems (vLLM, ...).

Each submodule imports its host system lazily, so ``import slabcache``
never needs it installed.
"""
