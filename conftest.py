"""Root pytest configuration.

pytest also collects the package's modules (``--doctest-modules``, see pyproject.toml), so a
module that imports an optional GPU package at import time is set aside where that package is
missing; its code is exercised on the device instead.
"""

from __future__ import annotations

import importlib.util

collect_ignore: list[str] = []
if importlib.util.find_spec("triton") is None:
    collect_ignore.append("python/slabcache/kv/_copy_kernel.py")
