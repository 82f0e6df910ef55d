#!/bin/bash
# Device call 2 (session 16, lead): real-data vectors bench (new wheel, FAISS, hnswlib), skiplist 16-thread inserts before/after, skiplist single calls again.
cd "$(dirname "$0")"
exec > >(tee $OUT/run2.txt) 2>&1
nproc; date -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site whl_new/*.whl whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
python3 -c "import hnswlib, faiss; print('hnswlib', hnswlib.__file__, 'faiss', faiss.__version__)"
python3 make.py data2 /tmp/bv || exit 1
export SLABCACHE_BENCH_CACHE=/tmp/bv SLABCACHE_BENCH_BUDGET=0.4 PYTHONUNBUFFERED=1
timeout 330 python3 -m slabcache.benchmarks.vectors_real --n 119000 --json $OUT/vectors_real.json
date -u
for r in 1 2; do for b in before after; do echo "== ycsb $b round $r"; ./ycsb_$b --threads 16 --sizes 1000000 --workloads insert --repeat 3 --no-btree 2>&1 | grep -E "^\|"; done; done
for r in 1 2; do echo "== skiplist new round $r"; timeout 100 python3 skiplist_single_calls.py 1000000 5 int,str,samestr,tuple; done
date -u
