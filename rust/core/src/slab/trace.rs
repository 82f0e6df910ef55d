//! Allocation traces and timing routines shared by the Rust benchmark binary,
//! the Python `slabcache bench allocator` suite and the tests: the same
//! calls timed against this allocator and against the system `malloc`.
//!
//! ```
//! use slabcache_core::slab::trace::{mixed_trace, Op};
//! let ops = mixed_trace(1000, 100, 7);
//! assert_eq!(ops.len(), 1000);
//! assert!(ops.iter().any(|op| matches!(op, Op::Free { .. })));
//! ```

use std::hint::black_box;
use std::time::Instant;

use super::SlabAllocator;

/// One step of a trace; `slot` names a live object by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Allocate `size` bytes into `slot` (empty before).
    Alloc {
        /// The live-object position the new object takes.
        slot: u32,
        /// Bytes to allocate.
        size: u32,
    },
    /// Free the object in `slot`.
    Free {
        /// The live-object position to free.
        slot: u32,
    },
}

/// A tiny deterministic generator (xorshift64*), so traces need no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (seed 0 is replaced by a constant).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}

/// A size from the mixed distribution: 60 % 16–256 B, 30 % 257 B–4 KiB,
/// 10 % 4–32 KiB, uniform within each band (objects a serving runtime keeps:
/// token lists, request records, small tensors).
pub fn mixed_size(rng: &mut Rng) -> usize {
    match rng.range(0, 99) {
        0..=59 => rng.range(16, 256),
        60..=89 => rng.range(257, 4096),
        _ => rng.range(4097, 32768),
    }
}

/// `ops` steps keeping at most `max_live` objects: allocate while below
/// `max_live / 2` live, then alloc or free with equal odds (a steady state).
/// Objects still live at the end stay live (callers free them).
pub fn mixed_trace(ops: usize, max_live: usize, seed: u64) -> Vec<Op> {
    let mut rng = Rng::new(seed);
    let mut live: Vec<u32> = Vec::new();
    let mut free_slots: Vec<u32> = (0..max_live as u32).rev().collect();
    let mut out = Vec::with_capacity(ops);
    for _ in 0..ops {
        let alloc = live.is_empty()
            || (free_slots.last().is_some()
                && (live.len() < max_live / 2 || rng.next_u64() & 1 == 0));
        if alloc {
            let slot = free_slots.pop().expect("checked above");
            live.push(slot);
            out.push(Op::Alloc {
                slot,
                size: mixed_size(&mut rng) as u32,
            });
        } else {
            let i = rng.range(0, live.len() - 1);
            let slot = live.swap_remove(i);
            free_slots.push(slot);
            out.push(Op::Free { slot });
        }
    }
    out
}

/// The two calls a benchmark times.
pub trait RawAlloc {
    /// Allocates `size` bytes; null on failure.
    fn alloc(&self, size: usize) -> *mut u8;
    /// Frees `p` (allocated with `size` bytes).
    fn free(&self, p: *mut u8, size: usize);
}

impl RawAlloc for SlabAllocator {
    #[inline]
    fn alloc(&self, size: usize) -> *mut u8 {
        self.raw_alloc(size)
            .map_or(std::ptr::null_mut(), |p| p.as_ptr())
    }
    #[inline]
    fn free(&self, p: *mut u8, _size: usize) {
        let _ = self.raw_free(p as usize);
    }
}

/// The system allocator (glibc `malloc`/`free` on Linux).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemMalloc;

impl RawAlloc for SystemMalloc {
    #[inline]
    fn alloc(&self, size: usize) -> *mut u8 {
        // SAFETY: malloc has no preconditions.
        unsafe { libc::malloc(size).cast() }
    }
    #[inline]
    fn free(&self, p: *mut u8, _size: usize) {
        // SAFETY: `p` came from `malloc` above and is freed once.
        unsafe { libc::free(p.cast()) }
    }
}

/// Mean nanoseconds of one `alloc(size)` + write + `free` pair, best of `repeat` runs.
pub fn time_pairs<A: RawAlloc>(a: &A, size: usize, iters: usize, repeat: usize) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        for i in 0..iters {
            let p = a.alloc(size);
            // SAFETY: `p` is a fresh allocation of at least one byte (size >= 1).
            unsafe { p.write_volatile(i as u8) };
            a.free(black_box(p), size);
        }
        best = best.min(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    best
}

/// Mean nanoseconds per operation of running `ops`, best of `repeat` runs
/// (each run frees what is left live at its end, untimed).
pub fn time_trace<A: RawAlloc>(a: &A, ops: &[Op], repeat: usize) -> f64 {
    let slots = ops
        .iter()
        .map(|op| match *op {
            Op::Alloc { slot, .. } | Op::Free { slot } => slot as usize + 1,
        })
        .max()
        .unwrap_or(0);
    let mut live: Vec<(*mut u8, usize)> = vec![(std::ptr::null_mut(), 0); slots];
    let mut best = f64::INFINITY;
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        run_trace(a, ops, &mut live);
        best = best.min(t.elapsed().as_nanos() as f64 / ops.len().max(1) as f64);
        for e in live.iter_mut().filter(|e| !e.0.is_null()) {
            a.free(e.0, e.1);
            *e = (std::ptr::null_mut(), 0);
        }
    }
    best
}

/// Runs `ops`, leaving live objects in `live` (indexed by slot); each new
/// object gets its first and last byte written, as a user would.
pub fn run_trace<A: RawAlloc>(a: &A, ops: &[Op], live: &mut [(*mut u8, usize)]) {
    for op in ops {
        match *op {
            Op::Alloc { slot, size } => {
                let size = size as usize;
                let p = a.alloc(size);
                if !p.is_null() {
                    // SAFETY: `p` holds at least `size >= 1` bytes.
                    unsafe {
                        p.write_volatile(1);
                        p.add(size - 1).write_volatile(1);
                    }
                }
                live[slot as usize] = (p, size);
            }
            Op::Free { slot } => {
                let (p, size) = live[slot as usize];
                a.free(p, size);
                live[slot as usize] = (std::ptr::null_mut(), 0);
            }
        }
    }
}

/// Runs `ops` like [`run_trace`] but writes every byte of each new object
/// (so resident memory counts whole objects) and returns the peak of live
/// requested bytes over the run: the denominator of the classic
/// "peak resident / peak live" memory-overhead measure.
pub fn run_trace_touching<A: RawAlloc>(a: &A, ops: &[Op], live: &mut [(*mut u8, usize)]) -> u64 {
    let (mut now, mut peak) = (0u64, 0u64);
    for op in ops {
        match *op {
            Op::Alloc { slot, size } => {
                let size = size as usize;
                let p = a.alloc(size);
                if !p.is_null() {
                    // SAFETY: `p` holds at least `size` bytes.
                    unsafe { std::ptr::write_bytes(p, 0x5a, size) };
                    now += size as u64;
                    peak = peak.max(now);
                }
                live[slot as usize] = (p, size);
            }
            Op::Free { slot } => {
                let (p, size) = live[slot as usize];
                if !p.is_null() {
                    now -= size as u64;
                }
                a.free(p, size);
                live[slot as usize] = (std::ptr::null_mut(), 0);
            }
        }
    }
    peak
}

/// Requested bytes of the objects still live in `live` (after a trace run).
pub fn live_bytes(live: &[(*mut u8, usize)]) -> u64 {
    live.iter()
        .filter(|e| !e.0.is_null())
        .map(|e| e.1 as u64)
        .sum()
}

/// Frees every object still live in `live` and clears its slot.
pub fn free_live<A: RawAlloc>(a: &A, live: &mut [(*mut u8, usize)]) {
    for e in live.iter_mut().filter(|e| !e.0.is_null()) {
        a.free(e.0, e.1);
        *e = (std::ptr::null_mut(), 0);
    }
}

/// Allocates `count` objects of `size` bytes from `a` (writing every byte, so
/// they are resident), runs `f` while they are live, frees them and returns
/// what `f` returned. Stops allocating at the first failure.
pub fn hold_objects<A: RawAlloc, R>(a: &A, count: usize, size: usize, f: impl FnOnce() -> R) -> R {
    let size = size.max(1);
    let mut ptrs = Vec::with_capacity(count);
    for i in 0..count {
        let p = a.alloc(size);
        if p.is_null() {
            break;
        }
        // SAFETY: `p` holds at least `size` bytes.
        unsafe { p.write_bytes(i as u8, size) };
        ptrs.push(p);
    }
    let r = f();
    for p in ptrs {
        a.free(p, size);
    }
    r
}

/// Writes every byte of every live object (so resident-memory figures count
/// whole objects, not just the pages a trace happened to touch).
pub fn touch_live(live: &[(*mut u8, usize)]) {
    for &(p, n) in live.iter().filter(|e| !e.0.is_null()) {
        // SAFETY: each non-null entry is a live allocation of `n` bytes.
        unsafe { std::ptr::write_bytes(p, 0x5a, n) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_objects_keeps_them_live_during_the_callback_only() {
        let a = SlabAllocator::new().unwrap();
        let live = hold_objects(&a, 1000, 64, || a.stats().live_allocations);
        assert_eq!(live, 1000);
        assert_eq!(a.stats().live_allocations, 0);
    }

    #[test]
    fn a_touching_run_leaves_live_bytes_that_free_live_returns() {
        let a = SlabAllocator::new().unwrap();
        let ops = mixed_trace(5000, 200, 7);
        let mut live = vec![(std::ptr::null_mut(), 0usize); 200];
        let peak = run_trace_touching(&a, &ops, &mut live);
        let end = live_bytes(&live);
        assert!(end > 0 && end <= peak);
        let objects = live.iter().filter(|e| !e.0.is_null()).count() as u64;
        assert_eq!(a.stats().live_allocations, objects);
        free_live(&a, &mut live);
        assert_eq!((live_bytes(&live), a.stats().live_allocations), (0, 0));
    }
}
