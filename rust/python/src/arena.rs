//! Bindings of the blob arena (`slabcache_core::arena`): `BlobArena` and the
//! zero-copy `BlobBuffer` that `get` wraps in a read-only `memoryview`.

use std::borrow::Cow;
use std::ffi::{c_int, c_void};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyMemoryView, PyString};
use pyo3::{ffi, IntoPyObjectExt};
use slabcache_core::arena::{
    ArenaOptions, ArenaStats, BlobArena, BlobView, CompactionReport, RecoveryReport, RepairReport,
    SyncMode, VerifyReport,
};
use slabcache_core::ErrorKind;

use crate::errors::{py_err, IntoPyResult};

/// Key bytes of a `bytes` or `str` (UTF-8) key; anything else is an `InvalidTypeError`.
fn key_bytes<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(b) = obj.downcast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    if let Ok(s) = obj.downcast::<PyString>() {
        return match s.to_str() {
            Ok(t) => Ok(Cow::Owned(t.as_bytes().to_vec())),
            Err(e) => Err(py_err(
                ErrorKind::InvalidArgument,
                format!("arena str keys must encode as UTF-8 ({e})"),
            )),
        };
    }
    Err(py_err(
        ErrorKind::InvalidType,
        format!(
            "arena keys must be bytes or str, got {}",
            obj.get_type().name()?
        ),
    ))
}

fn opt_key<'a>(obj: &'a Option<Bound<'_, PyAny>>) -> PyResult<Option<Cow<'a, [u8]>>> {
    obj.as_ref().map(key_bytes).transpose()
}

/// A borrowed C-contiguous buffer of any bytes-like object (released on drop, with the GIL).
struct ValueBuffer {
    view: ffi::Py_buffer,
}

impl ValueBuffer {
    fn get(obj: &Bound<'_, PyAny>) -> PyResult<ValueBuffer> {
        let mut view = ffi::Py_buffer::new();
        // SAFETY: `obj` is a live object (we hold the GIL through `Bound`) and
        // `view` is a writable Py_buffer; PyBUF_SIMPLE asks for a contiguous
        // byte buffer, which the exporter keeps valid until PyBuffer_Release.
        let rc = unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut view, ffi::PyBUF_SIMPLE) };
        if rc != 0 {
            let cause = PyErr::fetch(obj.py());
            let err = py_err(
                ErrorKind::InvalidType,
                format!(
                    "arena values must be contiguous bytes-like objects, got {} ({cause})",
                    obj.get_type().name()?
                ),
            );
            return Err(err);
        }
        Ok(ValueBuffer { view })
    }

    /// True when the exporter may change the bytes while we hold them.
    fn mutable(&self) -> bool {
        self.view.readonly == 0
    }

    fn as_slice(&self) -> &[u8] {
        if self.view.len <= 0 || self.view.buf.is_null() {
            return &[];
        }
        // SAFETY: the exporter guarantees `len` readable bytes at `buf` while
        // the buffer is held, which lasts as long as `self`.
        unsafe { std::slice::from_raw_parts(self.view.buf as *const u8, self.view.len as usize) }
    }
}

impl Drop for ValueBuffer {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful PyObject_GetBuffer; every
        // ValueBuffer is dropped while the GIL is held (never inside allow_threads).
        unsafe { ffi::PyBuffer_Release(&mut self.view) }
    }
}

/// Value bytes: `bytes` directly, anything else through the buffer protocol.
enum Value<'a> {
    Bytes(&'a [u8]),
    Buffer(ValueBuffer),
}

impl Value<'_> {
    fn from<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<Value<'a>> {
        if let Ok(b) = obj.downcast::<PyBytes>() {
            return Ok(Value::Bytes(b.as_bytes()));
        }
        Ok(Value::Buffer(ValueBuffer::get(obj)?))
    }
    fn as_slice(&self) -> &[u8] {
        match self {
            Value::Bytes(b) => b,
            Value::Buffer(b) => b.as_slice(),
        }
    }
    /// Another thread may write into it while the GIL is released.
    fn mutable(&self) -> bool {
        matches!(self, Value::Buffer(b) if b.mutable())
    }
}

/// Slices that cross `allow_threads` (the buffers they point into stay held by the caller).
struct SendSlices<'a>(Vec<&'a [u8]>);
// SAFETY: plain byte slices; the objects owning them are kept alive and
// exported by the calling frame until `allow_threads` returns.
unsafe impl Send for SendSlices<'_> {}

/// A read-only, zero-copy view of one blob: `memoryview(buf)` reads the arena's
/// mmap directly and keeps the generation mapped while it lives.
#[pyclass(name = "BlobBuffer", module = "slabcache._native", frozen)]
pub struct PyBlobBuffer {
    view: BlobView,
}

#[pymethods]
impl PyBlobBuffer {
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("view is null"));
        }
        if flags & ffi::PyBUF_WRITABLE != 0 {
            return Err(PyBufferError::new_err("arena blobs are read-only"));
        }
        let bytes: &[u8] = &slf.get().view;
        let (ptr, len) = (bytes.as_ptr() as *mut c_void, bytes.len());
        // SAFETY: `view` is non-null (checked) and is the Py_buffer the
        // interpreter gave us to fill. The bytes live in an mmap owned by
        // `slf` (via an Arc) and `view.obj` holds a strong reference to `slf`
        // until the buffer is released, so they stay valid and unchanged.
        unsafe { crate::buffer::fill_byte_buffer(view, slf.into_any(), ptr, len, true, flags) };
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}

    fn __len__(&self) -> usize {
        self.view.len()
    }

    /// The generation file the blob lives in.
    #[getter]
    fn generation(&self) -> u64 {
        self.view.generation()
    }
}

fn memoryview(py: Python<'_>, view: BlobView) -> PyResult<PyObject> {
    let buf = Bound::new(py, PyBlobBuffer { view })?;
    Ok(PyMemoryView::from(buf.as_any())?.into_any().unbind())
}

/// Native blob arena; `slabcache.BlobArena` is the documented Python face.
#[pyclass(name = "BlobArena", module = "slabcache._native", frozen, subclass)]
pub struct PyBlobArena {
    inner: Arc<BlobArena>,
}

fn stats_dict<'py>(
    py: Python<'py>,
    s: &ArenaStats,
    sync: SyncMode,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("keys", s.keys)?;
    d.set_item("live_bytes", s.live_bytes)?;
    d.set_item("data_bytes", s.data_bytes)?;
    d.set_item("dead_bytes", s.dead_bytes)?;
    d.set_item("generations", s.generations)?;
    d.set_item("current_generation", s.current_generation)?;
    d.set_item("wal_segment", s.wal_segment)?;
    d.set_item("wal_bytes", s.wal_bytes)?;
    d.set_item("next_seq", s.next_seq)?;
    d.set_item("syncs", s.syncs)?;
    d.set_item("checkpoints", s.checkpoints)?;
    d.set_item("compactions", s.compactions)?;
    d.set_item("poisoned", s.poisoned)?;
    d.set_item("store_id", s.store_id)?;
    d.set_item("sync", sync.as_str())?;
    d.set_item("recovery", recovery_dict(py, &s.recovery)?)?;
    Ok(d)
}

fn recovery_dict<'py>(py: Python<'py>, r: &RecoveryReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("checkpoint_entries", r.checkpoint_entries)?;
    d.set_item("replayed_records", r.replayed_records)?;
    d.set_item("truncated_bytes", r.truncated_bytes)?;
    d.set_item("dropped_records", r.dropped_records)?;
    d.set_item("stop_reason", r.stop_reason.clone())?;
    d.set_item("removed_files", r.removed_files)?;
    d.set_item("repaired_blobs", r.repaired_blobs)?;
    d.set_item("seconds", r.duration_us as f64 / 1e6)?;
    Ok(d)
}

fn compaction_dict<'py>(py: Python<'py>, r: &CompactionReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("generation", r.generation)?;
    d.set_item("blobs", r.blobs)?;
    d.set_item("bytes_before", r.bytes_before)?;
    d.set_item("bytes_after", r.bytes_after)?;
    d.set_item("bad_blobs", r.bad_blobs)?;
    d.set_item("seconds", r.duration_us as f64 / 1e6)?;
    Ok(d)
}

fn repair_dict<'py>(py: Python<'py>, r: &RepairReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("kept_keys", r.kept_keys)?;
    d.set_item("checkpoint_entries", r.checkpoint_entries)?;
    d.set_item("wal_records", r.wal_records)?;
    d.set_item("damaged_wal_bytes", r.damaged_wal_bytes)?;
    d.set_item("dropped", PyList::new(py, &r.dropped)?)?;
    d.set_item("generation", r.generation)?;
    d.set_item("backup_dir", r.backup_dir.clone())?;
    Ok(d)
}

/// A non-negative size option (negative → `InvalidArgumentError`, not `OverflowError`).
fn size_opt(name: &str, v: i128) -> PyResult<u64> {
    u64::try_from(v).map_err(|_| {
        py_err(
            ErrorKind::InvalidArgument,
            format!("{name} must be a non-negative integer below 2**64, got {v}"),
        )
    })
}

fn verify_dict<'py>(py: Python<'py>, r: &VerifyReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("keys", r.keys)?;
    d.set_item("bytes", r.bytes)?;
    d.set_item("wal_records", r.wal_records)?;
    d.set_item("generations", r.generations)?;
    Ok(d)
}

#[pymethods]
impl PyBlobArena {
    #[new]
    #[pyo3(signature = (
        path, *, sync = "batch", batch_interval_ms = 10.0, batch_bytes = 4 << 20,
        checkpoint_bytes = 64 << 20, auto_compact = true, compact_dead_ratio = 0.5,
        compact_min_dead_bytes = 64 << 20, verify_reads = false, verify_replay = true,
        create = true, inline_max = 16 << 10
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        sync: &str,
        batch_interval_ms: f64,
        batch_bytes: i128,
        checkpoint_bytes: i128,
        auto_compact: bool,
        compact_dead_ratio: f64,
        compact_min_dead_bytes: i128,
        verify_reads: bool,
        verify_replay: bool,
        create: bool,
        inline_max: i128,
    ) -> PyResult<Self> {
        let sync: SyncMode = sync.parse().py()?;
        let batch_bytes = size_opt("batch_bytes", batch_bytes)?;
        let checkpoint_bytes = size_opt("checkpoint_bytes", checkpoint_bytes)?;
        let compact_min_dead_bytes = size_opt("compact_min_dead_bytes", compact_min_dead_bytes)?;
        let inline_max = usize::try_from(size_opt("inline_max", inline_max)?).unwrap_or(usize::MAX);
        if !(batch_interval_ms.is_finite() && batch_interval_ms > 0.0) {
            return Err(py_err(
                ErrorKind::InvalidArgument,
                format!("batch_interval_ms must be a positive number, got {batch_interval_ms}"),
            ));
        }
        let opts = ArenaOptions {
            sync,
            batch_interval: Duration::from_secs_f64(batch_interval_ms / 1e3),
            batch_bytes,
            checkpoint_bytes,
            auto_compact,
            compact_dead_ratio,
            compact_min_dead_bytes,
            verify_reads,
            verify_replay,
            create,
            inline_max,
            ..Default::default()
        };
        let inner = py.allow_threads(|| BlobArena::open(&path, opts)).py()?;
        Ok(PyBlobArena {
            inner: Arc::new(inner),
        })
    }

    /// Stores `value` (any contiguous bytes-like) under `key` (bytes or str).
    ///
    ///     >>> import tempfile, slabcache
    ///     >>> ar = slabcache.BlobArena(tempfile.mkdtemp() + "/a", sync="none")
    ///     >>> ar.put(b"k", bytearray(b"v1"))
    ///     >>> ar.put("k", b"v2")  # str keys are stored as UTF-8
    ///     >>> bytes(ar.get(b"k"))
    ///     b'v2'
    fn put(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let k = key_bytes(key)?;
        let v = Value::from(value)?;
        let unstable = v.mutable();
        let (kb, vb) = (SendSlices(vec![&k[..]]), SendSlices(vec![v.as_slice()]));
        let inner = &self.inner;
        py.allow_threads(move || {
            let (kb, vb) = (kb, vb);
            if unstable {
                inner.put_many_unstable(&kb.0, &vb.0)
            } else {
                inner.put_many(&kb.0, &vb.0)
            }
        })
        .py()
    }

    /// Stores a batch in one call: one blob write, one WAL write, at most one sync.
    ///
    ///     >>> import tempfile, slabcache
    ///     >>> ar = slabcache.BlobArena(tempfile.mkdtemp() + "/a", sync="none")
    ///     >>> ar.put_many([b"a", b"b"], [b"1", memoryview(b"22")])
    ///     >>> len(ar), bytes(ar.get(b"b"))
    ///     (2, b'22')
    fn put_many(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        values: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let key_objs: Vec<Bound<'_, PyAny>> = keys.try_iter()?.collect::<PyResult<_>>()?;
        let val_objs: Vec<Bound<'_, PyAny>> = values.try_iter()?.collect::<PyResult<_>>()?;
        if key_objs.len() != val_objs.len() {
            return Err(py_err(
                ErrorKind::InvalidArgument,
                format!("{} keys but {} values", key_objs.len(), val_objs.len()),
            ));
        }
        let ks: Vec<Cow<'_, [u8]>> = key_objs.iter().map(key_bytes).collect::<PyResult<_>>()?;
        let vs: Vec<Value<'_>> = val_objs.iter().map(Value::from).collect::<PyResult<_>>()?;
        let unstable = vs.iter().any(Value::mutable);
        let kb = SendSlices(ks.iter().map(|k| &k[..]).collect());
        let vb = SendSlices(vs.iter().map(|v| v.as_slice()).collect());
        let inner = &self.inner;
        py.allow_threads(move || {
            let (kb, vb) = (kb, vb);
            if unstable {
                inner.put_many_unstable(&kb.0, &vb.0)
            } else {
                inner.put_many(&kb.0, &vb.0)
            }
        })
        .py()
    }

    /// The value as a read-only zero-copy `memoryview`, or `None`.
    ///
    ///     >>> import tempfile, slabcache
    ///     >>> ar = slabcache.BlobArena(tempfile.mkdtemp() + "/a", sync="none")
    ///     >>> ar.put(b"k", b"value")
    ///     >>> view = ar.get(b"k")  # zero-copy, read-only
    ///     >>> bytes(view), view.readonly
    ///     (b'value', True)
    ///     >>> ar.get(b"missing") is None
    ///     True
    fn get(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Option<PyObject>> {
        let k = key_bytes(key)?;
        match self.inner.get(&k).py()? {
            Some(view) => Ok(Some(memoryview(py, view)?)),
            None => Ok(None),
        }
    }

    /// `get` for many keys: a list of memoryviews / `None`.
    ///
    ///     >>> import tempfile, slabcache
    ///     >>> ar = slabcache.BlobArena(tempfile.mkdtemp() + "/a", sync="none")
    ///     >>> ar.put(b"a", b"1")
    ///     >>> [v if v is None else bytes(v) for v in ar.get_many([b"a", b"z"])]
    ///     [b'1', None]
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for key in keys.try_iter()? {
            let key = key?;
            let k = key_bytes(&key)?;
            match self.inner.get(&k).py()? {
                Some(view) => out.append(memoryview(py, view)?)?,
                None => out.append(py.None())?,
            }
        }
        Ok(out)
    }

    /// Deletes `key`; returns whether it was present.
    ///
    ///     >>> import tempfile, slabcache
    ///     >>> ar = slabcache.BlobArena(tempfile.mkdtemp() + "/a", sync="none")
    ///     >>> ar.put(b"k", b"v")
    ///     >>> ar.delete(b"k"), ar.delete(b"k")
    ///     (True, False)
    fn delete(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let k = key_bytes(key)?;
        let kb = SendSlices(vec![&k[..]]);
        let inner = &self.inner;
        py.allow_threads(move || {
            let kb = kb;
            inner.delete(kb.0[0])
        })
        .py()
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let k = key_bytes(key)?;
        self.inner.contains(&k).py()
    }

    fn __len__(&self) -> PyResult<usize> {
        self.inner.ensure_usable().py()?;
        Ok(self.inner.len())
    }

    /// Keys in `[start, end)` in byte order, at most `limit`.
    ///
    ///     >>> import tempfile, slabcache
    ///     >>> ar = slabcache.BlobArena(tempfile.mkdtemp() + "/a", sync="none")
    ///     >>> ar.put_many([b"c", b"a", b"b"], [b"3", b"1", b"2"])
    ///     >>> ar.keys(), ar.keys(start=b"b", limit=1)
    ///     ([b'a', b'b', b'c'], [b'b'])
    #[pyo3(signature = (start = None, end = None, limit = None))]
    fn keys<'py>(
        &self,
        py: Python<'py>,
        start: Option<Bound<'py, PyAny>>,
        end: Option<Bound<'py, PyAny>>,
        limit: Option<usize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let (s, e) = (opt_key(&start)?, opt_key(&end)?);
        let keys = self
            .inner
            .keys(s.as_deref(), e.as_deref(), limit.unwrap_or(usize::MAX))
            .py()?;
        let items: Vec<PyObject> = keys
            .iter()
            .map(|k| PyBytes::new(py, k).into_py_any(py))
            .collect::<PyResult<_>>()?;
        PyList::new(py, items)
    }

    /// Makes every write so far durable (fsync).
    ///
    ///     >>> import tempfile, slabcache
    ///     >>> ar = slabcache.BlobArena(tempfile.mkdtemp() + "/a", sync="none")
    ///     >>> ar.put(b"k", b"v")
    ///     >>> ar.flush()  # durable now, even with sync="none"
    ///     >>> ar.stats()["syncs"] >= 1
    ///     True
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let inner = &self.inner;
        py.allow_threads(|| inner.flush()).py()
    }

    /// Writes a checkpoint now.
    ///
    ///     >>> import tempfile, slabcache
    ///     >>> ar = slabcache.BlobArena(tempfile.mkdtemp() + "/a", sync="none")
    ///     >>> segment = ar.stats()["wal_segment"]
    ///     >>> ar.checkpoint()
    ///     >>> ar.stats()["wal_segment"] == segment + 1
    ///     True
    fn checkpoint(&self, py: Python<'_>) -> PyResult<()> {
        let inner = &self.inner;
        py.allow_threads(|| inner.checkpoint()).py()
    }

    /// Copies live blobs into a new generation; returns what it did.
    ///
    ///     >>> import tempfile, slabcache
    ///     >>> ar = slabcache.BlobArena(tempfile.mkdtemp() + "/a", sync="none")
    ///     >>> ar.put(b"k", bytes(4096))
    ///     >>> ar.put(b"k", b"small")  # the 4 KiB value is dead now
    ///     >>> r = ar.compact()
    ///     >>> r["blobs"], r["bytes_after"] < r["bytes_before"]
    ///     (1, True)
    fn compact<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let inner = &self.inner;
        let r = py.allow_threads(|| inner.compact()).py()?;
        compaction_dict(py, &r)
    }

    /// Sizes and counters.
    ///
    ///     >>> import tempfile, slabcache
    ///     >>> ar = slabcache.BlobArena(tempfile.mkdtemp() + "/a", sync="none")
    ///     >>> ar.put(b"k", b"12345")
    ///     >>> s = ar.stats()
    ///     >>> s["keys"], s["live_bytes"], s["sync"], s["recovery"]["replayed_records"]
    ///     (1, 5, 'none', 0)
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.inner.ensure_usable().py()?;
        let s = self.inner.stats();
        stats_dict(py, &s, self.inner.options().sync)
    }

    /// Checks every checksum; raises `CorruptionError` on the first problem.
    ///
    ///     >>> import tempfile, slabcache
    ///     >>> ar = slabcache.BlobArena(tempfile.mkdtemp() + "/a", sync="none")
    ///     >>> ar.put_many([b"a", b"b"], [b"1", b"22"])
    ///     >>> r = ar.verify()
    ///     >>> r["keys"], r["bytes"]
    ///     (2, 3)
    fn verify<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let inner = &self.inner;
        let r = py.allow_threads(|| inner.verify()).py()?;
        verify_dict(py, &r)
    }

    /// Flushes and releases the lock; later calls raise `ClosedError`. Idempotent.
    ///
    ///     >>> import tempfile, slabcache
    ///     >>> ar = slabcache.BlobArena(tempfile.mkdtemp() + "/a", sync="none")
    ///     >>> ar.put(b"k", b"v")
    ///     >>> view = ar.get(b"k")
    ///     >>> ar.close(); ar.close()  # idempotent
    ///     >>> bytes(view)  # views stay valid
    ///     b'v'
    ///     >>> ar.get(b"k")
    ///     Traceback (most recent call last):
    ///     ...
    ///     slabcache.errors.ClosedError: the arena is closed
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let inner = &self.inner;
        py.allow_threads(|| inner.close()).py()
    }

    /// True once closed.
    ///
    ///     >>> import tempfile, slabcache
    ///     >>> ar = slabcache.BlobArena(tempfile.mkdtemp() + "/a", sync="none")
    ///     >>> ar.closed
    ///     False
    ///     >>> ar.close()
    ///     >>> ar.closed
    ///     True
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// True once a durability step (fsync, checkpoint, compaction) failed:
    /// every later write raises until the arena is reopened.
    ///
    ///     >>> import tempfile, slabcache
    ///     >>> ar = slabcache.BlobArena(tempfile.mkdtemp() + "/a", sync="none")
    ///     >>> ar.put(b"k", b"v")
    ///     >>> ar.poisoned  # only a failed fsync, write or checkpoint poisons it
    ///     False
    #[getter]
    fn poisoned(&self) -> bool {
        self.inner.is_poisoned()
    }

    /// Salvages every record of a damaged arena that checks out into a new
    /// generation (the old files are kept under `salvaged-*/`); returns what
    /// was kept and dropped. The arena must not be open.
    ///
    ///     >>> import tempfile, slabcache
    ///     >>> path = tempfile.mkdtemp() + "/a"
    ///     >>> with slabcache.BlobArena(path) as ar:
    ///     ...     ar.put(b"k", b"v")
    ///     >>> r = slabcache.BlobArena.repair(path)  # the arena must be closed
    ///     >>> r["kept_keys"], r["dropped"]
    ///     (1, [])
    #[staticmethod]
    fn repair<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
        if path.as_os_str().is_empty() {
            return Err(py_err(
                ErrorKind::InvalidArgument,
                "the arena path is empty",
            ));
        }
        let io = slabcache_core::arena::os_io();
        let r = py
            .allow_threads(|| slabcache_core::arena::repair(&path, &io))
            .py()?;
        repair_dict(py, &r)
    }

    /// The arena directory.
    ///
    ///     >>> import os, tempfile, slabcache
    ///     >>> path = tempfile.mkdtemp() + "/a"
    ///     >>> ar = slabcache.BlobArena(path)
    ///     >>> os.fspath(ar.path) == path
    ///     True
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.path().to_path_buf()
    }

    /// The durability mode: "always", "batch" or "none".
    ///
    ///     >>> import tempfile, slabcache
    ///     >>> slabcache.BlobArena(tempfile.mkdtemp() + "/a", sync="always").sync
    ///     'always'
    #[getter]
    fn sync(&self) -> &'static str {
        self.inner.options().sync.as_str()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyBlobArena>()?;
    m.add_class::<PyBlobBuffer>()?;
    Ok(())
}
