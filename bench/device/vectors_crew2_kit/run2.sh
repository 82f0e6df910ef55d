#!/bin/bash
cd "$(dirname "$0")"
exec > >(tee $OUT/run2.txt) 2>&1
date -u
python3 make.py data2 /tmp/bv > /dev/null || exit 1
S=/tmp/bv/sift128-120000.npy
for r in 1 2; do for b in old new; do echo "== crew_cost $b round $r"; ./crew_cost_$b --calls 20000 --parts 3,12,16 --work-ns 0,5000 --helpers 0,2,7,11,15 | grep -v "^| 0 "; done; done
for r in 1 2; do for b in old new; do echo "== int8_ivf $b round $r sift"; ./int8_ivf_$b --data $S --metric l2 --nprobe 1,8,32,64,80 --ms 300 2>/dev/null | grep -E "flat|nprobe|threads"; done; done
for b in old new; do echo "== loop1 $b nprobe 64"; ./int8_ivf_$b --data $S --metric l2 --nprobe 64 --no-flat --loop1 3 2>&1 | grep loop1; done
date -u
