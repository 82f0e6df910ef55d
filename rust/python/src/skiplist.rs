//! Bindings of the concurrent B-skiplist (`slabcache.skiplist.BSkipList`).
//!
//! No logic here: the core map is instantiated with one key type per
//! `key_type` ("int" -> i64, "float" -> F64Key, "bytes" -> Vec<u8>, "str" ->
//! String) and a value type that keeps Python ints as plain `i64` (the int
//! fast path never touches a Python object) and anything else as a reference.
//! Batch calls (`update_many`, `get_many`, `range_arrays`) release the GIL
//! around the core work for int and float keys.

use std::ops::Bound as Edge;
use std::sync::Arc;

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyFloat, PyInt, PyString, PyTuple};
use slabcache_core::skiplist::{BSkipList, F64Key, RangeCursor};
use slabcache_core::ErrorKind;

use crate::errors::{py_err, IntoPyResult};

/// A stored value: a Python int that fits in i64 is kept unboxed.
#[derive(Clone)]
pub enum PyValue {
    Int(i64),
    Obj(Arc<Py<PyAny>>),
}

impl PyValue {
    fn from_py(obj: &Bound<'_, PyAny>) -> Self {
        if obj.is_exact_instance_of::<PyInt>() {
            if let Ok(i) = obj.extract::<i64>() {
                return PyValue::Int(i);
            }
        }
        PyValue::Obj(Arc::new(obj.clone().unbind()))
    }

    fn to_py(&self, py: Python<'_>) -> PyObject {
        match self {
            PyValue::Int(i) => i.into_pyobject(py).expect("int").into_any().unbind(),
            PyValue::Obj(o) => o.clone_ref(py),
        }
    }
}

/// Conversion of one key type between Python and the core.
pub trait PyKey: Ord + Clone + Send + Sync + Sized + 'static {
    const NAME: &'static str;
    fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Self>;
    fn to_py(&self, py: Python<'_>) -> PyObject;
}

fn wrong_type(want: &str, obj: &Bound<'_, PyAny>) -> PyErr {
    let got = obj
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into());
    py_err(
        ErrorKind::InvalidType,
        format!("this BSkipList has {want} keys, got a key of type {got}"),
    )
}

impl PyKey for i64 {
    const NAME: &'static str = "int";
    fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        if !obj.is_instance_of::<PyInt>() {
            return Err(wrong_type("int", obj));
        }
        obj.extract::<i64>().map_err(|_| {
            py_err(
                ErrorKind::InvalidArgument,
                "int key out of the 64-bit signed range",
            )
        })
    }
    fn to_py(&self, py: Python<'_>) -> PyObject {
        self.into_pyobject(py).expect("int").into_any().unbind()
    }
}

impl PyKey for F64Key {
    const NAME: &'static str = "float";
    fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        if !(obj.is_instance_of::<PyFloat>() || obj.is_instance_of::<PyInt>()) {
            return Err(wrong_type("float", obj));
        }
        F64Key::new(obj.extract::<f64>()?).py()
    }
    fn to_py(&self, py: Python<'_>) -> PyObject {
        self.get()
            .into_pyobject(py)
            .expect("float")
            .into_any()
            .unbind()
    }
}

impl PyKey for Vec<u8> {
    const NAME: &'static str = "bytes";
    fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        match obj.downcast::<PyBytes>() {
            Ok(b) => Ok(b.as_bytes().to_vec()),
            Err(_) => Err(wrong_type("bytes", obj)),
        }
    }
    fn to_py(&self, py: Python<'_>) -> PyObject {
        PyBytes::new(py, self).into_any().unbind()
    }
}

impl PyKey for String {
    const NAME: &'static str = "str";
    fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        match obj.downcast::<PyString>() {
            Ok(s) => Ok(s.to_str()?.to_owned()),
            Err(_) => Err(wrong_type("str", obj)),
        }
    }
    fn to_py(&self, py: Python<'_>) -> PyObject {
        PyString::new(py, self).into_any().unbind()
    }
}

type Map<K> = Arc<BSkipList<K, PyValue>>;

#[derive(Clone)]
enum AnyMap {
    Int(Map<i64>),
    Float(Map<F64Key>),
    Bytes(Map<Vec<u8>>),
    Str(Map<String>),
}

/// Runs `$body` with `$m` bound to the typed map, `$K` to its key type.
macro_rules! with_map {
    ($self:expr, $m:ident, $K:ident, $body:expr) => {
        match &$self.map {
            AnyMap::Int($m) => {
                type $K = i64;
                $body
            }
            AnyMap::Float($m) => {
                type $K = F64Key;
                $body
            }
            AnyMap::Bytes($m) => {
                type $K = Vec<u8>;
                $body
            }
            AnyMap::Str($m) => {
                type $K = String;
                $body
            }
        }
    };
}

fn bound<K: PyKey>(key: Option<&Bound<'_, PyAny>>, inclusive: bool) -> PyResult<Edge<K>> {
    Ok(match key {
        None => Edge::Unbounded,
        Some(k) if k.is_none() => Edge::Unbounded,
        Some(k) if inclusive => Edge::Included(K::from_py(k)?),
        Some(k) => Edge::Excluded(K::from_py(k)?),
    })
}

fn entry<K: PyKey>(
    py: Python<'_>,
    e: Option<(K, PyValue)>,
) -> PyResult<Option<Bound<'_, PyTuple>>> {
    e.map(|(k, v)| PyTuple::new(py, [k.to_py(py), v.to_py(py)]))
        .transpose()
}

/// Values as an int64 array when every one is an int, else an object array.
fn values_array<'py>(py: Python<'py>, vals: &[Option<PyValue>]) -> Bound<'py, PyAny> {
    if vals.iter().all(|v| !matches!(v, Some(PyValue::Obj(_)))) {
        let ints: Vec<i64> = vals
            .iter()
            .map(|v| match v {
                Some(PyValue::Int(i)) => *i,
                _ => 0,
            })
            .collect();
        PyArray1::from_vec(py, ints).into_any()
    } else {
        let objs: Vec<PyObject> = vals
            .iter()
            .map(|v| match v {
                Some(v) => v.to_py(py),
                None => py.None(),
            })
            .collect();
        PyArray1::from_vec(py, objs).into_any()
    }
}

/// The native map; `slabcache.skiplist.BSkipList` wraps it.
#[pyclass(name = "BSkipListCore", module = "slabcache._native", frozen, subclass)]
pub struct PyBSkipList {
    map: AnyMap,
}

#[pymethods]
impl PyBSkipList {
    /// Extra arguments are for the Python subclass's `__init__`.
    #[new]
    #[pyo3(signature = (key_type = "int", *_args, **_kwargs))]
    fn new(
        key_type: &str,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>,
    ) -> PyResult<Self> {
        let map = match key_type {
            "int" => AnyMap::Int(Arc::default()),
            "float" => AnyMap::Float(Arc::default()),
            "bytes" => AnyMap::Bytes(Arc::default()),
            "str" => AnyMap::Str(Arc::default()),
            other => {
                return Err(py_err(
                    ErrorKind::InvalidArgument,
                    format!("key_type must be 'int', 'float', 'bytes' or 'str', got {other:?}"),
                ))
            }
        };
        Ok(PyBSkipList { map })
    }

    #[getter]
    fn key_type(&self) -> &'static str {
        with_map!(self, _m, K, K::NAME)
    }

    fn __len__(&self) -> usize {
        with_map!(self, m, _K, m.len())
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.contains(key)
    }

    fn __getitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<PyObject> {
        with_map!(
            self,
            m,
            K,
            match m.get(&K::from_py(key)?) {
                Some(v) => Ok(v.to_py(py)),
                None => Err(key_error(py, key)),
            }
        )
    }

    fn __setitem__(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.insert(key, value)
    }

    fn __delitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        with_map!(
            self,
            m,
            K,
            match m.remove(&K::from_py(key)?) {
                Some(_) => Ok(()),
                None => Err(key_error(py, key)),
            }
        )
    }

    #[pyo3(name = "_contains")]
    fn contains(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        with_map!(self, m, K, Ok(m.contains_key(&K::from_py(key)?)))
    }

    /// The value, or `default` when absent.
    #[pyo3(name = "_get")]
    fn get(&self, py: Python<'_>, key: &Bound<'_, PyAny>, default: PyObject) -> PyResult<PyObject> {
        with_map!(
            self,
            m,
            K,
            Ok(m.get(&K::from_py(key)?).map_or(default, |v| v.to_py(py)))
        )
    }

    #[pyo3(name = "_insert")]
    fn insert(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        with_map!(self, m, K, {
            m.insert(K::from_py(key)?, PyValue::from_py(value));
            Ok(())
        })
    }

    /// Removes the key; its value, or `default` when absent.
    #[pyo3(name = "_remove")]
    fn remove(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        default: PyObject,
    ) -> PyResult<PyObject> {
        with_map!(
            self,
            m,
            K,
            Ok(m.remove(&K::from_py(key)?).map_or(default, |v| v.to_py(py)))
        )
    }

    #[pyo3(name = "_setdefault")]
    fn setdefault(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<PyObject> {
        with_map!(
            self,
            m,
            K,
            Ok(m.get_or_insert(K::from_py(key)?, PyValue::from_py(value))
                .to_py(py))
        )
    }

    #[pyo3(name = "_first")]
    fn first<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        with_map!(self, m, _K, entry(py, m.first()))
    }

    #[pyo3(name = "_last")]
    fn last<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        with_map!(self, m, _K, entry(py, m.last()))
    }

    #[pyo3(name = "_pop_first")]
    fn pop_first<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        with_map!(self, m, _K, entry(py, m.pop_first()))
    }

    #[pyo3(name = "_lower_bound")]
    fn lower_bound<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        inclusive: bool,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        with_map!(self, m, K, {
            let b = bound::<K>(Some(key), inclusive)?;
            entry(py, m.lower_bound(b.as_ref()))
        })
    }

    #[pyo3(name = "_upper_bound")]
    fn upper_bound<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        inclusive: bool,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        with_map!(self, m, K, {
            let b = bound::<K>(Some(key), inclusive)?;
            entry(py, m.upper_bound(b.as_ref()))
        })
    }

    #[pyo3(name = "_clear")]
    fn clear(&self, py: Python<'_>) {
        with_map!(self, m, _K, py.allow_threads(|| m.clear()))
    }

    /// A lazy iterator: `mode` 0 keys, 1 values, 2 (key, value) items.
    #[pyo3(signature = (lo, hi, lo_inclusive, hi_inclusive, reverse, mode))]
    #[pyo3(name = "_iter")]
    fn iter(
        &self,
        lo: Option<&Bound<'_, PyAny>>,
        hi: Option<&Bound<'_, PyAny>>,
        lo_inclusive: bool,
        hi_inclusive: bool,
        reverse: bool,
        mode: u8,
    ) -> PyResult<PySkipListIter> {
        let cursor = match &self.map {
            AnyMap::Int(_) => AnyCursor::Int(RangeCursor::new(
                bound(lo, lo_inclusive)?,
                bound(hi, hi_inclusive)?,
            )),
            AnyMap::Float(_) => AnyCursor::Float(RangeCursor::new(
                bound(lo, lo_inclusive)?,
                bound(hi, hi_inclusive)?,
            )),
            AnyMap::Bytes(_) => AnyCursor::Bytes(RangeCursor::new(
                bound(lo, lo_inclusive)?,
                bound(hi, hi_inclusive)?,
            )),
            AnyMap::Str(_) => AnyCursor::Str(RangeCursor::new(
                bound(lo, lo_inclusive)?,
                bound(hi, hi_inclusive)?,
            )),
        };
        Ok(PySkipListIter {
            map: self.map.clone(),
            state: std::sync::Mutex::new(cursor),
            reverse,
            mode,
        })
    }

    /// Int64 keys (int map) or float64 keys (float map) with int64 values:
    /// converted and inserted with the GIL released.
    #[pyo3(name = "_update_many_numeric")]
    fn update_many_numeric(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        values: PyReadonlyArray1<'_, i64>,
    ) -> PyResult<()> {
        let vals = values.as_slice()?.to_vec();
        match &self.map {
            AnyMap::Int(m) => {
                let keys: PyReadonlyArray1<'_, i64> = keys
                    .extract()
                    .map_err(|_| py_err(ErrorKind::InvalidType, "keys must be an int64 array"))?;
                let keys = keys.as_slice()?.to_vec();
                check_len(keys.len(), vals.len())?;
                py.allow_threads(|| {
                    m.insert_many(
                        keys.into_iter()
                            .zip(vals)
                            .map(|(k, v)| (k, PyValue::Int(v)))
                            .collect(),
                    )
                });
                Ok(())
            }
            AnyMap::Float(m) => {
                let keys = float_keys(keys)?;
                check_len(keys.len(), vals.len())?;
                py.allow_threads(|| {
                    m.insert_many(
                        keys.into_iter()
                            .zip(vals)
                            .map(|(k, v)| (k, PyValue::Int(v)))
                            .collect(),
                    )
                });
                Ok(())
            }
            _ => Err(py_err(
                ErrorKind::InvalidType,
                "numeric batch needs an int or float map",
            )),
        }
    }

    /// Any keys (a sequence) and any values (a sequence of the same length).
    /// Every key is checked before anything is inserted.
    #[pyo3(name = "_update_many_objects")]
    fn update_many_objects(
        &self,
        keys: &Bound<'_, PyAny>,
        values: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        with_map!(self, m, K, {
            let ks: Vec<K> = keys
                .try_iter()?
                .map(|k| K::from_py(&k?))
                .collect::<PyResult<_>>()?;
            let vs: Vec<PyValue> = values
                .try_iter()?
                .map(|v| Ok(PyValue::from_py(&v?)))
                .collect::<PyResult<_>>()?;
            check_len(ks.len(), vs.len())?;
            m.insert_many(ks.into_iter().zip(vs).collect());
            Ok(())
        })
    }

    /// `(values, found)`: values is int64 (0 where missing) when every found
    /// value is an int, else an object array (None where missing).
    #[pyo3(name = "_get_many")]
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyArray1<bool>>)> {
        let vals: Vec<Option<PyValue>> = match &self.map {
            AnyMap::Int(m) => {
                let keys: PyReadonlyArray1<'_, i64> = keys
                    .extract()
                    .map_err(|_| py_err(ErrorKind::InvalidType, "keys must be an int64 array"))?;
                let keys = keys.as_slice()?.to_vec();
                py.allow_threads(|| m.get_many(&keys))
            }
            AnyMap::Float(m) => {
                let keys = float_keys(keys)?;
                py.allow_threads(|| m.get_many(&keys))
            }
            _ => with_map!(self, m, K, {
                let ks: Vec<K> = keys
                    .try_iter()?
                    .map(|k| K::from_py(&k?))
                    .collect::<PyResult<_>>()?;
                m.get_many(&ks)
            }),
        };
        let found: Vec<bool> = vals.iter().map(Option::is_some).collect();
        Ok((values_array(py, &vals), PyArray1::from_vec(py, found)))
    }

    /// `(keys, values)` of the entries in the range, ascending; numpy arrays
    /// (int64/float64 keys for int/float maps, object arrays otherwise).
    #[pyo3(signature = (lo, hi, lo_inclusive, hi_inclusive))]
    #[pyo3(name = "_range_arrays")]
    fn range_arrays<'py>(
        &self,
        py: Python<'py>,
        lo: Option<&Bound<'py, PyAny>>,
        hi: Option<&Bound<'py, PyAny>>,
        lo_inclusive: bool,
        hi_inclusive: bool,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        match &self.map {
            AnyMap::Int(m) => {
                let (lo, hi) = (
                    bound::<i64>(lo, lo_inclusive)?,
                    bound::<i64>(hi, hi_inclusive)?,
                );
                let (ks, vs) = py.allow_threads(|| collect_range(m, &lo, &hi));
                Ok((PyArray1::from_vec(py, ks).into_any(), values_array(py, &vs)))
            }
            AnyMap::Float(m) => {
                let (lo, hi) = (
                    bound::<F64Key>(lo, lo_inclusive)?,
                    bound::<F64Key>(hi, hi_inclusive)?,
                );
                let (ks, vs) = py.allow_threads(|| collect_range(m, &lo, &hi));
                let ks: Vec<f64> = ks.into_iter().map(F64Key::get).collect();
                Ok((PyArray1::from_vec(py, ks).into_any(), values_array(py, &vs)))
            }
            _ => with_map!(self, m, K, {
                let (lo, hi) = (bound::<K>(lo, lo_inclusive)?, bound::<K>(hi, hi_inclusive)?);
                let (ks, vs) = collect_range(m, &lo, &hi);
                let ks: Vec<PyObject> = ks.iter().map(|k| k.to_py(py)).collect();
                Ok((PyArray1::from_vec(py, ks).into_any(), values_array(py, &vs)))
            }),
        }
    }
}

/// `NotFoundError(key)` (a `KeyError` whose argument is the key, like dict's).
fn key_error(py: Python<'_>, key: &Bound<'_, PyAny>) -> PyErr {
    match crate::errors::class_for(py, ErrorKind::NotFound) {
        Ok(cls) => PyErr::from_type(cls, (key.clone().unbind(),)),
        Err(e) => e,
    }
}

fn check_len(keys: usize, values: usize) -> PyResult<()> {
    if keys != values {
        return Err(py_err(
            ErrorKind::InvalidArgument,
            format!("{keys} keys but {values} values"),
        ));
    }
    Ok(())
}

fn float_keys(keys: &Bound<'_, PyAny>) -> PyResult<Vec<F64Key>> {
    let keys: PyReadonlyArray1<'_, f64> = keys
        .extract()
        .map_err(|_| py_err(ErrorKind::InvalidType, "keys must be a float64 array"))?;
    keys.as_slice()?
        .iter()
        .map(|&k| F64Key::new(k))
        .collect::<slabcache_core::Result<_>>()
        .py()
}

fn collect_range<K: PyKey>(
    m: &Map<K>,
    lo: &Edge<K>,
    hi: &Edge<K>,
) -> (Vec<K>, Vec<Option<PyValue>>) {
    let (mut ks, mut vs) = (Vec::new(), Vec::new());
    m.for_each_in::<K>(lo.as_ref(), hi.as_ref(), |k, v| {
        ks.push(k.clone());
        vs.push(Some(v.clone()));
    });
    (ks, vs)
}

enum AnyCursor {
    Int(RangeCursor<i64, PyValue>),
    Float(RangeCursor<F64Key, PyValue>),
    Bytes(RangeCursor<Vec<u8>, PyValue>),
    Str(RangeCursor<String, PyValue>),
}

/// A lazy range iterator; valid while other threads write the map.
#[pyclass(name = "BSkipListIter", module = "slabcache._native")]
pub struct PySkipListIter {
    map: AnyMap,
    state: std::sync::Mutex<AnyCursor>,
    reverse: bool,
    mode: u8,
}

fn step<K: PyKey>(
    py: Python<'_>,
    m: &Map<K>,
    c: &mut RangeCursor<K, PyValue>,
    reverse: bool,
    mode: u8,
) -> PyResult<Option<PyObject>> {
    let e = if reverse { c.next_back(m) } else { c.next(m) };
    Ok(match e {
        None => None,
        Some((k, v)) => Some(match mode {
            0 => k.to_py(py),
            1 => v.to_py(py),
            _ => PyTuple::new(py, [k.to_py(py), v.to_py(py)])?
                .into_any()
                .unbind(),
        }),
    })
}

#[pymethods]
impl PySkipListIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<PyObject>> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| py_err(ErrorKind::InvalidArgument, "iterator poisoned"))?;
        match (&self.map, &mut *state) {
            (AnyMap::Int(m), AnyCursor::Int(c)) => step(py, m, c, self.reverse, self.mode),
            (AnyMap::Float(m), AnyCursor::Float(c)) => step(py, m, c, self.reverse, self.mode),
            (AnyMap::Bytes(m), AnyCursor::Bytes(c)) => step(py, m, c, self.reverse, self.mode),
            (AnyMap::Str(m), AnyCursor::Str(c)) => step(py, m, c, self.reverse, self.mode),
            _ => unreachable!("cursor built for its map"),
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyBSkipList>()?;
    m.add_class::<PySkipListIter>()?;
    Ok(())
}
