//! Build and CPU information for `slabcache info`.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use slabcache_core::cpu::CpuFeatures;

/// `{feature_name: bool}` for the SIMD features of this CPU.
#[pyfunction]
fn cpu_features(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    for (name, present) in CpuFeatures::detect().as_pairs() {
        d.set_item(name, present)?;
    }
    Ok(d)
}

/// Version, build profile and target of the native module.
#[pyfunction]
fn build_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("version", slabcache_core::VERSION)?;
    d.set_item(
        "profile",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    )?;
    d.set_item("target_arch", std::env::consts::ARCH)?;
    d.set_item("target_os", std::env::consts::OS)?;
    Ok(d)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(cpu_features, m)?)?;
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    Ok(())
}
