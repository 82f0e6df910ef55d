//! Bindings of the INT8 vector index (`slabcache_core::vector`).
//!
//! No logic: the Python layer (`slabcache/vectors.py`) hands over C-contiguous
//! float32 / int64 arrays; this file borrows them, releases the GIL around
//! the core call and maps errors. The index sits behind a read-write lock:
//! searches run concurrently, adds/removes exclusively.

use numpy::{
    PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use parking_lot::RwLock;
use pyo3::prelude::*;
use slabcache_core::vector::{
    persist::load_index_with_kernel, quantize::CodeKind, AnyIndex, ClusteredIndex, FlatIndex,
    Kernel, KernelKind, Metric,
};
use slabcache_core::ErrorKind;

use crate::errors::{py_err, IntoPyResult};

fn kernel_from(name: Option<&str>) -> PyResult<Kernel> {
    match name {
        None => Kernel::from_env().py(),
        Some(n) => Kernel::new(KernelKind::parse(n).py()?).py(),
    }
}

fn usize_arg(v: i64, what: &str) -> PyResult<usize> {
    usize::try_from(v).map_err(|_| {
        py_err(
            ErrorKind::InvalidArgument,
            format!("{what} must be non-negative, got {v}"),
        )
    })
}

fn ids_arg(ids: &[i64]) -> PyResult<Vec<u64>> {
    ids.iter()
        .map(|&i| {
            u64::try_from(i).map_err(|_| {
                py_err(
                    ErrorKind::InvalidArgument,
                    format!("ids must be non-negative, got {i}"),
                )
            })
        })
        .collect()
}

fn slice<'a, T: numpy::Element, D: numpy::ndarray::Dimension>(
    a: &'a numpy::PyReadonlyArray<'_, T, D>,
) -> PyResult<&'a [T]> {
    a.as_slice()
        .map_err(|_| py_err(ErrorKind::InvalidArgument, "array must be C-contiguous"))
}

/// `(scores float32 [m, k], ids int64 [m, k])`.
type SearchResult<'py> = (Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<i64>>);
/// `(codes int8 [n, d], scales float32 [n])`.
type Quantized<'py> = (Bound<'py, PyArray2<i8>>, Bound<'py, PyArray1<f32>>);

/// The INT8 index (flat or clustered); see `slabcache.vectors.Int8Index`.
#[pyclass(name = "Int8Index", module = "slabcache._native", frozen)]
pub struct PyInt8Index {
    inner: RwLock<AnyIndex>,
}

#[pymethods]
impl PyInt8Index {
    #[new]
    #[pyo3(signature = (dim, metric = "cosine", index_type = "flat", nlist = 0, nprobe = 8, kernel = None, keep_exact = false, codes = "auto"))]
    #[allow(clippy::too_many_arguments)] // mirrors the Python constructor's keywords
    fn new(
        dim: i64,
        metric: &str,
        index_type: &str,
        nlist: i64,
        nprobe: i64,
        kernel: Option<&str>,
        keep_exact: bool,
        codes: &str,
    ) -> PyResult<Self> {
        let dim = usize_arg(dim, "dim")?;
        let metric = Metric::parse(metric).py()?;
        let codes = CodeKind::parse(codes).py()?;
        let kernel = kernel_from(kernel)?;
        let index = match index_type {
            "flat" => {
                AnyIndex::Flat(FlatIndex::with_options(dim, metric, kernel, keep_exact).py()?)
            }
            "clustered" => AnyIndex::Clustered(
                ClusteredIndex::with_options(
                    dim,
                    metric,
                    usize_arg(nlist, "nlist")?,
                    usize_arg(nprobe, "nprobe")?,
                    kernel,
                    keep_exact,
                )
                .py()?,
            ),
            other => {
                return Err(py_err(
                    ErrorKind::InvalidArgument,
                    format!("index_type must be \"flat\" or \"clustered\", got {other:?}"),
                ))
            }
        };
        let mut index = index;
        index.set_codes(codes).py()?;
        Ok(PyInt8Index {
            inner: RwLock::new(index),
        })
    }

    /// Adds `vectors` (float32 [n, dim], C-contiguous); returns the int64 ids.
    #[pyo3(signature = (vectors, ids = None))]
    fn add<'py>(
        &self,
        py: Python<'py>,
        vectors: PyReadonlyArray2<'py, f32>,
        ids: Option<PyReadonlyArray1<'py, i64>>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let v = slice(&vectors)?;
        let ids = match &ids {
            Some(a) => Some(ids_arg(slice(a)?)?),
            None => None,
        };
        let out = py
            .allow_threads(|| self.inner.write().add(v, ids.as_deref()))
            .py()?;
        Ok(PyArray1::from_vec(
            py,
            out.into_iter().map(|i| i as i64).collect(),
        ))
    }

    /// Top-`k` of each query (float32 [m, dim]); returns (scores [m, k], ids [m, k]).
    #[pyo3(signature = (queries, k, rerank = None))]
    fn search<'py>(
        &self,
        py: Python<'py>,
        queries: PyReadonlyArray2<'py, f32>,
        k: i64,
        rerank: Option<i64>,
    ) -> PyResult<SearchResult<'py>> {
        let m = queries.shape()[0];
        let q = slice(&queries)?;
        let k = usize_arg(k, "k")?;
        let rerank = rerank.map(|r| usize_arg(r, "rerank")).transpose()?;
        let (scores, ids) = py
            .allow_threads(|| self.inner.read().search_batch_rerank(q, k, rerank))
            .py()?;
        Ok((
            PyArray1::from_vec(py, scores).reshape([m, k])?,
            PyArray1::from_vec(py, ids).reshape([m, k])?,
        ))
    }

    /// Removes ids (int64 [n]); returns how many were removed.
    fn remove(&self, py: Python<'_>, ids: PyReadonlyArray1<'_, i64>) -> PyResult<usize> {
        let ids = ids_arg(slice(&ids)?)?;
        py.allow_threads(|| self.inner.write().remove(&ids)).py()
    }

    /// Trains a clustered index's centroids on a sample (float32 [n, dim]).
    fn train(&self, py: Python<'_>, vectors: PyReadonlyArray2<'_, f32>) -> PyResult<()> {
        let v = slice(&vectors)?;
        py.allow_threads(|| match &mut *self.inner.write() {
            AnyIndex::Clustered(c) => c.train(v),
            AnyIndex::Flat(_) => Ok(()),
        })
        .py()
    }

    fn __len__(&self) -> usize {
        self.inner.read().len()
    }

    fn __contains__(&self, id: i64) -> bool {
        u64::try_from(id).is_ok_and(|id| self.inner.read().contains(id))
    }

    /// Saves to `path` (atomic replace).
    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        py.allow_threads(|| self.inner.read().save(&path)).py()
    }

    /// Loads an index saved by `save`.
    #[staticmethod]
    #[pyo3(signature = (path, kernel = None))]
    fn load(py: Python<'_>, path: std::path::PathBuf, kernel: Option<&str>) -> PyResult<Self> {
        let kernel = kernel_from(kernel)?;
        let index = py
            .allow_threads(|| load_index_with_kernel(&path, kernel))
            .py()?;
        Ok(PyInt8Index {
            inner: RwLock::new(index),
        })
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.read().dim()
    }

    #[getter]
    fn metric(&self) -> &'static str {
        self.inner.read().metric().name()
    }

    #[getter]
    fn kernel(&self) -> &'static str {
        self.inner.read().kernel().name()
    }

    /// Switches kernel (results are identical).
    fn set_kernel(&self, name: &str) -> PyResult<()> {
        let k = kernel_from(Some(name))?;
        self.inner.write().set_kernel(k);
        Ok(())
    }

    #[getter]
    fn index_type(&self) -> &'static str {
        match &*self.inner.read() {
            AnyIndex::Flat(_) => "flat",
            AnyIndex::Clustered(_) => "clustered",
        }
    }

    #[getter]
    fn nlist(&self) -> usize {
        match &*self.inner.read() {
            AnyIndex::Flat(_) => 0,
            AnyIndex::Clustered(c) => c.nlist(),
        }
    }

    #[getter]
    fn nprobe(&self) -> usize {
        match &*self.inner.read() {
            AnyIndex::Flat(_) => 0,
            AnyIndex::Clustered(c) => c.nprobe(),
        }
    }

    #[setter]
    fn set_nprobe(&self, nprobe: i64) -> PyResult<()> {
        let n = usize_arg(nprobe, "nprobe")?;
        match &mut *self.inner.write() {
            AnyIndex::Flat(_) => Err(py_err(
                ErrorKind::InvalidArgument,
                "nprobe only applies to a clustered index",
            )),
            AnyIndex::Clustered(c) => c.set_nprobe(n).py(),
        }
    }

    #[getter]
    fn is_trained(&self) -> bool {
        match &*self.inner.read() {
            AnyIndex::Flat(_) => true,
            AnyIndex::Clustered(c) => c.is_trained(),
        }
    }

    #[getter]
    fn memory_bytes(&self) -> usize {
        self.inner.read().memory_bytes()
    }

    #[getter]
    fn codes(&self) -> &'static str {
        self.inner.read().codes().name()
    }

    #[getter]
    fn keep_exact(&self) -> bool {
        self.inner.read().keeps_exact()
    }

    /// `(codes, ids, factors, exact, id_table, other)` bytes held.
    fn memory_parts(&self) -> (usize, usize, usize, usize, usize, usize) {
        let b = self.inner.read().bytes();
        (
            b.store.codes,
            b.store.ids,
            b.store.factors,
            b.store.exact,
            b.id_table,
            b.other,
        )
    }
}

/// Names of the INT8 kernels this CPU supports, scalar first.
#[pyfunction]
fn int8_kernels() -> Vec<&'static str> {
    Kernel::available().into_iter().map(|k| k.name()).collect()
}

/// The kernel `SLABCACHE_SIMD` selects (or the best); raises if it names an unusable one.
#[pyfunction]
fn int8_default_kernel() -> PyResult<&'static str> {
    Ok(Kernel::from_env().py()?.name())
}

/// Row-wise INT8 dot products `out[i] = a[i] · b[i]` (int8 [n, d] each).
#[pyfunction]
#[pyo3(signature = (a, b, kernel = None))]
fn int8_dot<'py>(
    py: Python<'py>,
    a: PyReadonlyArray2<'py, i8>,
    b: PyReadonlyArray2<'py, i8>,
    kernel: Option<&str>,
) -> PyResult<Bound<'py, PyArray1<i32>>> {
    if a.shape() != b.shape() {
        return Err(py_err(
            ErrorKind::InvalidArgument,
            format!("shapes differ: {:?} vs {:?}", a.shape(), b.shape()),
        ));
    }
    let d = a.shape()[1];
    let kernel = kernel_from(kernel)?;
    let n = a.shape()[0];
    let (sa, sb) = (slice(&a)?, slice(&b)?);
    let out: Vec<i32> = py.allow_threads(|| {
        if d == 0 {
            return vec![0; n];
        }
        sa.chunks_exact(d)
            .zip(sb.chunks_exact(d))
            .map(|(x, y)| kernel.dot(x, y))
            .collect()
    });
    Ok(PyArray1::from_vec(py, out))
}

/// Quantizes rows (float32 [n, d], finite): returns (codes int8 [n, d], scales float32 [n]).
#[pyfunction]
fn int8_quantize<'py>(py: Python<'py>, x: PyReadonlyArray2<'py, f32>) -> PyResult<Quantized<'py>> {
    let (n, d) = (x.shape()[0], x.shape()[1]);
    let v = slice(&x)?;
    let (codes, scales) = py
        .allow_threads(|| -> slabcache_core::Result<(Vec<i8>, Vec<f32>)> {
            slabcache_core::vector::check_finite(v, d)?;
            let mut codes = vec![0i8; n * d];
            let mut scales = Vec::with_capacity(n);
            if d > 0 {
                for (row, out) in v.chunks_exact(d).zip(codes.chunks_exact_mut(d)) {
                    scales.push(slabcache_core::vector::quantize_into(row, out).scale);
                }
            } else {
                scales.resize(n, 0.0);
            }
            Ok((codes, scales))
        })
        .py()?;
    Ok((
        PyArray1::from_vec(py, codes).reshape([n, d])?,
        PyArray1::from_vec(py, scales),
    ))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyInt8Index>()?;
    m.add_function(wrap_pyfunction!(int8_kernels, m)?)?;
    m.add_function(wrap_pyfunction!(int8_default_kernel, m)?)?;
    m.add_function(wrap_pyfunction!(int8_dot, m)?)?;
    m.add_function(wrap_pyfunction!(int8_quantize, m)?)?;
    Ok(())
}
