#!/bin/bash
cd "$(dirname "$0")"
exec > >(tee $OUT/run4.txt) 2>&1
nproc; date -u
./zz_probe2
python3 make.py data2 /tmp/bv > /dev/null || exit 1
S=/tmp/bv/sift128-120000.npy
./int8_ivf_new --data $S --metric l2 --nprobe 1,8,64,80 --ms 300 2>/dev/null | grep -E "flat|nprobe|threads"
./int8_ivf_new --data $S --metric l2 --nprobe 64 --no-flat --loop1 3 2>&1 | grep loop1
./crew_cost_new --calls 20000 --parts 3,12,16 --work-ns 0,5000 --helpers 2,11,15 | grep -v "^| 0 "
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site whl2/*.whl whl/faiss*.whl || exit 1
export PYTHONPATH=/tmp/site SLABCACHE_BENCH_CACHE=/tmp/bv SLABCACHE_BENCH_BUDGET=0.4 PYTHONUNBUFFERED=1
timeout 330 python3 -m slabcache.benchmarks.vectors_real --n 119000 --json $OUT/vectors_real.json
date -u
