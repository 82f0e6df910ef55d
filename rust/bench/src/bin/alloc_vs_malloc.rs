//! The slab allocator against the system malloc (glibc), in one run.
//!
//! ```text
//! cargo run --release -p slabcache-bench --bin alloc_vs_malloc -- [THREADS...] [--quick]
//! ```
//!
//! Prints ns per alloc+free pair for 16 B .. 64 KiB and a mixed trace,
//! single-threaded, then for each thread count the aggregate throughput of
//! every thread running the mixed trace on a shared allocator (for the
//! many-core figures, e.g. `-- 1 2 4 8 16`).

use std::sync::{Arc, Barrier};
use std::time::Instant;

use slabcache_core::slab::trace::{mixed_trace, time_pairs, time_trace, RawAlloc, SystemMalloc};
use slabcache_core::slab::SlabAllocator;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let threads: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let iters = if quick { 200_000 } else { 2_000_000 };
    let slab = SlabAllocator::new().expect("reserve the arena");

    println!("single thread: ns per alloc+free pair (best of 5)");
    println!(
        "{:<12} {:>10} {:>10} {:>8}",
        "size", "slabcache", "glibc", "ratio"
    );
    for size in [16usize, 64, 256, 4096, 65536] {
        let ours = time_pairs(&slab, size, iters, 5);
        let peer = time_pairs(&SystemMalloc, size, iters, 5);
        println!(
            "{:<12} {:>10.2} {:>10.2} {:>7.2}x",
            format!("{size} B"),
            ours,
            peer,
            peer / ours
        );
    }
    let ops = mixed_trace(if quick { 200_000 } else { 2_000_000 }, 10_000, 42);
    let ours = time_trace(&slab, &ops, 5);
    let peer = time_trace(&SystemMalloc, &ops, 5);
    println!(
        "{:<12} {:>10.2} {:>10.2} {:>7.2}x  (ns per op)",
        "mixed trace",
        ours,
        peer,
        peer / ours
    );

    if threads.is_empty() {
        return;
    }
    println!();
    println!("mixed trace on every thread, shared allocator: million ops per second (total)");
    println!(
        "{:<8} {:>10} {:>10} {:>8}",
        "threads", "slabcache", "glibc", "ratio"
    );
    for &t in &threads {
        let ours = scaling(&slab, t, &ops);
        let peer = scaling(&SystemMalloc, t, &ops);
        println!(
            "{:<8} {:>10.1} {:>10.1} {:>7.2}x",
            t,
            ours,
            peer,
            ours / peer
        );
    }
}

fn scaling<A: RawAlloc + Sync>(
    a: &A,
    threads: usize,
    ops: &[slabcache_core::slab::trace::Op],
) -> f64 {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let start = std::thread::scope(|s| {
        for _ in 0..threads {
            let b = barrier.clone();
            s.spawn(move || {
                b.wait();
                time_trace(a, ops, 1);
            });
        }
        barrier.wait();
        Instant::now()
    });
    let secs = start.elapsed().as_secs_f64();
    (threads * ops.len()) as f64 / secs / 1e6
}
