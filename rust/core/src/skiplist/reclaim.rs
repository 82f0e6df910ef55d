//! Pacing of memory reclamation.
//!
//! Every write retires one block (a split three). Handing each to
//! `crossbeam-epoch` costs more than the free itself on many cores: the
//! collector's bags are 2 KiB whatever they hold, every flush pushes one and
//! every collection moves up to 8 of them out of the global queue (cold
//! memory, written by other threads) and runs all their destructors in the
//! write that happened to collect. Measured on the dev VM (2 threads, 1M-key
//! load): with a flush every 16 writes a flush cost 5-9 us (4x a write) and
//! set the p99; without flushes, crossbeam's own pacing gave a p99 of 60 us.
//!
//! So retired blocks are batched here instead, in two per-thread lists:
//!
//! - **limbo**: blocks retired by this thread, not yet handed over. Every
//!   [`BATCH`] retirements the whole list goes to crossbeam as *one* deferred
//!   call (three words, stored inline in the bag), and the bag is flushed
//!   after that write: one flush per `BATCH` writes instead of one per 16.
//!   Retiring never runs a destructor (writers retire with node locks held,
//!   and a value's destructor may write to the same map): all freeing happens
//!   in [`after_write`], with no lock held, or in the collector's own pacing.
//! - **ready**: batches whose epoch has passed (no reader can hold them).
//!   The deferred call only moves its batch here (O(1), whichever thread runs
//!   it); each write then frees at most [`DRAIN`] ready blocks (into the
//!   block pool, see `block.rs`), so no write pays for a whole batch.
//!
//! A thread keeps at most `BATCH - 1` blocks in limbo while it does not write
//! (crossbeam's own bags behave the same way); [`reclaim_garbage`] hands them
//! over and frees everything that is ready.

use std::mem::MaybeUninit;
use std::sync::{Arc, Weak};

use crossbeam_epoch::Guard;
use parking_lot::Mutex;

/// Retirements per hand-over to the epoch collector.
const BATCH: usize = 64;
/// Most ready blocks one write frees (a write retires 1.03 blocks on
/// average: 4 keeps up with any backlog).
const DRAIN: usize = 4;
/// Most ready batches a thread holds; a thread that collects more (one that
/// reads but seldom writes) frees the excess at once.
const MAX_READY: usize = 4;

/// One retired object: `free(a, b, c)` releases it. `a` may hold the bytes
/// of a small value itself (see [`retire_value`]), padding included, so it is
/// a `MaybeUninit`.
pub(crate) struct Retired {
    free: unsafe fn(MaybeUninit<usize>, u64, usize),
    a: MaybeUninit<usize>,
    b: u64,
    c: usize,
}

impl Retired {
    /// An object whose release is `free(a, b, c)`.
    ///
    /// # Safety
    /// Calling `free(a, b, c)` once, after no reader can reach the object,
    /// must be sound (the caller has unlinked it).
    pub(crate) unsafe fn new(
        free: unsafe fn(MaybeUninit<usize>, u64, usize),
        a: MaybeUninit<usize>,
        b: u64,
        c: usize,
    ) -> Self {
        Retired { free, a, b, c }
    }

    /// # Safety
    /// The epoch the object was retired in has passed; called once.
    #[inline]
    unsafe fn release(self) {
        // SAFETY: forwarded from the caller and from `Retired::new`.
        unsafe { (self.free)(self.a, self.b, self.c) }
    }
}

/// A batch of retired objects (a raw `Vec` so that moving it is three words).
struct Batch(Vec<Retired>);

// SAFETY: a batch is a list of objects no thread references any more (they
// were unlinked before being retired), released by whichever thread runs the
// deferred call; `K` and `V` are `Send + Sync` for every list that retires.
unsafe impl Send for Batch {}

impl Batch {
    /// Frees every object now.
    ///
    /// # Safety
    /// The batch's epoch has passed.
    unsafe fn release_all(self) {
        for r in self.0 {
            // SAFETY: forwarded from the caller.
            unsafe { r.release() };
        }
    }
}

struct Lists {
    /// A batch was handed over since the last flush.
    unflushed: bool,
    limbo: Vec<Retired>,
    ready: Vec<Vec<Retired>>,
    /// An empty buffer kept for the next limbo list.
    spare: Vec<Retired>,
}

impl Drop for Lists {
    fn drop(&mut self) {
        for batch in self.ready.drain(..) {
            // SAFETY: ready batches' epochs have passed.
            unsafe { Batch(batch).release_all() };
        }
        let limbo = std::mem::take(&mut self.limbo);
        if !limbo.is_empty() {
            // Thread exit: hand the rest over (crossbeam pins a fresh handle
            // if this thread's own is already gone).
            let guard = crossbeam_epoch::pin();
            defer_batch(&guard, Batch(limbo));
            guard.flush();
        }
    }
}

/// Every thread's lists, so that [`reclaim_garbage`] can hand over and free
/// what other threads hold too (a batch's deferred call lands in whichever
/// thread's ready list ran it). A thread locks only its own lists, with
/// `try_lock`: uncontended except while `reclaim_garbage` visits them.
static REGISTRY: Mutex<Vec<Weak<Mutex<Lists>>>> = Mutex::new(Vec::new());

thread_local! {
    static LISTS: Arc<Mutex<Lists>> = {
        let l = Arc::new(Mutex::new(Lists { unflushed: false, limbo: Vec::new(), ready: Vec::new(), spare: Vec::new() }));
        let mut reg = REGISTRY.lock();
        reg.retain(|w| w.strong_count() > 0);
        reg.push(Arc::downgrade(&l));
        l
    };
}

/// Hands `batch` to the epoch collector. Runs no destructor (crossbeam's
/// `defer` at most pushes a full bag, it does not collect): callable while a
/// node lock is held. The flush that lets it be collected soon comes in
/// [`after_write`].
fn defer_batch(guard: &Guard, batch: Batch) {
    let run = move || {
        let mut batch = Some(batch);
        let _ = LISTS.try_with(|l| {
            let Some(mut l) = l.try_lock() else {
                return;
            };
            if l.ready.len() < MAX_READY {
                if let Some(b) = batch.take() {
                    l.ready.push(b.0);
                }
            }
        });
        if let Some(b) = batch {
            // SAFETY: this runs after the epoch the batch was handed over in
            // has passed (crossbeam's guarantee for deferred calls).
            unsafe { b.release_all() };
        }
    };
    // SAFETY: every object in the batch was unlinked before it was retired
    // and the batch is handed over now, while pinned: after this epoch no
    // reader can reach any of them. `run` owns the batch (`Send`).
    unsafe { guard.defer_unchecked(run) };
}

/// Moves up to `out.len()` ready objects of this thread into `out`.
#[inline]
fn take_ready(l: &mut Lists, out: &mut [Option<Retired>]) {
    let mut n = 0;
    while n < out.len() {
        let Some(batch) = l.ready.last_mut() else {
            return;
        };
        match batch.pop() {
            Some(r) => {
                out[n] = Some(r);
                n += 1;
            }
            None => {
                let empty = l.ready.pop().expect("a last batch");
                if l.spare.capacity() == 0 {
                    l.spare = empty;
                }
            }
        }
    }
}

/// Retires `r` (unlinked by the caller, who is pinned by `guard`): it is
/// freed once no reader that could have seen it remains. Runs no destructor
/// (writers call it with node locks held, and a value's destructor may write
/// to the same map): freeing happens in [`after_write`].
#[inline]
pub(crate) fn retire(guard: &Guard, r: Retired) {
    let mut r = Some(r);
    let full = LISTS
        .try_with(|l| {
            let mut l = l.try_lock()?;
            let l = &mut *l;
            if l.limbo.capacity() == 0 {
                l.limbo = std::mem::take(&mut l.spare);
                l.limbo.reserve_exact(BATCH);
            }
            l.limbo.extend(r.take());
            (l.limbo.len() >= BATCH).then(|| {
                l.unflushed = true;
                let spare = std::mem::take(&mut l.spare);
                Batch(std::mem::replace(&mut l.limbo, spare))
            })
        })
        .ok()
        .flatten();
    if let Some(batch) = full {
        defer_batch(guard, batch);
    }
    if let Some(r) = r {
        // Re-entered from a destructor, or the thread is exiting: hand this
        // one over on its own (crossbeam's own pacing collects it).
        defer_batch(guard, Batch(vec![r]));
    }
}

/// Retires a value a writer took out of a live leaf slot in place (see
/// `BSkipList::set`): readers may still be copying it through the slot, so
/// it is dropped only once none can remain, like the entries of a retired
/// block. A value that fits in one word travels inside the retired record
/// itself (no allocation); a bigger one is boxed.
pub(crate) fn retire_value<V: Send + 'static>(guard: &Guard, v: V) {
    let r = if std::mem::size_of::<V>() <= std::mem::size_of::<usize>()
        && std::mem::align_of::<V>() <= std::mem::align_of::<usize>()
    {
        let mut w = MaybeUninit::<usize>::uninit();
        // SAFETY: the word is big and aligned enough for a `V` (checked
        // above); `v` is moved into it and owned by the record from now on.
        unsafe { std::ptr::write(w.as_mut_ptr() as *mut V, v) };
        // SAFETY: `drop_inline::<V>` drops exactly the `V` written into `w`,
        // once; the caller took `v` out of the map, and readers that may
        // still be copying it are waited for by the epoch.
        unsafe { Retired::new(drop_inline::<V>, w, 0, 0) }
    } else {
        let b = Box::into_raw(Box::new(v)) as usize;
        // SAFETY: as above, for the box made here.
        unsafe { Retired::new(drop_boxed::<V>, MaybeUninit::new(b), 0, 0) }
    };
    retire(guard, r);
}

/// Drops the `V` stored in the word by [`retire_value`].
///
/// # Safety
/// `w` holds a `V` written by `retire_value`; called once.
unsafe fn drop_inline<V>(w: MaybeUninit<usize>, _: u64, _: usize) {
    // SAFETY: forwarded from the caller: `w` holds an owned `V`.
    drop(unsafe { std::ptr::read(w.as_ptr() as *const V) });
}

/// Drops the boxed `V` made by [`retire_value`].
///
/// # Safety
/// `w` holds the address of a `Box<V>` made by `retire_value`; called once.
unsafe fn drop_boxed<V>(w: MaybeUninit<usize>, _: u64, _: usize) {
    // SAFETY: forwarded from the caller: a `Box::into_raw` address, freed once.
    drop(unsafe { Box::from_raw(w.assume_init() as *mut V) });
}

/// Call after each write, with the write's guard and no lock held: flushes
/// the bag if a batch was handed over, and frees a few ready blocks (which
/// may run values' destructors).
#[inline]
pub(crate) fn after_write(guard: &Guard) {
    let flush = LISTS
        .try_with(|l| {
            let mut l = l.try_lock()?;
            let flush = std::mem::take(&mut l.unflushed);
            // Destructors must not run under our own lists' lock (one that
            // retires would find it taken: harmless, but its batching lost).
            let mut out: [Option<Retired>; DRAIN] = std::array::from_fn(|_| None);
            take_ready(&mut l, &mut out);
            drop(l);
            for r in out.into_iter().flatten() {
                // SAFETY: ready objects' epochs have passed; each was taken once.
                unsafe { r.release() };
            }
            Some(flush)
        })
        .ok()
        .flatten()
        .unwrap_or(false);
    if flush {
        guard.flush();
    }
    super::block::pool::reserve_heap();
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
    let all: Vec<Arc<Mutex<Lists>>> = {
        let mut reg = REGISTRY.lock();
        reg.retain(|w| w.strong_count() > 0);
        reg.iter().filter_map(Weak::upgrade).collect()
    };
    // Hand every thread's limbo over: its objects are unlinked already, and
    // a later hand-over by another pinned thread is as safe as the owner's.
    // Lists another thread is using right now (try_lock fails) are skipped.
    for l in &all {
        let limbo = l.try_lock().map(|mut l| std::mem::take(&mut l.limbo));
        if let Some(limbo) = limbo.filter(|b| !b.is_empty()) {
            defer_batch(&crossbeam_epoch::pin(), Batch(limbo));
        }
    }
    for _ in 0..8 {
        crossbeam_epoch::pin().flush();
    }
    for l in &all {
        let ready = l.try_lock().map(|mut l| std::mem::take(&mut l.ready));
        for batch in ready.unwrap_or_default() {
            // SAFETY: ready batches' epochs have passed.
            unsafe { Batch(batch).release_all() };
        }
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
