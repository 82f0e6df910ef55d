//! Bindings of the slab allocator: `SlabAllocator`, `Allocation`,
//! `AllocationBatch`, and the benchmark routines of `slabcache bench allocator`.
//!
//! The Python-visible rules (checked here, because they are about Python
//! objects): an `Allocation` is freed at most once, never while a buffer view
//! of it is exported (`BufferExportedError`), and never used after its free
//! (`ClosedError`). An `Allocation` or batch dropped without a free gives its
//! memory back; each holds the core allocator alive (an `Arc`), so the
//! allocator and its allocations may die in any order.

use std::ffi::{c_int, c_void};
use std::ptr::NonNull;

use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use slabcache_core::slab::{SlabAllocator, SlabConfig, SlabStats};
use slabcache_core::ErrorKind;

use crate::errors::{py_err, IntoPyResult};

fn buffer_exported() -> PyErr {
    Python::with_gil(|py| {
        match py
            .import("slabcache.errors")
            .and_then(|m| m.getattr("BufferExportedError"))
        {
            Ok(cls) => PyErr::from_type(
                cls.downcast_into().expect("a class"),
                "cannot free: a buffer view of this allocation is still alive \
                 (release the memoryview / numpy array first)",
            ),
            Err(e) => e,
        }
    })
}

fn closed() -> PyErr {
    py_err(ErrorKind::Closed, "this allocation was freed")
}

/// A non-negative byte count from any Python int-like object.
#[inline]
fn size_arg(obj: &Bound<'_, PyAny>) -> PyResult<usize> {
    // Fast path: an int that fits in i64 (one C call, no exception).
    if obj.is_instance_of::<pyo3::types::PyInt>() {
        if let Ok(v) = obj.extract::<i64>() {
            if v >= 0 {
                return Ok(v as usize);
            }
        }
    }
    size_arg_slow(obj)
}

#[cold]
fn size_arg_slow(obj: &Bound<'_, PyAny>) -> PyResult<usize> {
    if obj.is_instance_of::<pyo3::types::PyFloat>() {
        return Err(py_err(
            ErrorKind::InvalidType,
            format!("size must be an int, got float {obj}"),
        ));
    }
    let v: i128 = obj.extract().map_err(|_| {
        py_err(
            ErrorKind::InvalidType,
            format!(
                "size must be an int, got {}",
                obj.get_type().name().map_or("?".into(), |n| n.to_string())
            ),
        )
    })?;
    if v < 0 {
        return Err(py_err(
            ErrorKind::InvalidArgument,
            format!("size must be >= 0, got {v}"),
        ));
    }
    usize::try_from(v)
        .ok()
        .filter(|&v| v <= isize::MAX as usize)
        .ok_or_else(|| py_err(ErrorKind::OutOfMemory, format!("cannot allocate {v} bytes")))
}

/// The slab allocator (see `slabcache.allocator.SlabAllocator`).
#[pyclass(module = "slabcache._native", name = "SlabAllocator", subclass, frozen)]
pub struct PySlabAllocator {
    inner: SlabAllocator,
}

/// One live allocation: a writable buffer.
#[pyclass(module = "slabcache._native", name = "Allocation")]
pub struct Allocation {
    heap: SlabAllocator,
    addr: usize,
    nbytes: usize,
    live: bool,
    exports: usize,
    /// Set for an item of an `AllocationBatch` (owned by the batch).
    batch: Option<Py<AllocationBatch>>,
}

/// Many allocations made (and freed) by one call.
#[pyclass(module = "slabcache._native", name = "AllocationBatch")]
pub struct AllocationBatch {
    heap: SlabAllocator,
    items: Vec<(NonNull<u8>, usize)>,
    freed: bool,
    exports: usize,
}

// SAFETY: the pointers are plain addresses of memory owned by the
// (thread-safe) allocator; the batch holds no thread-bound state.
unsafe impl Send for AllocationBatch {}
// SAFETY: as above; PyO3 serialises mutation through its borrow flag.
unsafe impl Sync for AllocationBatch {}

impl Drop for Allocation {
    fn drop(&mut self) {
        if self.live && self.batch.is_none() {
            let _ = self.heap.free_sized(
                NonNull::new(self.addr as *mut u8).expect("non-null"),
                self.nbytes,
            );
        }
    }
}

impl Drop for AllocationBatch {
    fn drop(&mut self) {
        if !self.freed {
            for &(p, n) in &self.items {
                let _ = self.heap.free_sized(p, n);
            }
        }
    }
}

/// Allocation lists crossing `allow_threads` (plain addresses of memory
/// owned by the thread-safe allocator).
struct Items(Vec<(NonNull<u8>, usize)>);
// SAFETY: see the type's doc: the pointers are addresses, not borrowed data.
unsafe impl Send for Items {}
struct ItemsRef<'a>(&'a [(NonNull<u8>, usize)]);
// SAFETY: as for `Items`.
unsafe impl Send for ItemsRef<'_> {}

pub(crate) fn stats_dict<'py>(py: Python<'py>, s: &SlabStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("bytes_requested", s.bytes_requested)?;
    d.set_item("bytes_in_use", s.bytes_in_use)?;
    d.set_item("bytes_mapped", s.bytes_mapped)?;
    d.set_item("bytes_reserved", s.bytes_reserved)?;
    d.set_item("metadata_bytes", s.metadata_bytes)?;
    d.set_item("live_allocations", s.live_allocations)?;
    d.set_item("slabs", s.slabs)?;
    d.set_item("slabs_in_use", s.slabs_in_use)?;
    d.set_item("slabs_free", s.slabs_free)?;
    d.set_item("slabs_released", s.slabs_released)?;
    d.set_item("large_allocations", s.large_allocations)?;
    d.set_item("large_bytes", s.large_bytes)?;
    d.set_item("fragmentation", s.fragmentation)?;
    d.set_item("internal_waste", s.internal_waste)?;
    let classes = PyList::empty(py);
    for c in &s.classes {
        let cd = PyDict::new(py);
        cd.set_item("size", c.size)?;
        cd.set_item("slabs", c.slabs)?;
        cd.set_item("live", c.live)?;
        cd.set_item("bytes_in_use", c.bytes_in_use)?;
        cd.set_item("available", c.available)?;
        classes.append(cd)?;
    }
    d.set_item("classes", classes)?;
    Ok(d)
}

fn sizes_arg(py: Python<'_>, sizes: &Bound<'_, PyAny>) -> PyResult<Vec<usize>> {
    let np = py.import("numpy")?;
    let arr = np.call_method1("asarray", (sizes,)).map_err(|e| {
        py_err(
            ErrorKind::InvalidType,
            format!("sizes must be a 1-D array of ints: {e}"),
        )
    })?;
    let kind: String = arr.getattr("dtype")?.getattr("kind")?.extract()?;
    let ndim: usize = arr.getattr("ndim")?.extract()?;
    if ndim != 1 {
        return Err(py_err(
            ErrorKind::InvalidArgument,
            format!("sizes must be 1-D, got {ndim} dimensions"),
        ));
    }
    if kind != "i" && kind != "u" {
        let n: usize = arr.getattr("size")?.extract()?;
        if n > 0 {
            return Err(py_err(
                ErrorKind::InvalidType,
                format!("sizes must be integers, got dtype kind {kind:?}"),
            ));
        }
    }
    let arr = arr.call_method1("astype", ("int64",))?;
    let arr = arr.downcast_into::<PyArray1<i64>>()?;
    let ro = arr.readonly();
    let slice = ro.as_slice()?;
    slice
        .iter()
        .map(|&v| {
            if v < 0 {
                Err(py_err(
                    ErrorKind::InvalidArgument,
                    format!("sizes must be >= 0, got {v}"),
                ))
            } else {
                Ok(v as usize)
            }
        })
        .collect()
}

#[pymethods]
impl PySlabAllocator {
    #[new]
    #[pyo3(signature = (arena_size = None, *, zero_on_free = false, release_threshold = None, thread_cache = true))]
    fn new(
        arena_size: Option<&Bound<'_, PyAny>>,
        zero_on_free: bool,
        release_threshold: Option<&Bound<'_, PyAny>>,
        thread_cache: bool,
    ) -> PyResult<Self> {
        let defaults = SlabConfig::default();
        let cfg = SlabConfig {
            arena_size: arena_size.map_or(Ok(defaults.arena_size), size_arg)?,
            zero_on_free,
            release_threshold: release_threshold
                .map_or(Ok(defaults.release_threshold), size_arg)?,
            thread_cache,
            ..defaults
        };
        let inner = if arena_size.is_none() {
            SlabAllocator::with_config_or_smaller(cfg)
        } else {
            SlabAllocator::with_config(cfg)
        };
        Ok(PySlabAllocator { inner: inner.py()? })
    }

    /// Allocates `size` bytes (zeroed if `zero`).
    #[pyo3(signature = (size, zero = false))]
    fn alloc(&self, size: &Bound<'_, PyAny>, zero: bool) -> PyResult<Allocation> {
        let n = size_arg(size)?;
        let p = if zero {
            self.inner.alloc_zeroed(n)
        } else {
            self.inner.alloc(n)
        }
        .py()?;
        Ok(Allocation {
            heap: self.inner.clone(),
            addr: p.as_ptr() as usize,
            nbytes: n,
            live: true,
            exports: 0,
            batch: None,
        })
    }

    /// Frees an `Allocation` of this allocator.
    fn free(&self, allocation: &Bound<'_, PyAny>) -> PyResult<()> {
        let cell = allocation.downcast::<Allocation>().map_err(|_| {
            py_err(
                ErrorKind::InvalidType,
                "free() takes an Allocation (use free_many() for a batch)",
            )
        })?;
        let mut a = cell.try_borrow_mut()?;
        a.check_freeable(&self.inner)?;
        self.inner
            .free_sized(NonNull::new(a.addr as *mut u8).expect("non-null"), a.nbytes)
            .py()?;
        a.live = false;
        Ok(())
    }

    /// Allocates one object per entry of `sizes`, in one call; all or nothing.
    #[pyo3(signature = (sizes, zero = false))]
    fn alloc_many(
        &self,
        py: Python<'_>,
        sizes: &Bound<'_, PyAny>,
        zero: bool,
    ) -> PyResult<AllocationBatch> {
        let sizes = sizes_arg(py, sizes)?;
        let inner = &self.inner;
        let items = py
            .allow_threads(|| {
                let items = inner.alloc_many(&sizes)?;
                if zero {
                    for &(p, n) in &items {
                        // SAFETY: a fresh allocation of at least `n` bytes.
                        unsafe { std::ptr::write_bytes(p.as_ptr(), 0, n) };
                    }
                }
                Ok(Items(items))
            })
            .py()?
            .0;
        Ok(AllocationBatch {
            heap: self.inner.clone(),
            items,
            freed: false,
            exports: 0,
        })
    }

    /// Frees an `AllocationBatch`, or an iterable of `Allocation`s; all or nothing.
    fn free_many(&self, py: Python<'_>, items: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(batch) = items.downcast::<AllocationBatch>() {
            let mut b = batch.try_borrow_mut()?;
            if !b.heap.ptr_eq(&self.inner) {
                return Err(py_err(
                    ErrorKind::InvalidFree,
                    "this batch belongs to another allocator",
                ));
            }
            if b.freed {
                return Err(py_err(
                    ErrorKind::DoubleFree,
                    "this batch was already freed",
                ));
            }
            if b.exports > 0 {
                return Err(buffer_exported());
            }
            let inner = &self.inner;
            let list = ItemsRef(&b.items);
            py.allow_threads(move || {
                let list = list;
                inner.free_many(list.0)
            })
            .py()?;
            b.freed = true;
            return Ok(());
        }
        let mut objs: Vec<Bound<'_, Allocation>> = Vec::new();
        for obj in items.try_iter().map_err(|_| {
            py_err(
                ErrorKind::InvalidType,
                "free_many() takes an AllocationBatch or an iterable of Allocations",
            )
        })? {
            let obj = obj?;
            let a = obj.downcast_into::<Allocation>().map_err(|_| {
                py_err(
                    ErrorKind::InvalidType,
                    "free_many() takes an AllocationBatch or an iterable of Allocations",
                )
            })?;
            a.try_borrow()?.check_freeable(&self.inner)?;
            objs.push(a);
        }
        let list: Vec<(NonNull<u8>, usize)> = objs
            .iter()
            .map(|a| {
                let a = a.borrow();
                (NonNull::new(a.addr as *mut u8).expect("non-null"), a.nbytes)
            })
            .collect();
        self.inner.free_many(&list).py()?;
        for a in &objs {
            a.borrow_mut().live = false;
        }
        Ok(())
    }

    /// A snapshot of the allocator's memory as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.inner.flush_thread_cache();
        let s = py.allow_threads(|| self.inner.stats());
        stats_dict(py, &s)
    }

    /// Whether `address` lies in memory this allocator manages.
    fn owns(&self, address: usize) -> bool {
        self.inner.owns(address)
    }

    /// Slot size an allocation of `size` bytes gets (None above 32 KiB).
    #[staticmethod]
    fn slot_size(size: &Bound<'_, PyAny>) -> PyResult<Option<usize>> {
        Ok(SlabAllocator::slot_size(size_arg(size)?))
    }

    /// The options as a dict.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.inner.config();
        let d = PyDict::new(py);
        d.set_item("arena_size", c.arena_size)?;
        d.set_item("zero_on_free", c.zero_on_free)?;
        d.set_item("release_threshold", c.release_threshold)?;
        d.set_item("thread_cache", c.thread_cache)?;
        Ok(d)
    }
}

impl Allocation {
    fn check_freeable(&self, heap: &SlabAllocator) -> PyResult<()> {
        if !self.heap.ptr_eq(heap) {
            return Err(py_err(
                ErrorKind::InvalidFree,
                format!("{:#x} belongs to another allocator", self.addr),
            ));
        }
        if self.batch.is_some() {
            return Err(py_err(
                ErrorKind::InvalidFree,
                "this allocation is an item of an AllocationBatch: free the batch with free_many()",
            ));
        }
        if !self.live {
            return Err(py_err(
                ErrorKind::DoubleFree,
                format!("double free: {:#x} was already freed", self.addr),
            ));
        }
        if self.exports > 0 {
            return Err(buffer_exported());
        }
        Ok(())
    }

    fn is_live(&self, py: Python<'_>) -> bool {
        match &self.batch {
            Some(b) => !b.bind(py).borrow().freed,
            None => self.live,
        }
    }
}

#[pymethods]
impl Allocation {
    /// Start address of the memory (for C / ctypes / kernels).
    #[getter]
    fn address(&self, py: Python<'_>) -> PyResult<usize> {
        if !self.is_live(py) {
            return Err(closed());
        }
        Ok(self.addr)
    }

    /// Bytes requested.
    #[getter]
    fn nbytes(&self) -> usize {
        self.nbytes
    }

    /// True once freed.
    #[getter]
    fn freed(&self, py: Python<'_>) -> bool {
        !self.is_live(py)
    }

    fn __len__(&self) -> usize {
        self.nbytes
    }

    /// A numpy array over the memory (no copy).
    #[pyo3(signature = (dtype = None))]
    fn view<'py>(
        slf: &Bound<'py, Self>,
        dtype: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let np = py.import("numpy")?;
        let dt = match dtype {
            None => np.getattr("uint8")?,
            Some(d) => d.clone(),
        };
        let dt = np
            .call_method1("dtype", (dt,))
            .map_err(|e| py_err(ErrorKind::InvalidType, format!("not a numpy dtype: {e}")))?;
        let itemsize: usize = dt.getattr("itemsize")?.extract()?;
        let nbytes = slf.borrow().nbytes;
        if itemsize == 0 || !nbytes.is_multiple_of(itemsize) {
            return Err(py_err(
                ErrorKind::InvalidArgument,
                format!("{nbytes} bytes is not a whole number of {itemsize}-byte items"),
            ));
        }
        let kw = PyDict::new(py);
        kw.set_item("dtype", dt)?;
        np.getattr("frombuffer")?.call((slf,), Some(&kw))
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&mut self, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        if self.batch.is_none() && self.live {
            let heap = self.heap.clone();
            self.check_freeable(&heap)?;
            heap.free_sized(
                NonNull::new(self.addr as *mut u8).expect("non-null"),
                self.nbytes,
            )
            .py()?;
            self.live = false;
        }
        Ok(false)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        if self.is_live(py) {
            format!("<Allocation {} bytes at {:#x}>", self.nbytes, self.addr)
        } else {
            format!("<Allocation {} bytes, freed>", self.nbytes)
        }
    }

    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("view is null"));
        }
        let py = slf.py();
        let (addr, nbytes) = {
            let mut me = slf.try_borrow_mut()?;
            if !me.is_live(py) {
                return Err(closed());
            }
            match &me.batch {
                Some(b) => b.bind(py).try_borrow_mut()?.exports += 1,
                None => me.exports += 1,
            }
            (me.addr, me.nbytes)
        };
        // SAFETY: `view` is a valid Py_buffer to fill (checked non-null);
        // the memory stays allocated while the export count is non-zero (a
        // free is refused meanwhile), and `view.obj` keeps this object alive.
        unsafe {
            crate::buffer::fill_byte_buffer(
                view,
                slf.into_any(),
                addr as *mut c_void,
                nbytes,
                false,
                flags,
            )
        };
        Ok(())
    }

    unsafe fn __releasebuffer__(slf: PyRefMut<'_, Self>, _view: *mut ffi::Py_buffer) {
        let py = slf.py();
        match &slf.batch {
            Some(b) => {
                if let Ok(mut b) = b.bind(py).try_borrow_mut() {
                    b.exports = b.exports.saturating_sub(1);
                }
            }
            None => {
                let mut slf = slf;
                slf.exports = slf.exports.saturating_sub(1);
            }
        }
    }
}

#[pymethods]
impl AllocationBatch {
    fn __len__(&self) -> usize {
        self.items.len()
    }

    /// Start addresses (uint64), one per item.
    #[getter]
    fn addresses<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<u64>>> {
        if self.freed {
            return Err(closed());
        }
        Ok(PyArray1::from_iter(
            py,
            self.items.iter().map(|(p, _)| p.as_ptr() as u64),
        ))
    }

    /// Requested sizes (int64), one per item.
    #[getter]
    fn sizes<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        PyArray1::from_iter(py, self.items.iter().map(|&(_, n)| n as i64))
    }

    /// Sum of the requested sizes.
    #[getter]
    fn nbytes(&self) -> usize {
        self.items.iter().map(|&(_, n)| n).sum()
    }

    /// True once freed.
    #[getter]
    fn freed(&self) -> bool {
        self.freed
    }

    /// Item `index` as an `Allocation` owned by this batch (a buffer; freed
    /// with the batch, not on its own).
    fn __getitem__(slf: Bound<'_, Self>, index: isize) -> PyResult<Allocation> {
        let b = slf.borrow();
        if b.freed {
            return Err(closed());
        }
        let n = b.items.len() as isize;
        let i = if index < 0 { index + n } else { index };
        if i < 0 || i >= n {
            return Err(pyo3::exceptions::PyIndexError::new_err(format!(
                "batch index {index} out of range for {n} items"
            )));
        }
        let (p, size) = b.items[i as usize];
        let heap = b.heap.clone();
        drop(b);
        Ok(Allocation {
            heap,
            addr: p.as_ptr() as usize,
            nbytes: size,
            live: true,
            exports: 0,
            batch: Some(slf.unbind()),
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "<AllocationBatch {} items, {} bytes{}>",
            self.items.len(),
            self.nbytes(),
            if self.freed { ", freed" } else { "" }
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySlabAllocator>()?;
    m.add_class::<Allocation>()?;
    m.add_class::<AllocationBatch>()?;
    Ok(())
}
