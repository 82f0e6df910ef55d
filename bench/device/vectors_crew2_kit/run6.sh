#!/bin/bash
cd "$(dirname "$0")"
exec > >(tee $OUT/run6.txt) 2>&1
date -u
python3 make.py data2 /tmp/bv > /dev/null || exit 1
S=/tmp/bv/sift128-120000.npy
for np in 1 8 64; do ./int8_ivf_phase --data $S --metric l2 --nprobe $np --no-flat --loop1 3 2>&1 | grep -E "loop1|phases"; done
echo "== spin 0"; SLABCACHE_CREW_SPIN_US=0 ./int8_ivf_phase --data $S --metric l2 --nprobe 64 --no-flat --loop1 3 2>&1 | grep -E "loop1|phases"
echo "== 1 thread"; RAYON_NUM_THREADS=1 ./int8_ivf_phase --data $S --metric l2 --nprobe 64 --no-flat --loop1 3 2>&1 | grep -E "loop1|phases"
date -u
