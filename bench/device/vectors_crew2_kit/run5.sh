#!/bin/bash
cd "$(dirname "$0")"
exec > >(tee $OUT/run5.txt) 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site whl2/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nproc; date -u; python3 make.py data2 /tmp/bv > /dev/null
timeout 200 python3 skiplist_single_calls.py 1000000 5 int,str,samestr,tuple
timeout 60 python3 skiplist_memory.py 1000000
date -u
which perf && { perf record -D 12000 -F 4000 -e cpu-clock -o /tmp/p.data ./int8_ivf_new --data /tmp/bv/sift128-120000.npy --metric l2 --nprobe 1 --no-flat --loop1 200 2>&1 | grep loop1; perf report -i /tmp/p.data --no-children --percent-limit 1 --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -30; }
