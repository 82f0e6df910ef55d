#!/bin/bash
# Device call 2 (helper ivfq): the real-data bench through the kit, with the wheel built from branch ivfq.
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .dev-ivfq/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
cp .dev-ivfq/vectors_real.py /tmp/site/slabcache/benchmarks/vectors_real.py
R=$PWD
(cd /tmp && tar xzf $R/.dev-ivfq/src/hnswlib-0.8.0.tar.gz && cd hnswlib-0.8.0 && timeout 150 python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site . ) > $OUT/hnswlib_build.log 2>&1
tail -3 $OUT/hnswlib_build.log
python3 -c "import hnswlib, faiss, slabcache; print('hnswlib ok, faiss', faiss.__version__)"
nproc; lscpu | grep -iE "model name"
python3 .dev-ivfq/make.py .dev-ivfq/data2 /tmp/bvcache || exit 1
export SLABCACHE_BENCH_CACHE=/tmp/bvcache SLABCACHE_BENCH_BUDGET=0.4 PYTHONUNBUFFERED=1
timeout 500 python3 -m slabcache.benchmarks.vectors_real --n 119000 --json $OUT/vectors_real_ivfq.json 2>&1 | tee $OUT/vectors_real_ivfq.log
