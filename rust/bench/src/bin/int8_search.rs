//! Flat INT8 search throughput and thread scaling, with the machine's memory
//! bandwidth measured in the same run.
//!
//! ```text
//! cargo run --release -p slabcache-bench --bin int8_search -- \
//!     [--n 1000000] [--dim 768] [--batch 256] [--k 10] [--threads 1,2,4,8,16] [--metric cosine]
//! ```
//!
//! Self-contained: builds a synthetic index (uniform random vectors; speed
//! does not depend on the values), then for each thread count (a rayon pool
//! of that size) measures
//! * read bandwidth: a parallel sum over a 1 GiB buffer (GB/s),
//! * one query: median latency of `search_batch` with one query, the bytes of
//!   codes it scans per second, and that as a share of the bandwidth,
//! * a batch of `--batch` queries in one call: queries per second,
//!
//! and prints a markdown table.

use std::hint::black_box;
use std::time::Instant;

use rayon::prelude::*;
use slabcache_core::vector::{FlatIndex, Metric};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

/// xorshift64* floats in [-1, 1).
fn fill_random(out: &mut [f32], seed: u64) {
    let mut s = seed | 1;
    for v in out {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        let r = s.wrapping_mul(0x2545_f491_4f6c_dd1d);
        *v = (r >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
    }
}

/// Best-of-3 GB/s of a parallel read (sum) over `buf`.
fn read_bandwidth(buf: &[u64]) -> f64 {
    let mut best = 0f64;
    for _ in 0..3 {
        let t = Instant::now();
        let s: u64 = buf
            .par_chunks(1 << 16)
            .map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
            .reduce(|| 0, |a, b| a.wrapping_add(b));
        black_box(s);
        best = best.max((buf.len() * 8) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = arg(&args, "--n", "1000000").parse().expect("--n");
    let dim: usize = arg(&args, "--dim", "768").parse().expect("--dim");
    let batch: usize = arg(&args, "--batch", "256").parse().expect("--batch");
    let k: usize = arg(&args, "--k", "10").parse().expect("--k");
    let metric = Metric::parse(&arg(&args, "--metric", "cosine")).expect("--metric");
    let threads: Vec<usize> = arg(&args, "--threads", "1,2,4,8,16")
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("--threads: comma-separated integers")
        })
        .collect();

    let mut index = FlatIndex::new(dim, metric).expect("index");
    let t = Instant::now();
    let chunk = 65_536;
    let mut buf = vec![0f32; chunk * dim];
    let mut added = 0;
    while added < n {
        let m = chunk.min(n - added);
        fill_random(&mut buf[..m * dim], added as u64 + 1);
        index.add(&buf[..m * dim], None).expect("add");
        added += m;
    }
    drop(buf);
    let build_s = t.elapsed().as_secs_f64();
    let mut queries = vec![0f32; batch.max(1) * dim];
    fill_random(&mut queries, 0xdead_beef);
    let bw_buf: Vec<u64> = (0..(1usize << 27)).map(|i| i as u64).collect(); // 1 GiB
    let bytes = (n * dim) as f64;

    println!("# INT8 flat search scaling\n");
    println!(
        "n = {n}, dim = {dim}, metric = {}, k = {k}, kernel = {}, codes = {:.2} GB, built in {build_s:.1} s, cpus = {}\n",
        metric.name(),
        index.kernel().name(),
        bytes / 1e9,
        std::thread::available_parallelism().map_or(1, |p| p.get()),
    );
    println!("| threads | read bandwidth (GB/s) | 1 query (ms) | scan (GB/s) | % of bandwidth | batch of {batch}: queries/s | speedup vs 1 thread |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut base_qps = None;
    for &t in &threads {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .expect("pool");
        pool.install(|| {
            let bw = read_bandwidth(&bw_buf);
            let mut lat = Vec::new();
            for i in 0..9 {
                let q = &queries[(i % batch.max(1)) * dim..(i % batch.max(1) + 1) * dim];
                let t0 = Instant::now();
                black_box(index.search_batch(q, k).expect("search"));
                lat.push(t0.elapsed().as_secs_f64());
            }
            lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let one = lat[lat.len() / 2];
            let scan = bytes / one / 1e9;
            let mut best = f64::INFINITY;
            for _ in 0..3 {
                let t0 = Instant::now();
                black_box(index.search_batch(&queries, k).expect("search"));
                best = best.min(t0.elapsed().as_secs_f64());
            }
            let qps = batch as f64 / best;
            let base = *base_qps.get_or_insert(qps);
            println!(
                "| {t} | {bw:.1} | {:.2} | {scan:.1} | {:.0}% | {qps:.0} | {:.2}x |",
                one * 1e3,
                100.0 * scan / bw,
                qps / base
            );
        });
    }
}
