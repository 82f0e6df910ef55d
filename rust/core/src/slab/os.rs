//! Thin, allocation-free wrappers over the virtual-memory system calls the
//! allocator needs (reserve, commit, release, map, unmap).
//!
//! None of these allocate on the heap, so they are safe to call from inside a
//! `malloc` replacement.
//!
//! ```
//! use slabcache_core::slab::os;
//! let page = os::page_size();
//! let p = os::map_with_guard(page).unwrap();
//! // SAFETY: one committed page, then unmapped with its guard page.
//! unsafe {
//!     p.as_ptr().write(7);
//!     os::unmap(p.as_ptr(), 2 * page);
//! }
//! ```

use std::ptr::NonNull;

/// The system page size (4 KiB on the targets we build for; read once).
pub fn page_size() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let p = PAGE.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let v = if v > 0 { v as usize } else { 4096 };
    PAGE.store(v, Ordering::Relaxed);
    v
}

/// Reserves `len` bytes of address space with no access and no commit charge.
pub fn reserve(len: usize) -> Option<NonNull<u8>> {
    // SAFETY: an anonymous private mapping at a kernel-chosen address touches
    // no existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

/// Makes `[ptr, ptr+len)` (inside a reservation) readable and writable.
///
/// # Safety
/// The range must lie inside a mapping this module created and be page aligned.
pub unsafe fn commit(ptr: *mut u8, len: usize) -> bool {
    // SAFETY: forwarded to the caller.
    unsafe { libc::mprotect(ptr.cast(), len, libc::PROT_READ | libc::PROT_WRITE) == 0 }
}

/// Gives the physical pages behind `[ptr, ptr+len)` back to the OS; the range
/// stays mapped and reads back as zeros.
///
/// # Safety
/// The range must lie inside a committed mapping this module created, be page
/// aligned, and hold no live data.
pub unsafe fn release(ptr: *mut u8, len: usize) {
    // SAFETY: forwarded to the caller.
    unsafe {
        libc::madvise(ptr.cast(), len, libc::MADV_DONTNEED);
    }
}

/// Maps `len` readable/writable bytes followed by one inaccessible guard page.
/// Returns the start; the mapping is `len + page_size()` long.
pub fn map_with_guard(len: usize) -> Option<NonNull<u8>> {
    let page = page_size();
    let total = len.checked_add(page)?;
    let base = reserve(total)?;
    // SAFETY: `[base, base+len)` lies inside the reservation just made and is page aligned.
    if unsafe { commit(base.as_ptr(), len) } {
        Some(base)
    } else {
        // SAFETY: unmapping the reservation just made.
        unsafe { unmap(base.as_ptr(), total) };
        None
    }
}

/// Maps `len` readable/writable bytes, charged against the commit limit
/// (so an absurd size fails here, as it does for glibc's `malloc`).
pub fn map(len: usize) -> Option<NonNull<u8>> {
    if len == 0 || len > isize::MAX as usize {
        return None;
    }
    // SAFETY: an anonymous private mapping at a kernel-chosen address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

/// Resizes mapping `[ptr, ptr+old)` to `new` bytes, moving it if needed
/// (the kernel moves page tables, no copy). `None`: refused, nothing changed.
///
/// # Safety
/// `[ptr, ptr+old)` must be a whole mapping this module created; on success
/// the old range must no longer be used (it may have moved).
pub unsafe fn remap(ptr: *mut u8, old: usize, new: usize) -> Option<NonNull<u8>> {
    // SAFETY: forwarded to the caller.
    let p = unsafe { libc::mremap(ptr.cast(), old, new, libc::MREMAP_MAYMOVE) };
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

/// Makes `[ptr, ptr+len)` inaccessible (any access faults).
///
/// # Safety
/// The range must lie inside a mapping this module created and be page aligned.
pub unsafe fn protect_none(ptr: *mut u8, len: usize) -> bool {
    // SAFETY: forwarded to the caller.
    unsafe { libc::mprotect(ptr.cast(), len, libc::PROT_NONE) == 0 }
}

/// Unmaps `[ptr, ptr+len)`.
///
/// # Safety
/// The range must be a mapping (or part of one) this module created, and no
/// reference into it may be used afterwards.
pub unsafe fn unmap(ptr: *mut u8, len: usize) {
    // SAFETY: forwarded to the caller.
    unsafe {
        libc::munmap(ptr.cast(), len);
    }
}

/// Writes `msg` to stderr without allocating.
pub fn write_stderr(msg: &[u8]) {
    // SAFETY: writing a valid buffer to fd 2.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
    }
}
