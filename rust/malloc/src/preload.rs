//! The standard allocation symbols, for `LD_PRELOAD` (feature `preload`).
//!
//! Rust code inside this library (the allocator's own bookkeeping) must not
//! call back into `malloc` while the allocator is being created, so the
//! library's Rust global allocator maps pages directly ([`PageAlloc`]); it is
//! used only for a handful of long-lived objects.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::{c_int, c_void};

use slabcache_core::slab::os;

use super::*;

/// Page-granular global allocator for this library's own Rust allocations.
struct PageAlloc;

// SAFETY: every block is a fresh private mapping, page aligned (so any
// alignment up to a page holds; larger ones are refused with null), and is
// unmapped exactly once in `dealloc`.
unsafe impl GlobalAlloc for PageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let page = os::page_size();
        let len = layout.size().max(1).next_multiple_of(page);
        if layout.align() > page {
            return std::ptr::null_mut();
        }
        // SAFETY: an anonymous mapping at a kernel-chosen address.
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
            std::ptr::null_mut()
        } else {
            p.cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let len = layout.size().max(1).next_multiple_of(os::page_size());
        // SAFETY: `ptr` came from `alloc` with the same layout.
        unsafe { os::unmap(ptr, len) };
    }
}

#[global_allocator]
static PAGE_ALLOC: PageAlloc = PageAlloc;

/// # Safety
/// The C `malloc` contract.
#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { sc_malloc(size) }
}

/// # Safety
/// The C `calloc` contract.
#[no_mangle]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { sc_calloc(n, size) }
}

/// A refused free is reported and ignored (or aborts, see the crate docs).
///
/// # Safety
/// The C `free` contract; invalid pointers are refused, not obeyed.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    let Some(h) = heap() else { return };
    if let Err(e) = h.raw_free(p as usize) {
        refused(e, p as usize, b"free");
    }
}

/// `cfree` (old glibc alias of `free`).
///
/// # Safety
/// As `free`.
#[no_mangle]
pub unsafe extern "C" fn cfree(p: *mut c_void) {
    // SAFETY: forwarded.
    unsafe { free(p) }
}

/// # Safety
/// The C `realloc` contract.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { sc_realloc(p, size) }
}

/// # Safety
/// The C `reallocarray` contract.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: forwarded.
        Some(total) => unsafe { sc_realloc(p, total) },
        None => {
            set_errno(libc::ENOMEM);
            std::ptr::null_mut()
        }
    }
}

/// # Safety
/// The C `posix_memalign` contract.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    // SAFETY: forwarded.
    unsafe { sc_posix_memalign(out, align, size) }
}

/// # Safety
/// The C `aligned_alloc` contract.
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { sc_aligned_alloc(align, size) }
}

/// # Safety
/// The C `memalign` contract.
#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { sc_aligned_alloc(align, size) }
}

/// # Safety
/// The C `valloc` contract.
#[no_mangle]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { sc_aligned_alloc(os::page_size(), size) }
}

/// # Safety
/// The C `pvalloc` contract.
#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = os::page_size();
    // SAFETY: forwarded.
    unsafe { sc_aligned_alloc(page, size.max(1).next_multiple_of(page)) }
}

/// # Safety
/// The C `malloc_usable_size` contract.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    // SAFETY: forwarded.
    unsafe { sc_usable_size(p) }
}

thread_local! {
    /// Locks held across `fork()` by the thread calling it (prepare -> parent/child).
    static FORK_LOCKS: std::cell::RefCell<Option<slabcache_core::slab::AllLocks<'static>>> =
        const { std::cell::RefCell::new(None) };
}

extern "C" fn fork_prepare() {
    if let Some(h) = heap() {
        // Touch the thread local first: registering its destructor may call
        // malloc, which must not find our locks already held.
        if FORK_LOCKS.try_with(|_| ()).is_err() {
            return;
        }
        let held = h.lock_all();
        let _ = FORK_LOCKS.try_with(|f| *f.borrow_mut() = Some(held));
    }
}

extern "C" fn fork_release() {
    let _ = FORK_LOCKS.try_with(|f| f.borrow_mut().take());
}

/// Registers the `fork()` handlers once the allocator exists: every lock is
/// taken before the fork and released after it in parent and child, so a
/// child never inherits a lock some other (now vanished) thread held.
pub(crate) fn register_fork_handlers() {
    // SAFETY: the handlers are plain `extern "C"` functions living as long as the process.
    unsafe {
        libc::pthread_atfork(Some(fork_prepare), Some(fork_release), Some(fork_release));
    }
}
