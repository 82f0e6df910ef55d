#!/bin/bash
# Device call 3 (session 16, lead): batch paths (new = cdf934a, new2 = + per-query ranks in scan_gathered, qm = new2 with every batch query-major), then skiplist 16-thread inserts/mixes: before (f78bfa4) / after (hints, writers repair) / after2 (writers take no hints).
cd "$(dirname "$0")"
exec > >(tee $OUT/run3.txt) 2>&1
nproc; date -u
python3 make.py data2 /tmp/bv > /dev/null || exit 1
S=/tmp/bv/sift128-120000.npy
for r in 1 2; do for b in new new2 qm; do echo "== ivf $b round $r"; ./int8_ivf_$b --data $S --metric l2 --nprobe 64,80,96 --ms 200 2>/dev/null | grep -E "flat|nprobe"; done; done
for r in 1 2; do for b in before after after2; do echo "== ycsb insert $b round $r"; ./ycsb_$b --threads 16 --sizes 1000000 --workloads insert --repeat 3 --no-btree 2>&1 | grep -E "^\| 16"; done; done
for b in before after after2; do echo "== ycsb mix $b"; ./ycsb_$b --threads 16 --sizes 1000000 --workloads readinsert,update --secs 1 --no-btree 2>&1 | grep -E "^\|"; done
for b in after after2; do echo "== lookup $b"; ./lookup_$b 1000000 7 2>&1 | grep -E "independent|chained"; done
date -u
