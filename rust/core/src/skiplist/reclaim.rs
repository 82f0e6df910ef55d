//! Pacing of memory reclamation.
//!
//! Every write retires one block. `crossbeam-epoch` batches retired objects
//! in a thread-local bag of 64 and frees queued bags every 128 pins, so left
//! alone one write in ~128 pays for freeing a hundred or more blocks at once:
//! a latency spike of tens of microseconds that sets the p99 of a write-heavy
//! load. Flushing the bag every few writes spreads that work out evenly.

use std::cell::Cell;

use crossbeam_epoch::Guard;

/// Writes between two flushes of this thread's garbage bag. Measured on the
/// dev VM (1-2 threads, 1M keys): 16 gives an insert p99 of 2-3 us, 32 gives
/// 4-5 us, crossbeam's own pacing ~20 us; throughput was the same within
/// noise. Each flush also tries to advance the global epoch (a read of every
/// thread's epoch), which is what a larger value would save on many cores.
const FLUSH_EVERY: u32 = 16;

thread_local! {
    static WRITES: Cell<u32> = const { Cell::new(0) };
}

/// Call after each write, with the write's guard.
#[inline]
pub(crate) fn after_write(guard: &Guard) {
    let n = WRITES.with(|w| {
        let n = w.get().wrapping_add(1);
        w.set(n);
        n
    });
    if n.is_multiple_of(FLUSH_EVERY) {
        guard.flush();
    }
}

/// Runs this thread's queued destructors of removed entries now, as far as
/// other threads' pinned reads allow (a few epoch advances). Callers that
/// need removed values gone promptly (the Python binding's garbage-collector
/// hook, which must see a reference cycle disappear) call this after a
/// removal; ordinary writes never need it.
///
/// ```
/// slabcache_core::skiplist::reclaim_garbage();
/// ```
pub fn reclaim_garbage() {
    for _ in 0..8 {
        crossbeam_epoch::pin().flush();
    }
}

/// Hands memory the allocator holds free back to the operating system
/// (glibc keeps freed heap memory; a big batch's sort buffers would
/// otherwise stay in the process's resident set long after the batch).
/// Call after a large batch; a no-op where the C library has no
/// `malloc_trim`.
///
/// ```
/// slabcache_core::skiplist::release_free_memory();
/// ```
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the OS; it touches no
    // live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
