//! Bindings of the concurrent B-skiplist (`slabcache.skiplist.BSkipList`).
//!
//! No logic here beyond conversions: the core map is instantiated with one
//! key type per `key_type` ("int" -> i64, "float" -> F64Key, "bytes" ->
//! Vec<u8>, "str" -> String), chosen at construction or from the first key
//! stored, and a value type that keeps Python ints as plain `i64` (the int
//! fast path never touches a Python object) and anything else as a
//! reference. The mapping dunders and the hot `SortedDict` calls are native
//! (no Python frame per call). Batch calls release the GIL around the core
//! work for int and float keys.

use std::mem::ManuallyDrop;
use std::ops::Bound as Edge;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};
use pyo3::Borrowed;
use pyo3::{PyTraverseError, PyVisit};
use slabcache_core::skiplist::{BSkipList, F64Key, PositionIndex, RangeCursor, SwapValue};
use slabcache_core::ErrorKind;

use crate::errors::{py_err, IntoPyResult};

/// A stored value, one machine word: a Python int (exactly `int`, not
/// `bool`) in `[-2**62, 2**62)` (on 64-bit machines) is kept inline, so an
/// int -> int map holds no Python object; anything else is an owned
/// reference to the object itself (no box in between: a read follows one
/// pointer, as a dict's does).
///
/// The word is atomic so that `m[k] = v` on a present key can replace it in
/// the leaf slot ([`SwapValue`]: the core swaps it under the leaf's lock and
/// drops the old value after the epoch) while readers copy it without a
/// lock: a reader loads the word once and sees the old value or the new one.
///
/// Reference counts are only touched with the GIL held: a drop without it
/// (the core frees replaced values on whatever thread reclaims them) goes
/// through `Py`'s own drop, which defers the decref to pyo3's pool; a clone
/// takes the GIL. The binding never clones a value on a thread without the
/// GIL (the core clones on reads, replaces and removes): every call that
/// runs without the GIL does so only on a map that has never held an
/// object (see [`Shared::gil_free`]), where every value is an inline int.
pub struct PyValue(AtomicPtr<ffi::PyObject>);

/// A view of the object a word owns (no reference count taken: never
/// dropped, valid while the value it was read from is).
type ObjectRef = ManuallyDrop<Py<PyAny>>;

/// The object behind `p`, an object word (low bit clear, not null).
///
/// # Safety
/// `p` was stored by [`PyValue::object`] and its value is still alive.
#[inline]
unsafe fn object_ref(p: *mut ffi::PyObject) -> ObjectRef {
    debug_assert!(!p.is_null() && p.addr() & 1 == 0);
    // SAFETY: `Py<PyAny>` is `repr(transparent)` over `NonNull<PyObject>`
    // and `p` is a non-null object pointer (with its provenance, from
    // `into_ptr`); `ManuallyDrop` keeps the view from releasing the value's
    // reference.
    unsafe { std::mem::transmute::<*mut ffi::PyObject, ObjectRef>(p) }
}

impl PyValue {
    /// `i` inline, if it fits in the word next to the tag bit.
    #[inline]
    fn inline(i: i64) -> Option<Self> {
        let s = isize::try_from(i).ok()?;
        let t = s.wrapping_shl(1);
        ((t >> 1) == s).then(|| {
            PyValue(AtomicPtr::new(std::ptr::without_provenance_mut(
                (t as usize) | 1,
            )))
        })
    }

    /// A value holding `obj` (an owned reference).
    #[inline]
    fn object(obj: Py<PyAny>) -> Self {
        let p = obj.into_ptr();
        assert_eq!(p.addr() & 1, 0, "Python objects are aligned");
        PyValue(AtomicPtr::new(p))
    }

    /// An int value: inline, or (outside the inline range) a new int object.
    #[inline]
    fn int(py: Python<'_>, i: i64) -> Self {
        Self::inline(i)
            .unwrap_or_else(|| Self::object(i.into_pyobject(py).expect("int").into_any().unbind()))
    }

    /// The word, loaded once (Acquire: pairs with a swap's release, so the
    /// object a swapped-in word points to is seen initialised).
    #[inline]
    fn word(&self) -> *mut ffi::PyObject {
        self.0.load(Ordering::Acquire)
    }

    #[inline]
    fn bits(&self) -> usize {
        self.word().addr()
    }

    /// The int an inline word holds.
    #[inline]
    fn inline_of(b: usize) -> i64 {
        ((b as isize) >> 1) as i64
    }

    /// The stored object (a view, no reference taken), if this is one.
    #[inline]
    fn as_object(&self) -> Option<ObjectRef> {
        let p = self.word();
        // SAFETY: a clear tag bit means `object` stored `p`, and `self` (so
        // its reference) is alive while the caller uses the view.
        (p.addr() & 1 == 0).then(|| unsafe { object_ref(p) })
    }

    #[inline]
    fn from_py(obj: &Bound<'_, PyAny>) -> Self {
        if obj.is_exact_instance_of::<PyInt>() {
            if let Some(v) = obj.extract::<i64>().ok().and_then(Self::inline) {
                return v;
            }
        }
        Self::object(obj.clone().unbind())
    }

    #[inline]
    fn to_py(&self, py: Python<'_>) -> PyObject {
        let p = self.word();
        if p.addr() & 1 == 1 {
            Self::inline_of(p.addr())
                .into_pyobject(py)
                .expect("int")
                .into_any()
                .unbind()
        } else {
            // SAFETY: an object word of the live `self`.
            unsafe { object_ref(p) }.clone_ref(py)
        }
    }

    /// The value as an i64 if it is an int that fits (inline, or an exact
    /// `int` object such as one outside the inline range).
    fn as_i64(&self, py: Python<'_>) -> Option<i64> {
        let p = self.word();
        if p.addr() & 1 == 1 {
            return Some(Self::inline_of(p.addr()));
        }
        // SAFETY: an object word of the live `self`.
        let o = unsafe { object_ref(p) };
        let o = o.bind(py);
        if o.is_exact_instance_of::<PyInt>() {
            o.extract::<i64>().ok()
        } else {
            None
        }
    }
}

impl Clone for PyValue {
    #[inline]
    fn clone(&self) -> Self {
        // One load: a concurrent in-place swap gives the old word or the new.
        let p = self.word();
        if p.addr() & 1 == 1 {
            return PyValue(AtomicPtr::new(p));
        }
        // SAFETY: an object word of the live `self` (a swapped-out value is
        // dropped only after the epoch, so it outlives this clone).
        let o = unsafe { object_ref(p) };
        if gil_held_here() {
            // SAFETY: this thread holds the GIL (`gil_held_here`). No
            // `with_gil` here: it would also apply pyo3's deferred
            // decrefs, running `__del__`s, possibly under a node lock
            // the core holds while it copies a value.
            let py = unsafe { Python::assume_gil_acquired() };
            Self::object(o.clone_ref(py))
        } else {
            // Unreachable by the rule above (no map holds an object while a
            // call runs on it without the GIL); taking the GIL keeps even
            // that case sound.
            Self::object(Python::with_gil(|py| o.clone_ref(py)))
        }
    }
}

impl SwapValue for PyValue {
    /// Stores `new`'s word in one atomic swap; the word it replaces (and its
    /// reference) comes back as a value.
    #[inline]
    fn swap(&self, new: Self) -> Self {
        let new = ManuallyDrop::new(new);
        let p = new.0.load(Ordering::Relaxed);
        PyValue(AtomicPtr::new(self.0.swap(p, Ordering::AcqRel)))
    }
}

impl Drop for PyValue {
    #[inline]
    fn drop(&mut self) {
        let p = *self.0.get_mut();
        if p.addr() & 1 == 0 {
            // SAFETY: a clear tag bit means this word owns one reference,
            // dropped once here. `Py`'s drop decrefs now if this thread
            // holds the GIL, else queues the decref in pyo3's pool for the
            // next thread that takes it.
            drop(ManuallyDrop::into_inner(unsafe { object_ref(p) }))
        }
    }
}

thread_local! {
    /// Set while this thread runs a [`Shared::gil_free`] section.
    static GIL_RELEASED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread holds the GIL, for a value clone: values are
/// only cloned by binding calls (which hold the GIL) on their own thread,
/// inside their `gil_free` sections (which released it), or on rayon's
/// workers (which never take it).
#[inline]
fn gil_held_here() -> bool {
    !GIL_RELEASED.with(std::cell::Cell::get) && rayon::current_thread_index().is_none()
}

/// `numpy.integer` and `numpy.floating`, looked up once (numpy scalars are
/// keys like the Python numbers they stand for).
static NUMPY_SCALARS: GILOnceCell<(Py<PyType>, Py<PyType>)> = GILOnceCell::new();

fn numpy_kind(obj: &Bound<'_, PyAny>) -> Option<char> {
    let py = obj.py();
    let (int_t, float_t) = NUMPY_SCALARS
        .get_or_try_init(py, || -> PyResult<_> {
            let np = py.import("numpy")?;
            Ok((
                np.getattr("integer")?.downcast_into::<PyType>()?.unbind(),
                np.getattr("floating")?.downcast_into::<PyType>()?.unbind(),
            ))
        })
        .ok()?;
    if obj.is_instance(int_t.bind(py)).unwrap_or(false) {
        Some('i')
    } else if obj.is_instance(float_t.bind(py)).unwrap_or(false) {
        Some('f')
    } else {
        None
    }
}

/// An int key as a Python int: `int` itself, or a numpy integer via `__index__`.
fn as_int<'py>(obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
    if obj.is_instance_of::<PyInt>() {
        Some(obj.clone())
    } else if numpy_kind(obj) == Some('i') {
        obj.call_method0("__index__").ok()
    } else {
        None
    }
}

/// Conversion of one key type between Python and the core.
pub trait PyKey: Ord + Clone + Send + Sync + Sized + 'static {
    const NAME: &'static str;
    /// A key to store: the wrong type raises `InvalidTypeError`, an invalid
    /// value (NaN, out of range, inexact) `InvalidArgumentError`.
    fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Self>;
    /// A key to look up: `None` when `obj` cannot equal any key of this map
    /// (as a dict answers `False` for such a key instead of raising).
    fn lookup(obj: &Bound<'_, PyAny>) -> Option<Self> {
        Self::from_py(obj).ok()
    }
    /// A range end; `lower` says which end. Ends need not be keys of this
    /// type where they still order against them (a float end on an int map).
    fn edge(obj: &Bound<'_, PyAny>, inclusive: bool, _lower: bool) -> PyResult<Edge<Self>> {
        let k = Self::from_py(obj)?;
        Ok(if inclusive {
            Edge::Included(k)
        } else {
            Edge::Excluded(k)
        })
    }
    fn to_py(&self, py: Python<'_>) -> PyObject;
    /// Whether `key` fits what `map` already holds (tuple maps: the type of
    /// each position); `add` records new positions.
    fn fits(_map: &Shared<Self>, _key: &Self, _add: bool) -> bool {
        true
    }
}

/// A key to store in `map`.
#[inline]
fn admit<K: PyKey>(map: &Shared<K>, obj: &Bound<'_, PyAny>) -> PyResult<K> {
    let k = K::from_py(obj)?;
    if !K::fits(map, &k, true) {
        return Err(mixed_tuple(obj));
    }
    Ok(k)
}

/// A key to look up in `map` (`None`: no key of the map can equal it).
#[inline]
fn find<K: PyKey>(map: &Shared<K>, obj: &Bound<'_, PyAny>) -> Option<K> {
    K::lookup(obj).filter(|k| K::fits(map, k, false))
}

fn mixed_tuple(obj: &Bound<'_, PyAny>) -> PyErr {
    py_err(
        ErrorKind::InvalidType,
        format!(
            "tuple key {} has a component whose type differs from the keys already stored at \
             that position (Python cannot order them)",
            obj.repr().map(|r| r.to_string()).unwrap_or_default()
        ),
    )
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
    #[inline]
    fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        if obj.is_exact_instance_of::<PyInt>() {
            if let Ok(i) = obj.extract::<i64>() {
                return Ok(i);
            }
        }
        let Some(int) = as_int(obj) else {
            return Err(wrong_type("int", obj));
        };
        int.extract::<i64>().map_err(|_| {
            py_err(
                ErrorKind::InvalidArgument,
                "int key out of the 64-bit signed range",
            )
        })
    }
    #[inline]
    fn lookup(obj: &Bound<'_, PyAny>) -> Option<Self> {
        if obj.is_exact_instance_of::<PyInt>() {
            return obj.extract::<i64>().ok();
        }
        if let Some(int) = as_int(obj) {
            return int.extract::<i64>().ok();
        }
        // 3.0 == 3, as in a dict.
        let f = float_of(obj)?;
        (f.fract() == 0.0 && f >= -(2f64.powi(63)) && f < 2f64.powi(63)).then_some(f as i64)
    }
    fn edge(obj: &Bound<'_, PyAny>, inclusive: bool, lower: bool) -> PyResult<Edge<Self>> {
        // Ints outside the i64 range and non-integral floats are valid ends:
        // they are rounded inwards to the nearest i64 end that selects the
        // same keys.
        let (v, exact): (f64, Option<i128>) = if let Some(int) = as_int(obj) {
            match int.extract::<i64>() {
                Ok(i) => (i as f64, Some(i as i128)),
                Err(_) => {
                    let neg = int.lt(0i64)?;
                    (
                        if neg {
                            f64::NEG_INFINITY
                        } else {
                            f64::INFINITY
                        },
                        None,
                    )
                }
            }
        } else if let Some(f) = float_of(obj) {
            if f.is_nan() {
                return Err(py_err(
                    ErrorKind::InvalidArgument,
                    "NaN is not a valid bound",
                ));
            }
            (f, None)
        } else {
            return Err(wrong_type("int", obj));
        };
        if let Some(i) = exact {
            let i = i as i64;
            return Ok(if inclusive {
                Edge::Included(i)
            } else {
                Edge::Excluded(i)
            });
        }
        let (min, max) = (-(2f64.powi(63)), 2f64.powi(63));
        Ok(if lower {
            if v < min {
                Edge::Unbounded
            } else if v >= max {
                Edge::Excluded(i64::MAX)
            } else if v.fract() == 0.0 && !inclusive {
                Edge::Excluded(v as i64)
            } else {
                Edge::Included(v.ceil() as i64)
            }
        } else if v >= max {
            Edge::Unbounded
        } else if v < min {
            Edge::Excluded(i64::MIN)
        } else if v.fract() == 0.0 && !inclusive {
            Edge::Excluded(v as i64)
        } else {
            Edge::Included(v.floor() as i64)
        })
    }
    fn to_py(&self, py: Python<'_>) -> PyObject {
        self.into_pyobject(py).expect("int").into_any().unbind()
    }
}

/// The value of a float-like key object (float, numpy floating), if it is one.
fn float_of(obj: &Bound<'_, PyAny>) -> Option<f64> {
    if obj.is_instance_of::<PyFloat>() || numpy_kind(obj) == Some('f') {
        obj.extract::<f64>().ok()
    } else {
        None
    }
}

/// An int as a float key, refusing ints no float equals (they would
/// silently collide with a neighbour: 2**53 + 1 would land on 2**53).
fn exact_float_of_int(int: &Bound<'_, PyAny>) -> PyResult<f64> {
    if let Ok(i) = int.extract::<i64>() {
        let f = i as f64;
        // `f as i128` is exact for every finite f64 in this range.
        if f as i128 == i as i128 {
            return Ok(f);
        }
    } else {
        match int.extract::<f64>() {
            Ok(f) if int.eq(PyFloat::new(int.py(), f))? => return Ok(f),
            Ok(_) => {}
            Err(_) => {
                return Err(py_err(
                    ErrorKind::InvalidArgument,
                    "int too large for a float key",
                ))
            }
        }
    }
    Err(py_err(
        ErrorKind::InvalidArgument,
        "int is not exactly representable as a float key (it would collide with its neighbour)",
    ))
}

impl PyKey for F64Key {
    const NAME: &'static str = "float";
    #[inline]
    fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        let f = if let Some(f) = float_of(obj) {
            f
        } else if let Some(int) = as_int(obj) {
            exact_float_of_int(&int)?
        } else {
            return Err(wrong_type("float", obj));
        };
        F64Key::new(f).py()
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
            Ok(s) => s.to_str().map(str::to_owned).map_err(|_| {
                py_err(
                    ErrorKind::InvalidArgument,
                    "str key is not valid Unicode (a lone surrogate?)",
                )
            }),
            Err(_) => Err(wrong_type("str", obj)),
        }
    }
    fn to_py(&self, py: Python<'_>) -> PyObject {
        PyString::new(py, self).into_any().unbind()
    }
}

/// A tuple key, stored as an order-preserving byte string: each component
/// is a tag byte and a self-delimiting encoding whose byte order is the
/// value order (ints sign-flipped big-endian, floats sign-folded, str and
/// bytes with 0x00 escaped and a 0x00 0x00 end), so comparing the bytes
/// compares the tuples as Python does. Each position holds one type per map
/// (see `TupleSchema`): Python refuses to order `'a'` against `1`, and a
/// silent order between them would be wrong data.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct TupleKey(Vec<u8>);

const T_INT: u8 = 1;
const T_FLOAT: u8 = 2;
const T_BYTES: u8 = 3;
const T_STR: u8 = 4;

fn put_escaped(out: &mut Vec<u8>, b: &[u8]) {
    for &c in b {
        out.push(c);
        if c == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

fn take_escaped(b: &[u8], at: &mut usize) -> Vec<u8> {
    let mut out = Vec::new();
    while *at < b.len() {
        let c = b[*at];
        if c == 0 {
            if b.get(*at + 1) == Some(&0xFF) {
                out.push(0);
                *at += 2;
                continue;
            }
            *at += 2;
            break;
        }
        out.push(c);
        *at += 1;
    }
    out
}

impl TupleKey {
    /// The type tag of each component, read back from the encoding.
    fn tags(&self) -> Vec<u8> {
        let b = &self.0;
        let (mut at, mut tags) = (0, Vec::new());
        while at < b.len() {
            let tag = b[at];
            tags.push(tag);
            at += 1;
            if tag == T_INT || tag == T_FLOAT {
                at += 8;
            } else {
                take_escaped(b, &mut at);
            }
        }
        tags
    }

    /// The encoding and the type tag of each component.
    fn encode(obj: &Bound<'_, PyAny>) -> PyResult<(Self, Vec<u8>)> {
        let t = obj
            .downcast::<PyTuple>()
            .map_err(|_| wrong_type("tuple", obj))?;
        let mut out = Vec::with_capacity(t.len() * 9);
        let mut tags = Vec::with_capacity(t.len());
        for c in t.iter() {
            if c.is_instance_of::<PyString>() {
                out.push(T_STR);
                put_escaped(&mut out, String::from_py(&c)?.as_bytes());
                tags.push(T_STR);
            } else if c.is_instance_of::<PyBytes>() {
                out.push(T_BYTES);
                put_escaped(&mut out, c.downcast::<PyBytes>()?.as_bytes());
                tags.push(T_BYTES);
            } else if let Some(f) = float_of(&c) {
                let f = F64Key::new(f).py()?.get();
                let bits = f.to_bits();
                let folded = if bits >> 63 == 1 {
                    !bits
                } else {
                    bits ^ (1 << 63)
                };
                out.push(T_FLOAT);
                out.extend_from_slice(&folded.to_be_bytes());
                tags.push(T_FLOAT);
            } else if as_int(&c).is_some() {
                let i = i64::from_py(&c)?;
                out.push(T_INT);
                out.extend_from_slice(&((i as u64) ^ (1 << 63)).to_be_bytes());
                tags.push(T_INT);
            } else {
                return Err(py_err(
                    ErrorKind::InvalidType,
                    format!(
                        "tuple key components are int, float, bytes or str; got {}",
                        c.get_type()
                            .name()
                            .map(|n| n.to_string())
                            .unwrap_or_else(|_| "?".into())
                    ),
                ));
            }
        }
        Ok((TupleKey(out), tags))
    }
}

/// The component type each tuple position holds in one map, fixed by the
/// first key that reaches that position.
#[derive(Default)]
pub struct TupleSchema(std::sync::Mutex<Vec<u8>>);

impl TupleSchema {
    /// Whether `tags` fits, extending the schema with new positions if `add`.
    fn fits(&self, tags: &[u8], add: bool) -> bool {
        let mut known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let common = known.len().min(tags.len());
        if known[..common] != tags[..common] {
            return false;
        }
        if add && tags.len() > known.len() {
            known.extend_from_slice(&tags[common..]);
        }
        true
    }
}

impl PyKey for TupleKey {
    const NAME: &'static str = "tuple";
    fn fits(map: &Shared<Self>, key: &Self, add: bool) -> bool {
        map.schema.fits(&key.tags(), add)
    }
    fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(Self::encode(obj)?.0)
    }
    fn to_py(&self, py: Python<'_>) -> PyObject {
        let b = &self.0;
        let mut at = 0;
        let mut items: Vec<PyObject> = Vec::new();
        while at < b.len() {
            let tag = b[at];
            at += 1;
            items.push(match tag {
                T_INT | T_FLOAT => {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(&b[at..at + 8]);
                    at += 8;
                    let u = u64::from_be_bytes(w);
                    if tag == T_INT {
                        ((u ^ (1 << 63)) as i64).to_py(py)
                    } else {
                        let bits = if u >> 63 == 1 { u ^ (1 << 63) } else { !u };
                        F64Key::new(f64::from_bits(bits))
                            .expect("stored floats are not NaN")
                            .to_py(py)
                    }
                }
                T_BYTES => PyBytes::new(py, &take_escaped(b, &mut at))
                    .into_any()
                    .unbind(),
                _ => {
                    let raw = take_escaped(b, &mut at);
                    PyString::new(py, std::str::from_utf8(&raw).expect("stored str is UTF-8"))
                        .into_any()
                        .unbind()
                }
            });
        }
        PyTuple::new(py, items).expect("tuple").into_any().unbind()
    }
}

/// One typed map plus what the binding keeps beside it.
pub struct Shared<K> {
    list: BSkipList<K, PyValue>,
    /// Writes not reported to `positions` (batches, clears): an index built
    /// before the last of them is stale.
    shape: AtomicU64,
    /// The position index as of `shape`, so positional calls (`bisect`,
    /// `peekitem(i)`, `index`, `keys()[i]`) are `O(log n)`. Single-key
    /// writes report to it under this lock and keep it current.
    positions: std::sync::Mutex<PositionSlot<K>>,
    /// Whether `positions` holds an index (read without the lock: writes to
    /// a map nobody asks positions of skip the lock).
    indexed: AtomicBool,
    /// [`thread_token`] of the thread holding `positions`, 0 if none. While
    /// the lock is held the core may drop a Python value (epoch-deferred
    /// frees), and that value's `__del__` may call back into this map on the
    /// same thread: such a call must not wait for the lock it is under.
    positions_holder: AtomicUsize,
    /// Tuple maps only: the component type of each position.
    schema: TupleSchema,
    /// Set for good before the first Python object is stored (see
    /// [`Shared::admit_objects`]); until then every value is an inline int.
    objects: AtomicBool,
    /// Calls running without the GIL (see [`Shared::gil_free`]).
    gil_free: AtomicUsize,
}

impl<K: Ord + Clone + Send + Sync + 'static> Default for Shared<K> {
    fn default() -> Self {
        Shared {
            list: BSkipList::with_in_place_values(),
            shape: AtomicU64::new(0),
            positions: std::sync::Mutex::new(None),
            indexed: AtomicBool::new(false),
            positions_holder: AtomicUsize::new(0),
            schema: TupleSchema::default(),
            objects: AtomicBool::new(false),
            gil_free: AtomicUsize::new(0),
        }
    }
}

/// How [`Shared::store_many`] inserts: `insert_many`, `insert_many_distinct`
/// (the keys are known distinct) or `insert_many_if_distinct`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Batch {
    Any,
    Distinct,
    IfDistinct,
}

/// Batches at least this big give their sort buffers back to the OS after.
const TRIM_AFTER: usize = 1 << 16;

fn after_big_batch(n: usize) {
    if n >= TRIM_AFTER {
        slabcache_core::skiplist::release_free_memory();
    }
}

impl<K: Ord + Clone + Send + Sync + 'static> Shared<K> {
    /// Call with the GIL held before storing a value that may be an object.
    /// The first time, marks the map as holding objects and waits for the
    /// calls running without the GIL to end (they started on a map of
    /// inline ints only, and may clone its values: a clone of an object
    /// needs the GIL). Together with [`gil_free`](Self::gil_free)'s check
    /// (both sequentially consistent), either that call sees the mark and
    /// keeps the GIL, or this one sees the call and waits for it.
    #[inline]
    fn admit_objects(&self) {
        if self.objects.load(Ordering::Acquire) {
            return;
        }
        self.objects.store(true, Ordering::SeqCst);
        // The calls waited for need neither the GIL nor anything this
        // thread holds (it holds no node lock and no position lock here).
        while self.gil_free.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
    }

    /// `admit_objects` if any value of `items` is an object.
    fn admit_items(&self, items: &[(K, PyValue)]) {
        if !self.objects.load(Ordering::Acquire) && items.iter().any(|(_, v)| v.bits() & 1 == 0) {
            self.admit_objects();
        }
    }

    /// Runs `f(true)` with the GIL released if the map has never held a
    /// Python object (so `f` may clone values on any thread: they are inline
    /// ints), else `f(false)` with the GIL held: `f` must then clone values
    /// on this thread only (no parallel paths).
    fn gil_free<R: Send>(&self, py: Python<'_>, f: impl FnOnce(bool) -> R + Send) -> R {
        self.gil_free.fetch_add(1, Ordering::SeqCst);
        if self.objects.load(Ordering::SeqCst) {
            self.gil_free.fetch_sub(1, Ordering::Release);
            return f(false);
        }
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Release);
            }
        }
        let count = &self.gil_free;
        py.allow_threads(move || {
            // Leave before taking the GIL back: `admit_objects` waits for
            // this count while holding the GIL.
            let _leave = Leave(count);
            let was = GIL_RELEASED.with(|g| g.replace(true));
            let out = f(true);
            GIL_RELEASED.with(|g| g.set(was));
            out
        })
    }

    /// Inserts a converted batch (objects admitted first), without the GIL
    /// while the map holds only ints. `false` only for
    /// [`Batch::IfDistinct`] with a repeated key: nothing was inserted.
    fn store_many(&self, py: Python<'_>, items: Vec<(K, PyValue)>, how: Batch) -> bool {
        self.admit_items(&items);
        let n = items.len();
        let done = self.gil_free(py, move |_| {
            let done = match how {
                Batch::Any => {
                    self.list.insert_many(items);
                    true
                }
                Batch::Distinct => {
                    self.list.insert_many_distinct(items);
                    true
                }
                Batch::IfDistinct => self.list.insert_many_if_distinct(items),
            };
            if how == Batch::Any {
                after_big_batch(n);
            }
            done
        });
        if done {
            self.reshaped();
        }
        done
    }

    /// Call after a write not reported to the position index (any number of
    /// keys added or removed), before any later positional call.
    #[inline]
    fn reshaped(&self) {
        self.shape.fetch_add(1, Ordering::Release);
    }

    /// Runs the single-key write `w`, which gets the current position index
    /// (if any, locked) to report its key to; `w` also says whether it added
    /// or removed a key. Without a current index the write just marks any
    /// index built meanwhile stale.
    #[inline]
    fn write<R>(&self, w: impl FnOnce(Option<&mut PositionIndex<K>>) -> (R, bool)) -> R {
        if self.indexed.load(Ordering::Acquire) {
            if let Some(mut slot) = self.lock_positions() {
                let now = self.shape.load(Ordering::Acquire);
                if let Some((_, idx)) = slot.as_mut().filter(|(v, _)| *v == now) {
                    let (out, _) = w(Some(idx));
                    if idx.is_worn() {
                        *slot = None;
                        self.indexed.store(false, Ordering::Release);
                    }
                    return out;
                }
            }
        }
        // Unreported (also a write re-entered from a destructor under the
        // lock): the index held further up becomes stale and is rebuilt at
        // the next positional call.
        let (out, changed) = w(None);
        if changed {
            self.reshaped();
        }
        out
    }

    /// Locks `positions`, or `None` when this thread already holds it (a
    /// `__del__` run by a free under the lock called back into the map).
    fn lock_positions(&self) -> Option<PositionsGuard<'_, K>> {
        let me = thread_token();
        if self.positions_holder.load(Ordering::Relaxed) == me {
            return None;
        }
        let slot = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        self.positions_holder.store(me, Ordering::Relaxed);
        Some(PositionsGuard {
            slot,
            holder: &self.positions_holder,
        })
    }

    /// `set` (a present key's value swapped in place), reported to the
    /// position index; `true` if the key was present.
    fn put(&self, k: K, v: PyValue) -> bool {
        if v.bits() & 1 == 0 {
            self.admit_objects();
        }
        self.write(|idx| {
            let at = idx.as_ref().map(|i| i.range_of(&k));
            let present = self.list.set(k, v);
            if let (false, Some(i), Some(at)) = (present, idx, at) {
                i.added(at);
            }
            (present, !present)
        })
    }

    /// `try_insert`, reported to the position index.
    fn put_absent(&self, k: K, v: PyValue) -> Result<(), PyValue> {
        if v.bits() & 1 == 0 {
            self.admit_objects();
        }
        self.write(|idx| {
            let at = idx.as_ref().map(|i| i.range_of(&k));
            let got = self.list.try_insert(k, v);
            if let (Ok(()), Some(i), Some(at)) = (&got, idx, at) {
                i.added(at);
            }
            let fresh = got.is_ok();
            (got, fresh)
        })
    }

    /// `remove`, reported to the position index.
    fn take(&self, k: &K) -> Option<PyValue> {
        self.write(|idx| {
            let got = self.list.remove(k);
            if let (Some(_), Some(i)) = (&got, idx) {
                let at = i.range_of(k);
                i.removed(at);
            }
            let gone = got.is_some();
            (got, gone)
        })
    }

    /// `pop_first`, reported to the position index.
    fn take_first(&self) -> Option<(K, PyValue)> {
        self.write(|idx| {
            let got = self.list.pop_first();
            if let (Some((k, _)), Some(i)) = (&got, idx) {
                let at = i.range_of(k);
                i.removed(at);
            }
            let gone = got.is_some();
            (got, gone)
        })
    }

    /// Runs `f` with a current position index, building one if needed; `f`
    /// may write single keys if it reports them to the index.
    fn with_positions<R>(&self, f: impl FnOnce(&mut PositionIndex<K>) -> R) -> R {
        let Some(mut slot) = self.lock_positions() else {
            // Re-entered from a destructor while this thread holds the
            // index: answer from a fresh index of our own instead of waiting
            // on ourselves (rare, so its O(n) build does not matter).
            return f(&mut self.list.position_index());
        };
        // Read the count before building: an unreported write after this
        // point makes the index built below stale, and the count then
        // differs next time.
        let now = self.shape.load(Ordering::Acquire);
        if !matches!(&*slot, Some((v, _)) if *v == now) {
            *slot = Some((now, self.list.position_index()));
            self.indexed.store(true, Ordering::Release);
        }
        let (_, idx) = slot.as_mut().expect("index just built");
        let out = f(idx);
        if idx.is_worn() {
            *slot = None;
            self.indexed.store(false, Ordering::Release);
        }
        out
    }
}

type PositionSlot<K> = Option<(u64, PositionIndex<K>)>;

/// The held `positions` lock; clears the holder mark before unlocking.
struct PositionsGuard<'a, K> {
    slot: std::sync::MutexGuard<'a, PositionSlot<K>>,
    holder: &'a AtomicUsize,
}

impl<K> std::ops::Deref for PositionsGuard<'_, K> {
    type Target = PositionSlot<K>;
    fn deref(&self) -> &Self::Target {
        &self.slot
    }
}

impl<K> std::ops::DerefMut for PositionsGuard<'_, K> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.slot
    }
}

impl<K> Drop for PositionsGuard<'_, K> {
    fn drop(&mut self) {
        // Before `slot` unlocks (fields drop after this body).
        self.holder.store(0, Ordering::Relaxed);
    }
}

/// A nonzero id of the calling thread: the address of a thread-local.
fn thread_token() -> usize {
    thread_local!(static TOKEN: u8 = const { 0 });
    TOKEN.with(|t| std::ptr::from_ref(t) as usize)
}

impl<K> std::ops::Deref for Shared<K> {
    type Target = BSkipList<K, PyValue>;
    fn deref(&self) -> &Self::Target {
        &self.list
    }
}

type Map<K> = Arc<Shared<K>>;

#[derive(Clone)]
enum AnyMap {
    Int(Map<i64>),
    Float(Map<F64Key>),
    Bytes(Map<Vec<u8>>),
    Str(Map<String>),
    Tuple(Map<TupleKey>),
}

impl AnyMap {
    fn of_type(key_type: &str) -> PyResult<Self> {
        Ok(match key_type {
            "int" => AnyMap::Int(Arc::default()),
            "float" => AnyMap::Float(Arc::default()),
            "bytes" => AnyMap::Bytes(Arc::default()),
            "str" => AnyMap::Str(Arc::default()),
            "tuple" => AnyMap::Tuple(Arc::default()),
            other => {
                return Err(py_err(
                    ErrorKind::InvalidArgument,
                    format!(
                        "key_type must be 'int', 'float', 'bytes', 'str' or 'tuple', got {other:?}"
                    ),
                ))
            }
        })
    }

    /// The map type for a first key (a dict's keys are inferred the same way
    /// a user would name them).
    fn for_key(key: &Bound<'_, PyAny>) -> PyResult<Self> {
        if key.is_instance_of::<PyString>() {
            Self::of_type("str")
        } else if key.is_instance_of::<PyBytes>() {
            Self::of_type("bytes")
        } else if key.is_instance_of::<PyFloat>() || numpy_kind(key) == Some('f') {
            Self::of_type("float")
        } else if as_int(key).is_some() {
            Self::of_type("int")
        } else if key.is_instance_of::<PyTuple>() {
            Self::of_type("tuple")
        } else {
            Err(py_err(
                ErrorKind::InvalidType,
                format!(
                    "BSkipList keys are int, float, bytes, str or tuple; got a key of type {}",
                    key.get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_else(|_| "?".into())
                ),
            ))
        }
    }
}

/// The map a map whose key type is not chosen yet reads from: always empty.
static EMPTY: LazyLock<AnyMap> = LazyLock::new(|| AnyMap::Int(Arc::default()));

/// Runs `$body` with `$m` bound to the typed map, `$K` to its key type.
macro_rules! with_map {
    ($map:expr, $m:ident, $K:ident, $body:expr) => {
        match $map {
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
            AnyMap::Tuple($m) => {
                type $K = TupleKey;
                $body
            }
        }
    };
}

fn edge<K: PyKey>(
    map: &Shared<K>,
    key: Option<&Bound<'_, PyAny>>,
    inclusive: bool,
    lower: bool,
) -> PyResult<Edge<K>> {
    let e = match key {
        None => Edge::Unbounded,
        Some(k) if k.is_none() => Edge::Unbounded,
        Some(k) => K::edge(k, inclusive, lower)?,
    };
    if let (Edge::Included(k) | Edge::Excluded(k), Some(obj)) = (&e, key) {
        if !K::fits(map, k, false) {
            return Err(mixed_tuple(obj));
        }
    }
    Ok(e)
}

fn entry<K: PyKey>(
    py: Python<'_>,
    e: Option<(K, PyValue)>,
) -> PyResult<Option<Bound<'_, PyTuple>>> {
    e.map(|(k, v)| PyTuple::new(py, [k.to_py(py), v.to_py(py)]))
        .transpose()
}

/// A key, a value or a `(key, value)` tuple, per `mode` 0, 1, 2.
fn shaped<K: PyKey>(py: Python<'_>, k: &K, v: &PyValue, mode: u8) -> PyResult<PyObject> {
    Ok(match mode {
        0 => k.to_py(py),
        1 => v.to_py(py),
        _ => PyTuple::new(py, [k.to_py(py), v.to_py(py)])?
            .into_any()
            .unbind(),
    })
}

/// Values as an int64 array when every one is an int, else an object array.
fn values_array<'py>(py: Python<'py>, vals: &[Option<PyValue>]) -> Bound<'py, PyAny> {
    let ints: Option<Vec<i64>> = vals
        .iter()
        .map(|v| v.as_ref().map_or(Some(0), |v| v.as_i64(py)))
        .collect();
    if let Some(ints) = ints {
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

static INDEX_ERROR: GILOnceCell<Py<PyType>> = GILOnceCell::new();

/// `slabcache.errors.IndexOutOfRangeError` (an `IndexError`).
fn index_error(py: Python<'_>, msg: &str) -> PyErr {
    match INDEX_ERROR.get_or_try_init(py, || -> PyResult<_> {
        Ok(py
            .import("slabcache.errors")?
            .getattr("IndexOutOfRangeError")?
            .downcast_into::<PyType>()?
            .unbind())
    }) {
        Ok(cls) => PyErr::from_type(cls.bind(py).clone(), msg.to_owned()),
        Err(e) => e,
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

/// A Python index (an int or anything with `__index__`); a huge one is
/// simply out of range.
fn index_arg(obj: &Bound<'_, PyAny>) -> PyResult<isize> {
    let Some(int) = as_int(obj).filter(|_| !obj.is_instance_of::<PyFloat>()) else {
        let got = obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        return Err(py_err(
            ErrorKind::InvalidType,
            format!("indices must be integers, not {got}"),
        ));
    };
    Ok(int.extract::<isize>().unwrap_or(isize::MAX))
}

/// A position counted from the end when negative; `None` when out of range.
fn position(index: isize, len: usize) -> Option<usize> {
    let i = if index < 0 {
        index + len as isize
    } else {
        index
    };
    (i >= 0 && (i as usize) < len).then_some(i as usize)
}

/// The native map; `slabcache.skiplist.BSkipList` subclasses it.
#[pyclass(
    name = "BSkipListCore",
    module = "slabcache._native",
    frozen,
    subclass,
    weakref
)]
pub struct PyBSkipList {
    /// Unset until a key type is named or the first key is stored.
    map: OnceLock<AnyMap>,
}

impl PyBSkipList {
    #[inline]
    fn reading(&self) -> &AnyMap {
        self.map.get().unwrap_or(&EMPTY)
    }

    /// The map, choosing its key type from `key` if not chosen yet.
    #[inline]
    fn writing(&self, key: &Bound<'_, PyAny>) -> PyResult<&AnyMap> {
        if let Some(m) = self.map.get() {
            return Ok(m);
        }
        let fresh = AnyMap::for_key(key)?;
        Ok(self.map.get_or_init(|| fresh))
    }

    /// `_update_from` for the common list of `(int, value)` tuples into an
    /// int map (or a map with no key type yet), read through borrowed
    /// references: no reference is taken or dropped per item. `Ok(false)`:
    /// the list has another shape (another key type, an int outside 64
    /// bits, an item that is not an exact 2-tuple) and nothing was
    /// inserted; the general path then handles it, errors included.
    fn update_from_int_pairs(&self, list: &Bound<'_, PyList>) -> PyResult<bool> {
        if !matches!(self.map.get(), None | Some(AnyMap::Int(_))) {
            return Ok(false);
        }
        let py = list.py();
        let convert = || -> Option<Vec<(i64, PyValue)>> {
            let n = list.len();
            let mut items = Vec::with_capacity(n);
            for i in 0..n {
                // SAFETY: `list` is a live list and `i` is below its length,
                // which no code in this loop can change: converting an exact
                // int key or a value runs no Python code (an int is read, any
                // other value only gets a reference), so every borrowed item
                // stays alive while used.
                let item = unsafe { pyo3::ffi::PyList_GetItem(list.as_ptr(), i as _) };
                if item.is_null() {
                    // Unreachable (`i` is in range); let the general path say why.
                    let _ = PyErr::take(py);
                    return None;
                }
                // SAFETY: `item` is a live object the list holds (above).
                let item = unsafe { Borrowed::from_ptr(py, item) };
                let t = item.downcast_exact::<PyTuple>().ok()?;
                if t.len() != 2 {
                    return None;
                }
                let (k, v) = (t.get_borrowed_item(0).ok()?, t.get_borrowed_item(1).ok()?);
                if !k.is_exact_instance_of::<PyInt>() {
                    return None;
                }
                items.push((k.extract::<i64>().ok()?, PyValue::from_py(&v)));
            }
            Some(items)
        };
        let Some(mut items) = convert() else {
            return Ok(false);
        };
        let Some(first) = list.get_item(0).ok() else {
            return Ok(false);
        };
        let first = first.downcast_into::<PyTuple>()?.get_item(0)?;
        let AnyMap::Int(m) = self.writing(&first)? else {
            return Ok(false);
        };
        if items.len() > 1 {
            // As in the general path: the unstable sort first; a batch that
            // repeats a key is converted again for the stable path.
            if m.store_many(py, items, Batch::IfDistinct) {
                return Ok(true);
            }
            items = convert().expect("the list converted a moment ago");
        }
        insert_batch(py, m, items);
        Ok(true)
    }

    fn nth_at(&self, py: Python<'_>, index: isize, mode: u8) -> PyResult<PyObject> {
        let out_of_range = || index_error(py, "BSkipList index out of range");
        with_map!(self.reading(), m, _K, {
            let e = match index {
                0 => m.first(),
                -1 => m.last(),
                _ => {
                    let len = m.len();
                    let Some(i) = position(index, len) else {
                        return Err(out_of_range());
                    };
                    if i == 0 {
                        m.first()
                    } else if i == len - 1 {
                        m.last()
                    } else {
                        m.with_positions(|idx| m.nth_indexed(idx, i))
                    }
                }
            };
            match e {
                Some((k, v)) => shaped(py, &k, &v, mode),
                None => Err(out_of_range()),
            }
        })
    }

    fn pop_at<'py>(&self, py: Python<'py>, index: isize) -> PyResult<Bound<'py, PyTuple>> {
        let empty = || py_err(ErrorKind::NotFound, "popitem(): BSkipList is empty");
        loop {
            let got = with_map!(self.reading(), m, _K, {
                // The ends need no length (a sum over counter stripes) and no positions.
                let e = match index {
                    0 => m.take_first().ok_or_else(empty)?.into(),
                    -1 => {
                        let (k, _) = m.last().ok_or_else(empty)?;
                        m.take(&k).map(|v| (k, v))
                    }
                    _ => {
                        let len = m.len();
                        if len == 0 {
                            return Err(empty());
                        }
                        let Some(i) = position(index, len) else {
                            return Err(index_error(py, "popitem index out of range"));
                        };
                        m.with_positions(|idx| {
                            let (k, _) = m.nth_indexed(idx, i)?;
                            let v = m.remove(&k)?;
                            let at = idx.range_of(&k);
                            idx.removed(at);
                            Some((k, v))
                        })
                    }
                };
                entry(py, e)?
            });
            // None: another thread took it first; look again.
            if let Some(t) = got {
                return Ok(t);
            }
        }
    }
}

#[pymethods]
impl PyBSkipList {
    /// Arguments are for the Python subclass's `__init__`.
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        PyBSkipList {
            map: OnceLock::new(),
        }
    }

    /// Chooses the key type; naming the one already chosen is a no-op.
    fn _set_key_type(&self, key_type: &str) -> PyResult<()> {
        let fresh = AnyMap::of_type(key_type)?;
        let now = self.map.get_or_init(|| fresh);
        let have = with_map!(now, _m, K, K::NAME);
        if have != key_type {
            return Err(py_err(
                ErrorKind::InvalidArgument,
                format!("this BSkipList already has {have} keys, not {key_type}"),
            ));
        }
        Ok(())
    }

    /// "int", "float", "bytes" or "str"; None until the first key is stored.
    #[getter]
    fn key_type(&self) -> Option<&'static str> {
        self.map.get().map(|m| with_map!(m, _m, K, K::NAME))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(map) = self.map.get() else {
            return Ok(());
        };
        let mut res = Ok(());
        with_map!(map, m, K, {
            m.for_each_in::<K>(Edge::Unbounded, Edge::Unbounded, |_, v| {
                if let (Ok(()), Some(o)) = (&res, v.as_object()) {
                    res = visit.call(&*o);
                }
            })
        });
        res
    }

    fn __clear__(&self) {
        if let Some(map) = self.map.get() {
            with_map!(map, m, _K, {
                m.clear();
                m.reshaped();
            });
            // Values removed are dropped once no reader can see them; with no
            // other thread reading that is now, so the collector sees the
            // cycle it is breaking go away.
            slabcache_core::skiplist::reclaim_garbage();
        }
    }

    fn __len__(&self) -> usize {
        with_map!(self.reading(), m, _K, m.len())
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> bool {
        with_map!(self.reading(), m, _K, {
            find(m, key).is_some_and(|k| m.contains_key(&k))
        })
    }

    fn __getitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<PyObject> {
        with_map!(self.reading(), m, _K, {
            // The Python object straight from the leaf (`get` would copy
            // the value first: two atomic reference-count updates for an
            // object value). No Python code runs in `to_py` (an incref, or
            // a new int), so none runs under the core's epoch pin.
            match find(m, key).and_then(|k| m.get_with(&k, |v| v.to_py(py))) {
                Some(v) => Ok(v),
                None => Err(key_error(py, key)),
            }
        })
    }

    fn __setitem__(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        with_map!(self.writing(key)?, m, _K, {
            m.put(admit(m, key)?, PyValue::from_py(value));
            Ok(())
        })
    }

    fn __delitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        with_map!(self.reading(), m, _K, {
            match find(m, key).and_then(|k| m.take(&k)) {
                Some(_) => Ok(()),
                None => Err(key_error(py, key)),
            }
        })
    }

    /// Every entry, one leaf (a list) at a time: `mode` 0 keys, 1 values, 2 items.
    fn _leaves(&self, reverse: bool, mode: u8) -> PySkipListIter {
        PySkipListIter::all(self.reading(), reverse, mode)
    }

    /// The value of `key`, or `default` (also for a key of another type).
    #[pyo3(signature = (key, default = None))]
    fn get(&self, py: Python<'_>, key: &Bound<'_, PyAny>, default: Option<PyObject>) -> PyObject {
        with_map!(self.reading(), m, _K, {
            match find(m, key).and_then(|k| m.get_with(&k, |v| v.to_py(py))) {
                Some(v) => v,
                None => default.unwrap_or_else(|| py.None()),
            }
        })
    }

    /// Removes `key` and returns its value; `default`, or `KeyError`, if absent.
    #[pyo3(signature = (key, *default))]
    fn pop(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        default: &Bound<'_, PyTuple>,
    ) -> PyResult<PyObject> {
        if default.len() > 1 {
            return Err(py_err(
                ErrorKind::InvalidArgument,
                format!(
                    "pop expected at most 2 arguments, got {}",
                    default.len() + 1
                ),
            ));
        }
        with_map!(self.reading(), m, _K, {
            match find(m, key).and_then(|k| m.take(&k)) {
                Some(v) => Ok(v.to_py(py)),
                None if default.len() == 1 => Ok(default.get_item(0)?.unbind()),
                None => Err(key_error(py, key)),
            }
        })
    }

    /// Atomically: the value of `key`, inserting `default` first if absent.
    #[pyo3(signature = (key, default = None))]
    fn setdefault(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        default: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyObject> {
        let none = py.None().into_bound(py);
        let value = default.unwrap_or(&none);
        with_map!(self.writing(key)?, m, _K, {
            let k = admit(m, key)?;
            Ok(match m.put_absent(k, PyValue::from_py(value)) {
                Ok(()) => value.clone().unbind(),
                Err(v) => v.to_py(py),
            })
        })
    }

    /// The `(key, value)` at position `index` (default: the last).
    #[pyo3(signature = (index = None))]
    fn peekitem<'py>(
        &self,
        py: Python<'py>,
        index: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let i = index.map_or(Ok(-1), index_arg)?;
        self.nth_at(py, i, 2)?
            .into_bound(py)
            .downcast_into::<PyTuple>()
            .map_err(PyErr::from)
    }

    /// Removes and returns the `(key, value)` at position `index` (default:
    /// the last). `KeyError` when empty, `IndexError` when out of range.
    #[pyo3(signature = (index = None))]
    fn popitem<'py>(
        &self,
        py: Python<'py>,
        index: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        self.pop_at(py, index.map_or(Ok(-1), index_arg)?)
    }

    /// The key, value or item (`mode` 0, 1, 2) at position `index`;
    /// `IndexError` when out of range.
    fn _nth(&self, py: Python<'_>, index: &Bound<'_, PyAny>, mode: u8) -> PyResult<PyObject> {
        self.nth_at(py, index_arg(index)?, mode)
    }

    /// The position `key` has or would take (keys `< key`).
    fn bisect_left(&self, key: &Bound<'_, PyAny>) -> PyResult<usize> {
        self.count_below(key, true)
    }

    /// The position after `key` (keys `<= key`).
    fn bisect_right(&self, key: &Bound<'_, PyAny>) -> PyResult<usize> {
        self.count_below(key, false)
    }

    /// Same as `bisect_right`.
    fn bisect(&self, key: &Bound<'_, PyAny>) -> PyResult<usize> {
        self.count_below(key, false)
    }

    /// Keys below `key` (`< key` if `inclusive`, else `<= key`).
    fn count_below(&self, key: &Bound<'_, PyAny>, inclusive: bool) -> PyResult<usize> {
        let Some(map) = self.map.get() else {
            return Ok(0);
        };
        with_map!(map, m, K, {
            Ok(match edge::<K>(m, Some(key), inclusive, true)? {
                Edge::Unbounded => 0,
                e => m.with_positions(|idx| m.count_below_indexed(idx, e.as_ref())),
            })
        })
    }

    fn _first<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        with_map!(self.reading(), m, _K, entry(py, m.first()))
    }

    fn _last<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        with_map!(self.reading(), m, _K, entry(py, m.last()))
    }

    fn _pop_first<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        with_map!(self.reading(), m, _K, entry(py, m.take_first()))
    }

    fn _lower_bound<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        inclusive: bool,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let Some(map) = self.map.get() else {
            return Ok(None);
        };
        with_map!(map, m, K, {
            let b = edge::<K>(m, Some(key), inclusive, true)?;
            entry(py, m.lower_bound(b.as_ref()))
        })
    }

    fn _upper_bound<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        inclusive: bool,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let Some(map) = self.map.get() else {
            return Ok(None);
        };
        with_map!(map, m, K, {
            let b = edge::<K>(m, Some(key), inclusive, false)?;
            entry(py, m.upper_bound(b.as_ref()))
        })
    }

    fn _clear(&self, py: Python<'_>) {
        with_map!(self.reading(), m, _K, {
            // `clear` copies each value it pops: without the GIL only on a
            // map of ints.
            m.gil_free(py, |_| m.list.clear());
            m.reshaped();
        })
    }

    /// Checks the structure's invariants; raises `AssertionError` if broken.
    fn _check(&self) -> PyResult<()> {
        with_map!(self.reading(), m, _K, {
            m.check_invariants()
                .map_err(pyo3::exceptions::PyAssertionError::new_err)
        })
    }

    /// Copies every entry into `other` (an empty map with no key type yet).
    fn _copy_into(&self, py: Python<'_>, other: &PyBSkipList) -> PyResult<()> {
        let Some(map) = self.map.get() else {
            return Ok(());
        };
        if std::ptr::eq(self, other) {
            return Err(py_err(
                ErrorKind::InvalidArgument,
                "cannot copy a BSkipList into itself",
            ));
        }
        let kt = with_map!(map, _m, K, K::NAME);
        other._set_key_type(kt)?;
        match (map, other.reading()) {
            (AnyMap::Int(a), AnyMap::Int(b)) => copy_all(py, a, b),
            (AnyMap::Float(a), AnyMap::Float(b)) => copy_all(py, a, b),
            (AnyMap::Bytes(a), AnyMap::Bytes(b)) => copy_all(py, a, b),
            (AnyMap::Str(a), AnyMap::Str(b)) => copy_all(py, a, b),
            (AnyMap::Tuple(a), AnyMap::Tuple(b)) => {
                // Copy the schema out first: never hold two maps' schema locks.
                let tags = a.schema.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
                b.schema.fits(&tags, true);
                copy_all(py, a, b)
            }
            _ => unreachable!("key type set just above"),
        }
        Ok(())
    }

    /// A lazy range iterator, one leaf (a list) at a time: `mode` 0 keys,
    /// 1 values, 2 (key, value) items.
    #[pyo3(signature = (lo, hi, lo_inclusive, hi_inclusive, reverse, mode))]
    fn _range_leaves(
        &self,
        lo: Option<&Bound<'_, PyAny>>,
        hi: Option<&Bound<'_, PyAny>>,
        lo_inclusive: bool,
        hi_inclusive: bool,
        reverse: bool,
        mode: u8,
    ) -> PyResult<PySkipListIter> {
        let Some(map) = self.map.get() else {
            return Ok(PySkipListIter::all(&EMPTY, reverse, mode));
        };
        let cursor = match map {
            AnyMap::Int(m) => AnyCursor::Int(RangeCursor::new(
                edge(m, lo, lo_inclusive, true)?,
                edge(m, hi, hi_inclusive, false)?,
            )),
            AnyMap::Float(m) => AnyCursor::Float(RangeCursor::new(
                edge(m, lo, lo_inclusive, true)?,
                edge(m, hi, hi_inclusive, false)?,
            )),
            AnyMap::Bytes(m) => AnyCursor::Bytes(RangeCursor::new(
                edge(m, lo, lo_inclusive, true)?,
                edge(m, hi, hi_inclusive, false)?,
            )),
            AnyMap::Str(m) => AnyCursor::Str(RangeCursor::new(
                edge(m, lo, lo_inclusive, true)?,
                edge(m, hi, hi_inclusive, false)?,
            )),
            AnyMap::Tuple(m) => AnyCursor::Tuple(RangeCursor::new(
                edge(m, lo, lo_inclusive, true)?,
                edge(m, hi, hi_inclusive, false)?,
            )),
        };
        Ok(PySkipListIter::new(map, cursor, reverse, mode))
    }

    /// Int64 keys (int map) or float64 keys (float map) with int64 values:
    /// converted and inserted with the GIL released.
    fn _update_many_numeric(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        values: PyReadonlyArray1<'_, i64>,
    ) -> PyResult<()> {
        let vals = values.as_slice()?.to_vec();
        match self.reading() {
            AnyMap::Int(m) => {
                let keys: PyReadonlyArray1<'_, i64> = keys
                    .extract()
                    .map_err(|_| py_err(ErrorKind::InvalidType, "keys must be an int64 array"))?;
                let keys = keys.as_slice()?.to_vec();
                check_len(keys.len(), vals.len())?;
                store_ints(py, m, keys, vals);
                Ok(())
            }
            AnyMap::Float(m) => {
                let keys = float_keys(keys)?;
                check_len(keys.len(), vals.len())?;
                store_ints(py, m, keys, vals);
                Ok(())
            }
            _ => Err(py_err(
                ErrorKind::InvalidType,
                "numeric batch needs an int or float map",
            )),
        }
    }

    /// Int64 keys (int map) or float64 keys (float map) with any values
    /// (an iterable of the same length), stored as objects. The keys are
    /// read from the array itself: going through `keys.tolist()` made one
    /// temporary Python int per key and a vector of them (40 B per key,
    /// freed after the call but kept by the allocators: measured as 16 B of
    /// resident memory per entry of an int -> str map).
    fn _update_many_array_objects(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        values: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        fn values_of(values: &Bound<'_, PyAny>) -> PyResult<Vec<PyValue>> {
            values
                .try_iter()?
                .map(|v| Ok(PyValue::from_py(&v?)))
                .collect()
        }
        match self.reading() {
            AnyMap::Int(m) => {
                let keys: PyReadonlyArray1<'_, i64> = keys
                    .extract()
                    .map_err(|_| py_err(ErrorKind::InvalidType, "keys must be an int64 array"))?;
                let keys = keys.as_slice()?;
                let vals = values_of(values)?;
                check_len(keys.len(), vals.len())?;
                let items = keys.iter().copied().zip(vals).collect();
                m.store_many(py, items, Batch::Any);
                Ok(())
            }
            AnyMap::Float(m) => {
                let keys = float_keys(keys)?;
                let vals = values_of(values)?;
                check_len(keys.len(), vals.len())?;
                m.store_many(py, keys.into_iter().zip(vals).collect(), Batch::Any);
                Ok(())
            }
            _ => Err(py_err(
                ErrorKind::InvalidType,
                "array batch needs an int or float map",
            )),
        }
    }

    /// Any keys (an iterable) and any values (an iterable of the same
    /// length). Every key is checked before anything is inserted.
    fn _update_many_objects(
        &self,
        keys: &Bound<'_, PyAny>,
        values: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let keys: Vec<Bound<'_, PyAny>> = keys.try_iter()?.collect::<PyResult<_>>()?;
        let Some(first) = keys.first() else {
            let n = values.try_iter()?.count();
            return check_len(0, n);
        };
        let n = keys.len();
        with_map!(self.writing(first)?, m, K, {
            let ks: Vec<K> = keys.iter().map(|k| admit(m, k)).collect::<PyResult<_>>()?;
            let vs: Vec<PyValue> = values
                .try_iter()?
                .map(|v| Ok(PyValue::from_py(&v?)))
                .collect::<PyResult<_>>()?;
            check_len(ks.len(), vs.len())?;
            m.store_many(keys[0].py(), ks.into_iter().zip(vs).collect(), Batch::Any);
            Ok::<(), PyErr>(())
        })?;
        // The converted keys' vector (and what it held) is freed only now,
        // after `store_many`'s own trim: give that memory back too.
        drop(keys);
        after_big_batch(n);
        Ok(())
    }

    /// Inserts a dict's items, or `(key, value)` pairs from an iterable, in
    /// one batch (later duplicates win). Nothing is inserted if any pair or
    /// key is bad.
    fn _update_from(&self, source: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(d) = source.downcast_exact::<PyDict>() {
            // One pass, converting as we go (the common "build from a dict").
            let Some((first, _)) = d.iter().next() else {
                return Ok(());
            };
            return with_map!(self.writing(&first)?, m, _K, {
                let n = d.len();
                let mut items = Vec::with_capacity(n);
                let py = d.py();
                let (mut pos, mut kp, mut vp) = (0, std::ptr::null_mut(), std::ptr::null_mut());
                // The dict's own iteration, with borrowed references (pyo3's
                // iterator takes and drops two references per item and
                // re-checks the size: ~10% of a 1M-item build).
                // SAFETY: `d` is a live dict (the GIL is held); `PyDict_Next`
                // stores borrowed references to the item at `pos` and is
                // bounds-checked against the dict's current table.
                while unsafe { pyo3::ffi::PyDict_Next(d.as_ptr(), &mut pos, &mut kp, &mut vp) } != 0
                {
                    // SAFETY: both pointers were just set to live objects the
                    // dict holds; they stay alive while no Python code runs.
                    let (k, v) =
                        unsafe { (Borrowed::from_ptr(py, kp), Borrowed::from_ptr(py, vp)) };
                    let key = if k.is_exact_instance_of::<PyInt>() {
                        // Converting an exact int runs no Python code.
                        admit(m, &k)?
                    } else {
                        // Other keys may run Python code (`__index__` of a
                        // numpy scalar subclass, say) that could drop the
                        // dict's item: hold our own references meanwhile.
                        let (k, v) = (k.to_owned(), v.to_owned());
                        let key = admit(m, &k)?;
                        if d.len() != n {
                            return Err(PyRuntimeError::new_err(
                                "dictionary changed size during iteration",
                            ));
                        }
                        items.push((key, PyValue::from_py(&v)));
                        continue;
                    };
                    // An exact int value is read, any other one only
                    // referenced (no Python code either way).
                    items.push((key, PyValue::from_py(&v)));
                }
                // A dict's keys are distinct (equal keys hash alike). The
                // distinct path sorts in place: no big freed buffer for
                // glibc to keep, so no trim (which only made the next
                // build fault its pages in again).
                m.store_many(py, items, Batch::Distinct);
                Ok(())
            });
        }
        if let Ok(list) = source.downcast_exact::<PyList>() {
            if self.update_from_int_pairs(list)? {
                return Ok(());
            }
        }
        let mut pairs: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)> = Vec::new();
        for (i, item) in source.try_iter()?.enumerate() {
            let item = item?;
            if let Ok(t) = item.downcast_exact::<PyTuple>() {
                if t.len() == 2 {
                    pairs.push((t.get_item(0)?, t.get_item(1)?));
                    continue;
                }
            }
            let parts: Vec<Bound<'_, PyAny>> = match item.try_iter() {
                Ok(it) => it.collect::<PyResult<_>>()?,
                Err(_) => {
                    return Err(py_err(
                        ErrorKind::InvalidType,
                        format!("update sequence element #{i} is not a (key, value) pair"),
                    ))
                }
            };
            let [k, v]: [Bound<'_, PyAny>; 2] = parts.try_into().map_err(|p: Vec<_>| {
                py_err(
                    ErrorKind::InvalidArgument,
                    format!(
                        "update sequence element #{i} has length {}; 2 is required",
                        p.len()
                    ),
                )
            })?;
            pairs.push((k, v));
        }
        let Some((first, _)) = pairs.first() else {
            return Ok(());
        };
        with_map!(self.writing(first)?, m, _K, {
            let convert = || -> PyResult<Vec<_>> {
                pairs
                    .iter()
                    .map(|(k, v)| Ok((admit(m, k)?, PyValue::from_py(v))))
                    .collect()
            };
            let items = convert()?;
            // Pairs usually have distinct keys (`dict.items()`, a zip of
            // unique keys): the in-place unstable sort first; only a batch
            // that repeats a key is converted again for the stable path.
            let py = source.py();
            if items.len() > 1 {
                if m.store_many(py, items, Batch::IfDistinct) {
                    return Ok(());
                }
                insert_batch(py, m, convert()?);
            } else {
                insert_batch(py, m, items);
            }
            Ok(())
        })
    }

    /// `(values, found)`: values is int64 (0 where missing) when every found
    /// value is an int, else an object array (None where missing).
    fn _get_many<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyArray1<bool>>)> {
        let vals: Vec<Option<PyValue>> = match self.reading() {
            AnyMap::Int(m) => {
                let keys: PyReadonlyArray1<'_, i64> = keys
                    .extract()
                    .map_err(|_| py_err(ErrorKind::InvalidType, "keys must be an int64 array"))?;
                let keys = keys.as_slice()?;
                m.gil_free(py, |parallel| lookup_batch(m, keys, parallel))
            }
            AnyMap::Float(m) => {
                let keys = float_keys(keys)?;
                m.gil_free(py, |parallel| lookup_batch(m, &keys, parallel))
            }
            map => with_map!(map, m, _K, {
                keys.try_iter()?
                    .map(|k| Ok(find(m, &k?).and_then(|k| m.get(&k))))
                    .collect::<PyResult<_>>()?
            }),
        };
        let found: Vec<bool> = vals.iter().map(Option::is_some).collect();
        Ok((values_array(py, &vals), PyArray1::from_vec(py, found)))
    }

    /// `(keys, values)` of the entries in the range, ascending; numpy arrays
    /// (int64/float64 keys for int/float maps, object arrays otherwise).
    #[pyo3(signature = (lo, hi, lo_inclusive, hi_inclusive))]
    fn _range_arrays<'py>(
        &self,
        py: Python<'py>,
        lo: Option<&Bound<'py, PyAny>>,
        hi: Option<&Bound<'py, PyAny>>,
        lo_inclusive: bool,
        hi_inclusive: bool,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let Some(map) = self.map.get() else {
            return Ok((
                PyArray1::<i64>::from_vec(py, vec![]).into_any(),
                PyArray1::<i64>::from_vec(py, vec![]).into_any(),
            ));
        };
        match map {
            AnyMap::Int(m) => {
                let (lo, hi) = (
                    edge::<i64>(m, lo, lo_inclusive, true)?,
                    edge::<i64>(m, hi, hi_inclusive, false)?,
                );
                let (ks, vs) = m.gil_free(py, |_| collect_range(m, &lo, &hi));
                Ok((PyArray1::from_vec(py, ks).into_any(), values_array(py, &vs)))
            }
            AnyMap::Float(m) => {
                let (lo, hi) = (
                    edge::<F64Key>(m, lo, lo_inclusive, true)?,
                    edge::<F64Key>(m, hi, hi_inclusive, false)?,
                );
                let (ks, vs) = m.gil_free(py, |_| collect_range(m, &lo, &hi));
                let ks: Vec<f64> = ks.into_iter().map(F64Key::get).collect();
                Ok((PyArray1::from_vec(py, ks).into_any(), values_array(py, &vs)))
            }
            map => with_map!(map, m, K, {
                let (lo, hi) = (
                    edge::<K>(m, lo, lo_inclusive, true)?,
                    edge::<K>(m, hi, hi_inclusive, false)?,
                );
                let (ks, vs) = collect_range(m, &lo, &hi);
                let ks: Vec<PyObject> = ks.iter().map(|k| k.to_py(py)).collect();
                Ok((PyArray1::from_vec(py, ks).into_any(), values_array(py, &vs)))
            }),
        }
    }
}

/// Looks up a batch: in key order when it is dense enough that several keys
/// share a leaf (one leaf holds ~32 keys), else one descent per key, on
/// several threads if `parallel` (only where values may be cloned on any
/// thread: see [`Shared::gil_free`]; the sorted walk copies values on the
/// calling thread, only its sort of the keys may run on others).
fn lookup_batch<K: PyKey>(m: &Map<K>, keys: &[K], parallel: bool) -> Vec<Option<PyValue>> {
    if keys.len() >= 4096 && keys.len() * 64 >= m.len() {
        m.get_many_sorted(keys)
    } else if parallel {
        m.get_many(keys)
    } else {
        keys.iter().map(|k| m.get(k)).collect()
    }
}

/// Inserts a converted batch (a single item takes the plain insert path).
fn insert_batch<K: PyKey>(py: Python<'_>, m: &Map<K>, items: Vec<(K, PyValue)>) {
    if items.len() == 1 {
        let (k, v) = items.into_iter().next().expect("one item");
        m.put(k, v);
    } else {
        m.store_many(py, items, Batch::Any);
    }
}

/// Inserts int values (`update_many` with an integer array): without the
/// GIL and without any Python object when every value is in the inline
/// range (and the map holds only ints), else those outside it become int
/// objects, made with the GIL.
fn store_ints<K: PyKey>(py: Python<'_>, m: &Map<K>, keys: Vec<K>, vals: Vec<i64>) {
    let items: Vec<(K, PyValue)> = if vals.iter().all(|&v| PyValue::inline(v).is_some()) {
        py.allow_threads(|| {
            keys.into_iter()
                .zip(vals)
                .map(|(k, v)| (k, PyValue::inline(v).expect("checked just above")))
                .collect()
        })
    } else {
        keys.into_iter()
            .zip(vals)
            .map(|(k, v)| (k, PyValue::int(py, v)))
            .collect()
    };
    m.store_many(py, items, Batch::Any);
}

/// Copies every entry of `from` into the empty map `to`.
fn copy_all<K: PyKey>(py: Python<'_>, from: &Map<K>, to: &Map<K>) {
    let items = from.gil_free(py, |_| {
        let mut items = Vec::with_capacity(from.len());
        from.for_each_in::<K>(Edge::Unbounded, Edge::Unbounded, |k, v| {
            items.push((k.clone(), v.clone()))
        });
        items
    });
    to.store_many(py, items, Batch::Distinct);
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
    Tuple(RangeCursor<TupleKey, PyValue>),
}

/// A lazy range iterator that returns one leaf's entries at a time, as a
/// list (the Python side flattens them with `itertools.chain`): one native
/// call per leaf instead of per key. It holds no lock or epoch between
/// calls, so it stays valid while other threads write; each leaf is one
/// snapshot, so a key removed before the iterator reaches its leaf is never
/// returned.
#[pyclass(name = "BSkipListIter", module = "slabcache._native")]
pub struct PySkipListIter {
    map: AnyMap,
    cursor: std::sync::Mutex<AnyCursor>,
    reverse: bool,
    mode: u8,
}

impl PySkipListIter {
    fn new(map: &AnyMap, cursor: AnyCursor, reverse: bool, mode: u8) -> Self {
        PySkipListIter {
            map: map.clone(),
            cursor: std::sync::Mutex::new(cursor),
            reverse,
            mode,
        }
    }

    fn all(map: &AnyMap, reverse: bool, mode: u8) -> Self {
        let cursor = match map {
            AnyMap::Int(_) => AnyCursor::Int(RangeCursor::new(Edge::Unbounded, Edge::Unbounded)),
            AnyMap::Float(_) => {
                AnyCursor::Float(RangeCursor::new(Edge::Unbounded, Edge::Unbounded))
            }
            AnyMap::Bytes(_) => {
                AnyCursor::Bytes(RangeCursor::new(Edge::Unbounded, Edge::Unbounded))
            }
            AnyMap::Str(_) => AnyCursor::Str(RangeCursor::new(Edge::Unbounded, Edge::Unbounded)),
            AnyMap::Tuple(_) => {
                AnyCursor::Tuple(RangeCursor::new(Edge::Unbounded, Edge::Unbounded))
            }
        };
        Self::new(map, cursor, reverse, mode)
    }
}

fn leaf_chunk<'py, K: PyKey>(
    py: Python<'py>,
    m: &Map<K>,
    c: &mut RangeCursor<K, PyValue>,
    reverse: bool,
    mode: u8,
) -> PyResult<Option<Bound<'py, PyList>>> {
    let entries = c.next_leaf(m, reverse);
    if entries.is_empty() {
        return Ok(None);
    }
    let items = entries
        .iter()
        .map(|(k, v)| shaped(py, k, v, mode))
        .collect::<PyResult<Vec<_>>>()?;
    Ok(Some(PyList::new(py, items)?))
}

#[pymethods]
impl PySkipListIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next leaf's keys, values or items, as a list.
    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        let mut cursor = self
            .cursor
            .lock()
            .map_err(|_| py_err(ErrorKind::InvalidArgument, "iterator poisoned"))?;
        let (r, md) = (self.reverse, self.mode);
        match (&self.map, &mut *cursor) {
            (AnyMap::Int(m), AnyCursor::Int(c)) => leaf_chunk(py, m, c, r, md),
            (AnyMap::Float(m), AnyCursor::Float(c)) => leaf_chunk(py, m, c, r, md),
            (AnyMap::Bytes(m), AnyCursor::Bytes(c)) => leaf_chunk(py, m, c, r, md),
            (AnyMap::Str(m), AnyCursor::Str(c)) => leaf_chunk(py, m, c, r, md),
            (AnyMap::Tuple(m), AnyCursor::Tuple(c)) => leaf_chunk(py, m, c, r, md),
            _ => unreachable!("cursor built for its map"),
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyBSkipList>()?;
    m.add_class::<PySkipListIter>()?;
    Ok(())
}
