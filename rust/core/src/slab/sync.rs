//! The allocator's one way to take a lock: [`lock`] ignores poisoning and
//! counts the locks each thread holds, so the `fork()` handler can tell a fork
//! from a signal handler that interrupted the allocator. A leaf: every other
//! file of `slab/` may use it, it uses none of them.

use std::cell::Cell;
use std::sync::atomic::{compiler_fence, Ordering};
use std::sync::{Mutex, MutexGuard};

thread_local! {
    /// Allocator locks this thread holds right now (any allocator): lets the
    /// `fork()` handler tell a fork from a signal handler that interrupted
    /// this thread inside the allocator (where taking the locks would hang).
    static LOCKS_HELD: Cell<u32> = const { Cell::new(0) };
}

/// Whether the calling thread holds an allocator lock right now.
pub fn thread_holds_allocator_lock() -> bool {
    LOCKS_HELD.try_with(|c| c.get() > 0).unwrap_or(false)
}

/// A held allocator lock (counted in [`thread_holds_allocator_lock`]).
pub(crate) struct Locked<'a, T> {
    guard: std::mem::ManuallyDrop<MutexGuard<'a, T>>,
}

impl<T> std::ops::Deref for Locked<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> std::ops::DerefMut for Locked<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T> Drop for Locked<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: dropped once, here; unlock first, then stop counting it
        // (the fences keep a signal handler from seeing the opposite order).
        unsafe { std::mem::ManuallyDrop::drop(&mut self.guard) };
        compiler_fence(Ordering::SeqCst);
        let _ = LOCKS_HELD.try_with(|c| c.set(c.get().saturating_sub(1)));
    }
}

/// Locks a mutex, ignoring poisoning (no code panics while holding these locks).
#[inline]
pub(crate) fn lock<T>(m: &Mutex<T>) -> Locked<'_, T> {
    // Counted before blocking, so a signal arriving while we wait is seen too.
    let _ = LOCKS_HELD.try_with(|c| c.set(c.get() + 1));
    compiler_fence(Ordering::SeqCst);
    Locked {
        guard: std::mem::ManuallyDrop::new(m.lock().unwrap_or_else(|e| e.into_inner())),
    }
}
