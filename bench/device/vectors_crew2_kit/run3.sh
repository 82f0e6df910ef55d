#!/bin/bash
cd "$(dirname "$0")"
exec > >(tee $OUT/run3.txt) 2>&1
date -u
python3 make.py data2 /tmp/bv > /dev/null || exit 1
S=/tmp/bv/sift128-120000.npy
./int8_ivf_new --data $S --metric l2 --nlist 345 --nprobe 6,8,10,12,16,24 --ms 300 2>/dev/null | grep -E "flat|nprobe|threads"
./int8_ivf_new --data $S --metric l2 --nlist 690 --no-flat --nprobe 12,16,20,24,32,48 --ms 300 2>/dev/null | grep -E "flat|nprobe|threads"
./int8_ivf_new --data $S --metric l2 --nlist 1379 --nprobe 48,64 --ms 300 2>/dev/null | grep -E "flat|nprobe|threads"
date -u
