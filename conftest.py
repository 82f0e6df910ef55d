"""Root pytest configuration.

pytest also collects the package's modules (``--doctest-modules``, see pyproject.toml), so a
module that needs an optional heavy package at import time is set aside where that package is
missing: the Triton copy kernel runs on the device, the vLLM pytest plugin inside a vLLM venv.
"""

from __future__ import annotations

import importlib.util

#: module (relative to the repository root) -> the optional package it imports at load time
_NEEDS = {
    "python/slabcache/kv/_copy_kernel.py": "triton",
    "python/slabcache/integrations/vllm_pytest_plugin.py": "vllm",
}

collect_ignore: list[str] = [
    path for path, package in _NEEDS.items() if importlib.util.find_spec(package) is None
]
