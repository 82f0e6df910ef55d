"""``python -m slabcache`` runs the ``slabcache`` command."""

import sys

from .cli import main

sys.exit(main())
