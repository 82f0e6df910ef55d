//! What one split costs: `crew::top_k_over_parts` with parts of fixed busy
//! work, back to back, against the same parts run on the calling thread.
//!
//! ```text
//! cargo run --release -p slabcache-bench --bin crew_cost -- [--calls 20000] [--parts 1,4,12,16] [--work-ns 0,2000,5000]
//! ```
//!
//! Each line: helpers allowed, parts, busy ns per part, the median and p99
//! µs per call, and the serial time of the same parts (`helpers 0`). The
//! difference between a split's time and `serial / participants` is the
//! crew's overhead per call (publishing, joining, claiming, merging).

use std::hint::black_box;
use std::time::Instant;

use slabcache_core::vector::crew;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn list(s: &str) -> Vec<u64> {
    s.split(',')
        .map(|x| x.trim().parse().expect("a number"))
        .collect()
}

/// Busy work of about `ns` nanoseconds (a dependent chain, calibrated once).
fn busy(iters: u64) -> u64 {
    let mut x = 1u64;
    for i in 0..iters {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

fn iters_per_ns() -> f64 {
    let n = 20_000_000;
    let t = Instant::now();
    black_box(busy(n));
    n as f64 / t.elapsed().as_nanos() as f64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let calls: usize = arg(&args, "--calls", "20000").parse().expect("--calls");
    let parts_list = list(&arg(&args, "--parts", "1,4,12,16"));
    let work_list = list(&arg(&args, "--work-ns", "0,2000,5000"));
    let helpers_list = list(&arg(&args, "--helpers", "0,1,3,7,15"));
    let rate = iters_per_ns();
    println!(
        "crew helpers: {}, busy loop {rate:.2} iters/ns",
        crew::helpers()
    );
    println!("| helpers | parts | ns/part | median µs | p99 µs | mean µs |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for &parts in &parts_list {
        for &work in &work_list {
            let iters = (work as f64 * rate) as u64;
            for &h in &helpers_list {
                let h = (h as usize).min(parts.saturating_sub(1) as usize);
                let mut ts = Vec::with_capacity(calls);
                let t_all = Instant::now();
                for c in 0..calls {
                    let t = Instant::now();
                    let top = crew::top_k_over_parts(parts as usize, h, 10, |j, heap, _| {
                        heap.push(busy(iters) as f32, (j + c) as u64);
                    });
                    black_box(top);
                    ts.push(t.elapsed().as_nanos() as u64);
                }
                let mean = t_all.elapsed().as_secs_f64() * 1e6 / calls as f64;
                ts.sort_unstable();
                let q = |p: f64| ts[((ts.len() - 1) as f64 * p) as usize] as f64 / 1e3;
                println!(
                    "| {h} | {parts} | {work} | {:.2} | {:.2} | {mean:.2} |",
                    q(0.5),
                    q(0.99)
                );
            }
        }
    }
}
