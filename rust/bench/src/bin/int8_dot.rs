//! INT8 dot-product speed per kernel.
//!
//! ```text
//! cargo run --release -p slabcache-bench --bin int8_dot -- [--dims 384,768,1536] [--ms 300]
//! ```
//!
//! For every kernel this CPU supports: nanoseconds per single dot product
//! (`Kernel::dot`, two vectors hot in L1), and per row-query pair inside a
//! 16-query × 64-row tile (`Kernel::dots`, the batched-search inner loop).
//! Prints a markdown table.

use std::hint::black_box;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use slabcache_core::vector::{FlatIndex, Kernel, KernelKind, Metric};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Best-of-5 nanoseconds per call of `f`, each repeat lasting about `ms / 5`.
fn ns_per_call(ms: u64, mut f: impl FnMut()) -> f64 {
    let mut iters = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        if t.elapsed().as_millis() as u64 >= ms / 20 || iters > 1 << 40 {
            break;
        }
        iters *= 2;
    }
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        best = best.min(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    best
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dims: Vec<usize> = arg(&args, "--dims")
        .unwrap_or_else(|| "384,768,1536".into())
        .split(',')
        .map(|s| s.trim().parse().expect("--dims: comma-separated integers"))
        .collect();
    let ms: u64 = arg(&args, "--ms").map_or(300, |s| s.parse().expect("--ms: integer"));
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let skipped: Vec<&str> = KernelKind::ALL
        .iter()
        .filter(|k| !k.is_supported())
        .map(|k| k.name())
        .collect();
    println!("# INT8 dot product, ns (best of 5)\n");
    println!(
        "cpu threads: {}; skipped kernels (not on this CPU): {}\n",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        if skipped.is_empty() {
            "none".into()
        } else {
            skipped.join(", ")
        }
    );
    println!("| kernel | dim | one dot (ns) | per pair in 16x64 tile (ns) | per pair in a 1-thread search, 16 queries x 20k rows (ns) | GB/s (one dot, both vectors) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for kernel in Kernel::available() {
        for &d in &dims {
            let a: Vec<i8> = (0..d).map(|_| rng.gen_range(-127..=127)).collect();
            let b: Vec<i8> = (0..d).map(|_| rng.gen_range(-127..=127)).collect();
            let one = ns_per_call(ms, || {
                black_box(kernel.dot(black_box(&a), black_box(&b)));
            });
            let (nq, nr) = (16, 64);
            let q: Vec<i8> = (0..nq * d).map(|_| rng.gen_range(-127..=127)).collect();
            let r: Vec<i8> = (0..nr * d).map(|_| rng.gen_range(-127..=127)).collect();
            let mut out = vec![0i32; nq * nr];
            let tile = ns_per_call(ms, || {
                kernel.dots(black_box(&q), black_box(&r), d, &mut out);
                black_box(&out);
            }) / (nq * nr) as f64;
            let rows = 20_000;
            let data: Vec<f32> = (0..rows * d).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let qs: Vec<f32> = (0..nq * d).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let mut index = FlatIndex::with_kernel(d, Metric::Ip, kernel).expect("index");
            index.add(&data, None).expect("add");
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .expect("pool");
            let search = pool.install(|| {
                ns_per_call(ms, || {
                    black_box(index.search_batch(black_box(&qs), 10).expect("search"));
                })
            }) / (nq * rows) as f64;
            println!(
                "| {} | {d} | {one:.2} | {tile:.2} | {search:.2} | {:.1} |",
                kernel.name(),
                (2 * d) as f64 / one
            );
        }
    }
}
