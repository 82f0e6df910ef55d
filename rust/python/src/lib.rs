//! PyO3 bindings of slabcache: `slabcache._native`.
//!
//! This crate holds no logic. Each file wraps one core subsystem: it converts
//! arguments, releases the GIL around long calls, and turns core errors into
//! `slabcache.errors` exceptions (see [`errors`]).

use pyo3::prelude::*;

mod arena;
mod blocks;
mod buffer;
mod errors;
mod info;
mod skiplist;
mod slab;
#[cfg(feature = "bench")]
mod slab_bench;
mod slb;
mod vector;

/// The native extension module `slabcache._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", slabcache_core::VERSION)?;
    info::register(m)?;
    slab::register(m)?;
    #[cfg(feature = "bench")]
    slab_bench::register(m)?;
    skiplist::register(m)?;
    vector::register(m)?;
    arena::register(m)?;
    blocks::register(m)?;
    slb::register(m)?;
    Ok(())
}
