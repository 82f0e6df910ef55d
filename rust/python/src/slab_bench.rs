//! The allocator's Rust-level benchmark hooks for `slabcache bench allocator`
//! (timed inside Rust against glibc `malloc`, no Python call in the loop).
//! Built only with the `bench` feature, so the shipped wheel does not carry them.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use slabcache_core::slab::trace::{self, SystemMalloc};
use slabcache_core::slab::SlabAllocator;

use crate::errors::IntoPyResult;
use crate::slab::stats_dict;

/// ns per alloc+free pair of `size` bytes: (slabcache core, glibc malloc), same run.
#[pyfunction]
#[pyo3(signature = (size, iters, repeat = 5))]
fn slab_bench_pairs(py: Python<'_>, size: usize, iters: usize, repeat: usize) -> (f64, f64) {
    py.allow_threads(|| {
        let a = SlabAllocator::new().expect("reserve");
        // Warm both up once.
        trace::time_pairs(&a, size, iters.min(10_000), 1);
        trace::time_pairs(&SystemMalloc, size, iters.min(10_000), 1);
        let ours = trace::time_pairs(&a, size, iters, repeat);
        let peer = trace::time_pairs(&SystemMalloc, size, iters, repeat);
        (ours, peer)
    })
}

/// ns per operation of the mixed trace: (slabcache core, glibc malloc), same run.
#[pyfunction]
#[pyo3(signature = (ops, max_live, seed = 42, repeat = 3))]
fn slab_bench_trace(
    py: Python<'_>,
    ops: usize,
    max_live: usize,
    seed: u64,
    repeat: usize,
) -> (f64, f64) {
    py.allow_threads(|| {
        let trace_ops = trace::mixed_trace(ops, max_live, seed);
        let a = SlabAllocator::new().expect("reserve");
        let ours = trace::time_trace(&a, &trace_ops, repeat);
        let peer = trace::time_trace(&SystemMalloc, &trace_ops, repeat);
        (ours, peer)
    })
}

type HoldResult<'py> = (
    u64,
    u64,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Option<Bound<'py, PyDict>>,
);

/// Runs the mixed trace on a fresh allocator (or on glibc when `system`),
/// writing every byte of every object. Calls `callback()` once the trace is
/// generated (before any allocation) and again while the objects live at the
/// end are held, frees them, and returns `(peak live requested bytes, live
/// requested bytes at the end, first result, second result, stats dict or
/// None)`.
#[pyfunction]
#[pyo3(signature = (ops, max_live, seed, system, callback))]
fn slab_hold_trace<'py>(
    py: Python<'py>,
    ops: usize,
    max_live: usize,
    seed: u64,
    system: bool,
    callback: &Bound<'py, PyAny>,
) -> PyResult<HoldResult<'py>> {
    let trace_ops = trace::mixed_trace(ops, max_live, seed);
    let mut live = vec![(std::ptr::null_mut::<u8>(), 0usize); max_live];
    let before = callback.call0()?;
    fn held<A: trace::RawAlloc + Sync>(
        a: &A,
        py: Python<'_>,
        ops: &[trace::Op],
        live: &mut [(*mut u8, usize)],
    ) -> (u64, u64) {
        struct Live<'a>(&'a mut [(*mut u8, usize)]);
        // SAFETY: raw addresses only; used on this thread after the closure.
        unsafe impl Send for Live<'_> {}
        let l = Live(live);
        py.allow_threads(move || {
            let l = l;
            let peak = trace::run_trace_touching(a, ops, l.0);
            (peak, trace::live_bytes(l.0))
        })
    }
    if system {
        let (peak, end) = held(&SystemMalloc, py, &trace_ops, &mut live);
        let r = callback.call0()?;
        trace::free_live(&SystemMalloc, &mut live);
        Ok((peak, end, before, r, None))
    } else {
        let a = SlabAllocator::new().py()?;
        let (peak, end) = held(&a, py, &trace_ops, &mut live);
        let r = callback.call0()?;
        a.flush_thread_cache();
        let stats = stats_dict(py, &a.stats())?;
        trace::free_live(&a, &mut live);
        Ok((peak, end, before, r, Some(stats)))
    }
}

/// Allocates `count` objects of `size` bytes (writing each) from a fresh
/// slab allocator or glibc, calls `callback()` while they are live, frees
/// them, and returns the callback's result.
#[pyfunction]
fn slab_hold_objects<'py>(
    count: usize,
    size: usize,
    system: bool,
    callback: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    if system {
        trace::hold_objects(&SystemMalloc, count, size, || callback.call0())
    } else {
        let a = SlabAllocator::new().py()?;
        trace::hold_objects(&a, count, size, || callback.call0())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(slab_bench_pairs, m)?)?;
    m.add_function(wrap_pyfunction!(slab_bench_trace, m)?)?;
    m.add_function(wrap_pyfunction!(slab_hold_trace, m)?)?;
    m.add_function(wrap_pyfunction!(slab_hold_objects, m)?)?;
    Ok(())
}
