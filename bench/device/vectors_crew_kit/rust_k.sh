#!/bin/bash
# Device call 2 (session 13, lead): crew part size A/B (16k / 32k / 64k byte-products), Rust int8_ivf.
cd "$(dirname "$0")"
exec > >(tee $OUT/rust_k.txt) 2>&1
date -u
python3 make.py data2 /tmp/bv >/dev/null || exit 1
S=/tmp/bv/sift128-120000.npy; T=/tmp/bv/text-wordllama256-120000.npy
for r in 1 2; do for k in 16 32 64; do echo "== part ${k}k round $r sift"; ./int8_ivf_k$k --data $S --metric l2 --nprobe 32,64,80 --ms 150 2>/dev/null | grep -E "flat|nprobe|threads"; done; done
for k in 16 32 64; do echo "== part ${k}k loop1 nprobe 64"; ./int8_ivf_k$k --data $S --metric l2 --nprobe 64 --no-flat --loop1 3 2>&1 | grep loop1; done
for k in 16 64; do echo "== part ${k}k text"; ./int8_ivf_k$k --data $T --metric cosine --nprobe 256,512 --ms 150 2>/dev/null | grep -E "flat|nprobe"; done
date -u
