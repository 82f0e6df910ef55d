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
        refused(e, p as usize, b"free", true);
    }
}

/// Sized free: `size` must fit the allocation (else refused like a bad free).
fn free_with_size(p: *mut c_void, size: usize, call: &[u8]) {
    if p.is_null() {
        return;
    }
    let Some(h) = heap() else { return };
    if let Err(e) = h.raw_free_sized(p as usize, size) {
        refused(e, p as usize, call, true);
    }
}

/// C23 `free_sized`.
///
/// # Safety
/// The C `free_sized` contract; a size that does not fit is refused.
#[no_mangle]
pub unsafe extern "C" fn free_sized(p: *mut c_void, size: usize) {
    free_with_size(p, size, b"free_sized");
}

/// C23 `free_aligned_sized`.
///
/// # Safety
/// As `free_sized`.
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, _align: usize, size: usize) {
    free_with_size(p, size, b"free_aligned_sized");
}

/// C++ sized `operator delete(void*, std::size_t)`.
///
/// # Safety
/// As `free_sized`.
#[no_mangle]
pub unsafe extern "C" fn _ZdlPvm(p: *mut c_void, size: usize) {
    free_with_size(p, size, b"sized operator delete");
}

/// C++ sized `operator delete[](void*, std::size_t)`.
///
/// # Safety
/// As `free_sized`.
#[no_mangle]
pub unsafe extern "C" fn _ZdaPvm(p: *mut c_void, size: usize) {
    free_with_size(p, size, b"sized operator delete[]");
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
    unsafe { realloc_checked(p, size, true) }
}

/// # Safety
/// The C `reallocarray` contract.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: forwarded.
        Some(total) => unsafe { realloc_checked(p, total, true) },
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
    match size.max(1).checked_next_multiple_of(page) {
        // SAFETY: forwarded.
        Some(rounded) => unsafe { sc_aligned_alloc(page, rounded) },
        None => {
            set_errno(libc::ENOMEM);
            std::ptr::null_mut()
        }
    }
}

/// A pointer that is not a live allocation is refused like a bad free
/// (glibc would read garbage metadata before it).
///
/// # Safety
/// The C `malloc_usable_size` contract.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        return 0;
    }
    let Some(h) = heap() else { return 0 };
    match h.raw_usable_size(p as usize) {
        Ok(n) => n,
        Err(e) => {
            refused(e, p as usize, b"malloc_usable_size", true);
            0
        }
    }
}

thread_local! {
    /// Whether this thread holds [`FORK_LOCKS`] (prepare -> parent/child). A
    /// `const` thread local without drop glue: touching it never registers a
    /// destructor (which would call malloc inside the fork handlers).
    static HOLDS_FORK_LOCKS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The allocator locks held across a `fork()`. Only the thread holding them
/// (at most one at a time: a second fork waits in `lock_all`) touches it.
struct ForkLocks(std::cell::UnsafeCell<Option<slabcache_core::slab::AllLocks<'static>>>);
// SAFETY: accessed only by the one thread holding every allocator lock.
unsafe impl Sync for ForkLocks {}
static FORK_LOCKS: ForkLocks = ForkLocks(std::cell::UnsafeCell::new(None));

type StdioLockFn = unsafe extern "C" fn();

/// glibc's stdio list lock functions (`_IO_list_lock`, `_IO_list_unlock`,
/// `_IO_list_resetlock`), looked up once; absent on other C libraries.
static STDIO_LOCKS: std::sync::OnceLock<Option<[StdioLockFn; 3]>> = std::sync::OnceLock::new();

fn stdio_locks() -> Option<[StdioLockFn; 3]> {
    *STDIO_LOCKS.get_or_init(|| {
        let find = |name: &std::ffi::CStr| {
            // SAFETY: dlsym with a NUL-terminated name; RTLD_DEFAULT searches the process.
            let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
            // SAFETY: these glibc symbols are `void f(void)` functions.
            (!f.is_null()).then(|| unsafe { std::mem::transmute::<*mut c_void, StdioLockFn>(f) })
        };
        Some([
            find(c"_IO_list_lock")?,
            find(c"_IO_list_unlock")?,
            find(c"_IO_list_resetlock")?,
        ])
    })
}

/// Prepare: glibc's own order, stdio list lock first, then the allocator
/// (a thread in `getline` holds its FILE lock while it calls malloc, and a
/// stdio walk holds the list lock while it waits for FILE locks: taking our
/// locks first could close that cycle). A fork from a signal handler that
/// interrupted this thread inside the allocator takes no locks at all
/// (waiting for them would hang; the child must then only `_exit` or exec,
/// as POSIX allows).
extern "C" fn fork_prepare() {
    let Some(h) = heap() else { return };
    if slabcache_core::slab::thread_holds_allocator_lock() {
        return;
    }
    if let Some([lock, _, _]) = stdio_locks() {
        // SAFETY: glibc's recursive stdio list lock; fork takes it again after us.
        unsafe { lock() };
    }
    let held = h.lock_all();
    // SAFETY: we hold every allocator lock, so no other thread is here.
    unsafe { *FORK_LOCKS.0.get() = Some(held) };
    let _ = HOLDS_FORK_LOCKS.try_with(|f| f.set(true));
}

fn release_fork_locks(child: bool) {
    if !HOLDS_FORK_LOCKS
        .try_with(|f| f.replace(false))
        .unwrap_or(false)
    {
        return;
    }
    // SAFETY: this thread holds every allocator lock (the flag says so).
    let held = unsafe { (*FORK_LOCKS.0.get()).take() };
    if let Some(held) = held {
        drop(held);
        if let Some([_, unlock, reset]) = stdio_locks() {
            // SAFETY: undoing the `_IO_list_lock` of `fork_prepare`; in the
            // child the lock is re-initialised (glibc does the same).
            unsafe {
                if child {
                    reset()
                } else {
                    unlock()
                }
            };
        }
    }
}

extern "C" fn fork_parent() {
    release_fork_locks(false);
}

extern "C" fn fork_child() {
    release_fork_locks(true);
}

/// Registers the `fork()` handlers once the allocator exists: every lock is
/// taken before the fork and released after it in parent and child, so a
/// child never inherits a lock some other (now vanished) thread held.
pub(crate) fn register_fork_handlers() {
    let _ = stdio_locks();
    // SAFETY: the handlers are plain `extern "C"` functions living as long as the process.
    unsafe {
        libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child));
    }
}
