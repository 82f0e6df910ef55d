//! Filling a `Py_buffer` for a flat run of bytes: the one piece of the
//! buffer protocol that `Allocation` (writable) and the arena's blob views
//! (read-only) share.

use std::ffi::{c_int, c_void};

use pyo3::ffi;
use pyo3::prelude::*;

/// Fills `view` as a 1-D buffer of `len` unsigned bytes (`format "B"`) at
/// `ptr`, owned by `owner`, honouring the consumer's `flags` (format, shape
/// and strides are only handed out when asked for).
///
/// # Safety
///
/// `view` must be the non-null `Py_buffer` the interpreter passed to
/// `__getbuffer__`, and `ptr..ptr + len` must stay valid (and, when
/// `readonly` is false, writable) until the buffer is released. `owner`'s
/// strong reference is moved into `view.obj`, which keeps it alive until then.
pub unsafe fn fill_byte_buffer(
    view: *mut ffi::Py_buffer,
    owner: Bound<'_, PyAny>,
    ptr: *mut c_void,
    len: usize,
    readonly: bool,
    flags: c_int,
) {
    // SAFETY: the caller guarantees `view` is a valid Py_buffer to fill; the
    // `shape`/`strides` pointers point into that same struct, which the
    // interpreter keeps alive for as long as the buffer is exported.
    unsafe {
        (*view).obj = owner.into_ptr();
        (*view).buf = ptr;
        (*view).len = len as ffi::Py_ssize_t;
        (*view).readonly = c_int::from(readonly);
        (*view).itemsize = 1;
        (*view).format = if flags & ffi::PyBUF_FORMAT == ffi::PyBUF_FORMAT {
            c"B".as_ptr() as *mut _
        } else {
            std::ptr::null_mut()
        };
        (*view).ndim = 1;
        (*view).shape = if flags & ffi::PyBUF_ND == ffi::PyBUF_ND {
            &mut (*view).len
        } else {
            std::ptr::null_mut()
        };
        (*view).strides = if flags & ffi::PyBUF_STRIDES == ffi::PyBUF_STRIDES {
            &mut (*view).itemsize
        } else {
            std::ptr::null_mut()
        };
        (*view).suboffsets = std::ptr::null_mut();
        (*view).internal = std::ptr::null_mut();
    }
}
