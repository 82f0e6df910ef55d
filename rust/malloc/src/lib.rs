//! C ABI of the slabcache slab allocator.
//!
//! Always exported: `sc_malloc`, `sc_free`, `sc_calloc`, `sc_realloc`,
//! `sc_aligned_alloc`, `sc_posix_memalign`, `sc_usable_size`,
//! `sc_refused_frees` (see `include/slabcache.h`). `sc_free` returns an error
//! code instead of obeying a double or invalid free.
//!
//! With the `preload` feature the library also defines `malloc`, `free`,
//! `calloc`, `realloc`, `posix_memalign`, `aligned_alloc`, `memalign`,
//! `valloc`, `pvalloc` and `malloc_usable_size`, so
//! `LD_PRELOAD=libslabcache_malloc.so program` runs `program` on the slab
//! allocator. A refused `free`/`realloc`/`malloc_usable_size` (double free,
//! wild or interior pointer, wrong size to a sized free) is reported on stderr
//! and aborts the process, like glibc's checks do; `SLABCACHE_ON_INVALID_FREE=log`
//! only logs it (first 16) and counts it, and the process goes on.
//! `SLABCACHE_PROFILE=hardened` selects the hardened profile.
//!
//! ```
//! use slabcache_malloc::{sc_free, sc_malloc, SC_EDOUBLE_FREE};
//! unsafe {
//!     let p = sc_malloc(100);
//!     assert!(!p.is_null());
//!     assert_eq!(sc_free(p), 0);
//!     assert_eq!(sc_free(p), SC_EDOUBLE_FREE);
//! }
//! ```

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, Ordering};

use slabcache_core::slab::{os, FreeError, SlabAllocator, SlabConfig};

/// `sc_free` result: freed (or null).
pub const SC_OK: c_int = 0;
/// `sc_free` result: not a pointer this allocator handed out.
pub const SC_EINVALID_FREE: c_int = -1;
/// `sc_free` result: handed out once, not allocated now.
pub const SC_EDOUBLE_FREE: c_int = -2;

const UNINIT: u8 = 0;
const INITIALIZING: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static HEAP: AtomicPtr<SlabAllocator> = AtomicPtr::new(std::ptr::null_mut());
static REFUSED: AtomicU64 = AtomicU64::new(0);
static ABORT_ON_INVALID: AtomicU8 = AtomicU8::new(1);

/// The process-wide allocator, created on first use.
#[inline]
fn heap() -> Option<&'static SlabAllocator> {
    if STATE.load(Ordering::Acquire) == READY {
        // SAFETY: READY is published after HEAP holds a leaked, never-freed allocator.
        return Some(unsafe { &*HEAP.load(Ordering::Relaxed) });
    }
    init_heap()
}

#[cold]
fn init_heap() -> Option<&'static SlabAllocator> {
    loop {
        match STATE.compare_exchange(UNINIT, INITIALIZING, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                let only_log = env_is(c"SLABCACHE_ON_INVALID_FREE", b"log")
                    || env_is(c"SLABCACHE_ABORT_ON_INVALID_FREE", b"0");
                ABORT_ON_INVALID.store(u8::from(!only_log), Ordering::Relaxed);
                let cfg = SlabConfig {
                    hardened: env_is(c"SLABCACHE_PROFILE", b"hardened"),
                    zero_on_free: env_is(c"SLABCACHE_ZERO_ON_FREE", b"1"),
                    ..SlabConfig::default()
                };
                let made = SlabAllocator::with_config_or_smaller(cfg).ok();
                return match made {
                    Some(a) => {
                        HEAP.store(Box::into_raw(Box::new(a)), Ordering::Relaxed);
                        STATE.store(READY, Ordering::Release);
                        #[cfg(feature = "preload")]
                        preload::register_fork_handlers();
                        // SAFETY: just stored, never freed.
                        Some(unsafe { &*HEAP.load(Ordering::Relaxed) })
                    }
                    None => {
                        STATE.store(FAILED, Ordering::Release);
                        None
                    }
                };
            }
            Err(READY) => {
                // SAFETY: as in `heap`.
                return Some(unsafe { &*HEAP.load(Ordering::Relaxed) });
            }
            Err(FAILED) => return None,
            Err(_) => std::hint::spin_loop(),
        }
    }
}

/// Whether environment variable `name` equals `want` (read without allocating).
fn env_is(name: &std::ffi::CStr, want: &[u8]) -> bool {
    // SAFETY: getenv with a NUL-terminated name, called while the allocator
    // is being created (before threads race on the environment through us).
    let v = unsafe { libc::getenv(name.as_ptr()) };
    if v.is_null() {
        return false;
    }
    // SAFETY: a non-null getenv result is a NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(v) }.to_bytes() == want
}

fn set_errno(e: c_int) {
    // SAFETY: errno is thread-local and always writable.
    unsafe { *libc::__errno_location() = e };
}

/// Allocates `size` bytes (16-byte aligned). Null (errno `ENOMEM`) on failure.
///
/// # Safety
/// Always safe to call; the result must be released with `sc_free`.
#[no_mangle]
pub unsafe extern "C" fn sc_malloc(size: usize) -> *mut c_void {
    match heap().and_then(|h| h.raw_alloc(size)) {
        Some(p) => p.as_ptr().cast(),
        None => {
            set_errno(libc::ENOMEM);
            std::ptr::null_mut()
        }
    }
}

/// Allocates `n * size` zeroed bytes; null on overflow or failure.
///
/// # Safety
/// Always safe to call.
#[no_mangle]
pub unsafe extern "C" fn sc_calloc(n: usize, size: usize) -> *mut c_void {
    let Some(total) = n.checked_mul(size) else {
        set_errno(libc::ENOMEM);
        return std::ptr::null_mut();
    };
    match heap().and_then(|h| h.raw_alloc_zeroed(total)) {
        Some(p) => p.as_ptr().cast(),
        None => {
            set_errno(libc::ENOMEM);
            std::ptr::null_mut()
        }
    }
}

/// Frees `p` after checking it: [`SC_OK`] (also for null),
/// [`SC_EDOUBLE_FREE`] or [`SC_EINVALID_FREE`] (then nothing changed).
///
/// # Safety
/// Any pointer value may be passed; only live allocations are freed.
#[no_mangle]
pub unsafe extern "C" fn sc_free(p: *mut c_void) -> c_int {
    if p.is_null() {
        return SC_OK;
    }
    let Some(h) = heap() else {
        return SC_EINVALID_FREE;
    };
    match h.raw_free(p as usize) {
        Ok(_) => SC_OK,
        Err(FreeError::Double) => SC_EDOUBLE_FREE,
        Err(FreeError::Invalid(_)) => SC_EINVALID_FREE,
    }
}

/// Usable bytes of live allocation `p`; 0 for null or anything else.
///
/// # Safety
/// Any pointer value may be passed.
#[no_mangle]
pub unsafe extern "C" fn sc_usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        return 0;
    }
    heap()
        .and_then(|h| h.raw_usable_size(p as usize).ok())
        .unwrap_or(0)
}

/// Resizes `p` to `size` bytes, keeping its contents (like `realloc`):
/// null `p` allocates; `size == 0` frees and returns null. An invalid `p`
/// gives null with errno `EINVAL` and leaves everything as it was.
///
/// # Safety
/// `p` is null or any pointer value; only live allocations are touched.
#[no_mangle]
pub unsafe extern "C" fn sc_realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { realloc_checked(p, size, false) }
}

/// `realloc` with refused pointers reported as [`refused`] says (`fatal`: may abort).
///
/// # Safety
/// As `sc_realloc`.
unsafe fn realloc_checked(p: *mut c_void, size: usize, fatal: bool) -> *mut c_void {
    if p.is_null() {
        // SAFETY: no preconditions.
        return unsafe { sc_malloc(size) };
    }
    let Some(h) = heap() else {
        set_errno(libc::ENOMEM);
        return std::ptr::null_mut();
    };
    if size == 0 {
        return match h.raw_free(p as usize) {
            Ok(_) => std::ptr::null_mut(),
            Err(e) => {
                refused(e, p as usize, b"realloc", fatal);
                set_errno(libc::EINVAL);
                std::ptr::null_mut()
            }
        };
    }
    match h.raw_realloc(p as usize, size) {
        Ok(Some(q)) => q.as_ptr().cast(),
        Ok(None) => {
            set_errno(libc::ENOMEM);
            std::ptr::null_mut()
        }
        Err(e) => {
            refused(e, p as usize, b"realloc", fatal);
            set_errno(libc::EINVAL);
            std::ptr::null_mut()
        }
    }
}

/// Allocates `size` bytes aligned to `align` (a power of two); null (errno
/// `EINVAL` or `ENOMEM`) otherwise.
///
/// # Safety
/// Always safe to call.
#[no_mangle]
pub unsafe extern "C" fn sc_aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return std::ptr::null_mut();
    }
    match heap().and_then(|h| h.raw_alloc_aligned(size, align)) {
        Some(p) => p.as_ptr().cast(),
        None => {
            set_errno(libc::ENOMEM);
            std::ptr::null_mut()
        }
    }
}

/// `posix_memalign`: `align` must be a power of two multiple of
/// `sizeof(void*)`; returns 0, `EINVAL` or `ENOMEM`.
///
/// # Safety
/// `out` must be valid for a pointer write.
#[no_mangle]
pub unsafe extern "C" fn sc_posix_memalign(
    out: *mut *mut c_void,
    align: usize,
    size: usize,
) -> c_int {
    if !align.is_power_of_two() || !align.is_multiple_of(std::mem::size_of::<usize>()) {
        return libc::EINVAL;
    }
    match heap().and_then(|h| h.raw_alloc_aligned(size, align)) {
        Some(p) => {
            // SAFETY: the caller guarantees `out` is writable.
            unsafe { *out = p.as_ptr().cast() };
            0
        }
        None => libc::ENOMEM,
    }
}

/// Frees refused by `sc_free` and (with `preload`) `free`/`realloc` since start.
#[no_mangle]
pub extern "C" fn sc_refused_frees() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

/// Counts a refused free and reports the first 16 on stderr (without
/// allocating). With `fatal` (the `LD_PRELOAD` symbols) it then aborts,
/// unless `SLABCACHE_ON_INVALID_FREE=log` (or the older
/// `SLABCACHE_ABORT_ON_INVALID_FREE=0`) asked to only log.
fn refused(e: FreeError, addr: usize, call: &[u8], fatal: bool) {
    let abort = fatal && ABORT_ON_INVALID.load(Ordering::Relaxed) == 1;
    let n = REFUSED.fetch_add(1, Ordering::Relaxed);
    if n < 16 || abort {
        let mut buf = [0u8; 256];
        let mut len = 0;
        let mut put = |s: &[u8]| {
            let k = s.len().min(buf.len() - len);
            buf[len..len + k].copy_from_slice(&s[..k]);
            len += k;
        };
        put(b"slabcache: refused ");
        put(call);
        put(match e {
            FreeError::Double => b" (double free) of 0x" as &[u8],
            FreeError::Invalid(_) => b" (invalid pointer) of 0x",
        });
        let mut hex = [0u8; 16];
        for (i, h) in hex.iter_mut().enumerate() {
            let nib = (addr >> ((15 - i) * 4)) & 0xf;
            *h = b"0123456789abcdef"[nib];
        }
        put(&hex);
        if let FreeError::Invalid(why) = e {
            put(b": ");
            put(why.as_bytes());
        }
        put(if abort {
            b"; aborting (SLABCACHE_ON_INVALID_FREE=log only logs)\n" as &[u8]
        } else {
            b"\n"
        });
        os::write_stderr(&buf[..len]);
    }
    if abort {
        // SAFETY: abort has no preconditions.
        unsafe { libc::abort() };
    }
}

#[cfg(feature = "preload")]
mod preload;
