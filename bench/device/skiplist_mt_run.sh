#!/bin/bash
cd "$(dirname "$0")"
(nproc; lscpu | grep -E "Model name|NUMA node\(s\)") > $OUT/machine.txt
for r in 1 2; do for b in before after; do ./$b --threads 4,16 --sizes 1000000 --workloads insert --repeat 3 --no-btree > $OUT/${b}_insert_1m_round$r.md 2>&1; done; done
for b in before after; do ./$b --threads 16 --sizes 1000000 --workloads read,update,readinsert --secs 1 --no-btree > $OUT/${b}_mix_1m.md 2>&1; done
for b in before after; do ./$b --threads 16 --sizes 10000000 --workloads insert --repeat 2 --no-btree > $OUT/${b}_insert_10m.md 2>&1; done
echo finished
