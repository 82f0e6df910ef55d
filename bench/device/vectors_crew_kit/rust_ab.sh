#!/bin/bash
# Device call 1 (session 13, lead): crew split A/B at the Rust level (int8_ivf, base = main 3be9a31, crew = this change).
cd "$(dirname "$0")"
exec > >(tee $OUT/rust_ab.txt) 2>&1
nproc; lscpu | grep -iE "model name"; date -u
python3 make.py data2 /tmp/bv || exit 1
S=/tmp/bv/sift128-120000.npy; T=/tmp/bv/text-wordllama256-120000.npy
for r in 1 2; do for b in base crew; do echo "== $b round $r sift"; ./int8_ivf_$b --data $S --metric l2 --nprobe 8,32,64,80,96 --ms 300 2>/dev/null | grep -E "flat|nprobe|threads"; done; done
for b in base crew; do echo "== $b text"; ./int8_ivf_$b --data $T --metric cosine --nprobe 128,256,512 --ms 300 2>/dev/null | grep -E "flat|nprobe"; done
echo "== crew, spin 0 (helpers asleep: the caller does all parts), sift"
SLABCACHE_CREW_SPIN_US=0 ./int8_ivf_crew --data $S --metric l2 --nprobe 64,80 --ms 300 2>/dev/null | grep -E "flat|nprobe"
echo "== loop1 nprobe 80 base / crew"
./int8_ivf_base --data $S --metric l2 --nprobe 80 --no-flat --loop1 3 2>&1 | grep loop1
./int8_ivf_crew --data $S --metric l2 --nprobe 80 --no-flat --loop1 3 2>&1 | grep loop1
date -u
