//! Per-thread object caches.
//!
//! Each thread keeps, per allocator it uses (up to [`SLOTS`] at once), a small
//! stack of free objects per size class. Alloc pops, free pushes; the class
//! lock is taken only to refill or flush half a stack at once.
//!
//! Cached objects have their `allocated` bit clear (see
//! [`slab_meta`](super::slab_meta)), so a double free of an object sitting in
//! a cache is still caught by the atomic bit test in `free`.
//!
//! The thread-local block is `const`-initialised and holds no heap pointers
//! except a `Weak` to each allocator, so it is safe inside a `malloc`
//! replacement: a re-entrant call (e.g. `malloc` called while the destructor
//! is being registered) sees the `BUSY`/`INIT` state and takes the locked
//! slow path instead of touching the cache.

use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicI64, AtomicPtr, Ordering};
use std::sync::{Arc, Weak};

use super::hardened::Quarantine;
use super::heap::Heap;
use super::size_class::{CLASS_SIZES, NUM_CLASSES};

/// Allocators one thread caches for at once; a further one evicts the oldest.
pub const SLOTS: usize = 4;

const fn build_caps() -> [u16; NUM_CLASSES] {
    let mut out = [0u16; NUM_CLASSES];
    let mut i = 0;
    while i < NUM_CLASSES {
        let s = CLASS_SIZES[i];
        out[i] = if s <= 256 {
            128
        } else if s <= 4096 {
            32
        } else {
            8
        };
        i += 1;
    }
    out
}

const fn build_offsets() -> ([u16; NUM_CLASSES], usize) {
    let caps = build_caps();
    let mut out = [0u16; NUM_CLASSES];
    let mut acc = 0usize;
    let mut i = 0;
    while i < NUM_CLASSES {
        out[i] = acc as u16;
        acc += caps[i] as usize;
        i += 1;
    }
    (out, acc)
}

/// Cached objects per class (smaller for bigger objects).
pub const CACHE_CAP: [u16; NUM_CLASSES] = build_caps();
const OFFSETS: ([u16; NUM_CLASSES], usize) = build_offsets();
const TOTAL: usize = OFFSETS.1;

/// The stacks of one (thread, allocator) pair.
pub struct CacheData {
    len: [u16; NUM_CLASSES],
    items: [usize; TOTAL],
    /// Freed objects held back from reuse (hardened profile only).
    pub quarantine: Quarantine,
}

impl CacheData {
    const fn new() -> CacheData {
        CacheData {
            len: [0; NUM_CLASSES],
            items: [0; TOTAL],
            quarantine: Quarantine::new(),
        }
    }

    /// Pops a cached object of `class`.
    #[inline]
    pub fn pop(&mut self, class: usize) -> Option<usize> {
        let n = self.len[class];
        if n == 0 {
            return None;
        }
        self.len[class] = n - 1;
        Some(self.items[OFFSETS.0[class] as usize + n as usize - 1])
    }

    /// Pushes `addr`; false when the stack is full.
    #[inline]
    pub fn push(&mut self, class: usize, addr: usize) -> bool {
        let n = self.len[class];
        if n == CACHE_CAP[class] {
            return false;
        }
        self.items[OFFSETS.0[class] as usize + n as usize] = addr;
        self.len[class] = n + 1;
        true
    }

    /// The free part of `class`'s stack, to be filled by a refill; then call
    /// [`CacheData::set_len`].
    pub fn spare(&mut self, class: usize, want: usize) -> &mut [usize] {
        let off = OFFSETS.0[class] as usize;
        let n = self.len[class] as usize;
        let end = off + (n + want).min(CACHE_CAP[class] as usize);
        &mut self.items[off + n..end]
    }

    /// Sets the length of `class`'s stack after a refill.
    pub fn set_len(&mut self, class: usize, n: usize) {
        debug_assert!(n <= CACHE_CAP[class] as usize);
        self.len[class] = n as u16;
    }

    /// Number of objects cached for `class`.
    pub fn len(&self, class: usize) -> usize {
        self.len[class] as usize
    }

    /// Hands every cached and quarantined object back to `heap`'s central pools.
    fn give_all_back(&mut self, heap: &Heap) {
        self.quarantine
            .drain(|addr, class| heap.give_back(class, &[addr]));
        for class in 0..NUM_CLASSES {
            let n = self.len(class);
            if n > 0 {
                self.drain_bottom(class, n, |objs| heap.give_back(class, objs));
            }
        }
    }

    /// Removes the oldest `n` objects of `class` (the bottom of the stack)
    /// and hands them to `f`.
    pub fn drain_bottom(&mut self, class: usize, n: usize, f: impl FnOnce(&[usize])) {
        let off = OFFSETS.0[class] as usize;
        let len = self.len[class] as usize;
        let n = n.min(len);
        f(&self.items[off..off + n]);
        self.items.copy_within(off + n..off + len, off);
        self.len[class] = (len - n) as u16;
    }
}

/// A cache slot: the caches of this thread for one allocator.
pub struct Slot {
    id: Cell<u64>,
    /// A `Weak<Heap>` turned into a raw pointer (null: none), so the thread
    /// local has no drop glue and std registers no destructor for it.
    heap: Cell<*const Heap>,
    /// Live requested bytes counted by this thread (read by `stats` from any thread).
    pub requested: AtomicI64,
    /// Links in the allocator's list of slots (written under its `threads` lock).
    pub next: AtomicPtr<Slot>,
    pub prev: AtomicPtr<Slot>,
    data: UnsafeCell<CacheData>,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            id: Cell::new(0),
            heap: Cell::new(std::ptr::null()),
            requested: AtomicI64::new(0),
            next: AtomicPtr::new(std::ptr::null_mut()),
            prev: AtomicPtr::new(std::ptr::null_mut()),
            data: UnsafeCell::new(CacheData::new()),
        }
    }

    fn bind(&self, heap: &Arc<Heap>) {
        self.id.set(heap.id);
        self.heap.set(Weak::into_raw(Arc::downgrade(heap)));
        self.requested.store(0, Ordering::Relaxed);
        // SAFETY: the slot is not bound, so no one else reaches its data.
        unsafe { (*self.data.get()).len = [0; NUM_CLASSES] };
        heap.link_slot(self);
    }

    /// Flushes the caches into the allocator (when it is still alive) and
    /// frees the slot.
    fn unbind(&self) {
        self.id.set(0);
        let raw = self.heap.replace(std::ptr::null());
        if raw.is_null() {
            return;
        }
        // SAFETY: `raw` came from `Weak::into_raw` in `bind` and is taken back once.
        let Some(heap) = unsafe { Weak::from_raw(raw) }.upgrade() else {
            return;
        };
        // SAFETY: only the owning thread runs this, and not re-entrantly
        // (the state is BUSY or the thread is exiting).
        let data = unsafe { &mut *self.data.get() };
        data.give_all_back(&heap);
        heap.unlink_slot(self, self.requested.swap(0, Ordering::Relaxed));
    }
}

/// An allocator's list of the thread slots bound to it, linked through
/// [`Slot::next`]/[`Slot::prev`] (the heap keeps it under its `threads` lock).
pub(crate) struct SlotList(*const Slot);
// SAFETY: the pointers name thread-local slots that unlink themselves (under
// this list's lock) before their thread's storage goes away.
unsafe impl Send for SlotList {}

impl SlotList {
    /// An empty list.
    pub(crate) const fn new() -> SlotList {
        SlotList(std::ptr::null())
    }

    /// Puts `slot` at the head.
    pub(crate) fn link(&mut self, slot: &Slot) {
        let me = slot as *const Slot as *mut Slot;
        slot.prev.store(std::ptr::null_mut(), Ordering::Relaxed);
        slot.next.store(self.0 as *mut Slot, Ordering::Relaxed);
        if !self.0.is_null() {
            // SAFETY: listed slots are alive (they unlink before their thread ends).
            unsafe { &*self.0 }.prev.store(me, Ordering::Relaxed);
        }
        self.0 = me;
    }

    /// Takes `slot` (which is listed here) off the list.
    pub(crate) fn unlink(&mut self, slot: &Slot) {
        let prev = slot.prev.load(Ordering::Relaxed);
        let next = slot.next.load(Ordering::Relaxed);
        if prev.is_null() {
            self.0 = next;
        } else {
            // SAFETY: listed slots are alive.
            unsafe { &*prev }.next.store(next, Ordering::Relaxed);
        }
        if !next.is_null() {
            // SAFETY: listed slots are alive.
            unsafe { &*next }.prev.store(prev, Ordering::Relaxed);
        }
    }

    /// The sum of every listed slot's requested-bytes tally.
    pub(crate) fn requested(&self) -> i64 {
        let mut total = 0;
        let mut p = self.0;
        while !p.is_null() {
            // SAFETY: listed slots are alive while the list's lock is held
            // (the caller holds it: it has `&self` through the lock guard).
            let s = unsafe { &*p };
            total += s.requested.load(Ordering::Relaxed);
            p = s.next.load(Ordering::Relaxed);
        }
        total
    }
}

struct Tls {
    state: Cell<u8>,
    slots: [Slot; SLOTS],
    victim: Cell<usize>,
}

/// Its only job is its destructor: flush this thread's caches at exit. Kept
/// apart from [`Tls`] so the caches themselves stay a `const`, drop-free
/// thread local (one address computation per access, usable during
/// destructors).
struct ExitGuard;

impl Drop for ExitGuard {
    fn drop(&mut self) {
        TLS.with(|tls| {
            tls.state.set(DEAD);
            for s in &tls.slots {
                s.unbind();
            }
        });
    }
}

const UNINIT: u8 = 0;
const INIT: u8 = 1;
const READY: u8 = 2;
const BUSY: u8 = 3;
const DEAD: u8 = 4;

thread_local! {
    static TLS: Tls = const { Tls {
        state: Cell::new(UNINIT),
        slots: [const { Slot::new() }; SLOTS],
        victim: Cell::new(0),
    } };
    static EXIT_GUARD: ExitGuard = const { ExitGuard };
}

/// Runs `f` with this thread's cache for `heap` and the slot's requested-bytes
/// counter, or returns `None` when the cache cannot be used right now
/// (caches disabled, thread starting up or exiting, or a re-entrant call);
/// the caller then takes the locked path.
#[inline]
pub fn with_cache<R>(
    heap: &Arc<Heap>,
    f: impl FnOnce(&mut CacheData, &AtomicI64) -> R,
) -> Option<R> {
    if !heap.config.thread_cache {
        return None;
    }
    TLS.with(|tls| {
        let state = tls.state.get();
        if state != READY {
            if state != UNINIT {
                return None;
            }
            // First use on this thread: registering the exit destructor may
            // itself allocate (inside a malloc replacement); such a nested
            // call sees INIT and takes the locked path.
            tls.state.set(INIT);
            let ok = EXIT_GUARD.try_with(|_| ()).is_ok();
            tls.state.set(if ok { READY } else { DEAD });
            if !ok {
                return None;
            }
        }
        tls.state.set(BUSY);
        let slot = find_or_bind(tls, heap);
        // SAFETY: the state is BUSY, so no re-entrant call on this thread
        // reaches the slot's data; other threads never touch it.
        let data = unsafe { &mut *slot.data.get() };
        let r = f(data, &slot.requested);
        tls.state.set(READY);
        Some(r)
    })
}

const _: () = assert!(
    !std::mem::needs_drop::<Tls>(),
    "Tls must not register a destructor"
);

/// This thread's cache block (a `const`, drop-free thread local: the
/// pointer stays valid for the thread's whole life).
#[inline(always)]
fn tls() -> &'static Tls {
    // SAFETY: a `const`-initialised thread local without destructor is never
    // torn down before the thread ends, and only this thread sees the reference.
    unsafe { &*TLS.with(|t| t as *const Tls) }
}

#[inline(always)]
fn bound_slot<'a>(tls: &'a Tls, heap: &Heap) -> Option<&'a Slot> {
    let id = heap.id;
    if tls.slots[0].id.get() == id {
        return Some(&tls.slots[0]);
    }
    tls.slots[1..].iter().find(|s| s.id.get() == id)
}

/// Fast path of alloc: pops a cached object of `class` and counts
/// `requested` bytes, without locks or calls. `None`: take [`with_cache`].
#[inline(always)]
pub fn fast_pop(heap: &Heap, class: usize, requested: usize) -> Option<usize> {
    let tls = tls();
    if tls.state.get() != READY {
        return None;
    }
    let slot = bound_slot(tls, heap)?;
    // SAFETY: state READY means no cache operation of this thread is in
    // progress, and this function makes no call that could re-enter.
    let data = unsafe { &mut *slot.data.get() };
    let p = data.pop(class)?;
    let r = &slot.requested;
    r.store(
        r.load(Ordering::Relaxed) + requested as i64,
        Ordering::Relaxed,
    );
    Some(p)
}

/// Fast path of free: pushes `addr` onto `class`'s stack and counts
/// `counted` bytes off. False: take [`with_cache`].
#[inline(always)]
pub fn fast_push(heap: &Heap, class: usize, addr: usize, counted: usize) -> bool {
    let tls = tls();
    if tls.state.get() != READY {
        return false;
    }
    let Some(slot) = bound_slot(tls, heap) else {
        return false;
    };
    // SAFETY: as in `fast_pop`.
    let data = unsafe { &mut *slot.data.get() };
    if !data.push(class, addr) {
        return false;
    }
    let r = &slot.requested;
    r.store(
        r.load(Ordering::Relaxed) - counted as i64,
        Ordering::Relaxed,
    );
    true
}

#[inline]
fn find_or_bind<'a>(tls: &'a Tls, heap: &Arc<Heap>) -> &'a Slot {
    if let Some(s) = tls.slots.iter().find(|s| s.id.get() == heap.id) {
        return s;
    }
    let i = match tls.slots.iter().position(|s| s.id.get() == 0) {
        Some(i) => i,
        None => {
            let v = tls.victim.get();
            tls.victim.set((v + 1) % SLOTS);
            tls.slots[v].unbind();
            v
        }
    };
    tls.slots[i].bind(heap);
    &tls.slots[i]
}

/// Flushes this thread's cache for `heap` (used before reporting stats and
/// in tests, so cached objects show up as available again).
pub fn flush(heap: &Arc<Heap>) {
    with_cache(heap, |data, _| {
        data.give_all_back(heap);
    });
}
