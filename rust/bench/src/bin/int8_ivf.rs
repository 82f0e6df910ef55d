//! Clustered (IVF) INT8 search against the flat scan on a real data set,
//! without Python in the way (for profiling and quick comparisons).
//!
//! ```text
//! cargo run --release -p slabcache-bench --bin int8_ivf -- \
//!     --data sift128-121000.npy --metric l2 [--nq 1000] [--nlist 0] \
//!     [--nprobe 16,32,64,128] [--ms 500] [--exact]
//! ```
//!
//! The first `--nq` rows of the `.npy` (float32, C order) are the queries,
//! the rest the index; the truth is an exact FP32 brute force. For flat and
//! for every `nprobe`: R@10, one query (median µs of single calls), and
//! batches of 32 and 256 (queries/s, best of repeats). `--nlist 0` means
//! `4·√n`; `--exact` keeps FP32 rows (re-rank) in both indexes; `--no-flat`
//! leaves the flat index empty (for profiling the clustered one);
//! `--pin-main CPU` pins the calling thread (not the pool) after the truth;
//! `--probe N` times only the probe of single queries (N passes) per
//! `nprobe`; `--loop1 N` times only single-query calls (N passes), in a process that
//! ran no batch search since the build.

use std::hint::black_box;
use std::time::Instant;

use rayon::prelude::*;
use slabcache_core::vector::scan::{PREFETCH_BATCH, PREFETCH_ONE_QUERY};
use slabcache_core::vector::{ClusteredIndex, FlatIndex, Kernel, Metric};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

/// Reads a float32 C-order 2-d `.npy` file: (rows, cols, values).
fn read_npy(path: &str) -> (usize, usize, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{path}: not a .npy file");
    let (hlen, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&bytes[start..start + hlen]).unwrap();
    assert!(
        header.contains("'<f4'"),
        "{path}: want float32, got {header}"
    );
    assert!(
        header.contains("'fortran_order': False"),
        "{path}: want C order"
    );
    let shape = &header[header.find("'shape': (").unwrap() + 10..];
    let shape = &shape[..shape.find(')').unwrap()];
    let dims: Vec<usize> = shape
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    assert_eq!(dims.len(), 2, "{path}: want a 2-d array");
    let data = &bytes[start + hlen..];
    let vals: Vec<f32> = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(vals.len(), dims[0] * dims[1]);
    (dims[0], dims[1], vals)
}

/// Exact top-`k` ids by FP32 brute force (higher score is better).
fn truth(data: &[f32], queries: &[f32], d: usize, k: usize, metric: Metric) -> Vec<Vec<usize>> {
    let norms: Vec<f32> = data
        .chunks_exact(d)
        .map(|x| x.iter().map(|v| v * v).sum::<f32>())
        .collect();
    queries
        .par_chunks_exact(d)
        .map(|q| {
            let mut s: Vec<(f32, usize)> = data
                .chunks_exact(d)
                .enumerate()
                .map(|(i, x)| {
                    let dot: f32 = q.iter().zip(x).map(|(a, b)| a * b).sum();
                    let sc = match metric {
                        Metric::L2 => 2.0 * dot - norms[i],
                        Metric::Cosine => dot / norms[i].sqrt().max(1e-30),
                        Metric::Ip => dot,
                    };
                    (sc, i)
                })
                .collect();
            s.select_nth_unstable_by(k, |a, b| b.0.total_cmp(&a.0));
            s.truncate(k);
            s.into_iter().map(|x| x.1).collect()
        })
        .collect()
}

fn recall(ids: &[i64], truth: &[Vec<usize>], k: usize) -> f64 {
    let mut hit = 0usize;
    for (row, t) in ids.chunks_exact(k).zip(truth) {
        hit += row.iter().filter(|&&i| t.contains(&(i as usize))).count();
    }
    hit as f64 / (truth.len() * k) as f64
}

/// The CPU the calling thread runs on now (to see whether it moved).
fn cpu_now() -> i32 {
    // SAFETY: sched_getcpu takes no arguments and only reads the calling thread's state.
    unsafe { libc::sched_getcpu() }
}

/// Pins the calling thread (only) to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: `set` is a zeroed cpu_set_t on the stack, filled by CPU_SET and passed by
    // pointer with its size; pid 0 means the calling thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    eprintln!("main thread pinned to cpu {cpu}: rc {rc}");
}

fn median_one_us(queries: &[f32], d: usize, mut f: impl FnMut(&[f32])) -> f64 {
    let c0 = cpu_now();
    let mut ts = Vec::new();
    for q in queries.chunks_exact(d).take(300) {
        let t = Instant::now();
        f(q);
        ts.push(t.elapsed().as_secs_f64() * 1e6);
    }
    ts.sort_by(f64::total_cmp);
    eprintln!("1 query: cpu {c0} -> {}", cpu_now());
    ts[ts.len() / 2]
}

fn best_qps(queries: &[f32], d: usize, b: usize, ms: u64, mut f: impl FnMut(&[f32])) -> f64 {
    let nb = queries.len() / d / b;
    let mut best = f64::INFINITY;
    let t_end = Instant::now() + std::time::Duration::from_millis(ms);
    let mut reps = 0;
    while reps < 3 || Instant::now() < t_end {
        let i = reps % nb;
        let t = Instant::now();
        f(&queries[i * b * d..(i + 1) * b * d]);
        best = best.min(t.elapsed().as_secs_f64());
        reps += 1;
    }
    b as f64 / best
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = arg(&args, "--data", "");
    let metric = Metric::parse(&arg(&args, "--metric", "l2")).expect("--metric");
    let nq: usize = arg(&args, "--nq", "1000").parse().unwrap();
    let ms: u64 = arg(&args, "--ms", "500").parse().unwrap();
    let exact = args.iter().any(|a| a == "--exact");
    let (rows, d, vals) = read_npy(&path);
    let (queries, data) = vals.split_at(nq * d);
    let n = rows - nq;
    let mut nlist: usize = arg(&args, "--nlist", "0").parse().unwrap();
    if nlist == 0 {
        nlist = (4.0 * (n as f64).sqrt()) as usize;
    }
    let probes: Vec<usize> = arg(&args, "--nprobe", "16,32,64,128")
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let k = 10;
    let t = Instant::now();
    let tr = truth(data, queries, d, k, metric);
    eprintln!("truth {:.1}s", t.elapsed().as_secs_f64());
    // After the truth, so that rayon's pool (spawned by it) keeps every CPU.
    if let Ok(cpu) = arg(&args, "--pin-main", "").parse::<usize>() {
        pin_to(cpu);
    }
    println!(
        "data {path} n={n} d={d} metric={metric:?} nlist={nlist} threads={} exact={exact} \
         prefetch one/batch = {}/{} KiB crew helpers {} part {}k",
        rayon::current_num_threads(),
        PREFETCH_ONE_QUERY / 1024,
        PREFETCH_BATCH / 1024,
        slabcache_core::vector::crew::helpers(),
        slabcache_core::vector::crew::PART_WORK / 1024
    );
    println!("| index | R@10 | 1 query (µs) | batch 32 (q/s) | batch 256 (q/s) | bytes/row |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut flat = FlatIndex::with_options(d, metric, Kernel::best(), exact).unwrap();
    if !args.iter().any(|a| a == "--no-flat") {
        flat.add(data, None).unwrap();
    }
    let (_, ids) = flat.search_batch(queries, k).unwrap();
    let row = |name: String, r: f64, one: f64, b32: f64, b256: f64, bytes: usize| {
        println!(
            "| {name} | {r:.4} | {one:.0} | {b32:.0} | {b256:.0} | {:.1} |",
            bytes as f64 / n as f64
        );
    };
    row(
        "flat".into(),
        recall(&ids, &tr, k),
        median_one_us(queries, d, |q| {
            black_box(flat.search_batch(q, k).unwrap());
        }),
        best_qps(queries, d, 32, ms, |q| {
            black_box(flat.search_batch(q, k).unwrap());
        }),
        best_qps(queries, d, 256, ms, |q| {
            black_box(flat.search_batch(q, k).unwrap());
        }),
        flat.memory_bytes(),
    );
    drop(flat);
    let t = Instant::now();
    let mut ivf = ClusteredIndex::with_options(d, metric, nlist, 1, Kernel::best(), exact).unwrap();
    ivf.add(data, None).unwrap();
    eprintln!("clustered build {:.1}s", t.elapsed().as_secs_f64());
    let b = ivf.bytes();
    eprintln!(
        "bytes/row: store {:.1} (codes {:.1}) id table {:.1} other {:.1}",
        b.store.total() as f64 / n as f64,
        b.store.codes as f64 / n as f64,
        b.id_table as f64 / n as f64,
        b.other as f64 / n as f64
    );
    let probe_passes: usize = arg(&args, "--probe", "0").parse().unwrap();
    if probe_passes > 0 {
        // Profiling aid: the probe alone (one query a call), per nprobe.
        for &p in &probes {
            let mut ts = Vec::with_capacity(probe_passes * nq);
            for _ in 0..probe_passes {
                for q in queries.chunks_exact(d) {
                    let t1 = Instant::now();
                    black_box(ivf.probe_lists(q, p).unwrap());
                    ts.push(t1.elapsed().as_secs_f64() * 1e6);
                }
            }
            ts.sort_by(f64::total_cmp);
            println!(
                "probe nprobe={p} one query: median {:.2} µs, p10 {:.2}, p90 {:.2}",
                ts[ts.len() / 2],
                ts[ts.len() / 10],
                ts[ts.len() * 9 / 10]
            );
        }
        return;
    }
    let loop1: usize = arg(&args, "--loop1", "0").parse().unwrap();
    if loop1 > 0 {
        // Profiling aid: single queries only, `loop1` passes over the queries.
        ivf.set_nprobe(probes[0]).unwrap();
        let lb: usize = arg(&args, "--loopb", "1").parse().unwrap();
        let mut ts = Vec::with_capacity(loop1 * nq / lb);
        let t = Instant::now();
        for _ in 0..loop1 {
            for q in queries.chunks_exact(d * lb) {
                let t1 = Instant::now();
                black_box(ivf.search_batch(q, k).unwrap());
                ts.push(t1.elapsed().as_secs_f64() * 1e6);
            }
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / (loop1 * nq) as f64;
        ts.sort_by(f64::total_cmp);
        println!(
            "loop1 nprobe={} batch {lb} mean {us:.1} µs per query, median call {:.1} µs",
            probes[0],
            ts[ts.len() / 2]
        );
        return;
    }
    for &p in &probes {
        ivf.set_nprobe(p).unwrap();
        let (_, ids) = ivf.search_batch(queries, k).unwrap();
        row(
            format!("clustered nprobe={p}"),
            recall(&ids, &tr, k),
            median_one_us(queries, d, |q| {
                black_box(ivf.search_batch(q, k).unwrap());
            }),
            best_qps(queries, d, 32, ms, |q| {
                black_box(ivf.search_batch(q, k).unwrap());
            }),
            best_qps(queries, d, 256, ms, |q| {
                black_box(ivf.search_batch(q, k).unwrap());
            }),
            ivf.memory_bytes(),
        );
    }
}
