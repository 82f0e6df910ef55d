#!/bin/bash
cd "$(dirname "$0")"
exec > >(tee $OUT/run7.txt) 2>&1
date -u
python3 make.py data2 /tmp/bv > /dev/null || exit 1
S=/tmp/bv/sift128-120000.npy
for r in 1 2; do for b in phase phase2; do echo "== $b round $r"
for np in 1 64 80; do ./int8_ivf_$b --data $S --metric l2 --nprobe $np --no-flat --loop1 3 2>&1 | grep -E "loop1|phases"; done; done; done
for b in new new2; do echo "== crew_cost $b"; ./crew_cost_$b --calls 20000 --parts 3,12,16 --work-ns 0,5000 --helpers 2,11,15 | grep -v "^| 0 "; done
for b in phase phase2; do echo "== $b full"; ./int8_ivf_$b --data $S --metric l2 --nprobe 64,80 --ms 300 2>/dev/null | grep -E "flat|nprobe"; done
date -u
