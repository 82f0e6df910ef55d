#!/bin/bash
cd "$(dirname "$0")"
exec > >(tee $OUT/run8.txt) 2>&1
date -u
python3 make.py data2 /tmp/bv > /dev/null || exit 1
S=/tmp/bv/sift128-120000.npy
for r in 1 2; do for b in new sel; do echo "== $b round $r"; ./int8_ivf_$b --data $S --metric l2 --nprobe 1,64,80 --ms 200 2>/dev/null | grep -E "flat|nprobe"; done; done
for b in new sel; do echo "== loop1 $b"; ./int8_ivf_$b --data $S --metric l2 --nprobe 64 --no-flat --loop1 3 2>&1 | grep loop1; done
date -u
