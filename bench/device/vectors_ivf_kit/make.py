"""Rebuilds the bench's cached .npy files from the carried compact forms:
SIFT descriptors (integer-valued, stored as uint8) and wordllama token ids
+ its fp16 embedding table (the embedding is the mean of the line's token
rows, normalized: what WordLlama.embed(norm=True) computes; checked equal
to 3e-8 on the dev machine). `pack.py` beside it makes both files.

    python make.py SRC_DIR DST_CACHE_DIR"""

import sys
from pathlib import Path

import numpy as np

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
sift = np.load(src / "sift_u8.npz")["x"].astype(np.float32)
# Named as vector_data caches them (rows = index + 1,000 queries).
np.save(dst / f"sift128-{len(sift)}.npy", sift)
z = np.load(src / "text_tokens.npz")
ids, lens, E = z["ids"].astype(np.int64), z["lens"], z["table"].astype(np.float32)
offs = np.concatenate([[0], np.cumsum(lens)])
rec = np.empty((len(lens), E.shape[1]), np.float32)
for i in range(len(lens)):
    v = E[ids[offs[i] : offs[i + 1]]].sum(0, dtype=np.float32) / np.float32(max(lens[i], 1))
    rec[i] = v / np.linalg.norm(v)
np.save(dst / f"text-wordllama256-{len(rec)}.npy", rec)
print("data", rec.shape, "sift ok")
