#!/bin/bash
# Device call 1 (helper ivfq): Rust-level int8_ivf diagnostics. Output: $OUT/diag.txt
cd "$(dirname "$0")"
exec > >(tee $OUT/diag.txt) 2>&1
nproc; lscpu | grep -iE "model name|socket|core|thread|numa|cache|mhz"; ls /sys/devices/system/node/ 2>&1 | grep node; uname -r
python3 make.py data2 /tmp/bv || exit 1
S=/tmp/bv/sift128-120000.npy; T=/tmp/bv/text-wordllama256-120000.npy
echo "== A/B prefetch (one/batch KiB): a=4/32 b4=4/4 (session 11) o32=32/32 (session 10), 16 threads"
for r in 1 2; do for b in a b4 o32; do ./int8_ivf_$b --data $S --metric l2 --nprobe 64 --no-flat --ms 600 2>&1 | grep -E "prefetch|nprobe=|cpu"; done; done
echo "== full sweep, 16 threads"
./int8_ivf_a --data $S --metric l2 --nprobe 1,8,32,64,72,80,96,128 --ms 400
echo "== fresh process, single queries only: 16 threads / 16 threads main pinned to cpu 3 / 1 thread"
./int8_ivf_a --data $S --metric l2 --nprobe 64 --no-flat --loop1 3 2>&1 | grep -E "loop1|pinned"
./int8_ivf_a --data $S --metric l2 --nprobe 64 --no-flat --loop1 3 --pin-main 3 2>&1 | grep -E "loop1|pinned"
RAYON_NUM_THREADS=1 ./int8_ivf_a --data $S --metric l2 --nprobe 64 --no-flat --loop1 3 2>&1 | grep -E "loop1|pinned"
echo "== sweep with the main thread pinned to cpu 3, 16 threads"
./int8_ivf_a --data $S --metric l2 --nprobe 64,80 --ms 400 --pin-main 3
echo "== nlist 2758, 16 threads"
./int8_ivf_a --data $S --metric l2 --nlist 2758 --nprobe 64,96,128 --ms 300 --no-flat
echo "== text, cosine, 16 threads"
./int8_ivf_a --data $T --metric cosine --nprobe 64,128,256,512 --ms 300
