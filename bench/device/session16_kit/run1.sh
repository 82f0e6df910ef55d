#!/bin/bash
# Device call 1 (session 16, lead): one-query clustered A/B (base f78bfa4 / new / new with a serial probe), then skiplist single calls base / new.
cd "$(dirname "$0")"
exec > >(tee $OUT/run1.txt) 2>&1
nproc; lscpu | grep -iE "model name"; date -u
python3 make.py data2 /tmp/bv > /dev/null || exit 1
S=/tmp/bv/sift128-120000.npy
for r in 1 2; do for b in base new pser; do echo "== $b round $r"; ./int8_ivf_$b --data $S --metric l2 --nprobe 1,64,80 --ms 200 2>/dev/null | grep -E "flat|nprobe"; done; done
for b in base new pser; do echo "== probe/loop1 $b"; ./int8_ivf_$b --data $S --metric l2 --nprobe 1,64 --no-flat --probe 3 2>&1 | grep "probe nprobe"; ./int8_ivf_$b --data $S --metric l2 --nprobe 64 --no-flat --loop1 3 2>&1 | grep loop1; done
date -u
for b in base new; do python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site_$b whl_$b/*.whl || exit 1; done
for r in 1 2; do for b in base new; do echo "== skiplist $b round $r"; PYTHONPATH=/tmp/site_$b timeout 140 python3 skiplist_single_calls.py 1000000 5 int,str,samestr,tuple; done; done
PYTHONPATH=/tmp/site_new timeout 60 python3 skiplist_memory.py 1000000
date -u
