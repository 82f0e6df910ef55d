"""Real vector data made offline for ``slabcache bench vectors``.

* ``text``: wordllama 256-d embeddings (its weights ship inside the wheel;
  loaded with ``disable_download=True``) of real sentences found on this
  machine: man pages, ``/usr/share/doc`` text files and the docstrings and
  comments of installed Python packages. Lines are de-duplicated; each is one
  vector. Metric: cosine (inner product of unit vectors for the peers).
* ``sift``: 128-d SIFT descriptors (OpenCV, ``opencv-python-headless``) of the
  photos that ship inside the scikit-image and scikit-learn wheels, each
  image also rescaled (0.5-2x) and rotated so that there are enough
  keypoints. Non-negative, like the classic SIFT1M set. Metric: l2.

Both are cached as ``.npy`` under ``$SLABCACHE_BENCH_CACHE`` (default
``~/.cache/slabcache/bench-vectors``) so that a second run starts at once.
Exact ground truth is computed by brute force (:func:`exact_topk`).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["cache_dir", "exact_topk", "sift_descriptors", "text_embeddings", "text_lines"]


def cache_dir() -> Path:
    d = Path(os.environ.get("SLABCACHE_BENCH_CACHE", "~/.cache/slabcache/bench-vectors"))
    d = d.expanduser()
    d.mkdir(parents=True, exist_ok=True)
    return d


_ROFF = re.compile(r"\\f[BIRP]|\\\(..|\\[-e&|^0 ]|\\\*.|\\s[-+]?\d")
_WORDS = re.compile(r"[A-Za-z]{2,}")


def _clean(line: str) -> str | None:
    line = _ROFF.sub("", line).strip().strip("#").strip()
    if len(line) < 30 or len(line) > 400 or len(_WORDS.findall(line)) < 5:
        return None
    return " ".join(line.split())


def _man_lines() -> Iterator[str]:
    for root in ("/usr/share/man",):
        for dirpath, _, files in os.walk(root):
            for f in sorted(files):
                p = os.path.join(dirpath, f)
                try:
                    if f.endswith(".gz"):
                        with gzip.open(p, "rt", errors="replace") as fh:
                            text = fh.read()
                    else:
                        text = Path(p).read_text(errors="replace")
                except (OSError, EOFError, gzip.BadGzipFile):
                    continue
                for line in text.splitlines():
                    if not line.startswith((".", "'")):
                        yield line


def _doc_lines() -> Iterator[str]:
    for dirpath, _, files in os.walk("/usr/share/doc"):
        for f in sorted(files):
            if f.endswith((".gz", ".txt", ".md", ".rst")) or f.upper().startswith("README"):
                p = os.path.join(dirpath, f)
                try:
                    if f.endswith(".gz"):
                        with gzip.open(p, "rt", errors="replace") as fh:
                            text = fh.read()
                    else:
                        text = Path(p).read_text(errors="replace")
                except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError):
                    continue
                yield from text.splitlines()


def _python_lines() -> Iterator[str]:
    roots = sorted({p for p in sys.path if p.endswith("site-packages") or "python3" in p})
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for f in sorted(files):
                if f.endswith((".py", ".pyi", ".rst", ".md")):
                    try:
                        text = Path(dirpath, f).read_text(errors="replace")
                    except OSError:
                        continue
                    for line in text.splitlines():
                        s = line.strip()
                        # Comments and docstring prose, not code.
                        if s.startswith("#") or (s and s[0].isalpha() and s.endswith((".", ","))):
                            yield s


def text_lines(n: int) -> list[str]:
    """``n`` distinct real text lines (deterministic order), or fewer if the machine has fewer."""
    seen: set[str] = set()
    out: list[str] = []
    for src in (_man_lines(), _doc_lines(), _python_lines()):
        for raw in src:
            line = _clean(raw)
            if line is None or line in seen:
                continue
            seen.add(line)
            out.append(line)
    # Deterministic shuffle (sources come in blocks) then cut.
    order = np.random.default_rng(0).permutation(len(out))
    return [out[i] for i in order[:n]]


def text_embeddings(n: int = 120_000) -> np.ndarray:
    """``[n, 256]`` float32 unit vectors: wordllama embeddings of :func:`text_lines`."""
    path = cache_dir() / f"text-wordllama256-{n}.npy"
    if path.exists():
        return np.load(path)
    import wordllama  # bench extra
    from wordllama import WordLlama

    lines = text_lines(n)
    wl = WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
    vecs = np.asarray(wl.embed(lines, norm=True, batch_size=512), dtype=np.float32)
    np.save(path, vecs)
    return vecs


def _images() -> list[np.ndarray]:
    import cv2  # bench extra
    import skimage
    import sklearn

    paths: list[Path] = []
    for pkg, sub in ((skimage, "data"), (sklearn, "datasets/images")):
        d = Path(pkg.__file__).parent / sub
        paths += sorted(p for p in d.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    out = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if img is not None and min(img.shape) >= 64:
            out.append(img)
    return out


def sift_descriptors(n: int = 120_000) -> np.ndarray:
    """``[n, 128]`` float32 SIFT descriptors (non-negative), de-duplicated."""
    path = cache_dir() / f"sift128-{n}.npy"
    if path.exists():
        return np.load(path)
    import cv2

    sift = cv2.SIFT_create(contrastThreshold=0.01)
    chunks: list[np.ndarray] = []
    total = 0
    images = _images()
    # Every image at every (scale, angle) before the next pass, so the set mixes images.
    for scale in (1.0, 0.7, 1.4, 0.5, 2.0):
        for angle in (0, 30, 60, 90):
            for img in images:
                h, w = img.shape
                im = cv2.resize(img, (max(32, int(w * scale)), max(32, int(h * scale))))
                if angle:
                    m = cv2.getRotationMatrix2D((im.shape[1] / 2, im.shape[0] / 2), angle, 1.0)
                    im = cv2.warpAffine(im, m, (im.shape[1], im.shape[0]))
                _, des = sift.detectAndCompute(im, None)
                if des is not None:
                    chunks.append(des.astype(np.float32))
                    total += len(des)
            if total >= 2 * n:
                break
        if total >= 2 * n:
            break
    allv = np.concatenate(chunks)
    _, first = np.unique(allv.view(np.dtype((np.void, allv.itemsize * 128))), return_index=True)
    allv = allv[np.sort(first)]
    order = np.random.default_rng(0).permutation(len(allv))[:n]
    vecs = np.ascontiguousarray(allv[order])
    np.save(path, vecs)
    return vecs


def exact_topk(data: np.ndarray, queries: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Exact top-``k`` ids by brute force (float64 scores, in blocks of queries)."""
    x = data.astype(np.float64)
    out = np.empty((len(queries), k), dtype=np.int64)
    xn = (x * x).sum(1) if metric == "l2" else None
    for s in range(0, len(queries), 256):
        q = queries[s : s + 256].astype(np.float64)
        sc = q @ x.T
        if metric == "l2":
            assert xn is not None
            sc = 2 * sc - xn[None, :]  # -‖q-x‖² + ‖q‖²
        elif metric == "cosine":
            sc /= np.linalg.norm(x, axis=1)[None, :] + 1e-300
        part = np.argpartition(-sc, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sc, part, 1), axis=1, kind="stable")
        out[s : s + 256] = np.take_along_axis(part, order, 1)
    return out


def query_split(
    name: str, n: int, nq: int, k: int
) -> tuple[np.ndarray, np.ndarray, str, np.ndarray]:
    """One real set as the benches use it: (queries, data, metric, exact top-k ids).

    ``name`` is ``"text"`` (cosine) or ``"sift"`` (l2); the first ``nq``
    vectors are the queries, the next ``n`` the index.

        >>> q, data, metric, truth = query_split("sift", 200, 5, 3)  # doctest: +SKIP
    """
    x = text_embeddings(n + nq) if name == "text" else sift_descriptors(n + nq)
    metric = "cosine" if name == "text" else "l2"
    q, data = np.ascontiguousarray(x[:nq]), np.ascontiguousarray(x[nq:])
    return q, data, metric, exact_topk(data, q, k, metric)


def digest(a: np.ndarray) -> str:
    """A short content hash (to name a data set in a report)."""
    return hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=6).hexdigest()
