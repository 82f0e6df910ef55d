//! Bindings of the semantic lookaside buffer (`slabcache_core::slb`) and of
//! the scope-partitioned index under the semantic cache
//! (`slabcache_core::semantic`).
//!
//! No logic: argument conversion, a lock, GIL release around batch calls,
//! error mapping. `find_nearest` takes a float32 numpy vector directly (no
//! Python frame in between), which keeps an SLB hit near a microsecond.

use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2};
use parking_lot::{Mutex, RwLock};
use pyo3::prelude::*;
use slabcache_core::semantic::ScopedIndex;
use slabcache_core::slb::Slb;
use slabcache_core::ErrorKind;

use crate::errors::{py_err, IntoPyResult};

fn slice<'a, T: numpy::Element, D: numpy::ndarray::Dimension>(
    a: &'a numpy::PyReadonlyArray<'_, T, D>,
) -> PyResult<&'a [T]> {
    a.as_slice()
        .map_err(|_| py_err(ErrorKind::InvalidArgument, "array must be C-contiguous"))
}

/// A size argument (`dim`, a capacity, `k`): a Python int that must fit a `usize`.
fn size_arg(v: i64, what: &str) -> PyResult<usize> {
    usize::try_from(v).map_err(|_| {
        py_err(
            ErrorKind::InvalidArgument,
            format!("{what} must be non-negative, got {v}"),
        )
    })
}

fn key_arg(k: i64) -> PyResult<u64> {
    u64::try_from(k).map_err(|_| {
        py_err(
            ErrorKind::InvalidArgument,
            format!("keys must be non-negative, got {k}"),
        )
    })
}

fn keys_arg(keys: &[i64]) -> PyResult<Vec<u64>> {
    keys.iter().map(|&k| key_arg(k)).collect()
}

fn vector_arg<'py>(query: &'py Bound<'py, PyAny>) -> PyResult<PyReadonlyArray1<'py, f32>> {
    match query.downcast::<PyArray1<f32>>() {
        Ok(a) => Ok(a.readonly()),
        Err(_) => Err(py_err(
            ErrorKind::InvalidType,
            "the query must be a float32 numpy array of shape [dim] (use np.asarray(x, dtype=np.float32))",
        )),
    }
}

/// `(keys int64 [m], scores float32 [m])`.
type KeysScores<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<f32>>);
/// `(scores float32 [k], keys int64 [k])`.
type ScoresKeys<'py> = (Bound<'py, PyArray1<f32>>, Bound<'py, PyArray1<i64>>);

/// The semantic lookaside buffer; see `slabcache.slb.SemanticLookasideBuffer`.
#[pyclass(
    name = "SemanticLookasideBuffer",
    module = "slabcache._native",
    subclass,
    frozen
)]
pub struct PySlb {
    inner: Mutex<Slb>,
}

#[pymethods]
impl PySlb {
    #[new]
    #[pyo3(signature = (dim, per_scope_capacity = 256, capacity = 16384))]
    fn new(dim: i64, per_scope_capacity: i64, capacity: i64) -> PyResult<Self> {
        Ok(PySlb {
            inner: Mutex::new(
                Slb::new(
                    size_arg(dim, "dim")?,
                    size_arg(per_scope_capacity, "per_scope_capacity")?,
                    size_arg(capacity, "capacity")?,
                )
                .py()?,
            ),
        })
    }

    /// Adds or replaces `key` (float32 [dim]); returns the evicted keys.
    fn _insert(
        &self,
        scope: &str,
        key: i64,
        vector: PyReadonlyArray1<'_, f32>,
    ) -> PyResult<Vec<u64>> {
        let key = key_arg(key)?;
        self.inner.lock().insert(scope, key, slice(&vector)?).py()
    }

    /// `(key, score)` of the best row of `scope` at or above `threshold`, or None.
    #[pyo3(signature = (query, threshold, scope = ""))]
    fn find_nearest(
        &self,
        query: &Bound<'_, PyAny>,
        threshold: f32,
        scope: &str,
    ) -> PyResult<Option<(u64, f32)>> {
        let q = vector_arg(query)?;
        let hit = self
            .inner
            .lock()
            .find_nearest(scope, slice(&q)?, threshold)
            .py()?;
        Ok(hit.map(|h| (h.key, h.score)))
    }

    /// Batch lookup: float32 [m, dim], m scopes, float32 [m] thresholds ->
    /// (keys int64 [m] with -1 for a miss, scores float32 [m]).
    fn _find_many<'py>(
        &self,
        py: Python<'py>,
        queries: PyReadonlyArray2<'py, f32>,
        scopes: Vec<String>,
        thresholds: PyReadonlyArray1<'py, f32>,
    ) -> PyResult<KeysScores<'py>> {
        let q = slice(&queries)?;
        let t = slice(&thresholds)?;
        let hits = py
            .allow_threads(|| self.inner.lock().find_many(&scopes, q, t))
            .py()?;
        let keys: Vec<i64> = hits
            .iter()
            .map(|h| h.map_or(-1, |h| h.key as i64))
            .collect();
        let scores: Vec<f32> = hits
            .iter()
            .map(|h| h.map_or(f32::NEG_INFINITY, |h| h.score))
            .collect();
        Ok((PyArray1::from_vec(py, keys), PyArray1::from_vec(py, scores)))
    }

    /// Removes `key`; returns whether it was held.
    fn remove(&self, key: i64) -> bool {
        u64::try_from(key).is_ok_and(|k| self.inner.lock().remove(k))
    }

    /// Removes every row of `scope`; returns their keys.
    fn drop_scope(&self, scope: &str) -> Vec<u64> {
        self.inner.lock().drop_scope(scope)
    }

    /// Removes everything.
    fn clear(&self) {
        self.inner.lock().clear()
    }

    /// The stored unit-normalised vector of `key`, or None.
    fn vector<'py>(&self, py: Python<'py>, key: i64) -> Option<Bound<'py, PyArray1<f32>>> {
        let k = u64::try_from(key).ok()?;
        let g = self.inner.lock();
        g.vector(k).map(|v| PyArray1::from_slice(py, v))
    }

    /// Rows held in `scope`.
    fn scope_len(&self, scope: &str) -> usize {
        self.inner.lock().scope_len(scope)
    }

    /// Scopes holding rows.
    fn scopes(&self) -> Vec<String> {
        self.inner.lock().scopes()
    }

    fn __len__(&self) -> usize {
        self.inner.lock().len()
    }

    fn __contains__(&self, key: i64) -> bool {
        u64::try_from(key).is_ok_and(|k| self.inner.lock().contains(k))
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.lock().dim()
    }

    #[getter]
    fn capacity(&self) -> usize {
        self.inner.lock().capacity()
    }

    #[getter]
    fn per_scope_capacity(&self) -> usize {
        self.inner.lock().per_scope_capacity()
    }

    #[getter]
    fn kernel(&self) -> &'static str {
        self.inner.lock().kernel()
    }

    #[getter]
    fn memory_bytes(&self) -> usize {
        self.inner.lock().memory_bytes()
    }
}

/// `(scores float32 [m, k], keys int64 [m, k])`.
type SearchResult<'py> = (Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<i64>>);

/// One cosine INT8 index per scope (the semantic cache's vector side).
#[pyclass(name = "ScopedIndex", module = "slabcache._native", frozen)]
pub struct PyScopedIndex {
    inner: RwLock<ScopedIndex>,
}

#[pymethods]
impl PyScopedIndex {
    #[new]
    #[pyo3(signature = (dim, cluster_above = 20_000))]
    fn new(dim: i64, cluster_above: i64) -> PyResult<Self> {
        let kernel = slabcache_core::vector::Kernel::from_env().py()?;
        Ok(PyScopedIndex {
            inner: RwLock::new(
                ScopedIndex::with_options(
                    size_arg(dim, "dim")?,
                    kernel,
                    size_arg(cluster_above, "cluster_above")?,
                )
                .py()?,
            ),
        })
    }

    /// Whether `scope`'s partition is clustered (k-means pages).
    fn is_clustered(&self, scope: &str) -> bool {
        self.inner.read().is_clustered(scope)
    }

    /// Adds float32 [n, dim] vectors under int64 [n] keys in n scopes.
    fn add_many(
        &self,
        py: Python<'_>,
        scopes: Vec<String>,
        keys: PyReadonlyArray1<'_, i64>,
        vectors: PyReadonlyArray2<'_, f32>,
    ) -> PyResult<()> {
        let keys = keys_arg(slice(&keys)?)?;
        let v = slice(&vectors)?;
        py.allow_threads(|| self.inner.write().add_many(&scopes, &keys, v))
            .py()
    }

    /// Removes keys (int64 [n]) of one scope; returns how many were present.
    fn remove(
        &self,
        py: Python<'_>,
        scope: &str,
        keys: PyReadonlyArray1<'_, i64>,
    ) -> PyResult<usize> {
        let keys = keys_arg(slice(&keys)?)?;
        py.allow_threads(|| self.inner.write().remove(scope, &keys))
            .py()
    }

    /// Removes a scope; returns its keys.
    fn drop_scope(&self, scope: &str) -> Vec<u64> {
        self.inner.write().drop_scope(scope)
    }

    /// Top-`k` per query within its own scope.
    fn search_many<'py>(
        &self,
        py: Python<'py>,
        scopes: Vec<String>,
        queries: PyReadonlyArray2<'py, f32>,
        k: i64,
    ) -> PyResult<SearchResult<'py>> {
        let m = scopes.len();
        let q = slice(&queries)?;
        let k = size_arg(k, "k")?;
        let (s, ks) = py
            .allow_threads(|| self.inner.read().search_many(&scopes, q, k))
            .py()?;
        Ok((
            PyArray1::from_vec(py, s).reshape([m, k])?,
            PyArray1::from_vec(py, ks).reshape([m, k])?,
        ))
    }

    /// Top-`k` for one query (float32 [dim]) in one scope: (scores [k], keys [k]).
    fn search_one<'py>(
        &self,
        py: Python<'py>,
        scope: &str,
        query: PyReadonlyArray1<'py, f32>,
        k: i64,
    ) -> PyResult<ScoresKeys<'py>> {
        let q = slice(&query)?;
        let k = size_arg(k, "k")?;
        let (s, ks) = py
            .allow_threads(|| self.inner.read().search_many(&[scope], q, k))
            .py()?;
        Ok((PyArray1::from_vec(py, s), PyArray1::from_vec(py, ks)))
    }

    /// The dequantised vector of `key` in `scope`.
    fn reconstruct<'py>(
        &self,
        py: Python<'py>,
        scope: &str,
        key: i64,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let v = self.inner.read().reconstruct(scope, key_arg(key)?).py()?;
        Ok(PyArray1::from_vec(py, v))
    }

    fn contains(&self, scope: &str, key: i64) -> bool {
        u64::try_from(key).is_ok_and(|k| self.inner.read().contains(scope, k))
    }

    fn scope_len(&self, scope: &str) -> usize {
        self.inner.read().scope_len(scope)
    }

    fn scopes(&self) -> Vec<String> {
        self.inner.read().scopes()
    }

    fn __len__(&self) -> usize {
        self.inner.read().len()
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.read().dim()
    }

    #[getter]
    fn kernel(&self) -> &'static str {
        self.inner.read().kernel()
    }

    #[getter]
    fn memory_bytes(&self) -> usize {
        self.inner.read().memory_bytes()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySlb>()?;
    m.add_class::<PyScopedIndex>()?;
    Ok(())
}
