#!/bin/bash
# Device call 2 (session 13, lead): real-data vectors bench (merged main with the crew) vs FAISS, then skiplist single calls.
cd "$(dirname "$0")"
exec > >(tee $OUT/py_run.log) 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site whl2/*.whl whl/faiss*.whl || exit 1
export PYTHONPATH=/tmp/site
nproc; lscpu | grep -iE "model name"; date -u
python3 make.py data2 /tmp/bvcache || exit 1
export SLABCACHE_BENCH_CACHE=/tmp/bvcache SLABCACHE_BENCH_BUDGET=0.4 PYTHONUNBUFFERED=1
timeout 300 python3 -m slabcache.benchmarks.vectors_real --n 119000 --json $OUT/vectors_real.json
date -u
timeout 150 python3 skiplist_single_calls.py 1000000 5 int,str,samestr,tuple
timeout 60 python3 skiplist_memory.py 1000000
date -u
