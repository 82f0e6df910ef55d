"""``SortedDict`` as a name for :class:`slabcache.BSkipList`, for conformance runs.

Only renames: ``_reset(load)`` is sortedcontainers' internal sublist-size
knob, which a B-skiplist has no counterpart for (its node size is fixed at
build time), so it does nothing; ``iteritems``/``iterkeys``/``itervalues``
are the Python 2 names older upstream test modules still call (real
``SortedDict`` 2.4 lacks them too). ``_check`` is the native invariant check
under the name sortedcontainers' tests call.
"""

from __future__ import annotations

from slabcache import BSkipList


class SortedDict(BSkipList):
    """``BSkipList`` under sortedcontainers' name (so reprs read ``SortedDict(...)``)."""

    __slots__ = ()

    def _reset(self, load: int) -> None:
        """sortedcontainers' load factor: nothing to tune here."""

    def iteritems(self):  # type: ignore[no-untyped-def]
        return iter(self.items())

    def iterkeys(self):  # type: ignore[no-untyped-def]
        return iter(self.keys())

    def itervalues(self):  # type: ignore[no-untyped-def]
        return iter(self.values())
