//! Shared helpers for the Rust benchmark binaries in `src/bin/`.

use std::time::{Duration, Instant};

/// Runs `f` `iters` times and returns the mean time per call.
///
/// ```
/// let per_call = slabcache_bench::time_per_iter(1000, || { std::hint::black_box(1 + 1); });
/// assert!(per_call.as_secs_f64() >= 0.0);
/// ```
pub fn time_per_iter(iters: u64, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed() / iters.max(1) as u32
}

/// The `p`-th percentile (0..=100) of `samples` (nanoseconds), sorting them in place.
pub fn percentile_ns(samples: &mut [u64], p: f64) -> u64 {
    if samples.is_empty() {
        return 0;
    }
    samples.sort_unstable();
    let idx = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[idx.min(samples.len() - 1)]
}
