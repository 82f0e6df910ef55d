"""Makes the compact data that `make.py` rebuilds on the device (which has no
wordllama, OpenCV or the photos): run it here, from a checkout with the bench
extra installed, then carry OUT with the kit.

    python bench/device/vectors_ivf_kit/pack.py .dev-NAME/data2 [--n 121000]

* ``sift_u8.npz``: ``x`` = the SIFT descriptors of
  ``slabcache.benchmarks.vector_data.sift_descriptors(n)`` as uint8 (OpenCV's
  descriptors are integers in 0..255; checked, else it stops).
* ``text_tokens.npz``: for the lines of ``vector_data.text_lines(n)``, the
  wordllama token ids of each line (``ids``, concatenated; ``lens`` per line,
  the attention mask's tokens) and wordllama's embedding table (``table``,
  float16 when that is exact, else float32). The embedding is the mean of the
  line's token rows, normalized: what ``WordLlama.embed(norm=True)`` computes.
  The rebuild is checked against ``WordLlama.embed`` here (max abs error
  printed; it stops above 1e-6).

The lines come from this machine's files (man pages, /usr/share/doc, Python
packages), so a re-pack after those change draws a different text set.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from slabcache.benchmarks import vector_data


def rebuild(ids: np.ndarray, lens: np.ndarray, table: np.ndarray) -> np.ndarray:
    """What make.py computes (kept identical to it)."""
    e = table.astype(np.float32)
    offs = np.concatenate([[0], np.cumsum(lens)])
    rec = np.empty((len(lens), e.shape[1]), np.float32)
    for i in range(len(lens)):
        v = e[ids[offs[i] : offs[i + 1]]].sum(0, dtype=np.float32) / np.float32(max(lens[i], 1))
        rec[i] = v / np.linalg.norm(v)
    return rec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=121_000)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    sift = vector_data.sift_descriptors(a.n)
    u8 = sift.astype(np.uint8)
    if not np.array_equal(u8.astype(np.float32), sift):
        print("SIFT descriptors are not integers in 0..255", file=sys.stderr)
        return 1
    np.savez_compressed(out / "sift_u8.npz", x=u8)
    print("sift", sift.shape)

    import wordllama
    from wordllama import WordLlama

    wl = WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
    lines = vector_data.text_lines(a.n)
    ids_l: list[np.ndarray] = []
    lens = np.empty(len(lines), np.int32)
    for s in range(0, len(lines), 512):
        for j, enc in enumerate(wl.tokenize(lines[s : s + 512])):
            t = np.asarray(enc.ids, np.int64)[np.asarray(enc.attention_mask) > 0]
            t = np.clip(t, 0, wl.embedding.shape[0] - 1)
            ids_l.append(t)
            lens[s + j] = len(t)
    ids = np.concatenate(ids_l).astype(np.int32)
    table = np.asarray(wl.embedding, np.float32)
    t16 = table.astype(np.float16)
    table_out = t16 if np.array_equal(t16.astype(np.float32), table) else table
    ref = np.asarray(wl.embed(lines, norm=True, batch_size=512), np.float32)
    err = float(np.abs(rebuild(ids, lens, table_out) - ref).max())
    print("text", ref.shape, "table", table_out.dtype, f"rebuild max abs err {err:.2e}")
    if err > 1e-6:
        print("the rebuild does not match WordLlama.embed", file=sys.stderr)
        return 1
    np.savez_compressed(out / "text_tokens.npz", ids=ids, lens=lens, table=table_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
