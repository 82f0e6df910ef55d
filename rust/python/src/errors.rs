//! Core errors to Python exceptions.
//!
//! The exception classes live in Python (`slabcache/errors.py`) because each
//! one subclasses both `SlabcacheError` and a builtin (`ValueError`,
//! `KeyError`, ...), which PyO3's `create_exception!` cannot express. We look
//! the class up by the name the core gives and cache the module.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyType;
use slabcache_core::{Error, ErrorKind};

static ERRORS_MODULE: GILOnceCell<Py<PyModule>> = GILOnceCell::new();

/// The Python class for `kind`, e.g. `slabcache.errors.DoubleFreeError`.
pub fn class_for(py: Python<'_>, kind: ErrorKind) -> PyResult<Bound<'_, PyType>> {
    let module = ERRORS_MODULE.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("slabcache.errors")?.unbind())
    })?;
    let cls = module.bind(py).getattr(kind.python_class())?;
    Ok(cls.downcast_into::<PyType>()?)
}

/// Builds the `PyErr` for a core error.
pub fn to_py_err(err: Error) -> PyErr {
    Python::with_gil(|py| match class_for(py, err.kind()) {
        // OSError subclasses take (errno, message): `e.errno` is then set.
        Ok(cls) => match err.errno() {
            Some(code)
                if matches!(
                    err.kind(),
                    ErrorKind::Io | ErrorKind::Corrupt | ErrorKind::Locked
                ) =>
            {
                PyErr::from_type(cls, (code, err.message().to_owned()))
            }
            _ => PyErr::from_type(cls, err.message().to_owned()),
        },
        Err(lookup) => PyRuntimeError::new_err(format!(
            "{} (and slabcache.errors could not be imported: {lookup})",
            err.message()
        )),
    })
}

/// A Python exception of `kind` with `message`, raised from binding code
/// (argument checks that need Python types, such as dtype checks).
pub fn py_err(kind: ErrorKind, message: impl Into<String>) -> PyErr {
    to_py_err(Error::new(kind, message))
}

/// `?`-friendly conversion: `core_call().map_err(to_py_err)?` reads as `.py()?`.
pub trait IntoPyResult<T> {
    /// Converts a core result into a Python result.
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for slabcache_core::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py_err)
    }
}
