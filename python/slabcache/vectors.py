"""INT8 SIMD vector search: a FAISS-shaped index over quantized vectors.

Vectors are stored as INT8 codes with one factor per vector (symmetric codes,
or offset + scale for non-negative data). Measured by :meth:`Int8Index.stats`,
a flat row costs ``dim + 7`` bytes (``"cosine"``/``"ip"``) or ``dim + 11``
(``"l2"``) while every id is below ``2**24`` and ids arrive in increasing order
(assigned ids always do): 3 bytes of id, 4 of scale, 4 more for ``"l2"``; 1
more for ids of ``2**24`` or more, 5 more for ids of ``2**32`` or more, 4
more with asymmetric rows whose minimum is well above 0 (non-negative rows
starting near 0, like SIFT, need no offset), 5-11 more with ids in random
order. That is 3.6-3.8x smaller than float32 at 128-d and 3.9-4.0x at 768-d; a
clustered index adds ~1.4 bytes a row for its id -> list array plus its INT8
centroids and list headers (269 B a row for 256-d text, 144 B for 128-d SIFT
at 119k rows). They are compared with
SIMD integer dot products (AVX2, AVX-512 BW/VNNI, NEON/SDOT or scalar, picked
at run time; ``SLABCACHE_SIMD`` forces one). Search is exact over the codes
(``index_type="flat"``) or probes the ``nprobe`` nearest of ``nlist`` k-means
lists (``index_type="clustered"``; on real embeddings recall rises slowly with
``nprobe``: see docs/vectors.md).

    >>> import numpy as np
    >>> from slabcache import Int8Index
    >>> idx = Int8Index(dim=4, metric="cosine")
    >>> idx.add(np.eye(4, dtype=np.float32)).tolist()
    [0, 1, 2, 3]
    >>> scores, ids = idx.search(np.array([0.9, 0.1, 0.0, 0.0], dtype=np.float32), k=2)
    >>> ids.tolist()
    [[0, 1]]
    >>> len(idx)
    4

Input rules (the same for ``add``, ``search`` and ``train``):

* floating arrays only: float32 is used as is; float16 and float64 are
  **converted** to float32 (the codes hold ~8 bits per component, far less
  than float32 keeps); integer, bool, complex, object or string arrays raise
  :class:`~slabcache.errors.InvalidTypeError`;
* shape ``[n, dim]`` or a single vector ``[dim]``; another width or rank
  raises :class:`~slabcache.errors.InvalidArgumentError`;
* NaN or infinity raises :class:`~slabcache.errors.InvalidArgumentError`;
* any memory layout works (non-contiguous arrays are copied once).

``search`` returns ``(scores, ids)``, float32 and int64 arrays of shape
``[m, k]``, best first. For ``"cosine"`` and ``"ip"`` a higher score is
closer; for ``"l2"`` the score is the squared distance (lower is closer).
When fewer than ``k`` vectors are stored, the missing slots hold id ``-1``
and score ``-inf`` (``+inf`` for ``"l2"``), as FAISS pads. Final scores are
computed in float64 and narrowed, so a distance beyond float32's range is
``inf`` (never a wrapped or NaN value).

With ``keep_exact=True`` the index also keeps every vector in float32
(``4·dim`` more bytes a row) and ``search`` re-ranks ``rerank·k`` INT8
candidates (default ``rerank=4``) against them exactly: recall close to 1.0,
and near-duplicates closer than one INT8 step are told apart.

Ids are int64 in ``0..2**63-1`` (FAISS's convention; ``-1`` marks padding).
A larger id, e.g. a ``uint64`` of ``2**63`` or more, raises
:class:`~slabcache.errors.InvalidArgumentError` and nothing is added.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import numpy.typing as npt

from . import _native
from .errors import InvalidArgumentError, InvalidTypeError

__all__ = ["Int8Index", "available_kernels", "default_kernel", "int8_dot", "quantize"]

MetricName = Literal["cosine", "ip", "l2"]
CodeName = Literal["auto", "symmetric", "asymmetric"]
IndexType = Literal["flat", "clustered"]


def available_kernels() -> list[str]:
    """The INT8 kernels this CPU supports, scalar first (e.g. ``["scalar", "avx2"]``)."""
    return list(_native.int8_kernels())


def default_kernel() -> str:
    """The kernel a new index uses: ``SLABCACHE_SIMD`` if set, else the fastest."""
    return str(_native.int8_default_kernel())


def _as_float_matrix(x: object, dim: int | None, what: str) -> np.ndarray:
    """``x`` as a C-contiguous float32 ``[n, dim]`` array, or a clear error."""
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        raise InvalidTypeError(
            f"{what} must be a floating-point array (float32, or float16/float64 which are "
            f"converted), got dtype {arr.dtype}"
        )
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise InvalidArgumentError(f"{what} must have shape [n, dim] or [dim], got {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise InvalidArgumentError(f"{what} has dimension {arr.shape[1]}, the index has dim {dim}")
    with np.errstate(over="ignore"):  # float64 beyond float32's range -> inf -> refused below
        return np.ascontiguousarray(arr, dtype=np.float32)


_MAX_ID = 2**63 - 1


def _as_ids(ids: object, what: str) -> np.ndarray:
    if isinstance(ids, int | list | tuple) and not isinstance(ids, bool):
        # Python ints beyond int64 would become float64 or object arrays: name the real problem.
        items = [ids] if isinstance(ids, int) else ids
        big = next(
            (i for i in items if isinstance(i, int) and not isinstance(i, bool) and i > _MAX_ID),
            None,
        )
        if big is not None:
            raise InvalidArgumentError(
                f"{what}: id {big} is out of range (ids are int64 in 0..2**63-1)"
            )
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise InvalidTypeError(f"{what} must be integers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise InvalidArgumentError(f"{what} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > _MAX_ID:
        raise InvalidArgumentError(
            f"{what}: id {int(arr.max())} is out of range (ids are int64 in 0..2**63-1)"
        )
    return np.ascontiguousarray(arr, dtype=np.int64)


class Int8Index:
    """An INT8 vector index with FAISS-like numpy shapes.

    Args:
        dim: vector width (1..65536).
        metric: ``"cosine"`` (default), ``"ip"`` (inner product) or ``"l2"``
            (squared Euclidean distance).
        index_type: ``"flat"`` (exact over the codes) or ``"clustered"``
            (k-means pages; a query scans its ``nprobe`` nearest pages).
        nlist: pages of a clustered index (default ``4·√n`` is typical;
            required for ``"clustered"``).
        nprobe: pages scanned per query in a clustered index (settable later).
        kernel: force a SIMD kernel by name (see :func:`available_kernels`);
            default: ``SLABCACHE_SIMD`` if set, else the fastest.
        keep_exact: also keep the float32 vectors (``4·dim`` bytes a row) so
            that searches re-rank their INT8 candidates exactly (off by
            default).
        codes: ``"symmetric"`` (``x ≈ s·q``, codes -127..127),
            ``"asymmetric"`` (``x ≈ o + s·q`` per vector, codes -128..127:
            all 256 levels span each vector's own range, twice the
            resolution on non-negative data, 4 more bytes a row) or
            ``"auto"`` (default): asymmetric if every value of the first
            ``add`` is non-negative, else symmetric.

    A clustered index trains its centroids on the first ``add`` (which then
    needs at least ``nlist`` vectors) unless :meth:`train` was called.

    The index is thread-safe: searches run in parallel (the GIL is released
    and large scans use every core), adds and removes take it exclusively.

        >>> import numpy as np
        >>> idx = Int8Index(3, metric="l2")
        >>> idx.add(np.array([[0, 0, 1], [5, 5, 5]], dtype=np.float32), ids=[10, 20]).tolist()
        [10, 20]
        >>> d, i = idx.search(np.array([[0, 0.1, 1]], dtype=np.float32), k=3)
        >>> i.tolist()
        [[10, 20, -1]]
        >>> idx.remove([10])
        1
    """

    __slots__ = ("_inner",)

    def __init__(
        self,
        dim: int,
        metric: MetricName = "cosine",
        *,
        index_type: IndexType = "flat",
        nlist: int | None = None,
        nprobe: int = 8,
        kernel: str | None = None,
        keep_exact: bool = False,
        codes: CodeName = "auto",
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int | np.integer):
            raise InvalidTypeError(f"dim must be an int, got {type(dim).__name__}")
        if not all(isinstance(s, str) for s in (metric, index_type, codes)):
            raise InvalidTypeError("metric, index_type and codes must be strings")
        if index_type == "clustered" and nlist is None:
            raise InvalidArgumentError('index_type="clustered" needs nlist (number of pages)')
        self._inner = _native.Int8Index(
            int(dim),
            metric,
            index_type,
            int(nlist or 0),
            int(nprobe),
            kernel,
            bool(keep_exact),
            codes,
        )

    @classmethod
    def _wrap(cls, inner: _native.Int8Index) -> Int8Index:
        obj = cls.__new__(cls)
        obj._inner = inner
        return obj

    # -- data --------------------------------------------------------------

    def add(self, vectors: npt.ArrayLike, ids: npt.ArrayLike | None = None) -> np.ndarray:
        """Adds vectors ``[n, dim]`` (or one ``[dim]``); returns their int64 ids.

        ``ids`` (int64 ``[n]``, each ``>= 0``, new and distinct) are the
        caller's; without them ids are assigned, counting up from one past the
        largest id ever used. On any error nothing is added.
        """
        v = _as_float_matrix(vectors, self.dim, "vectors")
        i = None if ids is None else _as_ids(ids, "ids")
        return self._inner.add(v, i)

    def search(
        self, queries: npt.ArrayLike, k: int = 10, *, rerank: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` of each query ``[m, dim]`` (or ``[dim]``).

        Returns ``(scores float32 [m, k], ids int64 [m, k])``, best first,
        padded with id ``-1`` when fewer than ``k`` vectors are stored.

        The INT8 scan keeps ``rerank·k`` candidates per query, which are
        re-scored in float64: against the float32 vectors with
        ``keep_exact=True`` (default ``rerank=4``), else against the
        dequantized rows (default ``k + max(k, 16)`` candidates). A larger
        ``rerank`` (1..1024) trades speed for recall.

            >>> import numpy as np
            >>> idx = Int8Index(2, "l2", keep_exact=True)
            >>> _ = idx.add(np.array([[1.0, 0.5], [1.0, 0.501]], dtype=np.float32))
            >>> d, i = idx.search(np.array([1.0, 0.501], dtype=np.float32), k=1, rerank=8)
            >>> i.tolist(), d.tolist()
            ([[1]], [[0.0]])
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer):
            raise InvalidTypeError(f"k must be an int, got {type(k).__name__}")
        if k < 1:
            raise InvalidArgumentError(f"k must be at least 1, got {k}")
        if rerank is not None:
            if isinstance(rerank, bool) or not isinstance(rerank, int | np.integer):
                raise InvalidTypeError(f"rerank must be an int, got {type(rerank).__name__}")
            if not 1 <= rerank <= 1024:
                raise InvalidArgumentError(f"rerank must be in 1..1024, got {rerank}")
        q = _as_float_matrix(queries, self.dim, "queries")
        return self._inner.search(q, int(k), None if rerank is None else int(rerank))

    def remove(self, ids: npt.ArrayLike | int) -> int:
        """Removes ids (all must be present, else :class:`NotFoundError` and
        nothing is removed); returns how many were removed."""
        return int(self._inner.remove(_as_ids(ids, "ids")))

    def train(self, vectors: npt.ArrayLike) -> None:
        """Trains a clustered index's centroids (at least ``nlist`` vectors,
        index still empty). A no-op for a flat index."""
        self._inner.train(_as_float_matrix(vectors, self.dim, "vectors"))

    def __len__(self) -> int:
        return len(self._inner)

    def __contains__(self, id: object) -> bool:
        return isinstance(id, int | np.integer) and int(id) in self._inner

    # -- persistence -------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the index to ``path`` (versioned, checksummed; atomic replace)."""
        self._inner.save(os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, kernel: str | None = None) -> Int8Index:
        """Reads an index written by :meth:`save`. A corrupt, truncated or
        foreign file raises :class:`~slabcache.errors.CorruptionError`."""
        return cls._wrap(_native.Int8Index.load(os.fspath(path), kernel))

    # -- properties --------------------------------------------------------

    @property
    def dim(self) -> int:
        """Vector width."""
        return int(self._inner.dim)

    @property
    def metric(self) -> str:
        """``"cosine"``, ``"ip"`` or ``"l2"``."""
        return str(self._inner.metric)

    @property
    def kernel(self) -> str:
        """The SIMD kernel in use (``"avx2"``, ``"avx512vnni"``, ``"neon-dotprod"``, ...)."""
        return str(self._inner.kernel)

    @kernel.setter
    def kernel(self, name: str) -> None:
        self._inner.set_kernel(name)

    @property
    def index_type(self) -> str:
        """``"flat"`` or ``"clustered"``."""
        return str(self._inner.index_type)

    @property
    def nlist(self) -> int:
        """Pages of a clustered index (0 for flat)."""
        return int(self._inner.nlist)

    @property
    def nprobe(self) -> int:
        """Pages scanned per query (0 for flat)."""
        return int(self._inner.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._inner.nprobe = int(value)

    @property
    def is_trained(self) -> bool:
        """Whether a clustered index has centroids (always true for flat)."""
        return bool(self._inner.is_trained)

    @property
    def memory_bytes(self) -> int:
        """Bytes held by codes, per-vector data and the id map."""
        return int(self._inner.memory_bytes)

    @property
    def codes(self) -> str:
        """``"symmetric"`` or ``"asymmetric"`` (``"auto"`` until the first ``add`` decides).

        >>> import numpy as np
        >>> idx = Int8Index(3, "l2")
        >>> _ = idx.add(np.array([[0.0, 2.0, 5.0]], dtype=np.float32))
        >>> idx.codes
        'asymmetric'
        """
        return str(self._inner.codes)

    @property
    def keep_exact(self) -> bool:
        """Whether float32 vectors are kept for exact re-ranking."""
        return bool(self._inner.keep_exact)

    def stats(self) -> dict[str, int | float | str | bool]:
        """Where the memory goes, in bytes the allocator holds (capacities).

        Keys: ``vectors`` (live), ``dim``, ``code_bytes``, ``id_bytes`` (3 a
        row while every id of a store is below ``2**24``, 4 below ``2**32``,
        else 8),
        ``factor_bytes`` (4 a row; +4 for ``"l2"``, +4 once an asymmetric row
        needs an offset of its own), ``exact_bytes`` (float32 rows and 24 B a
        store, 0 unless ``keep_exact``), ``id_table_bytes`` (flat: 0 while ids arrive in
        increasing order; clustered: the list number in the fewest bits
        that hold ``nlist`` while ids are dense, 1.375 a row at ``nlist``
        1379, else a hash table), ``other_bytes`` (clustered: the INT8 centroids and the lists'
        headers), ``memory_bytes`` (the sum) and
        ``overhead_bytes_per_vector`` (everything but the codes, per live
        vector).

            >>> import numpy as np
            >>> idx = Int8Index(8, "ip")
            >>> _ = idx.add(np.full((100, 8), -0.5, dtype=np.float32))
            >>> s = idx.stats()
            >>> s["code_bytes"], s["overhead_bytes_per_vector"], s["codes"]
            (800, 7.0, 'symmetric')
        """
        codes, ids, factors, exact, table, other = self._inner.memory_parts()
        n = len(self)
        total = codes + ids + factors + exact + table + other
        return {
            "vectors": n,
            "dim": self.dim,
            "metric": self.metric,
            "index_type": self.index_type,
            "keep_exact": self.keep_exact,
            "codes": self.codes,
            "code_bytes": codes,
            "id_bytes": ids,
            "factor_bytes": factors,
            "exact_bytes": exact,
            "id_table_bytes": table,
            "other_bytes": other,
            "memory_bytes": total,
            "overhead_bytes_per_vector": (total - codes) / n if n else 0.0,
        }

    def __repr__(self) -> str:
        extra = (
            f", nlist={self.nlist}, nprobe={self.nprobe}" if self.index_type == "clustered" else ""
        )
        return (
            f"Int8Index(dim={self.dim}, metric={self.metric!r}, index_type={self.index_type!r}"
            f"{extra}, len={len(self)}, kernel={self.kernel!r})"
        )


def quantize(vectors: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric INT8 quantization of rows: returns ``(codes int8 [n, d], scales float32 [n])``
    with ``x ≈ scale · codes`` and ``|x - scale·codes| <= scale/2`` per component.

        >>> codes, scales = quantize(np.array([[0.5, -1.0, 0.25]], dtype=np.float32))
        >>> codes.tolist()
        [[64, -127, 32]]
    """
    return _native.int8_quantize(_as_float_matrix(vectors, None, "vectors"))


def int8_dot(a: npt.ArrayLike, b: npt.ArrayLike, *, kernel: str | None = None) -> np.ndarray:
    """Row-wise exact INT8 dot products ``out[i] = a[i]·b[i]`` (int32) with one kernel.

    Codes must lie in -127..=127 (what :func:`quantize` produces).

        >>> int8_dot(np.array([[1, 2, 3]], dtype=np.int8), np.array([[4, 5, 6]], dtype=np.int8))
        array([32], dtype=int32)
    """
    arrs = []
    for x in (a, b):
        arr = np.asarray(x)
        if arr.dtype != np.int8:
            raise InvalidTypeError(f"int8_dot needs int8 arrays, got dtype {arr.dtype}")
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2:
            raise InvalidArgumentError(f"int8_dot needs [n, d] arrays, got shape {arr.shape}")
        arrs.append(np.ascontiguousarray(arr))
    return _native.int8_dot(arrs[0], arrs[1], kernel)
