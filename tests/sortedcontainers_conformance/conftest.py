"""Lets the conformance tests import ``sorteddict_adapter`` beside them under every pytest
import mode (the installed-wheel run uses ``--import-mode=importlib``, which does not put a
test's own folder on ``sys.path``)."""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
