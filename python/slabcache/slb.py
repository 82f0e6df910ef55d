"""The semantic lookaside buffer: a small per-scope FP32 buffer scanned before an index.

:class:`SemanticLookasideBuffer` keeps the most recently inserted or hit
vectors of each scope as unit-normalised float32 rows and answers "which
stored vector of this scope is nearest, if any is at least ``threshold``
similar (cosine)?" by scanning them with SIMD dot products (AVX2+FMA where
the CPU has it). Capacity is bounded per scope and globally; the least
recently used row goes first. A scope is a hard partition: a query never
sees another scope's rows.

    >>> import numpy as np
    >>> from slabcache import SemanticLookasideBuffer
    >>> slb = SemanticLookasideBuffer(dim=3, per_scope_capacity=64, capacity=1024)
    >>> slb.insert(np.array([1, 0, 0], dtype=np.float32), key=7, scope="gpt-4o")
    []
    >>> slb.find_nearest(np.array([0.99, 0.1, 0], dtype=np.float32), 0.95, scope="gpt-4o")[0]
    7
    >>> slb.find_nearest(np.array([1, 0, 0], dtype=np.float32), 0.5, scope="claude") is None
    True

``find_nearest`` is the hot path: it takes a C-contiguous float32 ``[dim]``
numpy array as is (anything else raises
:class:`~slabcache.errors.InvalidTypeError`) and costs about a microsecond
from Python for a few dozen rows.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from . import _native
from .errors import InvalidArgumentError, InvalidTypeError

__all__ = ["SemanticLookasideBuffer"]


def _as_vector(x: object, dim: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        raise InvalidTypeError(f"vectors must be floating-point arrays, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != dim:
        raise InvalidArgumentError(f"a vector must have shape [{dim}], got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _as_matrix(x: object, dim: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        raise InvalidTypeError(f"vectors must be floating-point arrays, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise InvalidArgumentError(f"vectors must have shape [n, {dim}], got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _check_key(key: object) -> int:
    if isinstance(key, bool) or not isinstance(key, int | np.integer):
        raise InvalidTypeError(f"key must be an int, got {type(key).__name__}")
    if not 0 <= int(key) < 2**63:
        raise InvalidArgumentError(f"key must be in 0..2**63-1, got {key}")
    return int(key)


class SemanticLookasideBuffer(_native.SemanticLookasideBuffer):
    """Per-scope FP32 rows with LRU capacity, scanned exhaustively with SIMD.

    Args:
        dim: vector width.
        per_scope_capacity: rows kept per scope (the scope's LRU row goes when full).
        capacity: rows kept in all scopes together (the global LRU row goes when full).

    Scores are cosine similarities in ``[-1, 1]``; thresholds outside that range raise
    :class:`~slabcache.errors.InvalidArgumentError`. ``threshold=1.0`` matches only
    vectors equal up to float rounding.

        >>> slb = SemanticLookasideBuffer(2, per_scope_capacity=1)
        >>> slb.insert([1.0, 0.0], key=1)
        []
        >>> slb.insert([0.0, 1.0], key=2)     # scope "" is full: key 1 goes
        [1]
        >>> len(slb), 2 in slb
        (1, True)
    """

    __slots__ = ()

    def __init__(self, dim: int, per_scope_capacity: int = 256, capacity: int = 16384) -> None:
        # The native __new__ built the buffer from the same arguments.
        super().__init__()

    def insert(self, vector: npt.ArrayLike, key: int, scope: str = "") -> list[int]:
        """Adds (or replaces) ``key``'s vector in ``scope``; returns the keys evicted."""
        if not isinstance(scope, str):
            raise InvalidTypeError(f"scope must be a str, got {type(scope).__name__}")
        return list(self._insert(scope, _check_key(key), _as_vector(vector, self.dim)))

    def find_many(
        self,
        queries: npt.ArrayLike,
        thresholds: npt.ArrayLike | float,
        scopes: list[str] | str = "",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batch :meth:`find_nearest`: ``queries [m, dim]``, one threshold and scope each
        (or one for all). Returns ``(keys int64 [m], scores float32 [m])``, key ``-1``
        (score ``-inf``) for a miss.

            >>> slb = SemanticLookasideBuffer(2)
            >>> _ = slb.insert([1.0, 0.0], key=5)
            >>> keys, _ = slb.find_many(np.array([[1, 0], [0, 1]], dtype=np.float32), 0.9)
            >>> keys.tolist()
            [5, -1]
        """
        q = _as_matrix(queries, self.dim)
        m = q.shape[0]
        sc = [scopes] * m if isinstance(scopes, str) else list(scopes)
        if len(sc) != m:
            raise InvalidArgumentError(f"got {len(sc)} scopes for {m} queries")
        t = np.broadcast_to(np.asarray(thresholds, dtype=np.float32), (m,))
        return self._find_many(q, sc, np.ascontiguousarray(t))

    def __repr__(self) -> str:
        return (
            f"SemanticLookasideBuffer(dim={self.dim}, per_scope_capacity="
            f"{self.per_scope_capacity}, capacity={self.capacity}, len={len(self)})"
        )
