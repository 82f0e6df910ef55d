//! PyO3 bindings of slabcache: `slabcache._native`.
//!
//! This crate holds no logic. Each file wraps one core subsystem: it converts
//! arguments, releases the GIL around long calls, and turns core errors into
//! `slabcache.errors` exceptions (see [`errors`]).

use pyo3::prelude::*;

mod errors;
mod info;

/// The native extension module `slabcache._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", slabcache_core::VERSION)?;
    info::register(m)?;
    Ok(())
}
